"""The dashboard answers a backend's elicitation with a form built from its schema.

server-everything's ``trigger-elicitation-request`` asks for every SEP-1034 field kind
(strings with formats, boolean, integer and number with defaults, enums plain, titled and
legacy-titled, multi-selects); headless Chromium fills the form and sends the answer.
Screenshots go to ``$FUNNEL_ARTIFACTS/screenshots``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from funnel_proxy import FunnelConfig
from funnel_server.testing import Served

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[3]
TOOL = "everything__trigger-elicitation-request"
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.npm,
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None, reason="Python playwright is not installed"
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"
    ),
]
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

Serve = Callable[..., AbstractAsyncContextManager[Served]]


def screenshot_path(name: str) -> Path:
    root = Path(os.environ.get("FUNNEL_ARTIFACTS") or REPO / "artifacts")
    directory = root / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}.png"


@pytest.fixture
def everything_config(
    make_config: Callable[[dict[str, Any]], FunnelConfig], everything_js: Path
) -> FunnelConfig:
    return make_config(
        {"servers": {"everything": {"command": "node", "args": [str(everything_js), "stdio"]}}}
    )


@asynccontextmanager
async def dashboard(served: Served) -> AsyncIterator[tuple[Any, Any]]:
    module = importlib.import_module("playwright.async_api")
    async with module.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1400})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"{served.base}/?token={served.token}")
            await module.expect(page.locator("#ws-text")).to_have_text("live")
            yield page, module.expect
            assert errors == []
        finally:
            await browser.close()


async def start_tool(page: Any, expect: Any) -> None:
    await page.locator("#tool-search").fill(TOOL)
    await page.locator(f'.tool[data-name="{TOOL}"]').click()
    await expect(page.locator("#try-title")).to_have_text(TOOL)
    await page.locator("#execute").click()


async def test_the_dashboard_renders_the_elicitation_form_validates_and_answers(
    serve: Serve, everything_config: FunnelConfig
) -> None:
    async with serve(everything_config) as served, dashboard(served) as (page, expect):
        await start_tool(page, expect)
        panel = page.locator("#elicit")
        await expect(panel).to_be_visible()
        await expect(page.locator("#elicit-message")).to_have_text(
            "Please provide inputs for the following fields:"
        )
        await expect(page.locator("#elicit-server")).to_have_text("from everything")
        form = page.locator("#elicit-form")
        # Field kinds, required marks, titles and defaults come from the schema.
        name_field = form.locator('.field[data-key="name"]')
        await expect(name_field.locator(".req")).to_have_count(1)
        await expect(name_field.locator(".ftitle")).to_have_text("String")
        await expect(form.locator("#elicit-check")).to_have_attribute("type", "checkbox")
        await expect(form.locator("#elicit-integer")).to_have_value("42")
        await expect(form.locator("#elicit-firstLine")).to_have_value(
            "It was a dark and stormy night."
        )
        hero = form.locator("#elicit-titledSingleSelectEnum")
        await expect(hero.locator("option:checked")).to_have_text("Superman")
        friend = form.locator("#elicit-untitledSingleSelectEnum")
        await expect(friend.locator("option:checked")).to_have_text("Monica")

        # A required field left empty is refused in the page; nothing is sent yet.
        await page.locator("#elicit-accept").click()
        await expect(page.locator("#elicit-error")).to_contain_text("name: required")
        await expect(panel).to_be_visible()

        await form.locator("#elicit-name").fill("Ada Lovelace")
        await form.locator("#elicit-check").check()
        await form.locator("#elicit-legacyTitledEnum").select_option(label="Dogs")
        await form.locator("#elicit-email").fill("not-an-address")
        await page.locator("#elicit-accept").click()
        await expect(page.locator("#elicit-error")).to_contain_text("email: not an email address")
        await form.locator("#elicit-email").fill("ada@example.org")
        await page.screenshot(path=str(screenshot_path("dashboard-elicitation")), full_page=True)
        await page.locator("#elicit-accept").click()

        await expect(page.locator("#result-meta")).to_contain_text("ms")
        await expect(panel).to_be_hidden()
        result = await page.locator("#result").text_content()
        assert result is not None
        assert "Name: Ada Lovelace" in result
        assert "Agreed to terms: true" in result
        raw = json.loads(result[result.index("{") : result.rindex("}") + 1])
        content = raw["content"]
        assert content["legacyTitledEnum"] == "pet-2"
        assert content["titledSingleSelectEnum"] == "hero-1"
        assert content["integer"] == 42
        assert content["untitledMultipleSelectEnum"] == ["Guitar"]
        await page.screenshot(
            path=str(screenshot_path("dashboard-elicitation-answered")), full_page=True
        )


async def test_the_dashboard_declines_an_elicitation(
    serve: Serve, everything_config: FunnelConfig
) -> None:
    async with serve(everything_config) as served, dashboard(served) as (page, expect):
        await start_tool(page, expect)
        await expect(page.locator("#elicit")).to_be_visible()
        await page.locator("#elicit-decline").click()
        await expect(page.locator("#result")).to_contain_text("declined")
        await expect(page.locator("#elicit")).to_be_hidden()


async def test_the_dashboard_shows_a_url_mode_elicitation_as_a_link_and_answers_done(
    serve: Serve, make_config: Callable[[dict[str, Any]], FunnelConfig], servers_dir: Path
) -> None:
    script = str(servers_dir / "url_elicit_server.py")
    config = make_config({"servers": {"web": {"command": sys.executable, "args": [script]}}})
    page_url = "http://127.0.0.1:9/connect?account=ada"  # shown, never opened
    async with serve(config) as served, dashboard(served) as (page, expect):
        await page.locator("#tool-search").fill("web__visit")
        await page.locator('.tool[data-name="web__visit"]').click()
        await page.locator("#arg-url").fill(page_url)
        await page.locator("#execute").click()
        await expect(page.locator("#elicit")).to_be_visible()
        link = page.locator("#elicit-url")
        await expect(link).to_have_text(page_url)
        await expect(link).to_have_attribute("href", page_url)
        await expect(link).to_have_attribute("rel", "noopener noreferrer")
        await expect(page.locator("#elicit-accept")).to_have_text("Done")
        await page.screenshot(
            path=str(screenshot_path("dashboard-elicitation-url")), full_page=True
        )
        await page.locator("#elicit-accept").click()
        await expect(page.locator("#elicit")).to_be_hidden()
        await expect(page.locator("#result")).to_contain_text("action: accept")
