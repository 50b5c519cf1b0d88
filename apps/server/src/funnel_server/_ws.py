"""``/ws``: live events and tool execution for the dashboard and scripts.

Messages are JSON objects tagged by ``type`` (msgspec tagged unions below).

Client → server: ``subscribe {events}``, ``unsubscribe {events}``, ``execute {id, tool,
arguments}``, ``cancel {id}``. Server → client: ``server.status``, ``servers.changed``
(with ``server.status``), ``tools.changed``, ``auth.required``, ``log`` (only to
subscribers of that kind), ``tool.executing``,
``tool.progress``, ``tool.result``, ``tool.error`` (only to the socket that asked),
``error`` for a message that cannot be accepted; the socket stays open.

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
import logging
import time
from typing import Any, Final

import anyio
import anyio.abc
import msgspec
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect
from msgspec import UNSET, Raw, UnsetType

from funnel_auth import AuthError, redact
from funnel_proxy import BackendState, BackendUnavailable, Funnel, FunnelEvent, ToolNotFound
from funnel_proxy._telemetry import tool_call as tool_call_span
from funnel_server._calls import ToolRateLimited, call_origin
from funnel_server._logs import LogBuffer, LogEntry
from funnel_transports import DecodeError, RpcError, TransportError

__all__ = [
    "EVENT_KINDS",
    "AuthRequired",
    "Cancel",
    "ClientMessage",
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


ClientMessage = Subscribe | Unsubscribe | Execute | Cancel


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


class WsConnection:
    """One accepted ``/ws`` connection.

    Args:
        socket: The accepted WebSocket.
        funnel: The funnel whose events and tools it serves.
        max_executions: Executions this socket may run at once.
        max_queued: Messages waiting for a slow client at most (see the module docs).
        logs: The app's log buffer (``log`` events); ``None``: no log events.
    """

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        funnel: Funnel,
        *,
        max_executions: int = 8,
        max_queued: int = 256,
        logs: LogBuffer | None = None,
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

    @property
    def dropped(self) -> int:
        """Events and progress messages dropped and not yet reported to the client."""
        return self._dropped

    async def run(self) -> None:
        """Serve the connection until the client closes it (or reads too slowly)."""
        call_origin.set("ws")
        try:
            async with self._outbox, self._outgoing, anyio.create_task_group() as tg:
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

                async def progress(update: dict[str, Any]) -> None:
                    self._offer(_progress(execution, update))

                try:
                    with tool_call_span(entry.name, protocol="websocket") as span:
                        result = await self._funnel.call_tool(
                            entry, message.arguments, on_progress=progress
                        )
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
