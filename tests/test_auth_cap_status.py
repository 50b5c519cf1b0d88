"""After the authorization cap a backend says so: ``auth_required`` with a reason, not ``reconnecting``.

oidc-provider (a real authorization server) issues the tokens; the resource server in
front of the MCP endpoint wants a scope no token ever carries (it answers every bearer
request ``403 insufficient_scope``). funnel steps up, a person logs in each time through
funnel's public login path, and after three authorizations in the challenge cycle the
backend waits for a person with a reason a person understands.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from support.peers import REPO, listening_socket

from funnel_auth import InsufficientScope
from funnel_auth.testing import follow_authorization
from funnel_proxy import BackendState, Funnel, parse_config
from funnel_tokenstore import MemoryTokenStore

pytestmark = [pytest.mark.anyio, pytest.mark.npm]

TOOLS = REPO / "tools"
REDIRECT_URI = "http://localhost:3456/api/oauth/callback"


@asynccontextmanager
async def oidc_provider() -> AsyncIterator[str]:
    node = shutil.which("node")
    if node is None or not (TOOLS / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("node and the npm test peers (npm ci --prefix tools) are needed")
    process = await anyio.open_process(
        [node, str(TOOLS / "peers" / "oidc-provider.mjs")], cwd=TOOLS, stderr=None
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(20):
            first = b""
            while not first.endswith(b"\n"):
                first += await process.stdout.receive(1)
        async with anyio.create_task_group() as tg:

            async def drain() -> None:
                assert process.stdout is not None
                async for _ in process.stdout:
                    pass

            tg.start_soon(drain)
            try:
                yield first.decode().strip()
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def never_enough(issuer: str, base: list[str]) -> Any:
    """A resource server that wants ``mcp:never`` of every token (none has it)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        metadata = f"{base[0]}/.well-known/oauth-protected-resource/mcp"
        if scope["path"] == "/.well-known/oauth-protected-resource/mcp":
            status, body = 200, {"resource": base[0] + "/mcp", "authorization_servers": [issuer]}
            challenge = None
        elif headers.get("authorization", "").lower().startswith("bearer "):
            status, body = 403, {}
            challenge = f'Bearer error="insufficient_scope", scope="mcp:admin", resource_metadata="{metadata}"'
        else:
            status, body = 401, {}
            challenge = f'Bearer scope="mcp:read", resource_metadata="{metadata}"'
        payload = json.dumps(body).encode()
        out = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        if challenge:
            out.append((b"www-authenticate", challenge.encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": payload})

    return app


async def test_after_three_authorizations_the_backend_is_auth_required_with_a_reason(
    tmp_path: Path,
) -> None:
    async with oidc_provider() as issuer:
        sock = listening_socket()
        base = [f"http://127.0.0.1:{sock.getsockname()[1]}"]
        # The resource server's scope is not one oidc-provider grants: "mcp:admin" is, but
        # this server checks nothing and refuses every token, as a misconfigured one would.
        server = uvicorn.Server(
            uvicorn.Config(never_enough(issuer, base), log_level="warning", lifespan="off")
        )
        config = parse_config(
            {
                "servers": {
                    "greedy": {
                        "transport": {"type": "streamable-http", "url": base[0] + "/mcp"},
                        "auth": {"type": "oauth2-code"},
                    }
                }
            },
            environ={},
        )
        statuses: list[BackendState] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            try:
                funnel = Funnel(
                    config,
                    environ={},
                    base_dir=tmp_path,
                    redirect_uri=REDIRECT_URI,
                    token_store=MemoryTokenStore(),
                    authorize_link=lambda name: f"/api/oauth/authorize/{name}",
                )
                async with funnel.events() as events, funnel:

                    async def settled() -> BackendState:
                        # The next status a person would act on (never "connecting").
                        with anyio.fail_after(20):
                            while True:
                                event = await events.receive()
                                state = event.state
                                if event.kind == "status" and state is not None:
                                    statuses.append(state)
                                    if state.status in ("auth_required", "failed"):
                                        return state

                    state = funnel.states()[0]
                    if state.status != "auth_required":
                        state = await settled()
                    logins = 0
                    while "authorization failed" not in (state.error or ""):
                        assert logins < 3, f"a fourth login was asked for: {state}"
                        url = await funnel.begin_authorization("greedy")
                        callback = await follow_authorization(url)
                        assert callback.code and callback.state
                        while True:  # what happened before this login is not its outcome
                            try:
                                events.receive_nowait()
                            except anyio.WouldBlock:
                                break
                        await funnel.complete_authorization(
                            state=callback.state, code=callback.code, iss=callback.iss
                        )
                        logins += 1
                        state = await settled()
                    # What REST, /ws and the dashboard show (they read this state).
                    assert logins == 3
                    assert state.status == "auth_required"
                    assert "still refuses after 3 authorizations" in (state.error or "")
                    assert "Log in with an account" in (state.error or "")
                    assert state.authorize_url == "/api/oauth/authorize/greedy"
                    # It stays that way: nobody is asked to log in a fourth time now.
                    with pytest.raises(InsufficientScope):
                        await funnel.begin_authorization("greedy")
                    assert funnel.states()[0].status == "auth_required"
            finally:
                server.should_exit = True
        sock.close()
    after_cap = statuses[statuses.index(state) :]
    assert [s.status for s in after_cap] == ["auth_required"]
