"""One backend MCP server, kept connected by its own supervisor task.

Theory of operation: :meth:`Backend.run` loops for the funnel's lifetime. Each turn it
builds a fresh transport, opens a :class:`~funnel_transports.ClientSession`, lists the
server's tools, prompts, resources and resource templates (every page), publishes them,
and then waits until the session ends (the process exits, the connection drops) or a
reconnect is asked for. It then waits the next :class:`~funnel_transports.Backoff`
delay and tries again, also after a failed first connect. The attempts are reset by
every successful connect. Transient failures (a crash, a refused connection, a timeout)
are retried for as long as funnel runs: once the policy's attempts are used up, at its
longest delay. ``failed`` is kept for what a person must fix (a command that does not
exist, no protocol version in common, a transport funnel cannot build) and says so.

A session the server no longer knows (HTTP 404, or 400 naming the session) reconnects at
once, and the request that found out is sent again, once: the server refused it for its
session, so it never ran.

A backend's ``list_changed`` notification makes it re-list that kind and publish the new
list; the funnel coalesces publications into one downstream notification. Its requests to
funnel (sampling, elicitation, roots) go to the funnel's router, which picks the client
that answers; its log messages and resource updates go to the funnel too.

Statuses: ``connecting`` (first attempt), ``connected``, ``reconnecting`` (waiting to
retry or retrying), ``auth_required`` (an HTTP server wants authorization; ``error``
says why: a login is needed, or the logins of one challenge cycle are used up and the
server still refuses), ``failed`` (gave up), ``disabled`` (configured off, or its
transport not available).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeAlias

import anyio
import httpx
from msgspec import Raw

from funnel_auth import (
    AuthError,
    AuthorizationRequired,
    FlowRegistry,
    InsufficientScope,
    NoAuth,
    create_auth,
    redact,
)
from funnel_proxy import _telemetry
from funnel_proxy._errors import BackendUnavailable
from funnel_proxy._models import (
    FunnelConfig,
    ServerConfig,
    SseTransportConfig,
    StdioTransportConfig,
    StreamableHttpTransportConfig,
    WebSocketTransportConfig,
)
from funnel_tokenstore import TokenStore
from funnel_transports import (
    AuthRequired,
    ClientSession,
    ConnectError,
    Implementation,
    InvalidHeaderAnnotation,
    NegotiationError,
    Notification,
    ParamHeader,
    ProgressHandler,
    Request,
    RpcError,
    SessionExpired,
    Transport,
    TransportError,
    header_params,
)
from funnel_transports import SseTransport as SseClientTransport
from funnel_transports import StdioTransport as StdioClientTransport
from funnel_transports import StreamableHttpTransport as HttpClientTransport
from funnel_transports import WebSocketTransport as WebSocketClientTransport

__all__ = ["Backend", "BackendState", "BackendStatus"]

logger = logging.getLogger("funnel_proxy.backend")

BackendStatus: TypeAlias = Literal[
    "connecting", "connected", "reconnecting", "auth_required", "failed", "disabled"
]

#: The lists a backend publishes: result key → (list method, capability).
LISTS: dict[str, tuple[str, str]] = {
    "tools": ("tools/list", "tools"),
    "prompts": ("prompts/list", "prompts"),
    "resources": ("resources/list", "resources"),
    "resourceTemplates": ("resources/templates/list", "resources"),
}
_LIST_CHANGED: dict[str, tuple[str, ...]] = {
    "notifications/tools/list_changed": ("tools",),
    "notifications/prompts/list_changed": ("prompts",),
    "notifications/resources/list_changed": ("resources", "resourceTemplates"),
}


@dataclass(frozen=True, slots=True)
class BackendState:
    """A snapshot of one backend, safe to hand to the web app or a status table.

    Attributes:
        name: The server's name.
        transport: The transport type (``stdio``, ``streamable-http``, ``sse``, ``websocket``).
        status: The status, see the module documentation.
        error: The last error, when there is one (never contains a secret).
        since: When the status last changed (seconds since the epoch).
        connected_at: When the current connection was made.
        attempt: Reconnect attempts since the last successful connect.
        next_retry_in: Seconds until the next attempt, while waiting for one.
        protocol_version: The negotiated MCP version while connected.
        lists: The backend's tools, prompts, resources and resource templates.
        authorize_url: Where a person can authorize this backend (``auth_required``).
    """

    name: str
    transport: str
    status: BackendStatus
    error: str | None = None
    since: float = 0.0
    connected_at: float | None = None
    attempt: int = 0
    next_retry_in: float | None = None
    protocol_version: str | None = None
    lists: Mapping[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    authorize_url: str | None = None

    @property
    def tools(self) -> tuple[dict[str, Any], ...]:
        """The backend's tools as it listed them."""
        return self.lists.get("tools", ())


