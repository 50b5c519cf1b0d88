"""The Litestar app: REST API, ``/mcp``, ``/ws``, the OAuth routes and the dashboard.

:func:`create_app` builds it over a running :class:`~funnel_proxy.Funnel`. Every route
needs the API token (header or dashboard cookie) except ``GET /api/health`` and
``GET /api/oauth/callback``; see :mod:`funnel_server._security`. Answers never carry a
secret: backend errors are the funnel's already-scrubbed status texts, OAuth errors are
:class:`funnel_auth.AuthError` messages (redacted at their source), and every HTML page
escapes whatever it shows.
"""

from __future__ import annotations

import hashlib
import html
import logging
import math
import time
from base64 import b64encode
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib.resources import files
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Protocol, TypeVar, cast
from urllib.parse import quote

import anyio
import msgspec
from litestar import Litestar, Request, Response, WebSocket, get, post, websocket
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotFoundException,
    ServiceUnavailableException,
    TooManyRequestsException,
)
from litestar.handlers import asgi
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.params import Body, FromPath, Parameter
from litestar.response import Redirect
from litestar.types import Receive, Scope, Send

from funnel_auth import (
    AuthError,
    AuthorizationRequired,
    AuthServerUnavailable,
    InsufficientScope,
    InvalidState,
    IssuerMismatch,
    RateLimited,
    RateLimiter,
)
from funnel_proxy import (
    BackendUnavailable,
    Funnel,
    McpHttpEndpoint,
    ProxyError,
    Reason,
    SessionSharing,
    ToolNotFound,
    namespaced_name,
)
from funnel_proxy._mrtr import is_input_required
from funnel_proxy._routing import InFlight
from funnel_proxy._telemetry import tool_call as tool_call_span
from funnel_server._audit import audit
from funnel_server._calls import ToolRateLimited, call_origin
from funnel_server._logs import LogBuffer, LogEntry
from funnel_server._middleware import SecurityMiddleware
from funnel_server._security import InboundAuth, OriginPolicy
from funnel_server._settings import AppSettings, Readiness
from funnel_server._ws import WsConnection
from funnel_transports import DecodeError, RequestTimeout, RpcError, TransportError, from_raw

if TYPE_CHECKING:
    from funnel_server._shared import SharedState

__all__ = [
    "AppSettings",
    "CallRequest",
    "CallResult",
    "Health",
    "LogList",
    "Ready",
    "ReconnectAccepted",
    "ServerChanged",
    "ServerInfo",
    "ServerList",
    "ToolInfo",
    "ToolList",
    "create_app",
]

logger = logging.getLogger("funnel_server")

_HTML: Final = "text/html; charset=utf-8"
_T = TypeVar("_T")


# ---------------------------------------------------------------------- models


class Health(msgspec.Struct, frozen=True):
    """Liveness."""

    status: Literal["ok"]
    version: str


class Ready(msgspec.Struct, frozen=True, rename="camel"):
    """Readiness: whether this replica should get traffic.

    Attributes:
        status: ``ready``, or ``unavailable`` (answered with 503).
        version: funnel-server's version.
        shared_state: ``ok``, ``unreachable``, or ``off`` (no ``--shared-state``).
        draining: Whether a SIGTERM is draining this process.
    """

    status: Literal["ready", "unavailable"]
    version: str
    shared_state: Literal["ok", "unreachable", "off"]
    draining: bool


class ServerInfo(msgspec.Struct, frozen=True, rename="camel"):
    """One backend as the API shows it.

    Attributes:
        name: The configured name.
        transport: ``stdio``, ``streamable-http``, ``sse`` or ``websocket``.
        status: ``connecting``, ``connected``, ``auth_required``, ``reconnecting``,
            ``failed`` or ``disabled``.
        error: The last error (never a secret).
        since: When the status last changed (Unix seconds).
        connected_at: When the current connection was made.
        attempt: Reconnect attempts since the last success.
        next_retry_in: Seconds until the next attempt.
        protocol_version: The negotiated MCP version.
        tool_count: Tools the backend lists.
        auth_required: Whether a person must authorize it.
        authorize_url: Where to start that (a path on this server); only while
            ``auth_required``.
    """

    name: str
    transport: str
    status: str
    error: str | None
    since: float
    connected_at: float | None
    attempt: int
    next_retry_in: float | None
    protocol_version: str | None
    tool_count: int
    auth_required: bool
    authorize_url: str | None


