"""The MCP client session: requests and responses over any transport, both protocol eras.

Theory of operation (the core that funnel's proxy path is built on; the package README
draws it in full):

* **One reader task** takes every message the transport delivers and routes it
  synchronously, in arrival order: a response completes the pending request with its id;
  ``notifications/progress`` goes to the progress callback of the request whose token it
  names; other notifications go to the notification handler; a request from the server
  (sampling, elicitation, roots, ping) is answered by ``ping`` itself or by the request
  handler, each such request in a task of its own, bounded in number.
* **No task and no cancel scope per request.** A request is a :class:`_Pending` entry keyed
  by id. :meth:`ClientSession.start_request` registers one with a completion callback and
  hands the message to the transport (``send_nowait`` where the transport can queue without
  waiting, else a send task); the callback runs on the reader task when the response comes.
  :meth:`ClientSession.request` is the coroutine form built on it: it waits on one event,
  and runs the request's progress callbacks in its own task, in order, *before* it returns
  the result, so progress can never overtake its result.
* **One timer for every deadline.** Deadlines live in one heap served by one timer task;
  an expired request fails with :class:`RequestTimeout` and the server is told
  (``notifications/cancelled``). The heap is compacted so it stays proportional to the
  requests in flight.
* **Bounded everywhere.** Server requests in flight, progress updates queued for one
  request, and handler work queued for async notification handlers all have caps; what
  exceeds one is answered with an error or dropped with a log line, never buffered
  without end.

When the transport ends, every pending request fails at once with the transport's reason
(which names the server), and :meth:`ClientSession.wait_closed` returns it: the owner
reconnects, the session does not.

Negotiation happens on entering the session and follows the MCP 2026-07-28 backward
compatibility rules:

* ``mode="modern"``: ``server/discover`` with version, client info and capabilities in
  ``_meta``; every later request carries them in ``_meta`` as well.
* ``mode="legacy"``: the ``initialize`` handshake offering 2025-11-25 and accepting the
  older versions the server may answer with, then ``notifications/initialized``.
* ``mode="auto"`` (default): probe ``server/discover``; a result naming a modern version
  makes the session modern; ``UnsupportedProtocolVersionError`` (-32022) naming a mutual
  modern version retries at it; any other error, or no answer within the probe timeout,
  means a handshake-era server, and the session falls back to ``initialize``.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypeAlias

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from msgspec import UNSET, Raw

from funnel_transports._errors import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    UNSUPPORTED_PROTOCOL_VERSION,
    ConnectionLost,
    InvalidRequest,
    NegotiationError,
    RequestTimeout,
    RpcError,
    TransportClosed,
    TransportError,
)
from funnel_transports._jsonrpc import (
    ErrorObject,
    ErrorResponse,
    Message,
    Notification,
    Request,
    RequestId,
    Response,
    from_raw,
    to_raw,
)
from funnel_transports._mcp import (
    HANDSHAKE_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_PROTOCOL_VERSION,
    MODERN_VERSIONS,
    DiscoverResult,
    Implementation,
    InitializeResult,
)
from funnel_transports._tasks import TaskHost, hosted_tasks
from funnel_transports._transport import Transport

__all__ = [
    "ClientSession",
    "NotificationHandler",
    "Outcome",
    "ProgressHandler",
    "RequestHandler",
    "SessionMode",
]

logger = logging.getLogger("funnel_transports.session")

SessionMode: TypeAlias = Literal["auto", "legacy", "modern"]
ProgressHandler: TypeAlias = Callable[[dict[str, Any]], Awaitable[None] | None]
"""Receives the ``params`` of each ``notifications/progress`` for one request.

