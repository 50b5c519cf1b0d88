"""``/ws``: live events and tool execution for the dashboard and scripts.

Messages are JSON objects tagged by ``type`` (msgspec tagged unions below).

Client → server: ``subscribe {events}``, ``unsubscribe {events}``, ``execute {id, tool,
arguments}``, ``cancel {id}``, ``elicitation.respond {id, action, content}``. Server →
client: ``server.status``, ``servers.changed`` (with ``server.status``), ``tools.changed``,
``auth.required``, ``log`` (only to subscribers of that kind), ``tool.executing``,
``tool.progress``, ``tool.result``, ``tool.error``, ``elicitation.request``,
``elicitation.ended`` (only to the socket that asked), ``error`` for a message that
cannot be accepted; the socket stays open.

A person is behind the socket: while it is open it is a client of the funnel that
answers elicitations (``elicitation/create``) in form and URL mode. A backend's
elicitation caused by one of its executions (the funnel's routing rule decides) reaches it
as ``elicitation.request`` (an id, the execution, the message, and the requested schema
or, in URL mode, the ``http(s)`` URL to open; a login funnel itself needs during an
execution is asked this way too); the answer is ``elicitation.respond`` (``accept`` with
``content``, or with none in URL mode, ``decline``, ``cancel``), checked against the
schema's required fields and primitive types. Unanswered
within ``elicitation_timeout`` seconds, or when its execution ends or the socket closes,
it ends: the backend gets a JSON-RPC error and the socket ``elicitation.ended`` with why.

Theory of operation: one task reads and dispatches, one forwards funnel events, one
forwards new log entries (when the app keeps a :class:`~funnel_server._logs.LogBuffer`),
one writes, and each ``execute`` runs in its own task (at most ``max_executions`` at once per
socket), in a task group owned by the connection, so closing the socket cancels
everything it started. Everything to send goes through one bounded outbox (``max_queued``
messages) that only the writer task empties, so frames never interleave and a client
that reads slowly holds a bounded amount of memory, never more:

- events and progress (``server.status``, ``servers.changed``, ``tools.changed``,
  ``auth.required``, ``log``, ``tool.progress``) that find the outbox full are dropped and counted; once the client
  has caught up it gets ``events.dropped {count}`` and, for the kinds it subscribed to,
  a fresh snapshot (``server.status`` of every backend, ``auth.required``, and
  ``tools.changed``), so its view is current again;
- answers to the client itself (``tool.executing``, ``tool.result``, ``tool.error``,
  ``error``) are never dropped: a client that lets ``max_queued`` of those pile up is
  disconnected (close code 1008, "too slow").

Forwarding funnel events never waits for the socket, so the funnel's own subscriber
stream is drained as fast as events come.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal

import anyio
import anyio.abc
import msgspec
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect
from msgspec import UNSET, Raw, UnsetType

from funnel_auth import AuthError, redact
from funnel_proxy import (
    BackendState,
    BackendUnavailable,
    Funnel,
    FunnelEvent,
    ToolEntry,
    ToolNotFound,
)
from funnel_proxy._mrtr import drive_rounds, is_input_required
from funnel_proxy._routing import InFlight
from funnel_proxy._telemetry import tool_call as tool_call_span
from funnel_server._calls import ToolRateLimited, call_origin
from funnel_server._logs import LogBuffer, LogEntry
from funnel_transports import DecodeError, Notification, RpcError, TransportError, from_raw, to_raw

__all__ = [
    "EVENT_KINDS",
    "AuthRequired",
    "Cancel",
    "ClientMessage",
    "ElicitationEnded",
    "ElicitationRequest",
    "ElicitationRespond",
    "ErrorMessage",
    "EventsDropped",
    "Execute",
    "LogMessage",
    "ServerMessage",
    "ServerStatus",
    "ServersChanged",
    "Subscribe",
    "ToolError",
    "ToolExecuting",
    "ToolProgress",
    "ToolResult",
    "ToolsChanged",
    "Unsubscribe",
    "WsConnection",
]

logger = logging.getLogger("funnel_server.ws")

EVENT_KINDS: Final = ("server.status", "tools.changed", "auth.required", "log")
"""What ``subscribe`` accepts (and ``*`` for all of them)."""

ExecutionId = str | int


class _In(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    pass


class Subscribe(_In, tag="subscribe"):
    """Start receiving these event kinds (``server.status``, ``tools.changed``, ``auth.required``, ``log``, ``*``)."""

    events: list[str]


class Unsubscribe(_In, tag="unsubscribe"):
    """Stop receiving these event kinds."""

    events: list[str]


class Execute(_In, tag="execute"):
    """Call an exposed tool; ``id`` is the client's, echoed on every message about the call."""

    id: ExecutionId
    tool: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class Cancel(_In, tag="cancel"):
    """Cancel a running execution."""

    id: ExecutionId