class ConflictInfo(msgspec.Struct, frozen=True):
    """Two servers offered one name or URI, and how funnel resolved it.

    Attributes:
        kind: ``tool``, ``prompt``, ``resource`` or ``resource_template``.
        name: The contested exposed name, URI or URI template.
        owner: The server that keeps it (the first in the config).
        server: The server that does not.
        resolved: The name the later server's tool or prompt has instead (``None`` for
            resources: the owner alone serves the URI).
        message: The same as one sentence.
    """

    kind: str
    name: str
    owner: str
    server: str
    resolved: str | None
    message: str


class ServerList(msgspec.Struct, frozen=True):
    """Every backend, and the name conflicts between them."""

    servers: list[ServerInfo]
    conflicts: list[ConflictInfo]


class ReconnectAccepted(msgspec.Struct, frozen=True):
    """A reconnect was started."""

    server: str
    status: str


class ServerChanged(msgspec.Struct, frozen=True):
    """A server was disabled or enabled."""

    server: str
    status: str


class LogList(msgspec.Struct, frozen=True, rename="camel"):
    """Recent log entries, oldest first.

    Attributes:
        entries: The entries asked for.
        last_seq: The newest entry's ``seq`` (ask ``after`` it next time).
        capacity: How many entries the server keeps.
    """

    entries: list[LogEntry]
    last_seq: int
    capacity: int


class ToolInfo(msgspec.Struct, frozen=True, rename="camel"):
    """One registered tool.

    Attributes:
        name: The exposed name (``server__tool``).
        server: The owning backend.
        original: Its name on the backend.
        description: The backend's description.
        input_schema: The JSON schema of its arguments.
        exposed: Whether MCP clients see it in ``tools/list``.
        reason: Why (``default``, ``allowlist``, ``always``, ``enabled``, ``core``, or
            ``hidden``: ``hideTools`` matches it, so MCP clients cannot see, search or
            call it at all).
    """

    name: str
    server: str
    original: str
    description: str | None
    input_schema: dict[str, Any]
    exposed: bool
    reason: str


class ToolList(msgspec.Struct, frozen=True):
    """The tool surface: registered tools, exposed or not, and the name conflicts."""

    tools: list[ToolInfo]
    conflicts: list[ConflictInfo]


class CallRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tool call."""

    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class CallResult(msgspec.Struct, frozen=True, rename="camel"):
    """A tool's answer: the MCP ``CallToolResult`` (``isError`` included) and the time taken."""

    result: dict[str, Any]
    duration_ms: float


# ---------------------------------------------------------------------- OAuth hooks


class _OAuthHooks(Protocol):
    async def begin_authorization(self, server: str) -> str: ...

    async def complete_authorization(
        self,
        *,
        state: str,
        code: str | None,
        iss: str | None,
        error: str | None,
        error_description: str | None,
    ) -> str: ...


def oauth_hooks(funnel: Funnel) -> _OAuthHooks | None:
    """The funnel's authorization-flow methods, when it has them."""
    if hasattr(funnel, "begin_authorization") and hasattr(funnel, "complete_authorization"):
        return cast(_OAuthHooks, funnel)
    return None


# ---------------------------------------------------------------------- HTML

_PAGE_STYLE: Final = (
    "body{font:16px/1.5 system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:grid;"
    "place-items:center;min-height:100vh;margin:0}main{background:#1e293b;padding:2rem 2.5rem;"
    "border-radius:12px;max-width:36rem;box-shadow:0 10px 30px #0006}h1{margin:0 0 .5rem;"
    "font-size:1.4rem}.ok{color:#4ade80}.bad{color:#f87171}p{color:#cbd5e1}code{background:#0f172a;"
    "padding:.1rem .3rem;border-radius:4px}input{font:inherit;padding:.4rem;border-radius:6px;"
    "border:1px solid #475569;background:#0f172a;color:inherit;width:100%;box-sizing:border-box}"
    "button{font:inherit;margin-top:.6rem;padding:.4rem 1rem;border-radius:6px;border:0;"
    "background:#6366f1;color:white;cursor:pointer}"
)
_CLOSE_SCRIPT: Final = "setTimeout(function(){window.close()},2000);"


