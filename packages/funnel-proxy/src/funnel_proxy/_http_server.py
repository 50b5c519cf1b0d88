"""The MCP streamable HTTP endpoint (server side), both protocol eras, as an ASGI app.

Theory of operation. Every POST carries one JSON-RPC message. Which era it belongs to
is decided per request:

- **Stateless (2026-07-28).** A request whose ``params._meta`` names a protocol
  version, or whose ``MCP-Protocol-Version`` header is a modern one, or
  ``server/discover``. The headers must mirror the body (``MCP-Protocol-Version``,
  ``Mcp-Method``, ``Mcp-Name``; else 400 ``HeaderMismatch`` -32020). Each request gets a
  fresh :class:`~funnel_proxy.McpServerSession` of its own, so two clients' request ids
  never meet. ``subscriptions/listen`` answers with an SSE stream that stays open and
  carries the list changes the client opted in to. No session ids are minted or read;
  GET and DELETE answer 405.
- **Handshake (2025-11-25 and earlier).** ``initialize`` creates a session and answers
  with ``Mcp-Session-Id``; later requests must carry it (400 without, 404 for an unknown
  or ended one). One ``McpServerSession`` per session; responses and progress are
  routed back to the POST they belong to (by request id and progress token), list
  changes to the session's GET stream when one is open. DELETE ends the session and
  everything still running in it.

A request answers ``application/json`` when its first outgoing message is its response,
and switches to ``text/event-stream`` when a notification (progress) comes first; the
final response ends the stream. The client going away cancels the request: without
resumable streams, nothing could ever receive its answer.

Garbage (not JSON, not JSON-RPC, a batch) gets a JSON-RPC error with HTTP 400 and the
session survives. Resources are bounded: body size, sessions (least recently used idle
ones are dropped first; idle sessions expire), requests in flight per session, one GET
stream per session, buffered notifications.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from msgspec import UNSET, Raw

from funnel_proxy import _telemetry
from funnel_proxy._dispatcher import McpServerSession
from funnel_proxy._errors import ProxyError
from funnel_proxy._funnel import Funnel
from funnel_proxy._http_rules import (
    HEADER_MISMATCH,
    SESSION_HEADER,
    VERSION_HEADER,
    classify,
    header_mismatch,
    param_header_mismatch,
    progress_token,
    stateless_refusal,
    status_for,
)
from funnel_transports import (
    HANDSHAKE_VERSIONS,
    MODERN_VERSIONS,
    DecodeError,
    ErrorObject,
    ErrorResponse,
    InvalidHeaderAnnotation,
    InvalidRequest,
    Message,
    Notification,
    Request,
    RequestId,
    Response,
    RpcError,
    decode_message,
    encode_message,
    from_raw,
    header_params,
    to_raw,
)

__all__ = ["McpHttpEndpoint", "Receive", "Scope", "Send"]

logger = logging.getLogger("funnel_proxy.mcp_http")

#: An ASGI connection scope.
Scope = Mapping[str, Any]
#: The ASGI ``receive`` callable.
Receive = Callable[[], Awaitable[Any]]
#: The ASGI ``send`` callable.
Send = Callable[[Any], Awaitable[None]]

_KEEPALIVE_SECONDS: Final = 15.0
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-store"),
    (b"x-accel-buffering", b"no"),
]


def _sse_event(message: Message) -> bytes:
    return b"event: message\ndata: " + encode_message(message) + b"\n\n"


def _error(
    request_id: RequestId | None, code: int, message: str, data: Any = None
) -> ErrorResponse:
    return ErrorResponse(
        id=request_id,
        error=ErrorObject(
            code=code, message=message, data=to_raw(data) if data is not None else UNSET
        ),
    )


@dataclass(eq=False)
class _Route:
    """Where one in-flight request's messages go."""

    channel: MemoryObjectSendStream[Message]
    progress_token: Any = None


