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

Replicas. Given a state key (``state_keys``), a handshake session's id is its sealed
:class:`~funnel_proxy._session_ticket.SessionTicket`: a replica that does not hold the
session rebuilds it from the id alone (replaying ``initialize``), so a round-robin load
balancer needs no stickiness and a replica's death loses only its calls in flight. An id
that does not open (another deployment's, tampered, expired) is a 404 like an unknown
one. Sessions then end by DELETE or when their lifetime (``session_lifetime``) runs out;
idle expiry and the session limit only drop a replica's local copy. With ``sharing``
(:class:`~funnel_proxy.SessionSharing`: a store and a bus), the state that changes after
``initialize`` (log level, resource subscriptions, ended) is written to the store and
announced on the bus, so every replica holding the session applies it and one that
rebuilds it later reads it; list changes are announced too, for GET and
``subscriptions/listen`` streams on other replicas. :meth:`McpHttpEndpoint.replicate`
runs the bus side. A backend's request to the client during a call still goes on that
call's POST stream, which the replica handling the POST holds; with ``sharing`` its id
names that replica, so the client's answer, a POST the balancer may hand to any
replica, is passed on to it over the bus.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from msgspec import UNSET, Raw

from funnel_proxy import _telemetry
from funnel_proxy._dispatcher import _LIST_NOTIFICATIONS, McpServerSession
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
from funnel_proxy._session_sharing import (
    SESSION_CHANNEL,
    BusMessage,
    SessionSharing,
    decode_bus,
    encode_bus,
)
from funnel_proxy._session_ticket import (
    Sealer,
    SessionRecord,
    SessionTicket,
    TicketTooLarge,
    open_record,
    open_ticket,
    seal_record,
    seal_ticket,
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
#: Methods whose success changes a session's shared record.
_RECORDED: Final = frozenset({"logging/setLevel", "resources/subscribe", "resources/unsubscribe"})
_UNKNOWN: Final = "Unknown or ended MCP session"
#: Sealed sessions ended here remembered at most (each until its id expires).
_MAX_ENDED: Final = 4096
#: Separates the replica from funnel's own id in a request funnel sends a client.
_ASK_MARK: Final = "~"


class _Unavailable(Exception):
    """A session cannot be served here now (answered with ``status``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
    ticket: SessionTicket | None = None
    record: SessionRecord = field(default_factory=SessionRecord)

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

    def route_related(self, message: Notification, related: RequestId) -> bool:
        """Put a notification on the POST stream of the client's call ``related``.

        A backend's log message (or task notice) during a call goes where the client
        reads that call's answer. Returns ``False`` when that call has no open stream
        (the caller then uses the GET stream); a full stream drops it rather than block.
        """
        route = self.routes.get(related)
        if route is None:
            return False
        try:
            route.channel.send_nowait(message)
        except anyio.WouldBlock:
            logger.debug("session %s: dropped %s", self.id[:8], message.method)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        return True

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
        state_keys: Seal session ids with these keys (``StateKeys.derive("mcp-sessions")``)
            so that any replica given the same keys serves any session; ``None`` (one
            process): random ids.
        sharing: The replicas' store and bus (needs ``state_keys``): the log level,
            subscriptions and DELETE reach every replica, and so do list changes while
            :meth:`replicate` runs.
        session_lifetime: Seconds a sealed session id is accepted after ``initialize``.
        wall_clock: Wall-clock seconds (sealed expiries are compared across replicas).

    Raises:
        ValueError: ``sharing`` without ``state_keys``, or a replica id with ``~``.
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
        state_keys: Sealer | None = None,
        sharing: SessionSharing | None = None,
        session_lifetime: float = 86400.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if sharing is not None and state_keys is None:
            raise ValueError("sharing sessions between replicas needs state_keys")
        if sharing is not None and _ASK_MARK in sharing.replica:
            raise ValueError(f"a replica id must not contain {_ASK_MARK!r}")
        self._funnel = funnel
        self._version = version
        self._instructions = instructions
        self._max_sessions = max_sessions
        self._idle_timeout = session_idle_timeout
        self._max_in_flight = max_in_flight
        self._max_body = max_body
        self._clock = clock
        self._sessions: OrderedDict[str, _HttpSession] = OrderedDict()
        self._sealer = state_keys
        self._sharing = sharing
        self._replica = (sharing.replica if sharing is not None else "") or secrets.token_hex(8)
        self._lifetime = session_lifetime
        self._wall = wall_clock
        self._replays = 0
        self._listens: dict[int, tuple[MemoryObjectSendStream[Message], RequestId, frozenset[str]]]
        self._listens = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._ended: OrderedDict[str, float] = OrderedDict()

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

    async def _session(self, session_id: str) -> _HttpSession | None:
        """The session ``session_id`` names, rebuilt from a sealed id if need be.

        Raises:
            _Unavailable: It is valid but cannot be served here now.
        """
        self._expire()
        session = self._sessions.get(session_id)
        if session is None:
            ticket = self._open(session_id)
            if ticket is None or self._has_ended(ticket):
                return None
            record = await self._load(ticket)
            if record.ended:
                return None
            # Another request for it may have rebuilt it while the store answered.
            session = self._sessions.get(session_id) or await self._rebuild(
                session_id, ticket, record
            )
        elif session.ticket is not None and not session.ticket.expires > self._wall():
            logger.info("MCP session %s… expired (lifetime over)", session.id[-8:])
            self._drop(session)
            return None
        session.last_used = self._clock()
        self._sessions.move_to_end(session_id)
        return session

    def _end(self, ticket: SessionTicket) -> None:
        """Remember here that a sealed session ended: its id would otherwise rebuild it."""
        now = self._wall()
        for key in [k for k, expires in self._ended.items() if not expires > now]:
            del self._ended[key]
        self._ended[ticket.key] = ticket.expires
        while len(self._ended) > _MAX_ENDED:
            self._ended.popitem(last=False)  # the oldest: the shared store still knows

    def _has_ended(self, ticket: SessionTicket) -> bool:
        return ticket.key in self._ended

    def _open(self, session_id: str) -> SessionTicket | None:
        if self._sealer is None:
            return None
        return open_ticket(session_id, self._sealer, now=self._wall())

    async def _load(self, ticket: SessionTicket) -> SessionRecord:
        """The session's shared record (a fresh one without sharing or when none is kept)."""
        if self._sharing is None or self._sealer is None:
            return SessionRecord()
        try:
            data = await self._sharing.store.get(_record_key(ticket))
        except Exception as exc:
            logger.warning("MCP session store unreachable: %s", exc)
            raise _Unavailable(503, "The shared session store is unreachable") from exc
        if data is None:
            return SessionRecord()
        return open_record(_record_key(ticket), data, self._sealer) or SessionRecord()

    async def _rebuild(
        self, session_id: str, ticket: SessionTicket, record: SessionRecord
    ) -> _HttpSession:
        """Make a session another replica started servable here (replaying its state)."""
        session = self._new_session(session_id, ticket)
        if session is None:
            raise _Unavailable(503, "Too many MCP sessions; try again later")
        assert session.mcp is not None  # noqa: S101 - set by _new_session
        await session.mcp.handle(
            Request(
                id=self._replay_id(), method="initialize", params=to_raw(ticket.initialize_params())
            )
        )
        await session.mcp.handle(Notification(method="notifications/initialized"))
        logger.info("MCP session %s… resumed from its id", session.id[-8:])
        await self._apply(session, record)
        return session

    def _replay_id(self) -> str:
        # Answers to replayed requests match no route: route() drops them.
        self._replays += 1
        return f"funnel-replay-{self._replica}-{self._replays}"

    async def _apply(self, session: _HttpSession, record: SessionRecord) -> None:
        """Bring a session held here to ``record`` (set by a request on any replica)."""
        mcp = session.mcp
        if mcp is None or session.closed:
            return
        old, session.record = session.record, record
        if record.level is not None and record.level != old.level:
            await mcp.handle(
                Request(
                    id=self._replay_id(),
                    method="logging/setLevel",
                    params=to_raw({"level": record.level}),
                )
            )
        for uri in sorted(set(old.uris) - set(record.uris)):
            await mcp.handle(
                Request(
                    id=self._replay_id(),
                    method="resources/unsubscribe",
                    params=to_raw({"uri": uri}),
                )
            )
        for uri in sorted(set(record.uris) - set(old.uris)):
            await mcp.handle(
                Request(
                    id=self._replay_id(), method="resources/subscribe", params=to_raw({"uri": uri})
                )
            )

    async def _record(self, session: _HttpSession, record: SessionRecord) -> None:
        """Keep a session's new record and tell the other replicas (best effort)."""
        session.record = record
        if self._sharing is None or self._sealer is None or session.ticket is None:
            return
        key = _record_key(session.ticket)
        ttl = session.ticket.expires - self._wall()
        if ttl <= 0:
            return
        try:
            with anyio.fail_after(5):
                await self._sharing.store.put(key, seal_record(key, record, self._sealer), ttl)
                await self._sharing.bus.publish(
                    SESSION_CHANNEL,
                    encode_bus(
                        BusMessage(
                            origin=self._replica,
                            kind="record",
                            session=session.ticket.key,
                            record=record,
                        ),
                        self._sealer,
                    ),
                )
        except Exception as exc:  # noqa: BLE001 - the client has its answer; say what is lost
            logger.warning(
                "MCP session %s…: could not share its new state with the other replicas: %s",
                session.id[-8:],
                exc,
            )

    def _expire(self) -> None:
        cutoff = self._clock() - self._idle_timeout
        for session in [s for s in self._sessions.values() if not s.busy and s.last_used < cutoff]:
            logger.info("MCP session %s… expired after being idle", session.id[-8:])
            self._drop(session)

    def _drop(self, session: _HttpSession) -> None:
        session.close()
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]

    def _new_session(
        self, session_id: str | None = None, ticket: SessionTicket | None = None
    ) -> _HttpSession | None:
        self._expire()
        while len(self._sessions) >= self._max_sessions:
            idle = next((s for s in self._sessions.values() if not s.busy), None)
            if idle is None:
                return None
            logger.info("MCP session %s… dropped: too many sessions", idle.id[-8:])
            self._drop(idle)
        session = _HttpSession(
            id=session_id or secrets.token_urlsafe(24), last_used=self._clock(), ticket=ticket
        )
        session.mcp = McpServerSession(
            self._funnel, session.route, version=self._version, instructions=self._instructions
        )
        session.mcp.send_related = session.route_related
        # A session can be asked things by backends (and hear their updates) as long as
        # it lives, not only while a stream is open.
        self._funnel.add_client(session.mcp)
        self._sessions[session.id] = session
        logger.info("MCP session %s… started (%d open)", session.id[-8:], len(self._sessions))
        return session

    def _ticket_for(self, request: Request) -> SessionTicket | None:
        """The ticket an ``initialize`` makes (``None`` without state keys).

        Raises:
            TicketTooLarge: The request is too large to be carried in an id.
        """
        if self._sealer is None:
            return None
        try:
            params = (
                from_raw(request.params, dict[str, Any]) if isinstance(request.params, Raw) else {}
            )
        except DecodeError:
            params = {}
        version = params.get("protocolVersion")
        info = params.get("clientInfo")
        capabilities = params.get("capabilities")
        return SessionTicket(
            number=secrets.token_bytes(16),
            protocol_version=version if isinstance(version, str) else None,
            client_info=info if isinstance(info, dict) else {},
            capabilities=capabilities if isinstance(capabilities, dict) else {},
            expires=self._wall() + self._lifetime,
        )

    # ------------------------------------------------------------------ replicas

    def _outgoing(self, message: Message) -> Message:
        """A message for the client, with funnel's own request ids naming this replica.

        With replicas, the client's answer to a request funnel sent it is a new POST that
        the balancer may hand to any replica; the id tells that replica whose it is.
        """
        if self._sharing is None:
            return message
        if isinstance(message, Request):
            return msgspec.structs.replace(message, id=f"{self._replica}{_ASK_MARK}{message.id}")
        if (
            isinstance(message, Notification)
            and message.method == "notifications/cancelled"
            and isinstance(message.params, Raw)
        ):
            params = _notification_params(message)
            asked = params.get("requestId")
            if isinstance(asked, str):
                params["requestId"] = f"{self._replica}{_ASK_MARK}{asked}"
                return Notification(method=message.method, params=to_raw(params))
        return message

    async def _take(self, mcp: McpServerSession, session: _HttpSession, message: Message) -> None:
        """Handle a client's notification or answer (passing another replica's on)."""
        if isinstance(message, Response | ErrorResponse):
            answer = await self._answer_for(session, message)
            if answer is None:
                return
            message = answer
        await mcp.handle(message)

    async def _answer_for(
        self, session: _HttpSession, answer: Response | ErrorResponse
    ) -> Response | ErrorResponse | None:
        """The client's answer to one of funnel's requests, if it is this replica's to take.

        An answer to another replica's request is passed on to it over the bus.
        """
        if self._sharing is None or not isinstance(answer.id, str) or _ASK_MARK not in answer.id:
            return answer
        replica, _, asked = answer.id.partition(_ASK_MARK)
        answer = msgspec.structs.replace(answer, id=asked)
        if replica == self._replica:
            return answer
        if self._sealer is not None and session.ticket is not None:
            message = BusMessage(
                origin=self._replica,
                kind="answer",
                session=session.ticket.key,
                target=replica,
                payload=encode_message(answer),
            )
            try:
                with anyio.fail_after(5):
                    await self._sharing.bus.publish(
                        SESSION_CHANNEL, encode_bus(message, self._sealer)
                    )
            except Exception as exc:  # noqa: BLE001 - the asking replica times the request out
                logger.warning("could not pass a client's answer to replica %s: %s", replica, exc)
        return None

    def _heard_answer(self, key: str, payload: bytes) -> None:
        session = next(
            (s for s in self._sessions.values() if s.ticket is not None and s.ticket.key == key),
            None,
        )
        if session is None or session.mcp is None or self._tg is None:
            return  # the session left this replica: its request times out
        try:
            answer = decode_message(payload)
        except DecodeError:
            return
        if isinstance(answer, Response | ErrorResponse):
            self._tg.start_soon(session.mcp.handle, answer)

    @contextlib.asynccontextmanager
    async def replicate(self) -> AsyncIterator[None]:
        """Take part in the replicas' bus for the duration of the block.

        Hears the other replicas' session changes (applied to the sessions held here) and
        list changes (told to this replica's GET and ``subscriptions/listen`` streams), and
        announces this replica's list changes. Does nothing without ``sharing``. Status
        changes stay per replica: each has its own backends.
        """
        sharing, sealer = self._sharing, self._sealer
        if sharing is None or sealer is None:
            yield
            return
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self._hear, sharing, sealer)
            tg.start_soon(self._announce, sharing, sealer)
            try:
                yield
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    async def _hear(
        self,
        sharing: SessionSharing,
        sealer: Sealer,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async with sharing.bus.subscribe(SESSION_CHANNEL) as payloads:
            task_status.started()
            async for payload in payloads:
                message = decode_bus(payload, sealer)
                if message is None or message.origin == self._replica:
                    continue  # not ours to read, or our own echo
                if message.kind == "lists":
                    self._tell_lists(frozenset(message.lists))
                elif message.kind == "answer":
                    if message.target == self._replica:
                        self._heard_answer(message.session, message.payload)
                elif message.record is not None:
                    self._heard_record(message.session, message.record)

    def _heard_record(self, key: str, record: SessionRecord) -> None:
        session = next(
            (s for s in self._sessions.values() if s.ticket is not None and s.ticket.key == key),
            None,
        )
        if session is None:
            return
        if record.ended:
            logger.info("MCP session %s… ended on another replica", session.id[-8:])
            if session.ticket is not None:
                self._end(session.ticket)
            self._drop(session)
        elif self._tg is not None:
            self._tg.start_soon(self._apply_heard, session, record)

    async def _apply_heard(self, session: _HttpSession, record: SessionRecord) -> None:
        # Runs in replicate()'s task group: one session's trouble must not end the bus.
        try:
            await self._apply(session, record)
        except Exception:
            logger.exception("MCP session %s…: applying another replica's change", session.id[-8:])

    def _tell_lists(self, lists: frozenset[str]) -> None:
        """Tell this replica's streams about list changes another replica saw."""
        for kind in sorted(lists & _LIST_NOTIFICATIONS.keys()):
            method, _ = _LIST_NOTIFICATIONS[kind]
            for session in list(self._sessions.values()):
                if session.stream is not None:
                    _offer(session.stream, Notification(method=method))
            for channel, subscription, kinds in list(self._listens.values()):
                if kind in kinds:
                    _offer(
                        channel,
                        Notification(
                            method=method,
                            params=to_raw(
                                {"_meta": {"io.modelcontextprotocol/subscriptionId": subscription}}
                            ),
                        ),
                    )

    async def _announce(self, sharing: SessionSharing, sealer: Sealer) -> None:
        async with self._funnel.events() as events:
            async for event in events:
                if event.kind != "list_changed":
                    continue
                payload = encode_bus(
                    BusMessage(
                        origin=self._replica, kind="lists", lists=tuple(sorted(event.lists))
                    ),
                    sealer,
                )
                try:
                    with anyio.fail_after(5):
                        await sharing.bus.publish(SESSION_CHANNEL, payload)
                except Exception as exc:  # noqa: BLE001 - the next change is announced again
                    logger.warning("could not announce a list change to the replicas: %s", exc)

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
        if listen:
            # Other replicas' list changes reach this stream too (see replicate()).
            self._listens[id(channel)] = (channel, message.id, _listened(params))
        try:
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
        finally:
            self._listens.pop(id(channel), None)

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
            try:
                ticket = self._ticket_for(message)
            except TicketTooLarge as exc:
                await http.json(400, _error(message.id, -32602, f"Invalid params: {exc}"))
                return
            session_id = (
                seal_ticket(ticket, self._sealer)
                if ticket is not None and self._sealer is not None
                else None
            )
            session = self._new_session(session_id, ticket)
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
            try:
                found = await self._session(session_id)
            except _Unavailable as exc:
                await http.json(
                    exc.status, _error(getattr(message, "id", None), -32000, exc.message)
                )
                return
            if found is None:
                await http.json(404, _error(getattr(message, "id", None), -32600, _UNKNOWN))
                return
            session = found
        assert session.mcp is not None  # noqa: S101 - set when the session was made
        http.extra_headers.append((SESSION_HEADER.encode(), session.id.encode()))
        if not isinstance(message, Request):
            await self._take(session.mcp, session, message)
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
            final = await self._exchange(
                mcp=session.mcp,
                request=message,
                channel=channel,
                inbox=inbox,
                receive=receive,
                http=http,
                modern=False,
                owner=session,
            )
            if message.method in _RECORDED and isinstance(final, Response):
                record = _recorded(session.record, message)
                if record != session.record:
                    await self._record(session, record)
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
    ) -> Message | None:
        """Run one request and write what it sends: JSON, or SSE once a notification comes first.

        Returns:
            The request's final response, if it was written.
        """
        final: Message | None = None

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
                    final = await self._write(inbox, http, request, modern=modern, keepalive=watch)
                    tg.cancel_scope.cancel()
            finally:
                if owner is not None:
                    owner.scopes.discard(scope)
        if scope.cancelled_caught or not http.finished:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await _finish(http, request, closed=owner is not None and owner.closed)
        return final

    async def _write(
        self,
        inbox: MemoryObjectReceiveStream[Message],
        http: _Http,
        request: Request,
        *,
        modern: bool,
        keepalive: bool,
    ) -> Message | None:
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
                return None
            final = isinstance(message, Response | ErrorResponse) and message.id == request.id
            if final and not streaming:
                await http.json(status_for(message, modern=modern), message)
                return message
            if not streaming:
                streaming = True
                await http.start_stream()
            await http.chunk(_sse_event(self._outgoing(message)))
            if final:
                await http.end_stream()
                return message

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
        try:
            session = await self._session(headers[SESSION_HEADER])
        except _Unavailable as exc:
            await http.json(exc.status, _error(None, -32000, exc.message))
            return
        if session is None:
            await http.json(404, _error(None, -32600, _UNKNOWN))
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
                            await http.chunk(_sse_event(self._outgoing(message)))
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
        self._expire()
        session = self._sessions.get(session_id)
        ticket = session.ticket if session is not None else self._open(session_id)
        if ticket is not None and self._has_ended(ticket):
            ticket = None
        record = session.record if session is not None else None
        if ticket is not None and record is None:
            try:
                record = await self._load(ticket)
            except _Unavailable as exc:
                await http.json(exc.status, _error(None, -32000, exc.message))
                return
        if (session is None and ticket is None) or (record is not None and record.ended):
            await http.json(404, _error(None, -32600, _UNKNOWN))
            return
        ended = _HttpSession(id=session_id, ticket=ticket) if session is None else session
        if session is not None:
            self._drop(session)
        if ticket is not None:
            self._end(ticket)
        # Every replica forgets it: the ended record is kept as long as the id is valid.
        await self._record(ended, msgspec.structs.replace(record or SessionRecord(), ended=True))
        logger.info("MCP session %s… ended by the client", session_id[-8:])
        await http.respond(204)