def _script_hash(script: str) -> str:
    return "sha256-" + b64encode(hashlib.sha256(script.encode()).digest()).decode()


def _page(title: str, body: str, *, script: str | None = None) -> bytes:
    script_tag = f"<script>{script}</script>" if script else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_PAGE_STYLE}</style></head>"
        f"<body><main>{body}</main>{script_tag}</body></html>"
    ).encode()


def _page_headers(script: str | None = None) -> dict[str, str]:
    script_src = f"'{_script_hash(script)}'" if script else "'none'"
    return {
        "content-security-policy": (
            f"default-src 'none'; style-src 'unsafe-inline'; script-src {script_src}; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "cache-control": "no-store",
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
    }


LOGIN_PAGE: Final = _page(
    "funnel: sign in",
    "<h1>funnel</h1><p>Open the dashboard link <code>funnel-server</code> printed when it "
    "started (it ends in <code>?token=…</code>), or paste the API token:</p>"
    '<form method=get action="/"><input name=token type=password autocomplete=off '
    'aria-label="API token" placeholder="API token" required><button>Sign in</button></form>',
)


def _bad_body(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """400 for a request body that cannot be decoded at all."""
    reason = "not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else "nested too deep"
    return Response(
        content={"status_code": 400, "detail": f"Invalid request body: {reason}"},
        status_code=400,
    )


def _auth_http_error(exc: AuthError, server: str) -> HTTPException:
    """A backend's auth error as a clear REST answer, never a 500.

    401 when a person must authorize, 403 when the server refuses the scopes even after
    authorizing, 503 (with ``Retry-After``) when the authorization server is busy or
    this funnel's limiter says wait, 502 for any other failure upstream. The
    ``authorizeUrl`` is funnel's own authorize route, which joins the pending flow.
    """
    extra = {"server": server, "authorizeUrl": f"/api/oauth/authorize/{server}"}
    if isinstance(exc, AuthorizationRequired):
        return HTTPException(status_code=401, detail=str(exc), extra=extra)
    if isinstance(exc, InsufficientScope):
        return HTTPException(status_code=403, detail=str(exc), extra=extra)
    if isinstance(exc, AuthServerUnavailable | RateLimited):
        wait = exc.retry_after or 1.0
        return HTTPException(
            status_code=503,
            detail=str(exc),
            extra=extra,
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return HTTPException(status_code=502, detail=str(exc), extra=extra)


def _error_page(
    status: int, title: str, message: str, *, waiting: Sequence[str] = ()
) -> Response[bytes]:
    """An HTML error page; ``waiting`` names backends whose login can be started again."""
    again = "".join(
        f'<li><a href="/api/oauth/authorize/{quote(name, safe="")}">Log in to '
        f"{html.escape(name)}</a></li>"
        for name in waiting
    )
    body = _page(
        title,
        f"<h1 class=bad>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
        + (
            f"<p>Waiting for a login (each link opens the current one):</p><ul>{again}</ul>"
            if again
            else ""
        )
        + "<p>Start again from the dashboard, or run <code>funnel-server login SERVER</code>.</p>",
    )
    return Response(body, status_code=status, media_type=_HTML, headers=_page_headers())


def _dashboard() -> bytes:
    return files("funnel_server").joinpath("dashboard.html").read_bytes()


# ---------------------------------------------------------------------- helpers


def _server_info(funnel: Funnel) -> list[ServerInfo]:
    return [
        ServerInfo(
            name=state.name,
            transport=state.transport,
            status=state.status,
            error=state.error,
            since=state.since,
            connected_at=state.connected_at,
            attempt=state.attempt,
            next_retry_in=state.next_retry_in,
            protocol_version=state.protocol_version,
            tool_count=len(state.tools),
            auth_required=state.status == "auth_required",
            # The backend remembers the URL; it is an action only while a login is needed.
            authorize_url=state.authorize_url if state.status == "auth_required" else None,
        )
        for state in funnel.states()
    ]


def _tool_infos(funnel: Funnel) -> list[ToolInfo]:
    """Registered tools (the surface), then the connected backends' hidden ones."""
    surface = funnel.surface
    infos = [
        ToolInfo(
            name=entry.name,
            server=entry.server,
            original=entry.original,
            description=_description(entry.definition),
            input_schema=_schema(entry.definition),
            exposed=entry.exposed,
            reason=str(entry.reason),
        )
        for entry in surface.tools
    ]
    registered = {(entry.server, entry.original) for entry in surface.tools}
    for state in funnel.states():
        if state.status != "connected":
            continue
        for tool in state.tools:
            original = tool.get("name")
            if not isinstance(original, str) or (state.name, original) in registered:
                continue
            name = namespaced_name(funnel.config.prefixes.get(state.name, state.name), original)
            if funnel.policy.decide(name).reason is Reason.HIDDEN:
                infos.append(
                    ToolInfo(
                        name=name,
                        server=state.name,
                        original=original,
                        description=_description(tool),
                        input_schema=_schema(tool),
                        exposed=False,
                        reason=str(Reason.HIDDEN),
                    )
                )
    return infos


def _conflicts(funnel: Funnel) -> list[ConflictInfo]:
    return [
        ConflictInfo(
            kind=c.kind,
            name=c.name,
            owner=c.owner,
            server=c.server,
            resolved=c.resolved,
            message=c.describe(),
        )
        for c in funnel.surface.conflicts
    ]


def _description(definition: Any) -> str | None:
    value = definition.get("description")
    return value if isinstance(value, str) else None


def _schema(definition: Any) -> dict[str, Any]:
    value = definition.get("inputSchema")
    return dict(value) if isinstance(value, dict) else {"type": "object"}


class _RestCaller:
    """A REST call, as a client of the funnel while it runs: nobody can answer questions.

    It declares elicitation and sampling so that the funnel's routing rule attributes a
    backend's question caused by this call to this call (and not to a person elsewhere);
    it refuses each at once (the backend gets a JSON-RPC error, never a wait) and the
    REST caller gets 409 naming what the tool needed.
    """

    capabilities: Mapping[str, Any] = MappingProxyType(
        {"elicitation": {"form": {}, "url": {}}, "sampling": {}}
    )

    def __init__(self, server: str) -> None:
        self._call = InFlight(server, "rest")
        self.last_active = time.monotonic()
        self.asked: str | None = None

    def in_flight(self, server: str) -> list[InFlight]:
        return [self._call] if server == self._call.server else []

    async def ask(self, method: str, params: Any, call: InFlight | None = None) -> Any:
        self.asked = method
        raise RpcError(-32001, f"a REST call cannot answer {method}: nobody is there to ask")

    def deliver(self, message: Any, *, level: str | None = None, server: str | None = None) -> None:
        """REST callers hear no notifications."""


class _ClientGone(HTTPException):
    status_code = 499  # nginx's "client closed request": nobody reads it
    detail = "The client closed the request"


async def _unless_disconnected(
    receive: Receive, call: Callable[..., Awaitable[_T]], *args: Any
) -> _T:
    """``await call(*args)``, cancelled if the HTTP client hangs up meanwhile.

    The request body has been read, so the next ASGI message is ``http.disconnect``,
    which uvicorn sends when the connection closes (or after the response).

    Raises:
        _ClientGone: The client hung up; the call was cancelled.
    """
    result: list[_T] = []
    failure: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            result.append(await call(*args))
        except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group
            failure.append(exc)
        finally:
            tg.cancel_scope.cancel()
    if failure:
        raise failure[0]
    if not result:
        raise _ClientGone(detail=_ClientGone.detail)
    return result[0]


# ---------------------------------------------------------------------- the app


class _SharedSessionStore:
    """``/mcp``'s session records in the replicas' Valkey/Redis (a ``SessionStore``)."""

    def __init__(self, shared: SharedState) -> None:
        self._shared = shared

    async def get(self, key: str) -> bytes | None:
        value = await self._shared.client.get(self._shared.key(key))
        # The client does not decode responses: values come back as bytes.
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._shared.client.set(self._shared.key(key), value, px=max(1, int(ttl * 1000)))


def _mcp_replicas(shared: SharedState | None) -> dict[str, Any]:
    """How ``/mcp`` shares handshake-era sessions between replicas (not at all without one)."""
    if shared is None:
        return {}
    return {
        "state_keys": shared.keys.derive("mcp-sessions"),
        "sharing": SessionSharing(bus=shared, store=_SharedSessionStore(shared)),
    }


def create_app(  # noqa: PLR0915 - one closure per route keeps the funnel out of global state
    funnel: Funnel,
    settings: AppSettings,
    *,
    logs: LogBuffer | None = None,
    shared: SharedState | None = None,
    readiness: Readiness | None = None,
) -> Litestar:
    """Build the web app over a running funnel.

    Args:
        funnel: The funnel (entered) to serve.
        settings: Token, host checks and bounds.
        logs: The log view's buffer, installed by the caller before the funnel started
            (so it has the backends' first stderr lines). Default: a buffer of
            ``settings.log_capacity`` entries that the app installs while it runs.
        shared: The replicas' shared state (failed-auth counters; readiness pings it).
        readiness: The drain flag readiness reports (the CLI sets it on SIGTERM).

    Returns:
        The Litestar application (an ASGI app).
    """
    auth = InboundAuth(
        settings.api_token,
        limiter=RateLimiter(
            max_attempts=settings.failed_auth_attempts, window=settings.failed_auth_window
        ),
        shared=shared,
    )
    policy = OriginPolicy(
        bind_host=settings.bind_host,
        allowed_hosts=settings.public_hosts(),
        allowed_origins=settings.public_origins(),
    )
    readiness = Readiness() if readiness is None else readiness
    endpoint = McpHttpEndpoint(
        funnel,
        version=settings.version,
        instructions=settings.instructions,
        max_sessions=settings.mcp_max_sessions,
        session_idle_timeout=settings.mcp_session_idle_timeout,
        **_mcp_replicas(shared),
    )
    dashboard = _dashboard()
    own_logs = logs is None
    logs = LogBuffer(settings.log_capacity) if logs is None else logs

    @get("/api/health", opt={"auth": "open"}, tags=["status"], sync_to_thread=False)
    def health() -> Health:
        """Liveness and version (no token needed)."""
        return Health(status="ok", version=settings.version)

    @get("/api/health/live", opt={"auth": "open"}, tags=["status"], sync_to_thread=False)
    def live() -> Health:
        """Liveness for orchestrators: the process serves HTTP (no token needed)."""
        return Health(status="ok", version=settings.version)

    @get("/api/health/ready", opt={"auth": "open"}, tags=["status"])
    async def ready() -> Response[Ready]:
        """Readiness: config loaded, shared state reachable, not draining (else 503)."""
        reachable: Literal["ok", "unreachable", "off"] = "off"
        if shared is not None:
            reachable = "ok" if await shared.ping() else "unreachable"
        ok = reachable != "unreachable" and not readiness.draining
        answer = Ready(
            status="ready" if ok else "unavailable",
            version=settings.version,
            shared_state=reachable,
            draining=readiness.draining,
        )
        return Response(
            answer, status_code=200 if ok else 503, headers={"cache-control": "no-store"}
        )

    @get("/api/servers", tags=["servers"], sync_to_thread=False)
    def servers() -> ServerList:
        """Every backend: status, last error, tool count, auth state."""
        return ServerList(servers=_server_info(funnel), conflicts=_conflicts(funnel))

    @post(
        "/api/servers/{name:str}/reconnect", status_code=202, tags=["servers"], sync_to_thread=False
    )
    def reconnect(name: FromPath[str]) -> ReconnectAccepted:
        """Reconnect a backend now."""
        try:
            funnel.reconnect(name)
        except KeyError:
            raise NotFoundException(detail=f"No server named {name!r}") from None
        state = next(state for state in funnel.states() if state.name == name)
        return ReconnectAccepted(server=name, status=state.status)

    async def set_disabled(name: str, *, disabled: bool) -> ServerChanged:
        try:
            state = await funnel.set_disabled(name, disabled)
        except KeyError:
            raise NotFoundException(detail=f"No server named {name!r}") from None
        except ProxyError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        audit(
            "server.disabled" if disabled else "server.enabled",
            outcome="success",
            server=name,
            client="rest",
        )
        return ServerChanged(server=name, status=state.status)

    @post("/api/servers/{name:str}/disable", status_code=200, tags=["servers"])
    async def disable(name: FromPath[str]) -> ServerChanged:
        """Stop a backend and keep it stopped (until enabled; not written to the config file)."""
        return await set_disabled(name, disabled=True)

    @post("/api/servers/{name:str}/enable", status_code=200, tags=["servers"])
    async def enable(name: FromPath[str]) -> ServerChanged:
        """Start a backend disabled at run time again (409 if the config file disables it)."""
        return await set_disabled(name, disabled=False)

    @get("/api/logs", tags=["status"], sync_to_thread=False)
    def logs_route(
        server: Annotated[
            str | None, Parameter(description="only entries about this backend")
        ] = None,
        source: Annotated[
            Literal["stderr", "audit", "funnel"] | None, Parameter(description="only this source")
        ] = None,
        after: Annotated[int, Parameter(ge=0, description="only entries with a larger seq")] = 0,
        limit: Annotated[int, Parameter(ge=1, le=5000, description="at most this many")] = 500,
    ) -> LogList:
        """Recent log lines: backends' stderr, audit events and funnel's own log (newest last)."""
        return LogList(
            entries=logs.entries(server=server, source=source, after=after, limit=limit),
            last_seq=logs.last_seq,
            capacity=logs.capacity,
        )

    @get("/api/tools", tags=["tools"], sync_to_thread=False)
    def tools() -> ToolList:
        """The tool surface: every registered tool, exposed or not, and why; then hidden ones."""
        return ToolList(tools=_tool_infos(funnel), conflicts=_conflicts(funnel))

    @post("/api/tools/{name:str}/call", status_code=200, tags=["tools"])
    async def call(
        name: FromPath[str],
        data: Annotated[CallRequest, Body(title="Tool arguments")],
        request: Request[Any, Any, Any],
    ) -> CallResult:
        """Call an exposed tool with ``{"arguments": {...}}``; the answer is its MCP result.

        A client that hangs up before the answer cancels the call (the backend gets
        ``notifications/cancelled``).
        """
        call_origin.set("rest")
        try:
            entry = funnel.resolve_tool(name)
        except ToolNotFound:
            raise NotFoundException(detail=f"No exposed tool named {name!r}") from None
        except BackendUnavailable as exc:
            raise ServiceUnavailableException(detail=str(exc)) from None
        started = time.perf_counter()
        caller = _RestCaller(entry.server)
        try:
            async with funnel.client(caller):
                with tool_call_span(entry.name, protocol="http", headers=request.headers) as span:
                    raw = await _unless_disconnected(
                        request.receive, funnel.call_tool, entry, data.arguments
                    )
                    span.succeeded(raw)
        except ToolRateLimited as exc:
            raise TooManyRequestsException(
                detail=exc.message, headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
            ) from None
        except BackendUnavailable as exc:
            raise ServiceUnavailableException(detail=str(exc)) from None
        except DecodeError as exc:  # arguments funnel will not pass on (InvalidParams)
            raise ClientException(detail=str(exc), extra={"code": exc.code}) from None
        except RpcError as exc:
            raise HTTPException(
                status_code=502, detail=exc.message, extra={"code": exc.code}
            ) from None
        except RequestTimeout as exc:
            raise HTTPException(status_code=504, detail=str(exc)) from None
        except TransportError as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from None
        except AuthError as exc:
            raise _auth_http_error(exc, entry.server) from None
        if caller.asked is None and is_input_required(raw):
            caller.asked = "input_required"  # a 2026-07-28 backend asks in its result
        if caller.asked is not None:
            # Whatever the backend made of the refusal, the answer is that it needed a person.
            raise HTTPException(
                status_code=409,
                detail=(
                    f"tool {entry.name!r} needs interactive input ({caller.asked}), which a "
                    "REST call cannot give: call it from the dashboard, over /ws, or from an "
                    "MCP client that answers it"
                ),
                extra={"code": -32001, "needs": caller.asked},
            )
        duration = round((time.perf_counter() - started) * 1000, 1)
        return CallResult(result=from_raw(raw, dict[str, Any]), duration_ms=duration)

    @get("/api/oauth/authorize/{server:str}", tags=["oauth"], status_code=302)
    async def authorize(server: FromPath[str]) -> Redirect:
        """Start the authorization code flow for a backend: a redirect to its authorization server."""
        hooks = oauth_hooks(funnel)
        if hooks is None:
            raise HTTPException(
                status_code=501, detail="This funnel cannot run authorization flows"
            )
        try:
            url = await hooks.begin_authorization(server)
        except KeyError:
            raise NotFoundException(detail=f"No server named {server!r}") from None
        except ProxyError as exc:
            raise ClientException(detail=str(exc)) from None
        except AuthError as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from None
        return Redirect(
            str(url),
            status_code=302,
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    @get("/api/oauth/callback", opt={"auth": "open"}, tags=["oauth"], include_in_schema=True)
    async def callback(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Finish an authorization code flow (the authorization server redirects here)."""
        hooks = oauth_hooks(funnel)
        if hooks is None:
            return _error_page(
                501, "Authorization failed", "This funnel cannot complete authorization flows."
            )
        params = request.query_params
        state = params.get("state")
        if not state:
            return _error_page(400, "Authorization failed", "The request has no state parameter.")
        try:
            server = await hooks.complete_authorization(
                state=state,
                code=params.get("code"),
                iss=params.get("iss"),
                error=params.get("error"),
                error_description=params.get("error_description"),
            )
        except IssuerMismatch:
            # The response may be forged: show nothing of what it said.
            return _error_page(
                400,
                "Authorization failed",
                "The response did not come from the expected authorization server; it was discarded.",
            )
        except InvalidState as exc:
            # Used, expired, or replaced by a newer login asking for more: the backends
            # still waiting link to the login that is current now.
            waiting = [s.name for s in funnel.states() if s.status == "auth_required"]
            return _error_page(
                400,
                "Authorization failed",
                f"{exc}. The link may have been used already, expired, or been replaced by a "
                "newer login that asks for more permissions.",
                waiting=waiting,
            )
        except AuthError as exc:
            return _error_page(400, "Authorization failed", str(exc))
        body = _page(
            "funnel: authorized",
            f"<h1 class=ok>{html.escape(server)} is authorized</h1>"
            "<p>funnel is connecting to it now. You can close this window.</p>",
            script=_CLOSE_SCRIPT,
        )
        return Response(body, media_type=_HTML, headers=_page_headers(_CLOSE_SCRIPT))

    @get("/", opt={"auth": "page"}, include_in_schema=False, sync_to_thread=False)
    def index() -> Response[bytes]:
        """The dashboard."""
        return Response(
            dashboard,
            media_type=_HTML,
            headers={
                "content-security-policy": (
                    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; media-src 'self' data:; "
                    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
                ),
                "cache-control": "no-store",
                "referrer-policy": "no-referrer",
                "x-content-type-options": "nosniff",
                "x-frame-options": "DENY",
            },
        )

    @websocket("/ws")
    async def ws(socket: WebSocket[Any, Any, Any]) -> None:
        """Live events and tool execution (see the README for the protocol)."""
        await socket.accept()
        await WsConnection(
            socket,
            funnel,
            max_executions=settings.max_ws_executions,
            logs=logs,
            elicitation_timeout=settings.elicitation_timeout,
        ).run()

    @asgi("/mcp", copy_scope=False)
    async def mcp(scope: Scope, receive: Receive, send: Send) -> None:
        """The MCP streamable HTTP endpoint (funnel-proxy's, with the audit's origin set)."""
        call_origin.set("mcp")
        await endpoint(scope, receive, send)

    app = Litestar(
        route_handlers=[
            health,
            live,
            ready,
            servers,
            reconnect,
            disable,
            enable,
            logs_route,
            tools,
            call,
            authorize,
            callback,
            index,
            ws,
            mcp,
        ],
        middleware=[SecurityMiddleware(auth, policy, login_page=LOGIN_PAGE)],
        # A body msgspec cannot take (invalid UTF-8, nesting beyond its stack) is the
        # client's error, answered 400 like any other malformed body, never a 500.
        exception_handlers={UnicodeDecodeError: _bad_body, RecursionError: _bad_body},
        openapi_config=OpenAPIConfig(
            title="funnel-server",
            version=settings.version,
            description="REST API of funnel, the MCP proxy. Send Authorization: Bearer <token>.",
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
        on_startup=[logs.install] if own_logs else [],
        on_shutdown=[endpoint.close_all, logs.uninstall] if own_logs else [endpoint.close_all],
        # /mcp hears the other replicas' session changes and list changes while it runs.
        lifespan=[lambda _: endpoint.replicate()] if shared is not None else [],
        debug=False,
        # The app configures logging itself; Litestar's dictConfig would disable existing loggers.
        logging_config=None,
    )
    app.state.mcp_endpoint = endpoint
    app.state.logs = logs
    return app