Listener: TypeAlias = Callable[["BackendState", frozenset[str]], None]
"""Called with the new state and which lists changed (empty: status only)."""
ServerRequestHandler: TypeAlias = Callable[[str, Request], Awaitable[Any]]
"""Answers a request a backend sent to funnel (``server name``, ``request``)."""
NotificationSink: TypeAlias = Callable[[str, Notification], None]
"""Takes a backend's notification that is for clients (logging, resource updates)."""

#: What funnel tells backends it can do: it relays each to a client that can.
CLIENT_CAPABILITIES: dict[str, Any] = {
    "roots": {"listChanged": True},
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
    # Task-augmented sampling and elicitation are answered with the result itself (see
    # Funnel._for_client): a backend's tools that ask that way are offered too.
    "tasks": {"requests": {"sampling": {"createMessage": {}}, "elicitation": {"create": {}}}},
}
#: Seconds a call waits for a backend that is (re)connecting before it fails.
_ON_DEMAND_WAIT = 2.0
_FOR_CLIENTS: frozenset[str] = frozenset(
    {
        "notifications/message",
        "notifications/resources/updated",
        "notifications/tasks/status",
        "notifications/tasks",
    }
)


def _handshake_headers(
    url: str, static: Mapping[str, str], auth: httpx.Auth
) -> Callable[[], Awaitable[Mapping[str, str]]]:
    """Headers for a WebSocket handshake: the static ones plus what ``auth`` would add.

    The provider's own ``httpx`` flow runs over a placeholder request, so the handshake
    gets exactly the credentials (refreshed when due) an HTTP request would.
    """
    http_url = "http" + url[2:] if url.startswith("ws") else url

    async def headers() -> Mapping[str, str]:
        flow = auth.async_auth_flow(httpx.Request("GET", http_url))
        try:
            request = await flow.__anext__()
        finally:
            await flow.aclose()
        out = dict(static)
        if "authorization" in request.headers:
            out["Authorization"] = request.headers["authorization"]
        return out

    return headers


def _needs_a_person(exc: ConnectError) -> bool:
    text = str(exc)
    return "command not found" in text or "not executable" in text


def transport_type(server: ServerConfig) -> str:
    """The ``type`` tag of a server's transport (``stdio``, ``streamable-http``, …)."""
    return str(server.transport.__struct_config__.tag)