class ElicitationRespond(_In, tag="elicitation.respond"):
    """A person's answer to ``elicitation.request`` ``id``: ``content`` with ``accept``."""

    id: str
    action: Literal["accept", "decline", "cancel"]
    content: dict[str, Any] | UnsetType = UNSET


ClientMessage = Subscribe | Unsubscribe | Execute | Cancel | ElicitationRespond


class _Out(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    pass


class ServerStatus(_Out, tag="server.status"):
    """A backend's status (sent on subscribing, then on every change)."""

    server: str
    status: str
    error: str | UnsetType = UNSET
    tool_count: int = 0


class ServersChanged(_Out, tag="servers.changed"):
    """Servers were added, removed, restarted or disabled; fetch ``/api/servers`` again."""


class LogMessage(_Out, tag="log"):
    """A new log entry: a backend's stderr line, an audit event, or a funnel log line.

    Subscribing to ``log`` first sends the kept entries not sent yet (at most the last
    200), then each new one.
    """

    seq: int
    time: float
    level: str
    source: str
    message: str
    server: str | UnsetType = UNSET
    event: str | UnsetType = UNSET
    outcome: str | UnsetType = UNSET


class ToolsChanged(_Out, tag="tools.changed"):
    """The tool surface changed; fetch ``/api/tools`` again."""

    lists: list[str]


class AuthRequired(_Out, tag="auth.required"):
    """A backend needs a person to authorize it; ``authorizeUrl`` starts the flow."""

    server: str
    authorize_url: str


class ToolExecuting(_Out, tag="tool.executing"):
    """An execution started."""

    id: ExecutionId
    tool: str


class ToolProgress(_Out, tag="tool.progress"):
    """Progress the tool reported."""

    id: ExecutionId
    progress: float
    total: float | UnsetType = UNSET
    message: str | UnsetType = UNSET


class ToolResult(_Out, tag="tool.result"):
    """The tool's result (an MCP ``CallToolResult``, ``isError`` included)."""

    id: ExecutionId
    result: Raw
    duration_ms: float


class ToolError(_Out, tag="tool.error"):
    """The call failed before the tool could answer (unknown tool, backend down, limit, cancel)."""

    id: ExecutionId
    error: str
    code: int | UnsetType = UNSET


class ElicitationRequest(_Out, tag="elicitation.request"):
    """A backend asks the person for input; answer with ``elicitation.respond``.

    ``mode`` ``form``: fill in ``requestedSchema``. ``mode`` ``url``: open ``url`` (an
    ``http(s)`` page of the backend's, a login or a payment) and accept once done, with no
    content.
    """

    id: str
    server: str
    message: str
    requested_schema: dict[str, Any]
    timeout_ms: float
    execution: ExecutionId | UnsetType = UNSET
    mode: Literal["form", "url"] = "form"
    url: str | UnsetType = UNSET


class ElicitationEnded(_Out, tag="elicitation.ended"):
    """An elicitation ended unanswered (``timed out``, ``withdrawn``); its form goes away."""

    id: str
    reason: str


class ErrorMessage(_Out, tag="error"):
    """A message the server could not accept."""

    message: str


class EventsDropped(_Out, tag="events.dropped"):
    """The client read too slowly: this many events or progress messages were dropped.

    A fresh snapshot of the subscribed kinds follows.
    """

    count: int


ServerMessage = (
    ServerStatus
    | ServersChanged
    | LogMessage
    | ToolsChanged
    | AuthRequired
    | ToolExecuting
    | ToolProgress
    | ToolResult
    | ToolError
    | ErrorMessage
    | EventsDropped
    | ElicitationRequest
    | ElicitationEnded
)

_decoder: Final = msgspec.json.Decoder(ClientMessage)
_encoder: Final = msgspec.json.Encoder()


def log_message(entry: LogEntry) -> LogMessage:
    """The ``log`` message for a log entry."""
    return LogMessage(
        seq=entry.seq,
        time=entry.time,
        level=entry.level,
        source=entry.source,
        server=entry.server if entry.server is not None else UNSET,
        message=entry.message,
        event=entry.event if entry.event is not None else UNSET,
        outcome=entry.outcome if entry.outcome is not None else UNSET,
    )


_LOG_SNAPSHOT: Final = 200


def status_message(state: BackendState) -> ServerStatus:
    """The ``server.status`` message for a backend state."""
    return ServerStatus(
        server=state.name,
        status=state.status,
        error=state.error if state.error is not None else UNSET,
        tool_count=len(state.tools),
    )


class _TooSlow(Exception):
    """The client let too many answers pile up unread."""


#: Seconds a person has to answer an elicitation by default.
DEFAULT_ELICITATION_TIMEOUT: Final = 300.0
_CAPABILITIES: Final[Mapping[str, Any]] = {"elicitation": {"form": {}, "url": {}}}
_JSON_TYPES: Final = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
}


