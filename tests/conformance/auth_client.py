"""The conformance suite's "everything client" for the ``auth/*`` scenarios: funnel as a user runs it.

Usage (by the harness): ``python auth_client.py SERVER_URL``, with
``MCP_CONFORMANCE_SCENARIO`` and, for some scenarios, ``MCP_CONFORMANCE_CONTEXT`` (JSON)
in the environment.

Theory of operation. Nothing here reaches into funnel's internals. The program writes a
``.mcp-funnel.json`` with one backend at the harness's URL, loads it with the real config
loader and enters the real :class:`~funnel_proxy.Funnel`, then does what a person at the
dashboard or the ``funnel-server login`` command does:

1. wait until the backend is ``connected`` or ``auth_required``;
2. when authorization is required: :meth:`Funnel.begin_authorization` for the URL, GET it
   without following redirects (the harness's authorization server approves at once and
   redirects to the redirect URI), and hand the callback's ``state``, ``code``, ``iss`` and
   ``error`` to :meth:`Funnel.complete_authorization`, as funnel-server's callback route does;
3. once connected, call every tool of the backend through :meth:`Funnel.call_tool`; a call
   refused for want of a wider scope (a step-up) logs in again the same way and retries.

Exit 0 when the backend was connected and its tools answered; 1 otherwise (scenarios that
expect the client to give up accept that).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream

from funnel_auth import AuthError, AuthorizationRequired
from funnel_proxy import BackendState, Funnel, FunnelEvent, load_config
from funnel_tokenstore import MemoryTokenStore
from funnel_transports import RpcError

logger = logging.getLogger("conformance.auth_client")

SERVER = "backend"
REDIRECT_URI = "http://localhost:3000/callback"
# The client ID metadata document URL the harness's authorization server accepts.
CIMD_URL = "https://conformance-test.local/client-metadata.json"
# Logins this client performs at most: the library's own cap is what the suite checks.
MAX_LOGINS = 6
STEP_TIMEOUT = 20.0


class ScenarioFailed(Exception):
    """The scenario cannot go on (the message says why)."""


def auth_section(scenario: str, context: dict[str, Any]) -> dict[str, Any]:
    """The backend's ``auth`` config, as a user would write it for this kind of server."""
    if scenario in ("auth/client-credentials-basic",):
        return {
            "type": "oauth2-client",
            "clientId": context["client_id"],
            "clientSecret": context["client_secret"],
        }
    if scenario == "auth/client-credentials-jwt":
        section = {
            "type": "oauth2-client",
            "clientId": context["client_id"],
            "authMethod": "private_key_jwt",
            "privateKey": context["private_key_pem"],
        }
        if context.get("signing_algorithm"):
            section["signingAlgorithm"] = context["signing_algorithm"]
        return section
    if scenario in ("auth/cross-app-access-complete-flow", "auth/enterprise-managed-authorization"):
        return {
            "type": "oauth2-enterprise",
            "clientId": context["client_id"],
            "clientSecret": context["client_secret"],
            "idpTokenEndpoint": context["idp_token_endpoint"],
            "idpClientId": context["idp_client_id"],
            "idToken": context["idp_id_token"],
        }
    if scenario == "auth/wif-jwt-bearer":
        return {
            "type": "oauth2-jwt-bearer",
            "clientId": context["client_id"],
            "assertion": context["valid_jwt"],
        }
    if scenario == "auth/pre-registration":
        return {
            "type": "oauth2-code",
            "clientId": context["client_id"],
            "clientSecret": context["client_secret"],
        }
    # Every other scenario: a public client that registers itself (a client ID metadata
    # document where the server supports one, else dynamic registration).
    return {"type": "oauth2-code", "clientMetadataUrl": CIMD_URL}