class Backend:
    """Supervises the connection to one backend server.

    Args:
        server: The server's configuration.
        config: The whole configuration (reconnect policy, env passthrough, secrets).
        environ: The environment ``${VAR}`` references and passthrough read from.
        base_dir: Directory relative paths in the config are resolved against.
        listener: Told about every state change.
        client_info: Name and version announced to the server.
        connect_timeout: Seconds one connect attempt (start, negotiate, list) may take.
        token_store: Where OAuth tokens persist (HTTP backends with ``auth``).
        flows: The registry of pending authorization code flows the callback completes.
        redirect_uri: The OAuth redirect URI unless the server's config sets one (an
            ``oauth2-code`` backend needs one of the two).
        authorize_link: Where a person starts this backend's login, given its name (the
            application's route); without it states carry no authorize URL.
    """

    def __init__(
        self,
        server: ServerConfig,
        config: FunnelConfig,
        *,
        environ: Mapping[str, str],
        base_dir: Path,
        listener: Listener,
        client_info: Implementation,
        connect_timeout: float = 30.0,
        token_store: TokenStore | None = None,
        flows: FlowRegistry | None = None,
        redirect_uri: str | None = None,
        authorize_link: Callable[[str], str] | None = None,
        server_requests: ServerRequestHandler | None = None,
        notifications: NotificationSink | None = None,
    ) -> None:
        self._server = server
        self._config = config
        self._authorize_link = authorize_link
        self._environ = environ
        self._base_dir = base_dir
        self._listener = listener
        self._client_info = client_info
        self._connect_timeout = connect_timeout
        self._session: ClientSession | None = None
        self._wake = anyio.Event()
        self._token_store = token_store
        self._flows = flows
        self._redirect_uri = redirect_uri
        self._auth: httpx.Auth | None = None
        self._server_requests = server_requests
        self._notifications = notifications
        self._connected = anyio.Event()
        self._relist: set[str] = set()
        self._relist_wake = anyio.Event()
        self._permanent = False
        self._expired = False
        self._transport: Transport | None = None
        self._retry_now = anyio.Event()
        self._last_on_demand = -math.inf
        self._state = BackendState(
            name=server.name,
            transport=transport_type(server),
            status="disabled" if server.disabled else "connecting",
            since=time.time(),
        )
        _telemetry.track_backend(self)

    @property
    def name(self) -> str:
        """The server's name."""
        return self._server.name

    @property
    def authorize_link(self) -> str | None:
        """Where a person starts this backend's login (the application's route), if known."""
        return self._authorize_link(self.name) if self._authorize_link is not None else None

    @property
    def state(self) -> BackendState:
        """The current state snapshot."""
        return self._state

    @property
    def auth(self) -> httpx.Auth | None:
        """The ``httpx.Auth`` of an HTTP backend (built on first connect), else ``None``."""
        return self._auth

    def reconnect(self) -> None:
        """Drop the current connection (if any) and connect again now."""
        self._wake.set()

    async def wait_replaced(self, previous: ClientSession | None, timeout: float) -> None:
        """After a login: wait (at most ``timeout``) for the reconnect it asked for.

        Returns once a session other than ``previous`` is live, or at once when no
        reconnect is pending and ``previous`` still serves (tokens are read per request).
        """
        with anyio.move_on_after(timeout):
            while True:
                session = self.session
                if session is not None and session is not previous:
                    return
                if session is not None and not self._wake.is_set():
                    return
                if session is None:
                    await self._connected.wait()
                else:
                    await session.wait_closed()  # the supervisor is closing it

    @property
    def session(self) -> ClientSession | None:
        """The live session while connected."""
        session = self._session
        return session if session is not None and not session.closed else None

    @property
    def hot_session(self) -> ClientSession | None:
        """The live session when it takes hot-path calls (:attr:`ClientSession.takes_hot_calls`)."""
        session = self._session
        return session if session is not None and session.takes_hot_calls else None

    @property
    def request_timeout(self) -> float | None:
        """Seconds a request may take: the transport's ``timeout``, else 60."""
        return getattr(self._server.transport, "timeout", None) or 60.0

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        on_progress: ProgressHandler | None = None,
        timeout: float | None = None,
    ) -> Raw:
        """Forward a request to the backend, within its deadline (see :meth:`_request`)."""
        if _telemetry.enabled:  # a CLIENT span, trace context in params._meta
            return await _telemetry.backend_request(
                self,
                getattr(self._server.transport, "url", None),
                method,
                params,
                lambda traced: self._request(method, traced, on_progress, timeout),
            )
        return await self._request(method, params, on_progress, timeout)

    async def _request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        on_progress: ProgressHandler | None,
        timeout: float | None,
    ) -> Raw:
        """Forward a request to the backend, within its deadline.

        A request the server refused because it no longer knows the session is sent
        again, once, on the new session (bounded by the same deadline).

        Raises:
            BackendUnavailable: The backend is not connected (the message says why).
            RpcError: The backend answered with an error.
            TransportError: The call failed on the way (connection lost, timeout).
        """
        seconds = timeout if timeout is not None else self.request_timeout
        if self.session is None and self._state.status in (
            "connecting",
            "reconnecting",
            "connected",
        ):
            await self._wait_for_connection(min(seconds or math.inf, _ON_DEMAND_WAIT))
        session = self._live_session()
        try:
            return await session.request(method, params, on_progress=on_progress, timeout=seconds)
        except SessionExpired:
            logger.info("[%s] session expired during %s; retrying on a new one", self.name, method)
        with anyio.move_on_after(seconds or math.inf):
            while (fresh := self.session) is None or fresh is session:
                await self._connected.wait()
        return await self._live_session().request(
            method, params, on_progress=on_progress, timeout=seconds
        )

    async def _wait_for_connection(self, seconds: float) -> None:
        """A call for a backend that is coming back waits briefly instead of failing.

        While waiting out a backoff delay, the supervisor is woken to try at once (at most
        once a second, so a stream of calls to a dead server is no reconnect storm).
        """
        now = time.monotonic()
        if self._state.status == "reconnecting" and now - self._last_on_demand >= 1.0:
            self._last_on_demand = now
            self._retry_now.set()
        with anyio.move_on_after(seconds):
            await self._connected.wait()

    def _live_session(self) -> ClientSession:
        session = self.session
        if session is None:
            raise BackendUnavailable(self.name, self._state.status, self._state.error)
        return session

    # ------------------------------------------------------------------ supervision

    async def run(self) -> None:
        """Keep the backend connected until cancelled."""
        if self._server.disabled:
            self._publish(status="disabled", error="disabled in the configuration")
            return
        delays = self._retry_delays()
        attempt = 0
        while True:
            self._wake = anyio.Event()
            self._permanent = False
            connected = await self._connect_once()
            if connected:
                attempt = 0
                delays = self._retry_delays()
            if self._state.status == "auth_required":
                await self._wake.wait()
                continue
            if self._expired:
                self._expired = False
                continue  # the server forgot the session: a new one at once
            delay = None if self._permanent else next(delays, None)
            if delay is None:
                error = self._state.error or "unknown error"
                if not self._permanent:
                    error = f"{error} (automatic reconnection is off: reconnect it by hand)"
                if self._state.status != "failed":
                    self._publish(status="failed", error=error, next_retry_in=None)
                    logger.warning("[%s] failed: %s", self.name, error)
                await self._wake.wait()
                delays = self._retry_delays()
                attempt = 0
                continue
            attempt += 1
            self._publish(
                status="reconnecting", attempt=attempt, next_retry_in=delay, error=self._state.error
            )
            logger.info("[%s] reconnecting in %.1f s (attempt %d)", self.name, delay, attempt)
            self._retry_now = anyio.Event()
            with anyio.move_on_after(delay):
                async with anyio.create_task_group() as tg:

                    async def either(event: anyio.Event) -> None:
                        await event.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(either, self._wake)
                    tg.start_soon(either, self._retry_now)

    def _retry_delays(self) -> Iterator[float]:
        """A fresh sequence of reconnect delays (none when autoReconnect is off)."""
        policy = self._config.auto_reconnect
        if not policy.enabled:
            return iter(())
        backoff = policy.backoff()
        # Transient failures are retried for as long as funnel runs: once the policy's
        # attempts are used up, at its longest delay.
        return itertools.chain(
            backoff.delays(),
            replace(backoff, initial=backoff.max_delay, max_attempts=None).delays(),
        )

    async def _connect_once(self) -> bool:
        """One connection's whole life. Returns whether it got connected at all."""
        try:
            transport = self._transport = self._make_transport()
        except BackendUnavailable as exc:
            self._permanent = True
            self._publish(status="failed", error=exc.reason)
            return False
        connected = False
        try:
            session = ClientSession(
                transport,
                client_info=self._client_info,
                capabilities=CLIENT_CAPABILITIES if self._server_requests else None,
                request_timeout=self.request_timeout,
                connect_timeout=self._connect_timeout,
                notification_handler=self._on_notification,
                request_handler=self._on_server_request if self._server_requests else None,
            )
            async with transport, session:
                try:
                    with anyio.fail_after(self._connect_timeout):
                        lists = await self._list_all(session)
                    self._session = session
                    self._connected.set()
                    connected = True
                    self._publish(
                        status="connected",
                        error=None,
                        connected_at=time.time(),
                        attempt=0,
                        next_retry_in=None,
                        protocol_version=session.protocol_version,
                        lists=lists,
                        changed=frozenset(lists),
                    )
                    logger.info("[%s] connected: %d tools", self.name, len(lists.get("tools", ())))
                    await self._watch(session)
                finally:
                    self._session = None
                    self._connected = anyio.Event()
        except AuthorizationRequired:
            self._publish(
                status="auth_required",
                error="authorization required: open the authorize URL",
                authorize_url=self.authorize_link,
                changed=frozenset(LISTS),
            )
            # Worded so that credential redaction leaves it alone ("authorization: ..."
            # reads as a header to it).
            logger.warning(
                "[%s] needs a login: %s",
                self.name,
                f"open {self.authorize_link}"
                if self.authorize_link
                else "start it with Funnel.begin_authorization",
            )
            return connected
        except InsufficientScope as exc:
            # The cap of authorizations per challenge cycle: reconnecting would only ask
            # for more logins. It waits for a person (a login, a reconnect by hand).
            reason = (
                f"authorization failed: {redact(str(exc))}. Log in with an account that "
                "has the permissions the server asks for, or check its configuration"
            )
            self._publish(
                status="auth_required",
                error=reason,
                authorize_url=self.authorize_link,
                lists={},
                changed=frozenset(LISTS),
            )
            logger.warning("[%s] %s", self.name, reason)
            return connected
        except AuthError as exc:
            self._publish(status=self._state.status, error=redact(str(exc)))
            return connected
        except AuthRequired as exc:
            self._publish(
                status="auth_required", error=str(exc), lists={}, changed=frozenset(LISTS)
            )
            return connected
        except SessionExpired as exc:
            self._expired = True
            self._publish(status=self._state.status, error=str(exc))
        except (NegotiationError, ConnectError) as exc:
            # No version in common, a command that is not there: retrying cannot help.
            self._permanent = isinstance(exc, NegotiationError) or _needs_a_person(exc)
            self._publish(status=self._state.status, error=str(exc))
        except (TransportError, TimeoutError, OSError) as exc:
            error = "timed out connecting" if isinstance(exc, TimeoutError) else str(exc)
            self._publish(status=self._state.status, error=error)
        if connected:
            # The tools of a disconnected backend leave the surface until it is back; their
            # names are remembered so that calls say why they fail.
            self._publish(status="reconnecting", changed=frozenset(LISTS), error=self._state.error)
        return connected

    async def _watch(self, session: ClientSession) -> None:
        async with anyio.create_task_group() as tg:

            async def on_wake() -> None:
                await self._wake.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(on_wake)
            tg.start_soon(self._relister, session)
            reason = await session.wait_closed()
            tg.cancel_scope.cancel()
        # Never "connected" without a session: the status changes the moment it ends.
        if self._wake.is_set():
            self._publish(status="reconnecting", error="reconnect requested")
        elif reason is not None:
            if isinstance(reason, SessionExpired):
                self._expired = True
            self._publish(status="reconnecting", error=str(reason))
            logger.warning("[%s] disconnected: %s", self.name, reason)

    async def _relister(self, session: ClientSession) -> None:
        """Re-list what the server said changed; a burst of notices is one re-list."""
        while True:
            await self._relist_wake.wait()
            self._relist_wake = anyio.Event()
            keys, self._relist = sorted(self._relist), set()
            lists = dict(self._state.lists)
            try:
                for key in keys:
                    lists[key] = await self._list(session, key)
            except TransportError as exc:
                logger.info("[%s] re-listing %s failed: %s", self.name, ", ".join(keys), exc)
                continue
            self._publish(status=self._state.status, lists=lists, changed=frozenset(keys))

    async def _list_all(self, session: ClientSession) -> dict[str, tuple[dict[str, Any], ...]]:
        lists: dict[str, tuple[dict[str, Any], ...]] = {}
        for key in LISTS:
            lists[key] = await self._list(session, key)
        return lists

    async def _list(self, session: ClientSession, key: str) -> tuple[dict[str, Any], ...]:
        method, capability = LISTS[key]
        if capability not in session.server_capabilities:
            return ()
        try:
            items = tuple(await session.list_all(method, key))
            return self._with_valid_headers(items) if key == "tools" else items
        except RpcError as exc:
            # A server may declare a capability and still not implement every list.
            logger.info("[%s] %s failed: %s", self.name, method, exc)
            return ()

    def _with_valid_headers(self, tools: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        """Leave out tools whose ``x-mcp-header`` annotations are invalid (streamable HTTP).

        The transport is told which parameters to mirror into ``Mcp-Param-*`` headers.
        """
        set_headers = getattr(self._transport, "set_tool_headers", None)
        if set_headers is None:
            return tools
        kept: list[dict[str, Any]] = []
        mirrored: dict[str, tuple[ParamHeader, ...]] = {}
        for tool in tools:
            try:
                specs = header_params(tool.get("inputSchema"))
            except InvalidHeaderAnnotation as exc:
                logger.warning("[%s] left out tool %r: %s", self.name, tool.get("name"), exc)
                continue
            kept.append(tool)
            if specs and isinstance(tool.get("name"), str):
                mirrored[tool["name"]] = specs
        set_headers(mirrored)
        return tuple(kept)

    def _on_notification(self, message: Notification) -> None:
        keys = _LIST_CHANGED.get(message.method)
        if keys:
            self._relist.update(keys)
            self._relist_wake.set()
        elif message.method in _FOR_CLIENTS and self._notifications is not None:
            self._notifications(self.name, message)
        else:
            logger.debug("[%s] ignored notification %s", self.name, message.method)

    async def _on_server_request(self, request: Request) -> Any:
        assert self._server_requests is not None  # noqa: S101 - only installed with one
        return await self._server_requests(self.name, request)

    # ------------------------------------------------------------------ transports

    def _make_transport(self) -> Transport:
        transport = self._server.transport
        if isinstance(transport, StdioTransportConfig):
            from funnel_proxy._environment import build_server_env

            env = build_server_env(
                self._server, self._config, environ=self._environ, base_dir=self._base_dir
            )
            return StdioClientTransport(
                transport.command,
                transport.args,
                env=env,
                cwd=transport.cwd or os.fspath(self._base_dir),
                name=self.name,
            )
        auth = self._http_auth(transport.url)
        if isinstance(transport, StreamableHttpTransportConfig):
            return HttpClientTransport(
                transport.url,
                name=self.name,
                headers=transport.headers,
                auth=auth,
                connect_timeout=transport.timeout,
                backoff=transport.reconnect.backoff() if transport.reconnect else None,
            )
        if isinstance(transport, SseTransportConfig):
            return SseClientTransport(
                transport.url,
                name=self.name,
                headers=transport.headers,
                auth=auth,
                connect_timeout=transport.timeout,
            )
        if isinstance(transport, WebSocketTransportConfig):
            return WebSocketClientTransport(
                transport.url,
                name=self.name,
                headers=_handshake_headers(transport.url, transport.headers, auth),
                connect_timeout=transport.timeout,
            )
        raise BackendUnavailable(
            self.name, "failed", f"unknown transport {transport_type(self._server)}"
        )

    def _http_auth(self, url: str) -> httpx.Auth:
        # One provider for the backend's lifetime: it keeps tokens and pending flows
        # across reconnects.
        if self._auth is None:
            self._auth = create_auth(
                self._server.auth or NoAuth(),
                server_name=self.name,
                server_url=url,
                store=self._token_store,
                flows=self._flows,
                redirect_uri=self._redirect_uri,
            )
        return self._auth

    # ------------------------------------------------------------------ state

    def _publish(
        self, *, status: BackendStatus, changed: frozenset[str] = frozenset(), **fields: Any
    ) -> None:
        previous = self._state
        new = replace(previous, status=status, **fields)
        if new.status != previous.status:
            new = replace(new, since=time.time())
        self._state = new
        self._listener(new, changed)
