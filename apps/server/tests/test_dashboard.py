"""The dashboard in headless Chromium: sign-in link, servers, tools, try a tool, live updates,
the log view, the arguments form, media results, disable/enable.

Every test leaves screenshots in ``$FUNNEL_ARTIFACTS/screenshots`` (default
``artifacts/screenshots`` in the repository, ignored by git) for people and CI to look at.
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
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="Python playwright is not installed (not a project dependency yet)",
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"
    ),
]

Serve = Callable[..., AbstractAsyncContextManager[Served]]


def playwright_api() -> tuple[Any, Any]:
    # Imported by name: playwright is optional, so its types may be absent for mypy.
    module = importlib.import_module("playwright.async_api")
    return module.async_playwright, module.expect


def screenshot_path(name: str) -> Path:
    """Where a test's screenshot goes (kept by CI as an artifact)."""
    root = Path(os.environ.get("FUNNEL_ARTIFACTS") or REPO / "artifacts")
    directory = root / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}.png"


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


async def test_the_dashboard_shows_servers_and_tools_and_runs_a_tool(
    serve: Serve, sdk_config: FunnelConfig
) -> None:
    async_playwright, expect = playwright_api()

    async with serve(sdk_config) as served, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"{served.base}/?token={served.token}")
            assert page.url == f"{served.base}/", "the token left the address bar"

            # Servers, live over /ws.
            await expect(page.locator("#ws-text")).to_have_text("live")
            for name in ("sdk", "demo"):
                status = page.locator(f'.server[data-name="{name}"] .status')
                await expect(status).to_have_text("connected")
            await expect(page.locator("#version")).to_have_text("v0")

            # The tool surface, with what is hidden and why.
            await expect(page.locator('.tool[data-name="sdk__slow"]')).to_be_visible()
            await expect(page.locator('.tool[data-name="demo__word_count"]')).to_have_count(0)
            await page.locator("#show-hidden").check()
            hidden = page.locator('.tool[data-name="demo__word_count"]')
            await expect(hidden).to_contain_text("not exposed (allowlist)")
            await page.locator("#tool-search").fill("slow")
            await expect(page.locator(".tool")).to_have_count(1)

            # Try a tool: progress, then the result.
            await page.locator('.tool[data-name="sdk__slow"]').click()
            await expect(page.locator("#try-title")).to_have_text("sdk__slow")
            await page.locator("#form input[name=steps]").fill("3")
            await page.locator("#execute").click()
            await expect(page.locator("#result")).to_contain_text("done after 3 steps")
            await expect(page.locator("#result-meta")).to_contain_text("ms")

            # Cancel a call that never ends.
            await page.locator("#tool-search").fill("wait_forever")
            await page.locator('.tool[data-name="sdk__wait_forever"]').click()
            await page.locator("#execute").click()
            await expect(page.locator("#cancel")).to_be_enabled()
            await page.locator("#cancel").click()
            await expect(page.locator("#result")).to_have_text("cancelled")

            # A change on the server shows up without a reload.
            await page.locator("#tool-search").fill("word_count")
            served.funnel.enable_tools(["demo__word_count"])
            await expect(hidden).to_contain_text("exposed (enabled)")

            await page.screenshot(path=str(screenshot_path("dashboard-overview")), full_page=True)
            assert served.token not in await page.content()
            assert errors == []
        finally:
            await browser.close()


async def test_without_the_cookie_the_dashboard_asks_to_sign_in(serve: Serve) -> None:
    async_playwright, expect = playwright_api()

    async with serve() as served, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = await browser.new_page()
            response = await page.goto(f"{served.base}/")
            assert response is not None and response.status == 401
            await expect(page.locator("h1")).to_have_text("funnel")
            await page.locator("input[name=token]").fill(served.token)
            await page.locator("button").click()
            await expect(page.locator('.server[data-name="demo"] .status')).to_have_text(
                "connected"
            )
        finally:
            await browser.close()


@asynccontextmanager
async def dashboard(served: Served) -> AsyncIterator[tuple[Any, Any]]:
    """A signed-in page on the live dashboard, and playwright's ``expect``."""
    async_playwright, expect = playwright_api()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"{served.base}/?token={served.token}")
            await expect(page.locator("#ws-text")).to_have_text("live")
            yield page, expect
            assert errors == []
            assert served.token not in await page.content()
        finally:
            await browser.close()


@pytest.fixture
def peers(make_config: Callable[[dict[str, Any]], FunnelConfig], servers_dir: Path) -> FunnelConfig:
    """Two pid peers (``pid`` and ``x`` each; ``b__x`` hidden) and the media peer."""
    pid = {"command": sys.executable, "args": [str(servers_dir / "pid_server.py"), "x"]}
    media = {"command": sys.executable, "args": [str(servers_dir / "media_server.py")]}
    return make_config({"servers": {"a": pid, "b": pid, "media": media}, "hideTools": ["b__x"]})


