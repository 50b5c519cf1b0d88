"""The OAuth routes: the authorize redirect and the callback pages (escaped, never leaking)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from funnel_auth import AuthorizationDenied, IssuerMismatch
from funnel_proxy import FunnelConfig
from funnel_server import ServerFunnel
from funnel_server.testing import Served

pytestmark = pytest.mark.anyio

Serve = Callable[..., AbstractAsyncContextManager[Served]]
SCRIPT = "<script>alert('pwned')</script>"


async def test_a_callback_with_an_unknown_or_missing_state_gets_an_error_page(serve: Serve) -> None:
    async with serve() as served, httpx.AsyncClient(base_url=served.base) as http:
        unknown = await http.get(
            "/api/oauth/callback",
            params={"state": "forged", "code": "c0de-value", "error_description": SCRIPT},
        )
        missing = await http.get("/api/oauth/callback", params={"code": "c0de-value"})
    assert unknown.status_code == 400
    assert "unknown or already used authorization state" in unknown.text
    assert unknown.headers["content-type"].startswith("text/html")
    assert "script-src 'none'" in unknown.headers["content-security-policy"]
    assert missing.status_code == 400 and "no state parameter" in missing.text
    for page in (unknown, missing):
        assert "<script>" not in page.text and "c0de-value" not in page.text


async def test_authorize_needs_the_token_and_an_oauth_server(serve: Serve) -> None:
    async with serve() as served, httpx.AsyncClient(base_url=served.base) as http:
        anonymous = await http.get("/api/oauth/authorize/demo")
        plain = await http.get("/api/oauth/authorize/demo", headers=served.auth)
        unknown = await http.get("/api/oauth/authorize/ghost", headers=served.auth)
    assert anonymous.status_code == 401
    assert plain.status_code == 400 and "does not use oauth2-code" in plain.json()["detail"]
    assert unknown.status_code == 404


class ScriptedFlows(ServerFunnel):
    """Stands in for an authorization server: each callback's ``state`` picks an outcome."""

    completed: list[str]

    async def begin_authorization(self, server: str) -> str:
        if server != "demo":
            raise KeyError(server)
        return "https://as.example/authorize?client_id=funnel&state=s1"

    async def complete_authorization(
        self,
        *,
        state: str,
        code: str | None,
        iss: str | None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> str:
        if state == "mismatch":
            raise IssuerMismatch(f"issuer {iss} is not the expected one")
        if error is not None:
            raise AuthorizationDenied(
                f"the authorization server refused: {error}: {error_description}", error=error
            )
        return "demo<b>"


@pytest.fixture
def scripted(serve: Serve) -> Callable[..., AbstractAsyncContextManager[Served]]:
    def start(
        config: FunnelConfig | None = None, **settings: Any
    ) -> AbstractAsyncContextManager[Served]:
        return serve(config, funnel_class=ScriptedFlows, **settings)

    return start


async def test_authorize_redirects_the_browser_to_the_authorization_server(
    scripted: Serve,
) -> None:
    async with scripted() as served, httpx.AsyncClient(base_url=served.base) as http:
        response = await http.get("/api/oauth/authorize/demo", headers=served.auth)
    assert response.status_code == 302
    assert response.headers["location"] == "https://as.example/authorize?client_id=funnel&state=s1"
    assert response.headers["cache-control"] == "no-store"


async def test_an_error_description_is_shown_escaped(scripted: Serve) -> None:
    async with scripted() as served, httpx.AsyncClient(base_url=served.base) as http:
        denied = await http.get(
            "/api/oauth/callback",
            params={"state": "s1", "error": "access_denied", "error_description": SCRIPT},
        )
    assert denied.status_code == 400
    assert SCRIPT not in denied.text
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in denied.text


async def test_an_issuer_mismatch_shows_nothing_the_response_said(scripted: Serve) -> None:
    async with scripted() as served, httpx.AsyncClient(base_url=served.base) as http:
        page = await http.get(
            "/api/oauth/callback",
            params={
                "state": "mismatch",
                "iss": "https://evil.example",
                "error_description": "call +1-555-SCAM",
            },
        )
    assert page.status_code == 400
    assert "evil.example" not in page.text and "SCAM" not in page.text
    assert "unexpected" in page.text or "expected authorization server" in page.text


async def test_success_says_which_server_and_closes_itself(scripted: Serve) -> None:
    async with scripted() as served, httpx.AsyncClient(base_url=served.base) as http:
        page = await http.get("/api/oauth/callback", params={"state": "s1", "code": "abc"})
    assert page.status_code == 200
    assert "demo&lt;b&gt; is authorized" in page.text
    assert "window.close()" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'sha256-" in csp, "only the page's own close script may run"