@dataclass(eq=False)
class _HttpSession:
    """One handshake-era client session."""

    id: str
    mcp: McpServerSession | None = None
    routes: dict[RequestId, _Route] = field(default_factory=dict)
    by_token: dict[Any, _Route] = field(default_factory=dict)
    stream: MemoryObjectSendStream[Message] | None = None
    scopes: set[anyio.CancelScope] = field(default_factory=set)
    last_used: float = 0.0
    closed: bool = False

    @property
    def busy(self) -> bool:
        return bool(self.routes) or self.stream is not None

    async def route(self, message: Message) -> None:
        """Deliver a message the session's McpServerSession sent.

        Raises:
            RpcError: A request for the client (a backend's sampling, elicitation or
                roots) has no open stream to go on.
        """
        target: MemoryObjectSendStream[Message] | None = None
        if isinstance(message, Request):
            # A backend's request goes on the stream of the client's call that caused it,
            # else on the session's GET stream.
            related = self.mcp.related_request(message.id) if self.mcp is not None else None
            route = self.routes.get(related) if related is not None else None
            target = route.channel if route is not None else self.stream
            if target is None:
                raise RpcError(-32601, "the client has no open stream to receive requests on")
        elif isinstance(message, Response | ErrorResponse):
            route = self.routes.get(message.id) if message.id is not None else None
            target = route.channel if route else None
        elif isinstance(message, Notification):
            params = _notification_params(message)
            token = params.get("progressToken")
            subscription = (
                params.get("_meta", {}).get("io.modelcontextprotocol/subscriptionId")
                if isinstance(params.get("_meta"), dict)
                else None
            )
            if message.method == "notifications/progress" and token is not None:
                route = self.by_token.get(token)
                target = route.channel if route else None
            elif subscription is not None:
                route = self.routes.get(subscription)
                target = route.channel if route else None
            elif self.stream is not None:
                # List changes are repeated on the next change anyway: drop rather than block.
                try:
                    self.stream.send_nowait(message)
                except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    logger.debug("session %s: dropped %s", self.id[:8], message.method)
                return
        if target is None:
            return
        # A closed channel: the client went away and the request is being cancelled.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await target.send(message)

    def close(self) -> None:
        self.closed = True
        for scope in list(self.scopes):
            scope.cancel()
        if self.mcp is not None:
            self.mcp.detach()


def _notification_params(message: Notification) -> dict[str, Any]:
    if not isinstance(message.params, Raw):
        return {}
    try:
        return from_raw(message.params, dict[str, Any])
    except DecodeError:
        return {}


class _Http:
    """The response side of one ASGI HTTP exchange."""

    def __init__(self, send: Send, extra_headers: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self.extra_headers = extra_headers
        self.started = False
        self.finished = False

    async def respond(
        self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        all_headers = [*(headers or []), *self.extra_headers]
        all_headers.append((b"content-length", str(len(body)).encode()))
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": all_headers})
        self.finished = True
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def json(self, status: int, message: Message) -> None:
        await self.respond(
            status, encode_message(message), [(b"content-type", b"application/json")]
        )

    async def start_stream(self) -> None:
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_SSE_HEADERS, *self.extra_headers],
            }
        )

    async def chunk(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end_stream(self) -> None:
        if not self.finished:
            self.finished = True
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})


