"""An MCP server protected as the MCP authorization spec says, for end-to-end tests.

Usage: ``python protected_server.py ISSUER`` — binds 127.0.0.1 on a free port, prints its
MCP URL (``http://127.0.0.1:<port>/mcp``) as the first stdout line, then JSON lines: one
per new valid token (``{"event": "request", "token": <sha256 prefix>, "client_id": ...}``),
so a test can tell which access token a client used without the token itself ever being
printed, and one per 401 or 403 (``{"event": "challenge", "error": ..., "agent": <User-Agent>,
"scope": ...}``).
Exits when stdin closes.

Theory of operation. The MCP endpoint is the official SDK's ``MCPServer`` streamable HTTP
app (a Starlette app whose lifespan runs the session manager). In front of it sits
:class:`Protection`, a plain ASGI middleware playing the resource server:

- ``/.well-known/oauth-protected-resource/mcp`` (and the root well-known) serve RFC 9728
  metadata: ``resource`` is this server's ``/mcp`` URL, the authorization server is the
  issuer given on the command line, and the scopes it knows.
- Any other request needs ``Authorization: Bearer <token>``. The token is introspected at
  the authorization server (RFC 7662) as the static client ``rs``/``rs-secret``; it must
  be ``active`` and its audience must name this resource. Otherwise the answer is 401
  with ``WWW-Authenticate: Bearer resource_metadata="…"`` (plus ``error="invalid_token"``
  when a token was sent), which is how an MCP client discovers where to authorize.
- A call of a tool in :data:`STEP_UP` with a token lacking its scope is answered 403
  ``insufficient_scope`` naming that scope (a step-up in the middle of a session).

Test peer only: the SDK is a dev dependency, never imported from package code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import httpx
import uvicorn
from mcp.server.mcpserver import MCPServer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPES = ("mcp:read", "mcp:write")
RESOURCE_CLIENT = ("rs", "rs-secret")  # the static introspection client of oidc-provider.mjs

mcp = MCPServer("protected-peer", instructions="A test peer behind OAuth.")


@mcp.tool()
def whoami() -> str:
    """Say that the caller got through the authorization server."""
    return "authorized"


@mcp.tool()
def shout(message: str) -> str:
    """Return the message in capitals."""
    return message.upper()


@mcp.tool()
def admin_report() -> str:
    """Only for tokens with the ``mcp:admin`` scope (the middleware steps the caller up)."""
    return "admin ok"


# Tools whose calls need more than the scopes every token gets: the middleware answers
# 403 insufficient_scope (RFC 6750 §3.1) naming the scope, mid-session.
STEP_UP: dict[str, str] = {"admin_report": "mcp:admin"}


def fingerprint(token: str) -> str:
    """A short, stable, non-reversible name for a token (never print the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class Protection:
    """Resource-server middleware: metadata, bearer challenges, introspection."""

    def __init__(self, app: App, *, issuer: str, base: str) -> None:
        self.app = app
        self.issuer = issuer.rstrip("/")
        self.resource = base + "/mcp"
        self.metadata_url = base + "/.well-known/oauth-protected-resource/mcp"
        self.http = httpx.AsyncClient(timeout=10)
        basic = base64.b64encode(":".join(RESOURCE_CLIENT).encode()).decode()
        self.introspection_auth = f"Basic {basic}"
        self.seen: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: the SDK app runs its session manager
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in (
            "/.well-known/oauth-protected-resource/mcp",
            "/.well-known/oauth-protected-resource",
        ):
            await _json(
                send,
                200,
                {
                    "resource": self.resource,
                    "authorization_servers": [self.issuer],
                    "scopes_supported": list(SCOPES),
                    "bearer_methods_supported": ["header"],
                },
            )
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        authorization = headers.get("authorization", "")
        if not authorization.lower().startswith("bearer "):
            await self._challenge(send, None, headers.get("user-agent", ""))
            return
        token = authorization[7:].strip()
        claims = await self._introspect(token)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if not claims.get("active") or self.resource not in audiences:
            await self._challenge(send, "invalid_token", headers.get("user-agent", ""))
            return
        self._record(token, claims)
        body, receive = await _buffered(receive)
        needed = STEP_UP.get(_called_tool(body))
        granted = str(claims.get("scope", "")).split()
        if needed is not None and needed not in granted:
            await self._challenge(send, "insufficient_scope", headers.get("user-agent", ""), needed)
            return
        await self.app(scope, receive, send)

    async def _introspect(self, token: str) -> dict[str, Any]:
        response = await self.http.post(
            self.issuer + "/token/introspection",
            data={"token": token},
            headers={"Authorization": self.introspection_auth},
        )
        response.raise_for_status()
        claims: dict[str, Any] = response.json()
        return claims

    def _record(self, token: str, claims: dict[str, Any]) -> None:
        name = fingerprint(token)
        if name not in self.seen:  # one line per token, not per request
            self.seen.add(name)
            event = {"event": "request", "token": name, "client_id": claims.get("client_id")}
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    async def _challenge(
        self, send: Send, error: str | None, agent: str, scope: str | None = None
    ) -> None:
        event = {"event": "challenge", "error": error, "agent": agent, "scope": scope}
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()
        parts = [f'error="{error}"'] if error else []
        if scope:
            parts.append(f'scope="{scope}"')
        parts.append(f'resource_metadata="{self.metadata_url}"')
        status = 403 if error == "insufficient_scope" else 401
        await _json(send, status, {"error": error or "unauthorized"}, challenge=", ".join(parts))


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body; return it and a ``receive`` that replays it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _called_tool(body: bytes) -> str:
    """The tool a ``tools/call`` body names ("" for anything else)."""
    try:
        message = json.loads(body or b"null")
    except ValueError:
        return ""
    if isinstance(message, dict) and message.get("method") == "tools/call":
        params = message.get("params")
        if isinstance(params, dict) and isinstance(params.get("name"), str):
            return str(params["name"])
    return ""


async def _json(send: Send, status: int, body: object, *, challenge: str | None = None) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if challenge is not None:
        headers.append((b"www-authenticate", f"Bearer {challenge}".encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def serve(issuer: str) -> None:
    """Serve until stdin closes."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue from here on: printing the URL means ready
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = Protection(mcp.streamable_http_app(host="127.0.0.1"), issuer=issuer, base=base)
    config = uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per introspection is noise

    async def stop_when_stdin_closes() -> None:
        await anyio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
        server.should_exit = True

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            sys.stdout.write(f"{base}/mcp\n")
            sys.stdout.flush()
            await stop_when_stdin_closes()
    finally:
        await app.http.aclose()
        sock.close()


if __name__ == "__main__":
    anyio.run(serve, sys.argv[1])
