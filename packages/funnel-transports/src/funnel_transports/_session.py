"""The MCP client session: requests and responses over any transport, both protocol eras.

Theory of operation: a session owns one reader task, which takes every message the
transport delivers and routes it: a response wakes the request that waits for it (by
id); ``notifications/progress`` goes to the progress callback of the request whose id is
its progress token; other notifications go, in order, to the notification handler; a
request from the server is answered (``ping`` by the session itself, anything else by the
request handler or with -32601). Handlers run on a second task fed through an unbounded
queue, so a slow handler never stalls responses.

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

A caller that gives up on a request (timeout or cancellation) makes the session send
``notifications/cancelled`` for it, so the server can stop working on it.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from msgspec import UNSET, Raw

from funnel_transports._errors import (
    METHOD_NOT_FOUND,
    UNSUPPORTED_PROTOCOL_VERSION,
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
from funnel_transports._transport import Transport

__all__ = [
    "ClientSession",
    "NotificationHandler",
    "ProgressHandler",
    "RequestHandler",
    "SessionMode",
]

logger = logging.getLogger("funnel_transports.session")

SessionMode: TypeAlias = Literal["auto", "legacy", "modern"]
ProgressHandler: TypeAlias = Callable[[dict[str, Any]], Awaitable[None]]
"""Receives the ``params`` of each ``notifications/progress`` for one request."""
NotificationHandler: TypeAlias = Callable[[Notification], Awaitable[None]]
"""Receives every notification from the server except progress for a request."""
RequestHandler: TypeAlias = Callable[[Request], Awaitable[Any]]
"""Answers a request from the server: return the result, or raise :class:`RpcError`."""

_DEFAULT_CLIENT_INFO: Final = Implementation(name="funnel", version="0.1.0")
_LIST_CHANGED_FILTER: Final = (
    ("tools", "toolsListChanged"),
    ("prompts", "promptsListChanged"),
    ("resources", "resourcesListChanged"),
)
_MAX_PAGES: Final = 1000
_CANCEL_NOTICE_TIMEOUT: Final = 2.0


class _Default:
    """Marks "use the session's default timeout" apart from ``None`` (no timeout)."""


_DEFAULT: Final = _Default()


class _Pending:
    __slots__ = ("done", "on_progress", "outcome")

    def __init__(self, on_progress: ProgressHandler | None) -> None:
        self.done = anyio.Event()
        self.on_progress = on_progress
        self.outcome: Response | ErrorResponse | TransportError | None = None


class _ListPage(msgspec.Struct, rename="camel"):
    next_cursor: str | None = None


_Work: TypeAlias = tuple[Callable[..., Awaitable[None]], Any]


class ClientSession:
    """An MCP client session over one :class:`Transport`.

    Enter it (``async with``) inside the transport's own ``async with`` block; entering
    negotiates the protocol, leaving stops the session's tasks. The session never closes
    the transport: its owner does.

    Args:
        transport: The connected transport.
        mode: Protocol era selection, see the module documentation.
        client_info: Name and version announced to the server.
        capabilities: Client capabilities to declare (none by default: funnel forwards
            no sampling, roots or elicitation).
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
        self._mode: SessionMode = mode
        self._client_info = client_info
        self._capabilities = dict(capabilities or {})
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout if connect_timeout is not None else request_timeout
        self._probe_timeout = probe_timeout
        self._notification_handler = notification_handler
        self._request_handler = request_handler
        self._listen = listen

        self._next_id = 0
        self._pending: dict[RequestId, _Pending] = {}
        self._modern_meta: dict[str, Any] | None = None
        self._protocol_version: str | None = None
        self._server_capabilities: dict[str, Any] = {}
        self._server_info: Implementation | None = None
        self._instructions: str | None = None

        self._task_group: anyio.abc.TaskGroup | None = None
        self._work_send: MemoryObjectSendStream[_Work] | None = None
        self._closed = anyio.Event()
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

    async def wait_closed(self) -> TransportError | None:
        """Wait until the session ends; return why (``None`` when we closed it)."""
        await self._closed.wait()
        return self._close_reason

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        work_receive: MemoryObjectReceiveStream[_Work]
        self._work_send, work_receive = anyio.create_memory_object_stream[_Work](math.inf)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._read_loop)
        self._task_group.start_soon(self._work_loop, work_receive)
        try:
            await self._negotiate()
        except BaseException:
            # Exit the group as if cleanly (its tasks are cancelled) so that the
            # caller sees the negotiation error itself, not an ExceptionGroup around it.
            self._shutdown()
            await self._task_group.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the session's tasks; pending requests fail with :class:`TransportClosed`."""
        if self._task_group is None or self._closing:
            return
        self._shutdown()
        await self._task_group.__aexit__(None, None, None)

    def _shutdown(self) -> None:
        self._closing = True
        assert self._task_group is not None  # noqa: S101 - only called after __aenter__
        self._task_group.cancel_scope.cancel()
        self._finish(None)

    def _finish(self, reason: TransportError | None) -> None:
        if self._closed.is_set():
            return
        self._close_reason = reason
        failure = reason or TransportClosed(f"{self.name}: session closed")
        for pending in self._pending.values():
            pending.outcome = failure
            pending.done.set()
        self._pending.clear()
        if self._work_send is not None:
            self._work_send.close()
        self._closed.set()

    # ------------------------------------------------------------------ requests

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | _Default | None = _DEFAULT,
        on_progress: ProgressHandler | None = None,
    ) -> Raw:
        """Send a request and return the raw ``result`` of its response.

        In the modern era the session adds protocol version, client info and
        capabilities to ``params._meta``; with ``on_progress`` it adds a
        ``progressToken``. Existing ``_meta`` entries (such as a client's own progress
        token being forwarded) are kept unless the session must set them.

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
        if self._closed.is_set():
            raise self._close_reason or TransportClosed(f"{self.name}: session closed")
        request_id = self._new_id()
        body = dict(params) if params is not None else {}
        meta_source = body.get("_meta")
        meta: dict[str, Any] = dict(meta_source) if isinstance(meta_source, Mapping) else {}
        if on_progress is not None:
            meta["progressToken"] = request_id
        if self._modern_meta is not None:
            meta.update(self._modern_meta)
        if meta:
            body["_meta"] = meta
        pending = _Pending(on_progress)
        self._pending[request_id] = pending
        wait_for = self._request_timeout if isinstance(timeout, _Default) else timeout
        try:
            await self._transport.send(
                Request(
                    id=request_id,
                    method=method,
                    params=to_raw(body) if body or params is not None else UNSET,
                )
            )
            with anyio.move_on_after(math.inf if wait_for is None else wait_for):
                await pending.done.wait()
        except anyio.get_cancelled_exc_class():
            if not pending.done.is_set():
                await self._cancel_remote(request_id, "the caller gave up")
            raise
        finally:
            self._pending.pop(request_id, None)
        outcome = pending.outcome
        if outcome is None:
            await self._cancel_remote(request_id, "timed out")
            raise RequestTimeout(f"{self.name}: no answer to {method} within {wait_for:g} s")
        if isinstance(outcome, Response):
            return outcome.result
        if isinstance(outcome, ErrorResponse):
            error = outcome.error
            data = from_raw(error.data) if isinstance(error.data, Raw) else None
            raise RpcError(error.code, error.message, data)
        raise outcome

    async def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        """Send a notification."""
        await self._transport.send(
            Notification(method=method, params=to_raw(params) if params is not None else UNSET)
        )

    async def _cancel_remote(self, request_id: RequestId, reason: str) -> None:
        if self._closed.is_set():
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_NOTICE_TIMEOUT):
            try:
                await self.notify(
                    "notifications/cancelled", {"requestId": request_id, "reason": reason}
                )
            except TransportError as exc:
                logger.debug("[%s] could not send cancellation: %s", self.name, exc)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

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
                assert self._task_group is not None  # noqa: S101 - set in __aenter__
                self._task_group.start_soon(self._subscribe, wanted)

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
        try:
            while True:
                self._route(await self._transport.receive())
        except TransportClosed as exc:
            reason = None if self._closing else exc
        except TransportError as exc:
            reason = exc
        if reason is not None:
            logger.info("[%s] connection ended: %s", self.name, reason)
        self._finish(reason)

    def _route(self, message: Message) -> None:
        if isinstance(message, Response | ErrorResponse):
            pending = self._pending.pop(message.id, None) if message.id is not None else None
            if pending is None:
                logger.debug("[%s] ignored a response to unknown request %r", self.name, message.id)
                return
            pending.outcome = message
            pending.done.set()
        elif isinstance(message, Notification):
            self._route_notification(message)
        else:
            self._queue(self._answer, message)

    def _route_notification(self, message: Notification) -> None:
        if message.method == "notifications/progress" and isinstance(message.params, Raw):
            try:
                params = from_raw(message.params, dict[str, Any])
            except InvalidRequest:
                logger.debug("[%s] ignored malformed progress notification", self.name)
                return
            pending = self._pending.get(params.get("progressToken"))  # type: ignore[arg-type]
            if pending is not None and pending.on_progress is not None:
                self._queue(pending.on_progress, params)
                return
        if self._notification_handler is not None:
            self._queue(self._notification_handler, message)

    def _queue(self, handler: Callable[..., Awaitable[None]], argument: Any) -> None:
        # After the session finished, late messages have nobody left to handle them.
        if self._work_send is None:
            return
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._work_send.send_nowait((handler, argument))

    async def _work_loop(self, work_receive: MemoryObjectReceiveStream[_Work]) -> None:
        async with work_receive:
            async for handler, argument in work_receive:
                try:
                    await handler(argument)
                except Exception:
                    logger.exception("[%s] a message handler failed", self.name)

    async def _answer(self, request: Request) -> None:
        if request.method == "ping":
            reply: Message = Response(id=request.id, result=Raw(b"{}"))
        elif self._request_handler is None:
            reply = ErrorResponse(
                id=request.id,
                error=ErrorObject(
                    code=METHOD_NOT_FOUND, message=f"Method not found: {request.method}"
                ),
            )
        else:
            try:
                reply = Response(id=request.id, result=to_raw(await self._request_handler(request)))
            except RpcError as exc:
                data = to_raw(exc.data) if exc.data is not None else UNSET
                reply = ErrorResponse(
                    id=request.id, error=ErrorObject(code=exc.code, message=exc.message, data=data)
                )
        try:
            await self._transport.send(reply)
        except TransportError as exc:
            logger.debug("[%s] could not answer %s: %s", self.name, request.method, exc)


def _supported_versions(data: Any) -> list[str]:
    if isinstance(data, dict):
        supported = data.get("supported")
        if isinstance(supported, list):
            return [v for v in supported if isinstance(v, str)]
    return []