With :meth:`ClientSession.request` it may be a coroutine function (it runs in the
caller's task); with :meth:`ClientSession.start_request` it must be a plain function.
"""
NotificationHandler: TypeAlias = Callable[[Notification], Awaitable[None] | None]
"""Receives every notification from the server except progress for a request.

A plain function runs on the reader task, in order, and must not block. A coroutine
function runs on a work task fed by a bounded queue (still in order).
"""
RequestHandler: TypeAlias = Callable[[Request], Awaitable[Any]]
"""Answers a request from the server: return the result (``Raw`` is sent as it is), or
raise :class:`RpcError`."""
Outcome: TypeAlias = Response | ErrorResponse | Exception
"""How a request ended: the server's response, its error response, or why there is none
(a :class:`TransportError`, or what the transport's auth raised while sending)."""
DoneCallback: TypeAlias = Callable[[Outcome], None]

_DEFAULT_CLIENT_INFO: Final = Implementation(name="funnel", version="0.1.0")
_LIST_CHANGED_FILTER: Final = (
    ("tools", "toolsListChanged"),
    ("prompts", "promptsListChanged"),
    ("resources", "resourcesListChanged"),
)
_MAX_PAGES: Final = 1000
_CANCEL_NOTICE_TIMEOUT: Final = 2.0
#: Requests from the server answered at once; more are refused with -32603.
MAX_SERVER_REQUESTS: Final = 64
#: Progress updates kept for one request whose caller has not taken them yet.
MAX_QUEUED_PROGRESS: Final = 256
#: Notifications queued for a coroutine notification handler.
MAX_QUEUED_NOTIFICATIONS: Final = 1024


class _Default:
    """Marks "use the session's default timeout" apart from ``None`` (no timeout)."""


_DEFAULT: Final = _Default()


class _Pending:
    __slots__ = ("deadline", "method", "on_done", "on_progress", "seconds", "send_scope")

    def __init__(
        self,
        method: str,
        on_done: DoneCallback,
        on_progress: Callable[[dict[str, Any]], None] | None,
        deadline: float,
        seconds: float | None,
    ) -> None:
        self.method = method
        self.seconds = seconds
        self.on_done = on_done
        self.on_progress = on_progress
        self.deadline = deadline
        self.send_scope: anyio.CancelScope | None = None


class _Waiter:
    """The coroutine side of one request: its outcome and its queued progress."""

    __slots__ = ("event", "outcome", "progress")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.outcome: Outcome | None = None
        self.progress: deque[dict[str, Any]] = deque()

    def done(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.event.set()

    def on_progress(self, params: dict[str, Any]) -> None:
        if len(self.progress) >= MAX_QUEUED_PROGRESS:
            self.progress.popleft()  # the newest progress says more than the oldest
        self.progress.append(params)
        self.event.set()


class _ListPage(msgspec.Struct, rename="camel"):
    next_cursor: str | None = None


class _ProgressParams(msgspec.Struct):
    progressToken: int | str | None = None  # noqa: N815 - the wire name


_progress_decoder: Final = msgspec.json.Decoder(_ProgressParams)


def outcome_result(outcome: Outcome, server: str, method: str) -> Raw:
    """The raw result of a finished request, or the exception it stands for.

    Raises:
        RpcError: The server answered with an error.
        TransportError: The request failed on the way (timeout, connection lost).
    """
    if isinstance(outcome, Response):
        return outcome.result
    if isinstance(outcome, ErrorResponse):
        error = outcome.error
        data = from_raw(error.data) if isinstance(error.data, Raw) else None
        raise RpcError(error.code, error.message, data)
    raise outcome


class ClientSession:
    """An MCP client session over one :class:`Transport`.

    Enter it (``async with``) inside the transport's own ``async with`` block; entering
    negotiates the protocol, leaving stops the session's tasks. The session never closes
    the transport: its owner does. :meth:`aclose` may be called from any task: it only
    signals, and the ``async with`` block unwinds.

    Args:
        transport: The connected transport.
        mode: Protocol era selection, see the module documentation.
        client_info: Name and version announced to the server.
        capabilities: Client capabilities to declare (none by default). Declare only what
            ``request_handler`` can really serve.
        request_timeout: Default seconds a request may take; ``None`` waits forever.
        connect_timeout: Seconds each negotiation request (``initialize``,
            ``server/discover`` outside ``auto``) may take; default: ``request_timeout``.
        probe_timeout: Seconds the ``server/discover`` probe may take in ``auto`` mode
            before the server is taken for a handshake-era one.
        notification_handler: Called in order with every notification that is not the
            progress of one of our requests.
        request_handler: Answers requests the server sends (other than ``ping``).
        listen: In the modern era, open a ``subscriptions/listen`` stream for the
            list-changed notifications the server's capabilities offer.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        mode: SessionMode = "auto",
        client_info: Implementation = _DEFAULT_CLIENT_INFO,
        capabilities: Mapping[str, Any] | None = None,
        request_timeout: float | None = 60.0,
        connect_timeout: float | None = None,
        probe_timeout: float = 5.0,
        notification_handler: NotificationHandler | None = None,
        request_handler: RequestHandler | None = None,
        listen: bool = True,
    ) -> None:
        self._transport = transport
        self._send_nowait: Callable[[Message], None] | None = getattr(
            transport, "send_nowait", None
        )
        self._mode: SessionMode = mode
        self._client_info = client_info
        self._capabilities = dict(capabilities or {})
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout if connect_timeout is not None else request_timeout
        self._probe_timeout = probe_timeout
        self._notification_handler = notification_handler
        self._notification_is_async = inspect.iscoroutinefunction(notification_handler)
        self._request_handler = request_handler
        self._listen = listen

        self._ids = itertools.count(1)
        self._pending: dict[RequestId, _Pending] = {}
        self._timers: list[tuple[float, int, RequestId]] = []
        self._timer_seq = itertools.count()
        self._timer_wake = anyio.Event()
        self._server_requests: dict[RequestId, anyio.CancelScope] = {}
        self._modern_meta: dict[str, Any] | None = None
        self._protocol_version: str | None = None
        self._server_capabilities: dict[str, Any] = {}
        self._server_info: Implementation | None = None
        self._instructions: str | None = None

        self._tg: anyio.abc.TaskGroup | None = None
        self._host: TaskHost | None = None
        self._work_send: MemoryObjectSendStream[Notification] | None = None
        self._closed = anyio.Event()
        self._ended = False  # self._closed.is_set(), as a plain attribute for the hot path
        self._close_reason: TransportError | None = None
        self._closing = False

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """The server's name (from the transport)."""
        return self._transport.name

    @property
    def protocol_version(self) -> str:
        """The negotiated protocol version."""
        if self._protocol_version is None:
            raise RuntimeError("the session has not negotiated a protocol version yet")
        return self._protocol_version

    @property
    def era(self) -> Literal["modern", "legacy"]:
        """``"modern"`` (stateless, 2026-07-28+) or ``"legacy"`` (``initialize`` handshake)."""
        return "modern" if self._modern_meta is not None else "legacy"

    @property
    def server_capabilities(self) -> dict[str, Any]:
        """The capabilities the server declared."""
        return self._server_capabilities

    @property
    def server_info(self) -> Implementation | None:
        """The server's name and version, when it said."""
        return self._server_info

    @property
    def instructions(self) -> str | None:
        """The server's usage instructions for models, when it gave any."""
        return self._instructions

    @property
    def closed(self) -> bool:
        """Whether the session has ended (closed by us, or the transport ended)."""
        return self._closed.is_set()

    @property
    def sends_nowait(self) -> bool:
        """Whether the transport takes messages without waiting (the hot path's need)."""
        return self._send_nowait is not None

    @property
    def takes_hot_calls(self) -> bool:
        """Whether :meth:`start_request` may carry a proxied call now.

        Open, sending without waiting and in the handshake era (whose results are never
        ``input_required``).
        """
        return not self._ended and self._send_nowait is not None and self._modern_meta is None

    @property
    def in_flight(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._pending)

    async def wait_closed(self) -> TransportError | None:
        """Wait until the session ends; return why (``None`` when we closed it)."""
        await self._closed.wait()
        return self._close_reason

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ClientSession:
        self._cm = self._lifespan()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._cm.__aexit__(*exc_info)

    @asynccontextmanager
    async def _lifespan(self) -> AsyncGenerator[ClientSession, None]:
        work_receive: MemoryObjectReceiveStream[Notification] | None = None
        if self._notification_is_async:
            self._work_send, work_receive = anyio.create_memory_object_stream[Notification](
                MAX_QUEUED_NOTIFICATIONS
            )
        async with hosted_tasks(f"{self.name} session") as host:
            self._host = host
            self._tg = host.tg
            host.tg.start_soon(self._read_loop, name=f"{self.name} reader")
            host.tg.start_soon(self._timer_loop, name=f"{self.name} timer")
            if work_receive is not None:
                host.tg.start_soon(self._work_loop, work_receive, name=f"{self.name} handlers")
            try:
                await self._negotiate()
                yield self
            finally:
                self._closing = True
                self._finish(None)
                self._tg = None
        if work_receive is not None:
            work_receive.close()

    def _stop_background(self) -> None:
        self._tg = None
        if self._host is not None:
            self._host.cancel()

    async def aclose(self) -> None:
        """End the session from any task: pending requests fail with :class:`TransportClosed`.

        Only signals; the tasks stop as the ``async with`` block that entered the
        session unwinds.
        """
        self._closing = True
        self._finish(None)
        self._stop_background()

    def _finish(self, reason: TransportError | None) -> None:
        if self._closed.is_set():
            return
        self._close_reason = reason
        self._ended = True
        failure = reason or TransportClosed(f"{self.name}: session closed")
        pending, self._pending = self._pending, {}
        self._timers.clear()
        for entry in pending.values():
            self._complete(entry, failure)
        for scope in self._server_requests.values():
            scope.cancel()
        if self._work_send is not None:
            self._work_send.close()
        self._closed.set()

    def _complete(self, entry: _Pending, outcome: Outcome) -> None:
        if entry.send_scope is not None:
            entry.send_scope.cancel()
        try:
            entry.on_done(outcome)
        except Exception:
            logger.exception("[%s] a completion callback for %s failed", self.name, entry.method)

    # ------------------------------------------------------------------ requests

    def start_request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        on_done: DoneCallback,
        *,
        timeout: float | _Default | None = _DEFAULT,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> RequestId:
        """Send a request without waiting; ``on_done`` gets its outcome exactly once.

        ``on_done`` and ``on_progress`` run on the reader task (or the timer task, or
        whoever closes the session): they must not block. ``on_done`` is not called for a
        request withdrawn with :meth:`cancel_request`.

        In the modern era the session adds protocol version, client info and
        capabilities to ``params._meta``; with ``on_progress`` it adds a
        ``progressToken``. Existing ``_meta`` entries (such as a client's own progress
        token being forwarded) are kept unless the session must set them.

        Returns:
            The id the request went out with.

        Raises:
            TransportClosed: The session is closed (``on_done`` is not called).
        """
        if self._ended:
            raise self._close_reason or TransportClosed(f"{self.name}: session closed")
        request_id = next(self._ids)
        # The caller's params are encoded as they are unless the session adds to _meta
        # (then they are copied first: the caller's mapping is never changed).
        # (A mapping that is not a dict is copied anyway: the encoder takes only dicts.)
        body: Mapping[str, Any] | None = (
            params if params is None or type(params) is dict else dict(params)
        )
        if on_progress is not None or self._modern_meta is not None:
            copied: dict[str, Any] = dict(params) if params is not None else {}
            body = copied
            meta_source = copied.get("_meta")
            meta: dict[str, Any] = dict(meta_source) if isinstance(meta_source, Mapping) else {}
            if on_progress is not None:
                meta["progressToken"] = request_id
            if self._modern_meta is not None:
                # A proxy passes on its own client's capabilities (what the server may ask
                # for in this request); version and client info are the session's.
                theirs = meta.get(META_CLIENT_CAPABILITIES)
                meta.update(self._modern_meta)
                if isinstance(theirs, Mapping):
                    meta[META_CLIENT_CAPABILITIES] = theirs
            copied["_meta"] = meta
        seconds = self._request_timeout if isinstance(timeout, _Default) else timeout
        # Deadlines are on time.monotonic (a C call) rather than anyio.current_time(), which
        # looks the backend up on every call; the timer task only ever waits relative times.
        deadline = math.inf if seconds is None else time.monotonic() + seconds
        entry = _Pending(method, on_done, on_progress, deadline, seconds)
        self._pending[request_id] = entry
        if deadline != math.inf:
            self._arm(deadline, request_id)
        message = Request(
            id=request_id, method=method, params=to_raw(body) if body is not None else UNSET
        )
        self._dispatch(message, entry)
        return request_id

    def cancel_request(self, request_id: RequestId, reason: str) -> None:
        """Withdraw a request: the server is told, ``on_done`` is not called."""
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return
        if entry.send_scope is not None:
            entry.send_scope.cancel()
        self._notice_cancelled(request_id, reason)

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | _Default | None = _DEFAULT,
        on_progress: ProgressHandler | None = None,
    ) -> Raw:
        """Send a request and return the raw ``result`` of its response.

        Progress callbacks run in this task, in order, and all of them before this
        returns: progress never arrives after its result.

        Args:
            method: The JSON-RPC method.
            params: The request's params object.
            timeout: Seconds to wait; ``None`` waits forever; default: the session's.
            on_progress: Receives the params of each progress notification.

        Raises:
            RpcError: The server answered with an error.
            RequestTimeout: No answer in time (the server was told to cancel).
            ConnectionLost: The connection ended before the answer came.
            TransportClosed: The session is closed.
        """
        waiter = _Waiter()
        request_id = self.start_request(
            method,
            params,
            waiter.done,
            timeout=timeout,
            on_progress=waiter.on_progress if on_progress is not None else None,
        )
        try:
            while True:
                await waiter.event.wait()
                while waiter.progress:
                    assert on_progress is not None  # noqa: S101 - only queued with one
                    update = on_progress(waiter.progress.popleft())
                    if update is not None:
                        await update
                if waiter.outcome is not None:
                    break
                waiter.event = anyio.Event()
                if waiter.progress or waiter.outcome is not None:
                    waiter.event.set()
        except BaseException:
            if waiter.outcome is None:
                self.cancel_request(request_id, "the caller gave up")
            raise
        return outcome_result(waiter.outcome, self.name, method)

    async def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        """Send a notification."""
        await self._transport.send(
            Notification(method=method, params=to_raw(params) if params is not None else UNSET)
        )

    # ------------------------------------------------------------------ sending

    def _dispatch(self, message: Message, entry: _Pending | None) -> None:
        """Hand a message to the transport without waiting for it."""
        if self._send_nowait is not None:
            try:
                self._send_nowait(message)
            except TransportError as exc:
                self._fail_send(message, exc)
            return
        tg = self._tg
        if tg is None:
            self._fail_send(message, TransportClosed(f"{self.name}: session closed"))
            return
        scope = anyio.CancelScope()
        if entry is not None:
            entry.send_scope = scope
        tg.start_soon(self._send_task, message, scope)

    async def _send_task(self, message: Message, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await self._transport.send(message)
            except Exception as exc:  # noqa: BLE001 - the request's caller gets it, whatever it is
                self._fail_send(message, exc)
        if isinstance(message, Request) and (entry := self._pending.get(message.id)):
            entry.send_scope = None

    def _fail_send(self, message: Message, exc: Exception) -> None:
        if isinstance(message, Request):
            entry = self._pending.pop(message.id, None)
            if entry is not None:
                self._complete(entry, exc)
        else:
            logger.debug("[%s] could not send %s: %s", self.name, type(message).__name__, exc)

    def _notice_cancelled(self, request_id: RequestId, reason: str) -> None:
        if self._closed.is_set():
            return
        self._dispatch(
            Notification(
                method="notifications/cancelled",
                params=to_raw({"requestId": request_id, "reason": reason}),
            ),
            None,
        )

    # ------------------------------------------------------------------ deadlines

    def _arm(self, deadline: float, request_id: RequestId) -> None:
        timers = self._timers
        if not timers or deadline < timers[0][0]:
            self._timer_wake.set()
        heapq.heappush(timers, (deadline, next(self._timer_seq), request_id))
        if len(timers) > 2 * len(self._pending) + 1024:
            # Finished requests leave their entries behind: keep the heap proportional
            # to what is in flight.
            self._timers = [
                item
                for item in timers
                if (entry := self._pending.get(item[2])) is not None and entry.deadline == item[0]
            ]
            heapq.heapify(self._timers)

    async def _timer_loop(self) -> None:
        while True:
            timers = self._timers
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                deadline, _, request_id = heapq.heappop(timers)
                entry = self._pending.get(request_id)
                if entry is not None and entry.deadline == deadline:
                    del self._pending[request_id]
                    self._notice_cancelled(request_id, "timed out")
                    self._complete(entry, RequestTimeout(self._timeout_message(entry)))
            self._timer_wake = anyio.Event()
            wait = timers[0][0] - time.monotonic() if timers else math.inf
            with anyio.move_on_after(wait):
                await self._timer_wake.wait()

    def _timeout_message(self, entry: _Pending) -> str:
        return f"{self.name}: no answer to {entry.method} within {entry.seconds:g} s"

    def _new_id(self) -> int:
        return next(self._ids)

    # ------------------------------------------------------------------ MCP helpers

    async def ping(self) -> None:
        """Check that the server answers (handshake era; modern servers have no ping)."""
        await self.request("ping")

    async def list_all(
        self, method: str, key: str, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Collect every item of a paginated list method (``tools/list`` → ``tools``).

        Raises:
            RpcError: The server answered a page with an error.
            InvalidRequest: A page is malformed, or the server repeats a cursor.
        """
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            page_params = dict(params or {})
            if cursor is not None:
                page_params["cursor"] = cursor
            raw = await self.request(method, page_params or None)
            page = from_raw(raw, dict[str, Any])
            chunk = page.get(key, [])
            if not isinstance(chunk, list) or not all(isinstance(item, dict) for item in chunk):
                raise InvalidRequest(
                    f"{self.name}: {method} result has no list of objects under {key!r}"
                )
            items.extend(chunk)
            cursor = from_raw(raw, _ListPage).next_cursor
            if not cursor:
                return items
            if cursor in seen:
                raise InvalidRequest(f"{self.name}: {method} repeated the cursor {cursor!r}")
            seen.add(cursor)
        raise InvalidRequest(f"{self.name}: {method} returned more than {_MAX_PAGES} pages")

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool the server offers, across all pages."""
        return await self.list_all("tools/list", "tools")

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | _Default | None = _DEFAULT,
        on_progress: ProgressHandler | None = None,
    ) -> dict[str, Any]:
        """Call a tool and return its decoded result (``content``, ``isError``, …)."""
        params: dict[str, Any] = {"name": name, "arguments": dict(arguments or {})}
        raw = await self.request("tools/call", params, timeout=timeout, on_progress=on_progress)
        return from_raw(raw, dict[str, Any])

    # ------------------------------------------------------------------ negotiation

    async def _negotiate(self) -> None:
        if self._mode == "legacy":
            await self._initialize()
            return
        version = MODERN_VERSIONS[0]
        for attempt in range(2):
            try:
                raw = await self._discover(version)
            except RequestTimeout as exc:
                if self._mode == "modern":
                    raise NegotiationError(f"{self.name}: no answer to server/discover") from exc
                logger.debug("[%s] server/discover unanswered: handshake-era server", self.name)
                await self._initialize()
                return
            except RpcError as exc:
                if exc.code == UNSUPPORTED_PROTOCOL_VERSION:
                    supported = _supported_versions(exc.data)
                    mutual = [v for v in MODERN_VERSIONS if v in supported]
                    if mutual and attempt == 0:
                        version = mutual[0]
                        continue
                    if supported and not any(v in HANDSHAKE_VERSIONS for v in supported):
                        raise NegotiationError(
                            f"{self.name}: the server speaks only {', '.join(supported)}; "
                            f"funnel speaks {', '.join(MODERN_VERSIONS + HANDSHAKE_VERSIONS)}"
                        ) from exc
                if self._mode == "modern":
                    raise NegotiationError(f"{self.name}: server/discover failed: {exc}") from exc
                logger.debug(
                    "[%s] server/discover refused (%s): handshake-era server", self.name, exc
                )
                await self._initialize()
                return
            try:
                result = from_raw(raw, DiscoverResult)
            except InvalidRequest as exc:
                if self._mode == "modern":
                    raise NegotiationError(
                        f"{self.name}: malformed server/discover result: {exc}"
                    ) from exc
                await self._initialize()
                return
            mutual = [v for v in MODERN_VERSIONS if v in result.supported_versions]
            if not mutual:
                if self._mode == "modern":
                    raise NegotiationError(
                        f"{self.name}: the server supports {', '.join(result.supported_versions)}, "
                        "none of them modern"
                    )
                await self._initialize()
                return
            self._adopt_modern(mutual[0], result)
            return

    async def _discover(self, version: str) -> Raw:
        meta = self._meta_for(version)
        self._transport.set_protocol_version(version)
        timeout = self._probe_timeout if self._mode == "auto" else self._connect_timeout
        return await self.request("server/discover", {"_meta": meta}, timeout=timeout)

    def _meta_for(self, version: str) -> dict[str, Any]:
        return {
            META_PROTOCOL_VERSION: version,
            META_CLIENT_INFO: msgspec.to_builtins(self._client_info),
            META_CLIENT_CAPABILITIES: self._capabilities,
        }

    def _adopt_modern(self, version: str, result: DiscoverResult) -> None:
        self._modern_meta = self._meta_for(version)
        self._protocol_version = version
        self._server_capabilities = result.capabilities
        info = result.meta.get("io.modelcontextprotocol/serverInfo")
        if isinstance(info, dict):
            try:
                self._server_info = msgspec.convert(info, Implementation)
            except msgspec.ValidationError:
                self._server_info = None
        self._instructions = result.instructions if isinstance(result.instructions, str) else None
        self._transport.set_protocol_version(version)
        logger.info("[%s] connected (MCP %s, stateless)", self.name, version)
        if self._listen:
            wanted = {
                flag: True
                for capability, flag in _LIST_CHANGED_FILTER
                if isinstance(self._server_capabilities.get(capability), dict)
                and self._server_capabilities[capability].get("listChanged")
            }
            if wanted:
                assert self._tg is not None  # noqa: S101 - negotiation runs inside the group
                self._tg.start_soon(self._subscribe, wanted, name=f"{self.name} listen")

    async def _subscribe(self, wanted: dict[str, Any]) -> None:
        try:
            await self.request("subscriptions/listen", {"notifications": wanted}, timeout=None)
        except RpcError as exc:
            logger.info("[%s] no list-changed subscription: %s", self.name, exc)
        except TransportError:
            # The connection ended; the owner hears of it through wait_closed().
            return

    async def _initialize(self) -> None:
        params = {
            "protocolVersion": LATEST_HANDSHAKE_VERSION,
            "capabilities": self._capabilities,
            "clientInfo": msgspec.to_builtins(self._client_info),
        }
        raw = await self.request("initialize", params, timeout=self._connect_timeout)
        try:
            result = from_raw(raw, InitializeResult)
        except InvalidRequest as exc:
            raise NegotiationError(f"{self.name}: malformed initialize result: {exc}") from exc
        if result.protocol_version not in HANDSHAKE_VERSIONS:
            raise NegotiationError(
                f"{self.name}: the server answered initialize with protocol version "
                f"{result.protocol_version!r}; funnel speaks {', '.join(HANDSHAKE_VERSIONS)}"
            )
        self._protocol_version = result.protocol_version
        self._server_capabilities = result.capabilities
        self._server_info = (
            result.server_info if isinstance(result.server_info, Implementation) else None
        )
        self._instructions = result.instructions if isinstance(result.instructions, str) else None
        self._transport.set_protocol_version(result.protocol_version)
        await self.notify("notifications/initialized")
        logger.info("[%s] connected (MCP %s)", self.name, result.protocol_version)

    # ------------------------------------------------------------------ inbound

    async def _read_loop(self) -> None:
        reason: TransportError | None
        receive = self._transport.receive
        route = self._safe_route
        attach = getattr(self._transport, "attach", None)
        if attach is not None:
            # The transport's own reader calls us directly: one task, no queue hop.
            attach(route)
        try:
            while True:
                route(await receive())
        except TransportClosed as exc:
            reason = None if self._closing else exc
        except TransportError as exc:
            reason = exc
        except Exception as exc:  # a reader must never take the session's owner down
            logger.exception("[%s] the session reader failed", self.name)
            reason = ConnectionLost(f"{self.name}: internal error reading messages: {exc!r}")
        if reason is not None:
            logger.info("[%s] connection ended: %s", self.name, reason)
        self._finish(reason)
        # Nothing can arrive any more: the timer and handler tasks have no work left.
        self._stop_background()

    def _safe_route(self, message: Message) -> None:
        try:
            if isinstance(message, Response | ErrorResponse) and message.id is not None:
                # The hot path, _route() and _complete() inlined: one answer per call.
                entry = self._pending.pop(message.id, None)
                if entry is not None and entry.send_scope is None:
                    try:
                        entry.on_done(message)
                    except Exception:
                        logger.exception(
                            "[%s] a completion callback for %s failed", self.name, entry.method
                        )
                    return
                if entry is not None:
                    self._complete(entry, message)
                    return
            self._route(message)
        except Exception:
            logger.exception("[%s] routing a message failed", self.name)

    def _route(self, message: Message) -> None:
        if isinstance(message, Response | ErrorResponse):
            entry = self._pending.pop(message.id, None) if message.id is not None else None
            if entry is None:
                logger.debug("[%s] ignored a response to unknown request %r", self.name, message.id)
                return
            self._complete(entry, message)
        elif isinstance(message, Notification):
            self._route_notification(message)
        else:
            self._route_request(message)

    def _route_notification(self, message: Notification) -> None:
        method = message.method
        if method == "notifications/progress" and isinstance(message.params, Raw):
            try:
                token = _progress_decoder.decode(message.params).progressToken
            except msgspec.DecodeError:
                logger.debug("[%s] ignored malformed progress notification", self.name)
                return
            entry = self._pending.get(token) if token is not None else None
            if entry is not None and entry.on_progress is not None:
                try:
                    entry.on_progress(from_raw(message.params, dict[str, Any]))
                except Exception:
                    logger.exception("[%s] a progress callback failed", self.name)
                return
        elif method == "notifications/cancelled" and isinstance(message.params, Raw):
            # The server withdraws one of its own requests to us.
            try:
                withdrawn = from_raw(message.params, dict[str, Any]).get("requestId")
            except InvalidRequest:
                withdrawn = None
            scope = self._server_requests.get(withdrawn) if withdrawn is not None else None
            if scope is not None:
                scope.cancel()
        handler = self._notification_handler
        if handler is None:
            return
        if self._work_send is not None:
            try:
                self._work_send.send_nowait(message)
            except anyio.WouldBlock:
                logger.warning(
                    "[%s] dropped %s: the notification handler is %d behind",
                    self.name,
                    method,
                    MAX_QUEUED_NOTIFICATIONS,
                )
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
            return
        try:
            handler(message)
        except Exception:
            logger.exception("[%s] the notification handler failed on %s", self.name, method)

    async def _work_loop(self, work_receive: MemoryObjectReceiveStream[Notification]) -> None:
        handler = self._notification_handler
        assert handler is not None  # noqa: S101 - the loop only runs with an async handler
        async with work_receive:
            async for message in work_receive:
                try:
                    result = handler(message)
                    if result is not None:
                        await result
                except Exception:
                    logger.exception("[%s] a notification handler failed", self.name)

    def _route_request(self, request: Request) -> None:
        if request.method == "ping":
            self._dispatch(Response(id=request.id, result=Raw(b"{}")), None)
            return
        if self._request_handler is None:
            self._answer_error(request, METHOD_NOT_FOUND, f"Method not found: {request.method}")
            return
        if len(self._server_requests) >= MAX_SERVER_REQUESTS or request.id in self._server_requests:
            self._answer_error(
                request,
                INTERNAL_ERROR,
                f"funnel is already answering {MAX_SERVER_REQUESTS} requests from this server",
            )
            return
        tg = self._tg
        if tg is None:
            return
        scope = anyio.CancelScope()
        self._server_requests[request.id] = scope
        tg.start_soon(self._answer, request, scope, name=f"{self.name} {request.method}")

    def _answer_error(self, request: Request, code: int, message: str, data: Any = None) -> None:
        error = ErrorObject(
            code=code, message=message, data=to_raw(data) if data is not None else UNSET
        )
        self._dispatch(ErrorResponse(id=request.id, error=error), None)

    async def _answer(self, request: Request, scope: anyio.CancelScope) -> None:
        handler = self._request_handler
        assert handler is not None  # noqa: S101 - checked by _route_request
        try:
            with scope:
                try:
                    result = await handler(request)
                except RpcError as exc:
                    self._answer_error(request, exc.code, exc.message, exc.data)
                except Exception as exc:
                    logger.exception("[%s] answering %s failed", self.name, request.method)
                    self._answer_error(
                        request, INTERNAL_ERROR, f"funnel could not answer {request.method}: {exc}"
                    )
                else:
                    raw = result if isinstance(result, Raw) else to_raw(result)
                    self._dispatch(Response(id=request.id, result=raw), None)
        finally:
            self._server_requests.pop(request.id, None)


def _supported_versions(data: Any) -> list[str]:
    if isinstance(data, dict):
        supported = data.get("supported")
        if isinstance(supported, list):
            return [v for v in supported if isinstance(v, str)]
    return []
