"""The dashboard in headless Chromium: sign-in link, servers, tools, try a tool, live updates."""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from funnel_proxy import FunnelConfig
from funnel_server.testing import Served

CHROMIUM = Path("/usr/bin/chromium")
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
    serve: Serve, sdk_config: FunnelConfig, tmp_path: Path
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
            await page.locator("#args").fill('{"steps": 3}')
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

            await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            if os.environ.get("FUNNEL_DASHBOARD_SCREENSHOT"):
                await page.screenshot(
                    path=os.environ["FUNNEL_DASHBOARD_SCREENSHOT"], full_page=True
                )
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