def _record_key(ticket: SessionTicket) -> str:
    return f"mcp-session:{ticket.key}"


def _recorded(record: SessionRecord, request: Request) -> SessionRecord:
    """A session's record after ``request`` (one of :data:`_RECORDED`) succeeded."""
    try:
        params = from_raw(request.params, dict[str, Any]) if isinstance(request.params, Raw) else {}
    except DecodeError:
        return record
    if request.method == "logging/setLevel":
        level = params.get("level")
        return msgspec.structs.replace(record, level=level) if isinstance(level, str) else record
    uri = params.get("uri")
    if not isinstance(uri, str):
        return record
    uris = set(record.uris)
    if request.method == "resources/subscribe":
        uris.add(uri)
    else:
        uris.discard(uri)
    return msgspec.structs.replace(record, uris=tuple(sorted(uris)))


def _listened(params: Mapping[str, Any]) -> frozenset[str]:
    """Which lists a ``subscriptions/listen`` request asks to hear about."""
    wanted = params.get("notifications")
    if not isinstance(wanted, dict):
        return frozenset()
    return frozenset(kind for kind, (_, flag) in _LIST_NOTIFICATIONS.items() if wanted.get(flag))


def _offer(stream: MemoryObjectSendStream[Message], message: Message) -> None:
    # List changes are repeated on the next change anyway: drop rather than block.
    with contextlib.suppress(
        anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
    ):
        stream.send_nowait(message)


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
