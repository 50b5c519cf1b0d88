"""``/ws``: live events and tool execution for the dashboard and scripts.

Messages are JSON objects tagged by ``type`` (msgspec tagged unions below).

Client → server: ``subscribe {events}``, ``unsubscribe {events}``, ``execute {id, tool,
arguments}``, ``cancel {id}``. Server → client: ``server.status``, ``servers.changed``
(with ``server.status``), ``tools.changed``, ``auth.required``, ``log`` (only to
subscribers of that kind), ``tool.executing``,
``tool.progress``, ``tool.result``, ``tool.error`` (only to the socket that asked),
``error`` for a message that cannot be accepted; the socket stays open.

Theory of operation: one task reads and dispatches, one forwards funnel events, one
forwards new log entries (when the app keeps a :class:`~funnel_server._logs.LogBuffer`), and each
``execute`` runs in its own task (at most ``max_executions`` at once per socket), in a
task group owned by the connection, so closing the socket cancels everything it
started. Writes go through one lock, so frames never interleave.
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

from funnel_proxy import BackendState, BackendUnavailable, Funnel, FunnelEvent, ToolNotFound
from funnel_server._calls import ToolRateLimited, call_origin
from funnel_server._logs import LogBuffer, LogEntry
from funnel_transports import RpcError, TransportError

__all__ = [
    "EVENT_KINDS",
    "AuthRequired",
    "Cancel",
    "ClientMessage",
    "ErrorMessage",
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


class WsConnection:
    """One accepted ``/ws`` connection.

    Args:
        socket: The accepted WebSocket.
        funnel: The funnel whose events and tools it serves.
        max_executions: Executions this socket may run at once.
        logs: The app's log buffer (``log`` events); ``None``: no log events.
    """

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        funnel: Funnel,
        *,
        max_executions: int = 8,
        logs: LogBuffer | None = None,
    ) -> None:
        self._socket = socket
        self._funnel = funnel
        self._logs = logs
        self._max_executions = max_executions
        self._subscribed: set[str] = set()
        self._running: dict[ExecutionId, anyio.CancelScope] = {}
        self._lock = anyio.Lock()
        self._log_sent = 0

    async def run(self) -> None:
        """Serve the connection until the client closes it."""
        call_origin.set("ws")
        async with anyio.create_task_group() as tg:
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
                    await self._dispatch(data if isinstance(data, str | bytes) else b"", tg)
            except WebSocketDisconnect:
                pass
            finally:
                tg.cancel_scope.cancel()

    async def _send(self, message: ServerMessage) -> None:
        data = _encoder.encode(message).decode()
        async with self._lock:
            # A closing socket: the reader ends the connection.
            with contextlib.suppress(WebSocketDisconnect, OSError):
                await self._socket.send_text(data)

    async def _dispatch(self, data: str | bytes, tg: anyio.abc.TaskGroup) -> None:
        try:
            message = _decoder.decode(data)
        except msgspec.DecodeError as exc:
            await self._send(ErrorMessage(message=f"invalid message: {exc}"))
            return
        if isinstance(message, Subscribe | Unsubscribe):
            unknown = [kind for kind in message.events if kind not in (*EVENT_KINDS, "*")]
            if unknown:
                await self._send(
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
            await self._snapshot(added)
        elif isinstance(message, Execute):
            if message.id in self._running:
                await self._send(
                    ErrorMessage(message=f"execution {message.id!r} is already running")
                )
            elif len(self._running) >= self._max_executions:
                await self._send(
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
                await self._send(ErrorMessage(message=f"no running execution {message.id!r}"))
            else:
                running.cancel()

    async def _snapshot(self, kinds: set[str]) -> None:
        if "log" in kinds and self._logs is not None:
            backlog = self._logs.entries(after=self._log_sent, limit=_LOG_SNAPSHOT)
            if backlog:
                self._log_sent = backlog[-1].seq
            for entry in backlog:
                await self._send(log_message(entry))
        for state in self._funnel.states():
            if "server.status" in kinds:
                await self._send(status_message(state))
            if "auth.required" in kinds and state.status == "auth_required" and state.authorize_url:
                await self._send(AuthRequired(server=state.name, authorize_url=state.authorize_url))

    async def _forward_logs(self, logs: LogBuffer) -> None:
        with logs.subscribe() as entries:
            async for entry in entries:
                # An entry already sent in a subscription's backlog is not sent again.
                if "log" in self._subscribed and entry.seq > self._log_sent:
                    self._log_sent = entry.seq
                    await self._send(log_message(entry))

    async def _forward_events(self) -> None:
        async with self._funnel.events() as events:
            async for event in events:
                await self._on_event(event)

    async def _on_event(self, event: FunnelEvent) -> None:
        state = event.state
        if event.kind == "status" and state is not None:
            if "server.status" in self._subscribed:
                await self._send(status_message(state))
            if (
                "auth.required" in self._subscribed
                and state.status == "auth_required"
                and state.authorize_url
            ):
                await self._send(AuthRequired(server=state.name, authorize_url=state.authorize_url))
        elif event.kind == "servers_changed" and "server.status" in self._subscribed:
            await self._send(ServersChanged())
        elif event.kind == "list_changed" and "tools.changed" in self._subscribed:
            await self._send(ToolsChanged(lists=sorted(event.lists)))

    async def _execute(self, message: Execute, scope: anyio.CancelScope) -> None:
        execution = message.id
        started = time.perf_counter()
        try:
            with scope:
                try:
                    entry = self._funnel.resolve_tool(message.tool)
                except ToolNotFound:
                    await self._send(
                        ToolError(
                            id=execution, error=f"Tool not found: {message.tool}", code=-32602
                        )
                    )
                    return
                except BackendUnavailable as exc:
                    await self._send(ToolError(id=execution, error=str(exc), code=-32000))
                    return
                await self._send(ToolExecuting(id=execution, tool=entry.name))

                async def progress(update: dict[str, Any]) -> None:
                    await self._send(_progress(execution, update))

                try:
                    result = await self._funnel.call_tool(
                        entry, message.arguments, on_progress=progress
                    )
                except ToolRateLimited as exc:
                    await self._send(ToolError(id=execution, error=exc.message, code=exc.code))
                    return
                except RpcError as exc:
                    await self._send(ToolError(id=execution, error=exc.message, code=exc.code))
                    return
                except (BackendUnavailable, TransportError) as exc:
                    await self._send(ToolError(id=execution, error=str(exc), code=-32000))
                    return
                duration = round((time.perf_counter() - started) * 1000, 1)
                await self._send(ToolResult(id=execution, result=result, duration_ms=duration))
            if scope.cancelled_caught:
                await self._send(ToolError(id=execution, error="cancelled", code=-32800))
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