async def run_tool(page: Any, expect: Any, name: str) -> None:
    await page.locator("#tool-search").fill(name)
    await page.locator(f'.tool[data-name="{name}"]').click()
    await expect(page.locator("#try-title")).to_have_text(name)
    await page.locator("#execute").click()
    await expect(page.locator("#result-meta")).to_contain_text("ms")


async def test_the_log_view_shows_stderr_and_audit_events_filtered_by_server(
    serve: Serve, peers: FunnelConfig
) -> None:
    async with serve(peers) as served, dashboard(served) as (page, expect):
        stderr_a = page.locator('.log-row[data-server="a"][data-source="stderr"]')
        await expect(stderr_a).to_have_count(1)
        await expect(stderr_a).to_contain_text("pid-peer")
        await expect(stderr_a).to_contain_text("ready")
        await expect(page.locator('.log-row[data-server="b"][data-source="stderr"]')).to_have_count(
            1
        )

        await run_tool(page, expect, "a__pid")
        pid = await page.locator("#result .part-text").text_content()
        audit = page.locator('.log-row[data-server="a"][data-source="audit"]')
        await expect(audit).to_have_count(1)
        await expect(audit).to_contain_text("tool.call")
        await expect(audit).to_contain_text("outcome=success")
        await expect(stderr_a).to_contain_text(f"pid-peer {pid} ready")

        # Filter by server, from the select or from a server card.
        await page.locator("#log-server").select_option("b")
        await expect(page.locator('.log-row[data-server="a"]')).to_have_count(0)
        await expect(page.locator('.log-row[data-server="b"]').first).to_be_visible()
        await page.locator('.server[data-name="a"] .show-logs').click()
        await expect(page.locator("#log-server")).to_have_value("a")
        await expect(page.locator('.log-row[data-server="b"]')).to_have_count(0)
        # And by source.
        await page.locator('.log-source[value="audit"]').uncheck()
        await expect(audit).to_have_count(0)
        await expect(stderr_a).to_have_count(1)
        await page.locator('.log-source[value="audit"]').check()
        await page.screenshot(path=str(screenshot_path("dashboard-logs")), full_page=True)


async def test_hidden_tools_are_listed_with_why_and_counted_on_their_card(
    serve: Serve, peers: FunnelConfig
) -> None:
    async with serve(peers) as served, dashboard(served) as (page, expect):
        hidden = page.locator('.tool[data-name="b__x"]')
        await expect(page.locator('.tool[data-name="b__pid"]')).to_be_visible()
        await expect(hidden).to_have_count(0)
        await page.locator("#show-hidden").check()
        await expect(hidden).to_contain_text("hidden (hideTools)")
        await expect(page.locator('.server[data-name="b"] .counts')).to_have_text(
            "1 exposed · 0 not exposed · 1 hidden"
        )
        await expect(page.locator('.server[data-name="b"] .meta')).to_contain_text("2 tools")
        await hidden.click()
        await expect(page.locator("#execute")).to_be_disabled()
        await expect(page.locator("#try-desc")).to_contain_text("cannot be executed here")


async def test_the_arguments_form_follows_the_schema_and_json_stays_editable(
    serve: Serve, sdk_config: FunnelConfig
) -> None:
    async with serve(sdk_config) as served, dashboard(served) as (page, expect):
        await page.locator("#tool-search").fill("sdk__add")
        await page.locator('.tool[data-name="sdk__add"]').click()
        a = page.locator("#form input[name=a]")
        b = page.locator("#form input[name=b]")
        await expect(a).to_have_attribute("type", "number")
        await expect(a).to_have_attribute("step", "1")
        await expect(page.locator('#form .field[data-key="a"] .req')).to_have_count(1)

        await page.locator("#execute").click()
        await expect(page.locator("#result")).to_have_text(
            "Check the arguments: a: required; b: required"
        )
        await expect(page.locator('#form .field[data-key="a"]')).to_have_class("field invalid")
        await a.fill("20")
        await b.fill("1.5")
        await page.locator("#execute").click()
        await expect(page.locator("#result")).to_have_text("Check the arguments: b: not an integer")
        await b.fill("22")
        await b.press("Enter")  # the form submits like any form
        await expect(page.locator("#result .part-text")).to_have_text("42")
        await page.screenshot(path=str(screenshot_path("dashboard-form")), full_page=True)

        # The same arguments as JSON, edited there, and back in the form.
        await page.locator("#mode-json").click()
        await expect(page.locator("#args")).to_be_visible()
        await expect(page.locator("#form")).to_be_hidden()
        assert json.loads(await page.locator("#args").input_value()) == {"a": 20, "b": 22}
        await page.locator("#args").fill('{"a": 1, "b": 2}')
        await page.locator("#execute").click()
        await expect(page.locator("#result .part-text")).to_have_text("3")
        await page.locator("#mode-form").click()
        await expect(a).to_have_value("1")
        await expect(b).to_have_value("2")


