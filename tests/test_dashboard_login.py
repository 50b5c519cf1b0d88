"""A person logs a backend in from the dashboard, in headless Chromium, with nothing mocked.

oidc-provider (a certified authorization server) and an official-SDK MCP server that
validates its tokens (``tests/servers/protected_server.py``) run on 127.0.0.1; funnel and
its app run in process. The person clicks the card's Authorize button, logs in and
consents on the authorization server's own pages, and comes back to funnel's callback;
the dashboard, which was never reloaded, then shows the server connected, its tools, and
no Authorize button any more.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from support.peers import REPO, SERVERS

from funnel_proxy import parse_config
from funnel_server.testing import serving
from funnel_tokenstore import MemoryTokenStore

CHROMIUM = Path("/usr/bin/chromium")
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
TOKEN = "dashboard-login-test-token-0123456789"


@asynccontextmanager
async def url_peer(command: list[str], cwd: Path) -> AsyncIterator[str]:
    """A peer process that prints its URL on its first stdout line; stopped on exit."""
    process = await anyio.open_process(command, cwd=cwd, stderr=None)
    try:
        assert process.stdout is not None
        buffer = b""
        with anyio.fail_after(20):
            while b"\n" not in buffer:
                buffer += await process.stdout.receive()
        async with anyio.create_task_group() as tg:

            async def drain() -> None:
                assert process.stdout is not None
                async for _ in process.stdout:  # its JSON event lines: not needed here
                    pass

            tg.start_soon(drain)
            try:
                yield buffer.split(b"\n", 1)[0].decode().strip()
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()  # the peers stop when stdin closes
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def screenshot_path(name: str) -> Path:
    root = Path(os.environ.get("FUNNEL_ARTIFACTS") or REPO / "artifacts")
    (root / "screenshots").mkdir(parents=True, exist_ok=True)
    return root / "screenshots" / f"{name}.png"


async def test_a_login_from_the_dashboard_updates_the_card_without_a_reload() -> None:
    node = shutil.which("node")
    if node is None or not (REPO / "tools" / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("node and the npm test peers (npm ci --prefix tools) are needed")
    expect = importlib.import_module("playwright.async_api").expect
    async_playwright = importlib.import_module("playwright.async_api").async_playwright
    async with (
        url_peer(
            [node, str(REPO / "tools" / "peers" / "oidc-provider.mjs")], REPO / "tools"
        ) as issuer,
        url_peer([sys.executable, str(SERVERS / "protected_server.py"), issuer], REPO) as protected,
    ):
        config = parse_config(
            {
                "servers": {
                    "protected": {
                        "transport": {"type": "streamable-http", "url": protected},
                        "auth": {"type": "oauth2-code"},
                    }
                }
            },
            environ={},
        )
        async with (
            serving(
                config, api_token=TOKEN, funnel_options={"token_store": MemoryTokenStore()}
            ) as served,
            async_playwright() as playwright,
        ):
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=LAUNCH_ARGS
            )
            try:
                context = await browser.new_context(viewport={"width": 1400, "height": 900})
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                await page.goto(f"{served.base}/?token={served.token}")
                card = page.locator('.server[data-name="protected"]')
                await expect(card.locator(".status")).to_have_text("auth required")
                authorize = card.locator(".authorize")
                await expect(authorize).to_be_visible()
                await page.screenshot(
                    path=str(screenshot_path("dashboard-login-needed")), full_page=True
                )

                async with context.expect_page() as popup_info:
                    await authorize.click()
                popup: Any = await popup_info.value
                # oidc-provider's own login and consent pages.
                await popup.locator("input[name=login]").fill("alice")
                await popup.locator("input[name=password]").fill("x")
                await popup.locator("button[type=submit]").click()
                await popup.locator("button[type=submit]").click()
                await expect(popup.locator("h1")).to_have_text("protected is authorized")

                # The dashboard was not reloaded: server.status events updated it.
                await expect(card.locator(".status")).to_have_text("connected")
                await expect(authorize).to_have_count(0)
                await expect(page.locator("#toast")).to_have_text(
                    "protected is authorized and connected."
                )
                await expect(page.locator('.tool[data-name="protected__whoami"]')).to_be_visible()
                await page.screenshot(
                    path=str(screenshot_path("dashboard-login-done")), full_page=True
                )
                assert errors == []
                assert TOKEN not in await page.content()
                servers = await page.evaluate("fetch('/api/servers').then(r => r.json())")
                assert json.dumps(servers).count('authorizeUrl": null') == 1
            finally:
                await browser.close()