class _Pending:
    """One elicitation waiting for the person's answer."""

    def __init__(
        self, execution: ExecutionId | None, schema: Mapping[str, Any], *, url: bool = False
    ) -> None:
        self.execution = execution
        self.schema = schema
        self.url = url
        self.done = anyio.Event()
        self.answer: dict[str, Any] | None = None
        self.ended: str | None = None


def content_problem(schema: Mapping[str, Any], content: Mapping[str, Any]) -> str | None:
    """Why ``content`` does not fit a (flat, SEP-1034) requested schema, or ``None``."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    for key in required if isinstance(required, list) else ():
        if key not in content:
            return f"{key} is required"
    for key, value in content.items():
        prop = properties.get(key)
        if not isinstance(prop, dict):
            return f"{key} is not asked for"
        kinds = _JSON_TYPES.get(prop.get("type", ""))
        if kinds is None:
            continue
        if isinstance(value, bool) and bool not in kinds:
            return f"{key} must be {prop['type']}"
        if not isinstance(value, kinds):
            return f"{key} must be {prop['type']}"
        choices = prop.get("enum")
        if isinstance(prop.get("oneOf"), list):
            choices = [c.get("const") for c in prop["oneOf"] if isinstance(c, dict)]
        if isinstance(choices, list) and value not in choices:
            return f"{key} must be one of {choices}"
    return None


class WsConnection:
    """One accepted ``/ws`` connection.

    Args:
        socket: The accepted WebSocket.
        funnel: The funnel whose events and tools it serves.
        max_executions: Executions this socket may run at once.
        max_queued: Messages waiting for a slow client at most (see the module docs).
        logs: The app's log buffer (``log`` events); ``None``: no log events.
        elicitation_timeout: Seconds a person has to answer an elicitation.
    """

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        funnel: Funnel,
        *,
        max_executions: int = 8,
        max_queued: int = 256,
        logs: LogBuffer | None = None,
        elicitation_timeout: float = DEFAULT_ELICITATION_TIMEOUT,
    ) -> None:
        self._socket = socket
        self._funnel = funnel
        self._logs = logs
        self._max_executions = max_executions
        self._max_queued = max_queued
        self._subscribed: set[str] = set()
        self._running: dict[ExecutionId, anyio.CancelScope] = {}
        self._outbox, self._outgoing = anyio.create_memory_object_stream[ServerMessage](max_queued)
        self._dropped = 0
        self._too_slow = False
        self._log_sent = 0
        self._elicitation_timeout = elicitation_timeout
        self._calls: dict[ExecutionId, InFlight] = {}
        self._pending: dict[str, _Pending] = {}
        self._elicitation_ids = itertools.count(1)
        self._last_active = time.monotonic()

    # -- as a client of the funnel (a person answers elicitations)

    @property
    def capabilities(self) -> Mapping[str, Any]:
        """A person at the dashboard answers elicitations, in form and URL mode."""
        return _CAPABILITIES

    @property
    def last_active(self) -> float:
        """When the socket last started an execution (monotonic seconds)."""
        return self._last_active

    def in_flight(self, server: str) -> list[InFlight]:
        """This socket's executions running on ``server``."""
        return [call for call in self._calls.values() if call.server == server]

    def deliver(
        self, message: Notification, *, level: str | None = None, server: str | None = None
    ) -> None:
        """Backends' notifications are not sent here (``log`` events come from the log)."""

    async def ask(self, method: str, params: Any, call: InFlight | None = None) -> Any:
        """Put a backend's elicitation to the person; return their answer (raw).

        Raises:
            RpcError: Not an elicitation, or a URL-mode one without an ``http(s)`` URL
                (-32601, -32602); unanswered in time, withdrawn or the socket closed (-32001).
        """
        decoded = from_raw(params, dict[str, Any]) if params is not None else {}
        mode = decoded.get("mode", "form")
        if method != "elicitation/create" or mode not in ("form", "url"):
            raise RpcError(-32601, f"the dashboard cannot answer {method}")
        url = decoded.get("url") if mode == "url" else None
        if mode == "url" and not (
            isinstance(url, str) and url.lower().startswith(("https://", "http://"))
        ):
            raise RpcError(-32602, "a URL-mode elicitation needs an http(s) url")
        schema = decoded.get("requestedSchema") if mode == "form" else None
        schema = schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
        execution = next((key for key, running in self._calls.items() if running is call), None)
        elicitation_id = f"elicitation-{next(self._elicitation_ids)}"
        pending = _Pending(execution, schema, url=url is not None)
        self._pending[elicitation_id] = pending
        try:
            self._answer(
                ElicitationRequest(
                    id=elicitation_id,
                    execution=execution if execution is not None else UNSET,
                    server=call.server if call is not None else "",
                    message=str(decoded.get("message", "")),
                    requested_schema=schema,
                    timeout_ms=self._elicitation_timeout * 1000,
                    mode="url" if isinstance(url, str) else "form",
                    url=url if isinstance(url, str) else UNSET,
                )
            )
            with anyio.move_on_after(self._elicitation_timeout):
                await pending.done.wait()
        finally:
            self._pending.pop(elicitation_id, None)
        if pending.answer is not None:
            return to_raw(pending.answer)
        reason = pending.ended or "timed out"
        with contextlib.suppress(_TooSlow):
            self._answer(ElicitationEnded(id=elicitation_id, reason=reason))
        if reason == "timed out":
            raise RpcError(
                -32001,
                f"nobody answered the elicitation within {self._elicitation_timeout:g} s",
            )
        raise RpcError(-32001, f"the elicitation ended unanswered: {reason}")

    async def _rounds(
        self,
        entry: ToolEntry,
        arguments: dict[str, Any],
        first: Raw,
        progress: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> Raw:
        call = next((c for c in self._calls.values() if c.server == entry.server), None)

        async def retry(responses: dict[str, Any], state: Any) -> Raw:
            extra: dict[str, Any] = {"inputResponses": responses}
            if state is not None:
                extra["requestState"] = state
            return await self._funnel.call_tool(entry, arguments, on_progress=progress, extra=extra)

        return await drive_rounds(first, retry, lambda method, raw, _: self.ask(method, raw, call))

    def _end_pending(self, reason: str, execution: ExecutionId | None = None) -> None:
        for pending in self._pending.values():
            if execution is None or pending.execution == execution:
                pending.ended = reason
                pending.done.set()

    def _respond(self, message: ElicitationRespond) -> None:
        pending = self._pending.get(message.id)
        if pending is None or pending.done.is_set():
            self._answer(ErrorMessage(message=f"no elicitation {message.id!r} is waiting"))
            return
        if message.action != "accept" or pending.url:
            pending.answer = {"action": message.action}  # URL mode: an accept has no content
        else:
            content = message.content if isinstance(message.content, dict) else {}
            problem = content_problem(pending.schema, content)
            if problem is not None:
                # The form stays open: the person can correct it.
                self._answer(ErrorMessage(message=f"elicitation {message.id}: {problem}"))
                return
            pending.answer = {"action": "accept", "content": content}
        pending.done.set()

    @property
    def dropped(self) -> int:
        """Events and progress messages dropped and not yet reported to the client."""
        return self._dropped

    async def run(self) -> None:
        """Serve the connection until the client closes it (or reads too slowly)."""
        call_origin.set("ws")
        try:
            async with (
                self._funnel.client(self),
                self._outbox,
                self._outgoing,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(self._write_out)
                tg.start_soon(self._forward_events)
                if self._logs is not None:
                    tg.start_soon(self._forward_logs, self._logs)
                try:
                    while True:
                        event = await self._socket.receive()
                        if event["type"] == "websocket.disconnect":
                            break
                        text = event.get("text")
                        data = text if isinstance(text, str) else event.get("bytes")
                        self._dispatch(data if isinstance(data, str | bytes) else b"", tg)
                except WebSocketDisconnect:
                    pass
                finally:
                    self._end_pending("the dashboard connection closed")
                    tg.cancel_scope.cancel()
        except* _TooSlow:
            self._too_slow = True
        if self._too_slow:
            logger.warning("/ws client disconnected: %d answers waited unread", self._max_queued)
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                await self._socket.close(code=1008, reason="too slow: read your messages")

    # -- the outbox

    def _offer(self, message: ServerMessage) -> None:
        """Queue an event or progress message, or drop it when the client is behind."""
        try:
            self._outbox.send_nowait(message)
        except anyio.WouldBlock:
            self._dropped += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the connection is ending

    def _answer(self, message: ServerMessage) -> None:
        """Queue an answer to the client; one it cannot take ends the connection.

        Raises:
            _TooSlow: ``max_queued`` messages are waiting already.
        """
        try:
            self._outbox.send_nowait(message)
        except anyio.WouldBlock:
            raise _TooSlow from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the connection is ending

    async def _write_out(self) -> None:
        while True:
            try:
                message = self._outgoing.receive_nowait()
            except anyio.WouldBlock:
                if self._dropped:
                    # Caught up after dropping: say so, then make the view current.
                    count, self._dropped = self._dropped, 0
                    await self._write(EventsDropped(count=count))
                    for fresh in self._snapshot(self._subscribed, changed=True):
                        await self._write(fresh)
                    continue
                message = await self._outgoing.receive()
            await self._write(message)

    async def _write(self, message: ServerMessage) -> None:
        data = _encoder.encode(message).decode()
        # A closing socket: the reader ends the connection.
        with contextlib.suppress(WebSocketDisconnect, OSError):
            await self._socket.send_text(data)

    # -- reading

    def _dispatch(self, data: str | bytes, tg: anyio.abc.TaskGroup) -> None:
        try:
            message = _decoder.decode(data)
        except msgspec.DecodeError as exc:
            self._answer(ErrorMessage(message=f"invalid message: {exc}"))
            return
        except (UnicodeDecodeError, RecursionError):
            # Not UTF-8, or nested beyond msgspec's stack: refused like any bad frame.
            self._answer(ErrorMessage(message="invalid message: not UTF-8 JSON or nested too deep"))
            return
        if isinstance(message, Subscribe | Unsubscribe):
            unknown = [kind for kind in message.events if kind not in (*EVENT_KINDS, "*")]
            if unknown:
                self._answer(
                    ErrorMessage(
                        message=f"unknown event kinds {unknown}; known: {[*EVENT_KINDS, '*']}"
                    )
                )
                return
            kinds = set(EVENT_KINDS) if "*" in message.events else set(message.events)
            if isinstance(message, Unsubscribe):
                self._subscribed -= kinds
                return
            added = kinds - self._subscribed
            self._subscribed |= kinds
            for snapshot in self._snapshot(added):
                self._offer(snapshot)
        elif isinstance(message, ElicitationRespond):
            self._respond(message)
        elif isinstance(message, Execute):
            if message.id in self._running:
                self._answer(ErrorMessage(message=f"execution {message.id!r} is already running"))
            elif len(self._running) >= self._max_executions:
                self._answer(
                    ToolError(
                        id=message.id,
                        error=f"too many executions at once on this connection (at most {self._max_executions})",
                    )
                )
            else:
                scope = anyio.CancelScope()
                self._running[message.id] = scope
                tg.start_soon(self._execute, message, scope)
        else:
            running = self._running.get(message.id)
            if running is None:
                self._answer(ErrorMessage(message=f"no running execution {message.id!r}"))
            else:
                running.cancel()

    def _snapshot(self, kinds: set[str], *, changed: bool = False) -> list[ServerMessage]:
        """The current state of ``kinds`` (with ``tools.changed`` when ``changed``)."""
        messages: list[ServerMessage] = []
        if "log" in kinds and self._logs is not None:
            backlog = self._logs.entries(after=self._log_sent, limit=_LOG_SNAPSHOT)
            if backlog:
                self._log_sent = backlog[-1].seq
            messages.extend(log_message(entry) for entry in backlog)
        for state in self._funnel.states():
            if "server.status" in kinds:
                messages.append(status_message(state))
            if "auth.required" in kinds and state.status == "auth_required" and state.authorize_url:
                messages.append(AuthRequired(server=state.name, authorize_url=state.authorize_url))
        if changed and "tools.changed" in kinds:
            messages.append(ToolsChanged(lists=["prompts", "resources", "tools"]))
        return messages

    async def _forward_logs(self, logs: LogBuffer) -> None:
        with logs.subscribe() as entries:
            async for entry in entries:
                # An entry already sent in a subscription's backlog is not sent again.
                if "log" in self._subscribed and entry.seq > self._log_sent:
                    self._log_sent = entry.seq
                    self._offer(log_message(entry))

    async def _forward_events(self) -> None:
        async with self._funnel.events() as events:
            async for event in events:
                self._on_event(event)

    def _on_event(self, event: FunnelEvent) -> None:
        state = event.state
        if event.kind == "status" and state is not None:
            if "server.status" in self._subscribed:
                self._offer(status_message(state))
            if (
                "auth.required" in self._subscribed
                and state.status == "auth_required"
                and state.authorize_url
            ):
                self._offer(AuthRequired(server=state.name, authorize_url=state.authorize_url))
        elif (
            event.kind == "auth_required"
            and "auth.required" in self._subscribed
            and event.server is not None
            and event.authorize_url
        ):
            # A call needs a login now (a step-up, or a 401 mid-session).
            self._offer(AuthRequired(server=event.server, authorize_url=event.authorize_url))
        elif event.kind == "servers_changed" and "server.status" in self._subscribed:
            self._offer(ServersChanged())
        elif event.kind == "list_changed" and "tools.changed" in self._subscribed:
            self._offer(ToolsChanged(lists=sorted(event.lists)))

    async def _execute(self, message: Execute, scope: anyio.CancelScope) -> None:
        execution = message.id
        started = time.perf_counter()
        try:
            with scope:
                try:
                    entry = self._funnel.resolve_tool(message.tool)
                except ToolNotFound:
                    self._answer(
                        ToolError(
                            id=execution, error=f"Tool not found: {message.tool}", code=-32602
                        )
                    )
                    return
                except BackendUnavailable as exc:
                    self._answer(ToolError(id=execution, error=str(exc), code=-32000))
                    return
                self._answer(ToolExecuting(id=execution, tool=entry.name))
                self._last_active = time.monotonic()
                self._calls[execution] = InFlight(entry.server, str(execution))

                async def progress(update: dict[str, Any]) -> None:
                    self._offer(_progress(execution, update))

                try:
                    with tool_call_span(entry.name, protocol="websocket") as span:
                        result = await self._funnel.call_tool(
                            entry, message.arguments, on_progress=progress
                        )
                        if is_input_required(result):
                            # A 2026-07-28 backend asks its questions in the result: ask
                            # the person, then retry with the answers.
                            result = await self._rounds(entry, message.arguments, result, progress)
                        span.succeeded(result)
                except ToolRateLimited as exc:
                    self._answer(ToolError(id=execution, error=exc.message, code=exc.code))
                    return
                except RpcError as exc:
                    self._answer(ToolError(id=execution, error=exc.message, code=exc.code))
                    return
                except DecodeError as exc:  # arguments funnel will not pass on
                    self._answer(ToolError(id=execution, error=str(exc), code=exc.code))
                    return
                except (BackendUnavailable, TransportError, AuthError) as exc:
                    self._answer(ToolError(id=execution, error=redact(str(exc)), code=-32000))
                    return
                duration = round((time.perf_counter() - started) * 1000, 1)
                self._answer(ToolResult(id=execution, result=result, duration_ms=duration))
            if scope.cancelled_caught:
                self._answer(ToolError(id=execution, error="cancelled", code=-32800))
        finally:
            self._running.pop(execution, None)
            self._calls.pop(execution, None)
            self._end_pending("the execution ended", execution)


def _progress(execution: ExecutionId, update: dict[str, Any]) -> ToolProgress:
    progress = update.get("progress")
    total = update.get("total")
    message = update.get("message")
    return ToolProgress(
        id=execution,
        progress=float(progress) if isinstance(progress, int | float) else 0.0,
        total=float(total) if isinstance(total, int | float) else UNSET,
        message=message if isinstance(message, str) else UNSET,
    )