class McpHttpEndpoint:
    """The MCP streamable HTTP endpoint, an ASGI app, over a running :class:`Funnel`.

    Mount it at any path (funnel-server mounts it at ``/mcp``); it needs no framework.
    Authentication, Host/Origin checks and rate limits belong to the application around it.

    Args:
        funnel: The funnel to serve.
        version: funnel's version, announced as server info.
        instructions: Instructions for models, sent on ``initialize``/discover.
        max_sessions: Handshake-era sessions kept at most.
        session_idle_timeout: Seconds after which an unused session is forgotten.
        max_in_flight: Requests one session may have running at once.
        max_body: Largest POST body accepted, in bytes.
        clock: A monotonic clock (injectable for tests).
    """

    def __init__(
        self,
        funnel: Funnel,
        *,
        version: str,
        instructions: str | None = None,
        max_sessions: int = 256,
        session_idle_timeout: float = 3600.0,
        max_in_flight: int = 64,
        max_body: int = 4 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._funnel = funnel
        self._version = version
        self._instructions = instructions
        self._max_sessions = max_sessions
        self._idle_timeout = session_idle_timeout
        self._max_in_flight = max_in_flight
        self._max_body = max_body
        self._clock = clock
        self._sessions: OrderedDict[str, _HttpSession] = OrderedDict()

    @property
    def session_count(self) -> int:
        """How many handshake-era sessions are open."""
        return len(self._sessions)

    def close_all(self) -> None:
        """End every session (server shutdown)."""
        for session in list(self._sessions.values()):
            session.close()
        self._sessions.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP exchange."""
        # Field values without their optional surrounding whitespace (RFC 9110 §5.5):
        # not every HTTP parser strips it.
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1").strip(" \t")
            for name, value in scope.get("headers", ())
        }
        http = _Http(send, [])
        if _telemetry.enabled:  # session id and header trace context for the spans
            _telemetry.http_exchange(headers)
        method = scope.get("method", "GET")
        if method == "POST":
            await self._post(headers, receive, http)
        elif method == "GET":
            await self._get(headers, receive, http)
        elif method == "DELETE":
            await self._delete(headers, http)
        else:
            await http.respond(405, b"", [(b"allow", b"GET, POST, DELETE")])

    # ------------------------------------------------------------------ sessions

    def _session(self, session_id: str) -> _HttpSession | None:
        self._expire()
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_used = self._clock()
            self._sessions.move_to_end(session_id)
        return session

    def _expire(self) -> None:
        cutoff = self._clock() - self._idle_timeout
        for session in [s for s in self._sessions.values() if not s.busy and s.last_used < cutoff]:
            logger.info("MCP session %s… expired after being idle", session.id[:8])
            self._drop(session)

    def _drop(self, session: _HttpSession) -> None:
        session.close()
        self._sessions.pop(session.id, None)

    def _new_session(self) -> _HttpSession | None:
        self._expire()
        while len(self._sessions) >= self._max_sessions:
            idle = next((s for s in self._sessions.values() if not s.busy), None)
            if idle is None:
                return None
            logger.info("MCP session %s… dropped: too many sessions", idle.id[:8])
            self._drop(idle)
        session = _HttpSession(id=secrets.token_urlsafe(24), last_used=self._clock())
        session.mcp = McpServerSession(
            self._funnel, session.route, version=self._version, instructions=self._instructions
        )
        # A session can be asked things by backends (and hear their updates) as long as
        # it lives, not only while a stream is open.
        self._funnel.add_client(session.mcp)
        self._sessions[session.id] = session
        logger.info("MCP session %s… started (%d open)", session.id[:8], len(self._sessions))
        return session

    # ------------------------------------------------------------------ POST

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            if not isinstance(body, bytes):
                body = b""
            size += len(body)
            if size > self._max_body:
                return b""
            chunks.append(body)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _post(self, headers: dict[str, str], receive: Receive, http: _Http) -> None:
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            await http.json(415, _error(None, -32600, "Content-Type must be application/json"))
            return
        accept = headers.get("accept", "*/*").lower()
        if not any(kind in accept for kind in ("application/json", "text/event-stream", "*/*")):
            await http.json(
                406,
                _error(None, -32600, "Accept must allow application/json and text/event-stream"),
            )
            return
        body = await self._read_body(receive)
        if body is None:
            return
        if not body:
            await http.json(
                413, _error(None, -32600, f"Message larger than {self._max_body} bytes")
            )
            return
        try:
            message = decode_message(body)
        except DecodeError as exc:
            await http.json(400, _error(exc.request_id, exc.code, str(exc)))
            return
        if isinstance(message, list):
            await http.json(400, _error(None, InvalidRequest.code, "Batches are not supported"))
            return
        modern, version = classify(message, headers)
        if modern:
            await self._post_modern(message, version, headers, receive, http)
        else:
            await self._post_handshake(message, headers, receive, http)

    def _param_header_problem(
        self, params: Mapping[str, Any], headers: Mapping[str, str]
    ) -> str | None:
        """Why a call's ``Mcp-Param-*`` headers disagree with its arguments, if they do."""
        name = params.get("name")
        try:
            entry = self._funnel.resolve_tool(name) if isinstance(name, str) else None
        except ProxyError:
            return None  # an unknown tool is answered by the dispatcher
        if entry is None:
            return None
        try:
            specs = header_params(entry.definition.get("inputSchema"))
        except InvalidHeaderAnnotation:
            return None
        return param_header_mismatch(specs, params.get("arguments"), headers)

    async def _post_modern(
        self,
        message: Message,
        version: object,
        headers: Mapping[str, str],
        receive: Receive,
        http: _Http,
    ) -> None:
        if not isinstance(message, Request):
            await http.respond(202)  # nothing for a stateless server to do with it
            return
        try:
            params = (
                from_raw(message.params, dict[str, Any]) if isinstance(message.params, Raw) else {}
            )
        except DecodeError as exc:
            await http.json(400, _error(message.id, -32602, f"Invalid params: {exc}"))
            return
        refusal = stateless_refusal(message.method, params, version)
        if refusal is not None:
            status, code, text = refusal
            await http.json(status, _error(message.id, code, text))
            return
        problem = header_mismatch(message.method, params, version, headers)
        if problem is None and message.method == "tools/call":
            problem = self._param_header_problem(params, headers)
        if problem is not None:
            await http.json(400, _error(message.id, HEADER_MISMATCH, f"Header mismatch: {problem}"))
            return
        channel, inbox = anyio.create_memory_object_stream[Message](16)

        async def deliver(outgoing: Message) -> None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await channel.send(outgoing)

        mcp = McpServerSession(
            self._funnel, deliver, version=self._version, instructions=self._instructions
        )
        listen = message.method == "subscriptions/listen"
        await self._exchange(
            mcp=mcp,
            request=message,
            channel=channel,
            inbox=inbox,
            receive=receive,
            http=http,
            modern=True,
            watch=listen,
        )

    async def _post_handshake(
        self, message: Message, headers: Mapping[str, str], receive: Receive, http: _Http
    ) -> None:
        header_version = headers.get(VERSION_HEADER)
        if header_version is not None and header_version not in HANDSHAKE_VERSIONS:
            await http.json(
                400, _error(None, -32600, f"Unsupported MCP-Protocol-Version: {header_version}")
            )
            return
        if isinstance(message, Request) and message.method == "initialize":
            session = self._new_session()
            if session is None:
                await http.json(
                    503, _error(message.id, -32000, "Too many MCP sessions; try again later")
                )
                return
        else:
            session_id = headers.get(SESSION_HEADER)
            if not session_id:
                await http.json(
                    400,
                    _error(
                        getattr(message, "id", None),
                        -32600,
                        "Mcp-Session-Id header is required (send initialize first)",
                    ),
                )
                return
            found = self._session(session_id)
            if found is None:
                await http.json(
                    404,
                    _error(getattr(message, "id", None), -32600, "Unknown or ended MCP session"),
                )
                return
            session = found
        assert session.mcp is not None  # noqa: S101 - set when the session was made
        http.extra_headers.append((SESSION_HEADER.encode(), session.id.encode()))
        if not isinstance(message, Request):
            await session.mcp.handle(message)
            await http.respond(202)
            return
        if message.id in session.routes:
            await http.json(
                400, _error(message.id, -32600, f"Request id {message.id!r} is already in flight")
            )
            return
        if len(session.routes) >= self._max_in_flight:
            await http.json(
                429, _error(message.id, -32000, "Too many requests in flight in this session")
            )
            return
        channel, inbox = anyio.create_memory_object_stream[Message](16)
        route = _Route(channel, progress_token(message))
        session.routes[message.id] = route
        if route.progress_token is not None:
            session.by_token[route.progress_token] = route
        try:
            await self._exchange(
                mcp=session.mcp,
                request=message,
                channel=channel,
                inbox=inbox,
                receive=receive,
                http=http,
                modern=False,
                owner=session,
            )
        finally:
            session.routes.pop(message.id, None)
            if (
                route.progress_token is not None
                and session.by_token.get(route.progress_token) is route
            ):
                del session.by_token[route.progress_token]
            session.last_used = self._clock()

    async def _exchange(
        self,
        *,
        mcp: McpServerSession,
        request: Request,
        channel: MemoryObjectSendStream[Message],
        inbox: MemoryObjectReceiveStream[Message],
        receive: Receive,
        http: _Http,
        modern: bool,
        watch: bool = False,
        owner: _HttpSession | None = None,
    ) -> None:
        """Run one request and write what it sends: JSON, or SSE once a notification comes first."""

        async def work() -> None:
            async with channel:
                try:
                    await mcp.handle(request)
                except Exception:
                    logger.exception("internal error handling %s", request.method)
                    await channel.send(_error(request.id, -32603, "Internal error"))

        with anyio.CancelScope() as scope:
            if owner is not None:
                owner.scopes.add(scope)
            try:
                async with anyio.create_task_group() as tg, inbox:
                    tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                    if watch:
                        tg.start_soon(mcp.watch)
                    tg.start_soon(work)
                    await self._write(inbox, http, request, modern=modern, keepalive=watch)
                    tg.cancel_scope.cancel()
            finally:
                if owner is not None:
                    owner.scopes.discard(scope)
        if scope.cancelled_caught or not http.finished:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await _finish(http, request, closed=owner is not None and owner.closed)

    async def _write(
        self,
        inbox: MemoryObjectReceiveStream[Message],
        http: _Http,
        request: Request,
        *,
        modern: bool,
        keepalive: bool,
    ) -> None:
        streaming = False
        while True:
            try:
                if keepalive and streaming:
                    with anyio.move_on_after(_KEEPALIVE_SECONDS) as wait:
                        message = await inbox.receive()
                    if wait.cancelled_caught:
                        await http.chunk(b": keepalive\n\n")
                        continue
                else:
                    message = await inbox.receive()
            except anyio.EndOfStream:
                # Cancelled (notifications/cancelled): MCP sends no response.
                if not streaming:
                    await http.start_stream()
                await http.end_stream()
                return
            final = isinstance(message, Response | ErrorResponse) and message.id == request.id
            if final and not streaming:
                await http.json(status_for(message, modern=modern), message)
                return
            if not streaming:
                streaming = True
                await http.start_stream()
            await http.chunk(_sse_event(message))
            if final:
                await http.end_stream()
                return

    # ------------------------------------------------------------------ GET and DELETE

    async def _get(self, headers: Mapping[str, str], receive: Receive, http: _Http) -> None:
        if headers.get(VERSION_HEADER) in MODERN_VERSIONS or not headers.get(SESSION_HEADER):
            # Stateless era: no standalone stream; list changes come on subscriptions/listen.
            await http.respond(405, b"", [(b"allow", b"POST")])
            return
        if "text/event-stream" not in headers.get("accept", "") and "*/*" not in headers.get(
            "accept", ""
        ):
            await http.respond(406)
            return
        session = self._session(headers[SESSION_HEADER])
        if session is None:
            await http.json(404, _error(None, -32600, "Unknown or ended MCP session"))
            return
        if session.stream is not None:
            await http.json(409, _error(None, -32600, "This session already has a GET stream"))
            return
        assert session.mcp is not None  # noqa: S101 - set when the session was made
        http.extra_headers.append((SESSION_HEADER.encode(), session.id.encode()))
        stream, inbox = anyio.create_memory_object_stream[Message](32)
        session.stream = stream
        with anyio.CancelScope() as scope:
            session.scopes.add(scope)
            try:
                async with anyio.create_task_group() as tg, inbox, stream:
                    tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                    tg.start_soon(session.mcp.watch)
                    await http.start_stream()
                    while True:
                        with anyio.move_on_after(_KEEPALIVE_SECONDS) as wait:
                            message = await inbox.receive()
                        if wait.cancelled_caught:
                            await http.chunk(b": keepalive\n\n")
                        else:
                            await http.chunk(_sse_event(message))
            finally:
                session.scopes.discard(scope)
                session.stream = None
                session.last_used = self._clock()
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    await http.end_stream()

    async def _delete(self, headers: Mapping[str, str], http: _Http) -> None:
        session_id = headers.get(SESSION_HEADER)
        if headers.get(VERSION_HEADER) in MODERN_VERSIONS or not session_id:
            await http.respond(405, b"", [(b"allow", b"POST")])
            return
        session = self._session(session_id)
        if session is None:
            await http.json(404, _error(None, -32600, "Unknown or ended MCP session"))
            return
        self._drop(session)
        logger.info("MCP session %s… ended by the client", session.id[:8])
        await http.respond(204)


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _finish(http: _Http, request: Request, *, closed: bool) -> None:
    """End a response whose request was cancelled before it was answered."""
    try:
        if not http.started:
            if closed:
                await http.json(404, _error(request.id, -32600, "The MCP session was ended"))
            else:
                await http.start_stream()
                await http.end_stream()
        else:
            await http.end_stream()
    except OSError:
        pass  # the client is gone