async def test_the_form_has_a_field_of_the_right_kind_for_every_argument(
    serve: Serve, peers: FunnelConfig
) -> None:
    async with serve(peers) as served, dashboard(served) as (page, expect):
        await page.locator("#tool-search").fill("media__options")
        await page.locator('.tool[data-name="media__options"]').click()
        form = page.locator("#form")
        await expect(form.locator("select[name=color] option")).to_have_text(
            ["red", "green", "blue"]
        )
        await expect(form.locator("input[name=loud]")).to_have_attribute("type", "checkbox")
        await expect(form.locator("input[name=ratio]")).to_have_value("0.5")  # its default
        await expect(form.locator("input[name=ratio]")).to_have_attribute("step", "any")
        await expect(form.locator("textarea[name=tags]")).to_have_attribute(
            "placeholder", "JSON array"
        )
        await form.locator("select[name=color]").select_option(label="green")
        await form.locator("input[name=count]").fill("3")
        await form.locator("input[name=loud]").check()
        await form.locator("textarea[name=tags]").fill('["x", "y"]')
        await form.locator("input[name=note]").fill("hi")
        await page.locator("#execute").click()
        await expect(page.locator("#result-meta")).to_contain_text("ms")
        answer = json.loads(await page.locator("#result .part-text").text_content() or "")
        assert answer == {
            "color": "green",
            "count": 3,
            "loud": True,
            "note": "hi",
            "ratio": 0.5,
            "tags": ["x", "y"],
        }
        await page.screenshot(path=str(screenshot_path("dashboard-form-kinds")), full_page=True)


async def test_image_and_audio_results_are_rendered_as_media(
    serve: Serve, peers: FunnelConfig
) -> None:
    async with serve(peers) as served, dashboard(served) as (page, expect):
        await run_tool(page, expect, "media__picture")
        image = page.locator("#result img.media")
        await expect(image).to_be_visible()
        await expect(page.locator("#result .part-text")).to_contain_text("a purple square")
        # Decoded by the browser: the PNG's real size, not a broken-image icon.
        assert await image.evaluate("img => img.complete && img.naturalWidth") == 48
        assert "base64" not in await page.locator("#result").inner_text()
        await page.screenshot(path=str(screenshot_path("dashboard-image")), full_page=True)

        await run_tool(page, expect, "media__tone")
        audio = page.locator("#result audio")
        await expect(audio).to_have_count(1)
        duration = await audio.evaluate(
            """audio => new Promise((resolve, reject) => {
                if (audio.readyState >= 1) return resolve(audio.duration);
                audio.addEventListener("loadedmetadata", () => resolve(audio.duration));
                audio.addEventListener("error", () => reject(new Error("audio did not decode")));
            })"""
        )
        assert duration == pytest.approx(0.25, abs=0.01)
        await page.screenshot(path=str(screenshot_path("dashboard-audio")), full_page=True)


async def test_a_server_is_disabled_enabled_and_reconnected_from_its_card(
    serve: Serve, peers: FunnelConfig
) -> None:
    async with serve(peers) as served, dashboard(served) as (page, expect):
        card = page.locator('.server[data-name="a"]')
        await expect(card.locator(".status")).to_have_text("connected")
        await card.locator(".toggle").click()
        await expect(card.locator(".status")).to_have_text("disabled")
        await expect(card.locator(".toggle")).to_have_text("Enable")
        await expect(card.locator(".reconnect")).to_be_disabled()
        await expect(page.locator('.tool[data-name="a__pid"]')).to_have_count(0)
        await expect(page.locator('.server[data-name="b"] .status')).to_have_text("connected")
        await page.screenshot(path=str(screenshot_path("dashboard-disabled")), full_page=True)

        await card.locator(".toggle").click()
        await expect(card.locator(".status")).to_have_text("connected")
        await expect(page.locator('.tool[data-name="a__pid"]')).to_be_visible()
        started = page.locator('.log-row[data-server="a"][data-source="stderr"]')
        await expect(started).to_have_count(2)  # a second process

        await card.locator(".reconnect").click()
        await expect(started).to_have_count(3)
        await expect(card.locator(".status")).to_have_text("connected")
        await expect(page.locator('.log-row[data-server="b"][data-source="stderr"]')).to_have_count(
            1
        )