class Driver:
    """Plays the user: watches the backend's status, logs in, calls tools."""

    def __init__(self, funnel: Funnel, events: MemoryObjectReceiveStream[FunnelEvent]) -> None:
        self.funnel = funnel
        self.events = events
        self.logins = 0

    def state(self) -> BackendState:
        return next(s for s in self.funnel.states() if s.name == SERVER)

    def drain(self) -> None:
        """Forget the events seen so far: the next wait looks at what happens next."""
        while True:
            try:
                self.events.receive_nowait()
            except anyio.WouldBlock:
                return

    async def wait_settled(self, *, current: bool = True, after: float | None = None) -> str:
        """Wait until the backend is connected, needs authorization, or reports an error.

        With ``current``, the backend's present state counts; otherwise only a state
        published after the last :meth:`drain` does (a login reconnects the backend).
        """
        state: BackendState | None = self.state() if current else None
        with anyio.fail_after(STEP_TIMEOUT):
            while True:
                if state is not None:
                    if state.status == "connected" and (
                        after is None or (state.connected_at or 0.0) > after
                    ):
                        return state.status
                    if state.status in ("auth_required", "failed"):
                        return state.status
                    if state.status == "reconnecting" and _auth_trouble(state.error):
                        # An auth error on the dashboard: a person tries to log in again.
                        return "error"
                event = await self.events.receive()
                state = (
                    event.state if event.state is not None and event.state.name == SERVER else None
                )

    async def login(self) -> None:
        """What a person does with the Authorize link, through funnel's public API."""
        if self.logins >= MAX_LOGINS:
            raise ScenarioFailed(f"still unauthorized after {self.logins} logins")
        self.logins += 1
        url = await self.funnel.begin_authorization(SERVER)
        async with httpx.AsyncClient(follow_redirects=False, timeout=STEP_TIMEOUT) as http:
            response = await http.get(url)
        location = response.headers.get("location")
        if not response.is_redirect or location is None:
            raise ScenarioFailed(f"the authorization server answered HTTP {response.status_code}")
        params = dict(parse_qsl(urlsplit(location).query))
        self.drain()
        await self.funnel.complete_authorization(
            state=params.get("state", ""),
            code=params.get("code"),
            iss=params.get("iss"),
            error=params.get("error"),
            error_description=params.get("error_description"),
        )

    async def connect(self, *, current: bool = True, after: float | None = None) -> None:
        """Until connected: a login whenever the backend asks for one.

        ``after``: only a connection made after this time counts (a login reconnects
        the backend; its old connection may still report ``connected`` for a moment).
        """
        status = await self.wait_settled(current=current, after=after)
        while status != "connected":
            if status == "failed":
                raise ScenarioFailed(f"the backend failed: {self.state().error}")
            if status == "error":
                logger.info("the backend reports: %s", self.state().error)
            await self.login()
            status = await self.wait_settled(current=False)

    async def login_and_reconnect(self) -> None:
        before = self.state().connected_at or 0.0
        await self.login()
        await self.connect(current=True, after=before)

    async def call_tools(self) -> None:
        tools = [entry for entry in self.funnel.surface.by_name.values() if entry.server == SERVER]
        if not tools:
            raise ScenarioFailed("the backend lists no tools")
        for entry in tools:
            while True:
                try:
                    await self.funnel.call_tool(entry, {})
                    break
                except AuthorizationRequired as exc:
                    # A step-up during the call: the error carries the URL; log in
                    # through the public path (which joins the pending flow), retry.
                    logger.info("call needs authorization (%s): logging in", exc)
                    await self.login_and_reconnect()
                except RpcError as exc:
                    if not _needs_login(exc):
                        raise
                    logger.info("call refused (%s): logging in again", exc)
                    await self.login_and_reconnect()


def _auth_trouble(error: str | None) -> bool:
    """Whether a status error is about authorization (not a reconnect after a login)."""
    return (
        bool(error) and "authoriz" in str(error).lower() and "reconnect requested" not in str(error)
    )


def _needs_login(error: RpcError) -> bool:
    data = error.data if isinstance(error.data, dict) else {}
    return bool(data.get("authorizeUrl")) or "authoriz" in str(error).lower()


async def run(url: str, scenario: str, context: dict[str, Any], home: Path) -> None:
    config_path = home / ".mcp-funnel.json"
    server = {
        "transport": {"type": "streamable-http", "url": url},
        "auth": auth_section(scenario, context),
    }
    config_path.write_text(json.dumps({"servers": {SERVER: server}}))
    environ = {"PATH": os.environ.get("PATH", ""), "MCP_FUNNEL_HOME": str(home / "home")}
    loaded = load_config(config_path, cwd=home, environ=environ)
    funnel = Funnel(
        loaded.config,
        environ=environ,
        base_dir=loaded.base_dir,
        redirect_uri=REDIRECT_URI,
        token_store=MemoryTokenStore(),
        ready_timeout=STEP_TIMEOUT,
        connect_timeout=STEP_TIMEOUT,
    )
    async with funnel.events() as events, funnel:
        driver = Driver(funnel, events)
        await driver.connect()
        await driver.call_tools()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    if len(sys.argv) != 2:
        print("usage: auth_client.py SERVER_URL", file=sys.stderr)
        return 2
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    with tempfile.TemporaryDirectory(prefix="funnel-conformance-") as tmp:
        try:
            anyio.run(run, sys.argv[1], scenario, context, Path(tmp))
        except (ScenarioFailed, AuthError, RpcError) as exc:
            logger.error("%s: %s", type(exc).__name__, exc)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
