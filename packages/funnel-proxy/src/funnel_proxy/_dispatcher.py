"""The MCP server side of the funnel: incoming JSON-RPC → :class:`Funnel`.

Theory of operation: one :class:`McpServerSession` per downstream client connection (a
stdio stream, an HTTP session). :meth:`McpServerSession.handle` takes one decoded message
and answers through the ``send`` callback it was given; the caller runs each request in
its own task, so calls to backends are pipelined rather than serialized.

Both protocol eras are served: ``initialize`` starts a handshake-era session; a request
whose ``params._meta`` carries ``io.modelcontextprotocol/protocolVersion`` is served
statelessly (2026-07-28), with ``resultType`` on every result and list-changed
notifications only on a ``subscriptions/listen`` stream. Forwarded results stay raw
bytes; only ``tools/call`` params are decoded, to route by name.

Errors answer as JSON-RPC errors and never end the session: garbage gets -32700/-32600,
an unknown tool -32602, a backend that is down -32000 naming the server and its status,
an authorization a person must give -32000 with what to do, anything unexpected -32603.

The session is also a :class:`~funnel_proxy._funnel.Client` of the funnel: requests a
backend sends (sampling, elicitation, roots) come to it through :meth:`McpServerSession.ask`
when the funnel's routing rule picks this client; they go out with ids of their own
(``funnel-1``, …), bounded by ``client_request_timeout``, and the client's answer comes
back through :meth:`McpServerSession.handle`. Log messages and resource updates come
through :meth:`McpServerSession.deliver` into a bounded queue that :meth:`watch` drains.
Per request, everything a backend sent for it (progress, requests) goes out before its
result: the result is sent by the same task, after the progress callbacks it awaited.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream
from msgspec import UNSET, Raw, UnsetType

from funnel_auth import AuthError, AuthorizationRequired, redact
from funnel_proxy import _telemetry
from funnel_proxy._core_tools import CORE_SERVER
from funnel_proxy._errors import BackendUnavailable, ProxyError, ToolNotFound
from funnel_proxy._funnel import Funnel, FunnelEvent
from funnel_proxy._mrtr import (
    ParkedCall,
    StateSealer,
    drive_rounds,
    input_required,
    is_input_required,
)
from funnel_proxy._routing import LOG_LEVELS as _LOG_LEVELS
from funnel_proxy._routing import InFlight, log_level_passes
from funnel_proxy._tasks_routing import TASK_METHODS, client_declares_tasks
from funnel_transports import (
    HANDSHAKE_VERSIONS,
    MODERN_VERSIONS,
    DecodeError,
    ErrorObject,
    ErrorResponse,
    Message,
    Notification,
    Outcome,
    Request,
    RequestId,
    RequestTimeout,
    Response,
    RpcError,
    TransportError,
    from_raw,
    to_raw,
)

__all__ = ["McpServerSession", "Send"]

logger = logging.getLogger("funnel_proxy.server")

Send = Callable[[Message], Awaitable[None]]
"""Delivers one message to the downstream client."""

_META_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
_META_SUBSCRIPTION: Final = "io.modelcontextprotocol/subscriptionId"
_RESERVED_META_PREFIX: Final = "io.modelcontextprotocol/"
# The _meta of a call that has none (no empty dict made per call).
_NO_META: Final[Mapping[str, Any]] = MappingProxyType({})
_META_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
_META_LOG_LEVEL: Final = "io.modelcontextprotocol/logLevel"
_SERVER_NAME: Final = "funnel"
#: Notifications queued for a client between two writes; beyond it they are dropped.
MAX_QUEUED_NOTIFICATIONS: Final = 256
#: Seconds a client may take to answer a backend's request (a person may be typing).
DEFAULT_CLIENT_REQUEST_TIMEOUT: Final = 300.0
_LIST_NOTIFICATIONS: Final = {
    "tools": ("notifications/tools/list_changed", "toolsListChanged"),
    "prompts": ("notifications/prompts/list_changed", "promptsListChanged"),
    "resources": ("notifications/resources/list_changed", "resourcesListChanged"),
}


#: Requests that need the backends' lists: the first ones wait briefly for slow starters.
_LISTS: Final = frozenset(
    {
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "tools/call",
        "prompts/get",
        "resources/read",
        "completion/complete",
    }
)


class _CallParams(msgspec.Struct):
    name: str
    arguments: Raw | UnsetType = UNSET
    meta: dict[str, Any] | UnsetType = msgspec.field(default=UNSET, name="_meta")
    input_responses: Raw | UnsetType = msgspec.field(default=UNSET, name="inputResponses")
    request_state: Any = msgspec.field(default=UNSET, name="requestState")
    task: Any = UNSET


class _RequestMeta(msgspec.Struct):
    meta: dict[str, Any] | UnsetType = msgspec.field(default=UNSET, name="_meta")


class _Failure(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _mark_complete(raw: Raw) -> Raw:
    """Add ``"resultType":"complete"`` to a raw result object that lacks it (no decoding)."""
    data = bytes(raw)
    if b'"resultType"' in data or not data.startswith(b"{"):
        return raw
    rest = data[1:].lstrip()
    return Raw(b'{"resultType":"complete"' + (b"," if not rest.startswith(b"}") else b"") + rest)


class _HotCall(InFlight):
    """A handshake-era ``tools/call`` on the hot path: one object from start to answer.

    It is the call's routing record (an :class:`InFlight`), the completion callback the
    funnel calls with the backend's outcome (which it answers the client with, under the
    client's id), and the handle that withdraws the call. One object instead of a
    closure, its cells and a record per call: every proxied call makes one.
    """

    __slots__ = ("_owner", "_request", "cancel")

    def __init__(self, owner: McpServerSession, server: str, request: Request) -> None:
        super().__init__(server, request.id)
        self._owner = owner
        self._request = request
        self.cancel: Callable[[], None] | None = None

    def __call__(self, outcome: Outcome) -> None:
        owner, request_id = self._owner, self.request_id
        send = owner._send_nowait
        assert send is not None  # noqa: S101 - hot calls exist only with send_nowait
        if isinstance(outcome, Response):
            answer: Message = Response(id=request_id, result=outcome.result)
        elif isinstance(outcome, ErrorResponse):
            answer = ErrorResponse(id=request_id, error=outcome.error)
        else:
            answer = ErrorResponse(id=request_id, error=owner._error_for(outcome, self._request))
        owner._fast.pop(request_id, None)
        owner._calls.pop(request_id, None)
        send(answer)

    def withdraw(self) -> None:
        """The client cancelled the call or left: the backend is told, nobody is answered."""
        if self.cancel is not None:
            self.cancel()


class McpServerSession:
    """Serves one downstream MCP client over a :class:`Funnel`.

    Args:
        funnel: The funnel to serve.
        send: Delivers a message to the client.
        version: funnel's version, announced as server info.
        instructions: Usage instructions for models, sent on ``initialize``.
    """

    def __init__(
        self,
        funnel: Funnel,
        send: Send,
        *,
        version: str,
        instructions: str | None = None,
        client_request_timeout: float = DEFAULT_CLIENT_REQUEST_TIMEOUT,
        first_list_wait: float | None = None,
        send_nowait: Callable[[Message], None] | None = None,
    ) -> None:
        self._funnel = funnel
        self._send = send
        self._send_nowait = send_nowait
        self._fast: dict[RequestId, _HotCall] = {}
        self._info = {"name": _SERVER_NAME, "version": version}
        self._instructions = instructions
        self._client_request_timeout = client_request_timeout
        self._first_list_wait = funnel.startup_wait if first_list_wait is None else first_list_wait
        self._initialized = False
        self._in_flight: dict[RequestId, anyio.CancelScope] = {}
        self._subscriptions: dict[RequestId, frozenset[str]] = {}
        self._capabilities: Mapping[str, Any] = {}
        self._last_active = time.monotonic()
        self._calls: dict[RequestId, InFlight] = {}
        self._ask_ids = itertools.count(1)
        self._asks: dict[str, tuple[anyio.Event, list[Response | ErrorResponse]]] = {}
        self._related: dict[str, RequestId] = {}
        self._log_level: str | None = None
        self._funnel_ready = False
        self._modern = False
        self._queue_send: MemoryObjectSendStream[Notification] | None = None
        self._protocol_version: str | None = None  # negotiated by initialize
        #: Sends a notification with the client's request it belongs to, without
        #: waiting; returns whether it could (the HTTP endpoint sets it).
        self.send_related: Callable[[Notification, RequestId], bool] | None = None

    # ------------------------------------------------------------------ as a client

    @property
    def capabilities(self) -> Mapping[str, Any]:
        """The capabilities the client declared (``initialize``, or a request's ``_meta``)."""
        return self._capabilities

    @property
    def last_active(self) -> float:
        """When the client last sent a request (monotonic seconds)."""
        return self._last_active

    def in_flight(self, server: str) -> list[InFlight]:
        """This client's calls in flight to ``server``."""
        if self._modern:
            return []  # a modern client's calls are parked: the parked call answers
        return [call for call in self._calls.values() if call.server == server]

    def related_request(self, request_id: RequestId) -> RequestId | None:
        """The client's request that a request funnel sent it (by id) belongs to."""
        return self._related.get(request_id) if isinstance(request_id, str) else None

    async def ask(self, method: str, params: Raw | None, call: InFlight | None = None) -> Raw:
        """Send the client a request on a backend's behalf and return its raw result.

        Raises:
            RpcError: The client answered with an error, or did not answer in time.
        """
        request_id = f"funnel-{next(self._ask_ids)}"
        if call is not None:
            self._related[request_id] = call.request_id
        done = anyio.Event()
        answer: list[Response | ErrorResponse] = []
        self._asks[request_id] = (done, answer)
        try:
            await self._send(
                Request(
                    id=request_id, method=method, params=params if params is not None else UNSET
                )
            )
            with anyio.move_on_after(self._client_request_timeout):
                await done.wait()
        except BaseException:
            if not done.is_set():
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    await self._send(
                        Notification(
                            method="notifications/cancelled",
                            params=to_raw({"requestId": request_id, "reason": "withdrawn"}),
                        )
                    )
            raise
        finally:
            self._asks.pop(request_id, None)
            self._related.pop(request_id, None)
        if not answer:
            await self._send(
                Notification(
                    method="notifications/cancelled",
                    params=to_raw({"requestId": request_id, "reason": "timed out"}),
                )
            )
            raise RpcError(
                -32001,
                f"the client did not answer {method} within {self._client_request_timeout:g} s",
            )
        reply = answer[0]
        if isinstance(reply, ErrorResponse):
            data = from_raw(reply.error.data) if isinstance(reply.error.data, Raw) else None
            raise RpcError(reply.error.code, reply.error.message, data)
        return reply.result

    def deliver(
        self, message: Notification, *, level: str | None = None, server: str | None = None
    ) -> None:
        """Queue a notification for the client; :meth:`watch` sends it.

        A notification from ``server`` while this (handshake-era) client has a call in
        flight to it goes with that call, the most recent one: through ``send_related``
        when one is set (the HTTP endpoint puts it on that call's POST stream), else
        queued like the rest.
        """
        if level is not None and not log_level_passes(level, self._log_level):
            return
        if server is not None and self.send_related is not None and not self._modern:
            calls = [call for call in self._calls.values() if call.server == server]
            if calls:
                call = max(calls, key=lambda c: c.started)
                if self.send_related(message, call.request_id):
                    return
        if self._queue_send is None:
            return  # nobody is watching: the client cannot be sent anything unasked
        try:
            self._queue_send.send_nowait(message)
        except anyio.WouldBlock:
            logger.debug(
                "dropped %s: the client is %d behind", message.method, MAX_QUEUED_NOTIFICATIONS
            )
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def watch(self) -> None:
        """Forward list changes, log messages and resource updates until cancelled."""
        async with self._funnel.client(self), anyio.create_task_group() as tg:
            tg.start_soon(self._drain_queue)
            async with self._funnel.events() as events:
                async for event in events:
                    await self._notify_changes(event)

    def detach(self) -> None:
        """The client is gone: stop routing anything to it."""
        self._funnel.remove_client(self)
        for done, _ in self._asks.values():
            done.set()

    async def serve(self) -> None:
        """Be reachable as a client of the funnel (no list changes) until cancelled."""
        async with self._funnel.client(self):
            await self._drain_queue()

    async def _drain_queue(self) -> None:
        send, receive = anyio.create_memory_object_stream[Notification](MAX_QUEUED_NOTIFICATIONS)
        self._queue_send = send
        try:
            async with send, receive:
                async for message in receive:
                    await self._send(message)
        finally:
            self._queue_send = None

    def handle_nowait(self, message: Message | DecodeError) -> bool:
        """Serve ``message`` on the hot path if it can be; return whether it was taken.

        A handshake-era ``tools/call`` for a stdio backend is started at once, with no
        task: its progress and its result are written by the backend's reader as they
        come (in that order). Everything else returns ``False``: run :meth:`handle`.
        Needs ``send_nowait``.
        """
        if (
            self._send_nowait is None
            or _telemetry.enabled  # traced calls take the task path, with their spans
            or not isinstance(message, Request)
            or message.method != "tools/call"
            or not isinstance(message.params, Raw)
            or message.id in self._in_flight
            or message.id in self._fast
        ):
            return False
        try:
            params = from_raw(message.params, _CallParams)
        except DecodeError:
            return False
        meta = params.meta if isinstance(params.meta, dict) else _NO_META
        if _META_VERSION in meta or params.request_state is not UNSET:
            return False
        if not isinstance(params.input_responses, UnsetType) or params.task is not UNSET:
            return False
        try:
            entry = self._funnel.resolve_tool(params.name)
        except ProxyError:
            return False
        if entry.server == CORE_SERVER:
            return False
        request_id = message.id
        forwarded: dict[str, Any] | None = None
        on_progress = None
        if meta:
            token = meta.get("progressToken")
            if token is not None:
                on_progress = self._progress_writer(token, self._send_nowait)
            forwarded = {
                key: value
                for key, value in meta.items()
                if not key.startswith(_RESERVED_META_PREFIX) and key != "progressToken"
            } or None
        self._last_active = time.monotonic()
        call = _HotCall(self, entry.server, message)
        self._calls[request_id] = call
        try:
            cancel = self._funnel.start_tool_call(
                entry,
                params.arguments if isinstance(params.arguments, Raw) else None,
                forwarded,
                call,
                on_progress,
            )
        except Exception as exc:  # noqa: BLE001 - a refusal (rate limit) is this call's answer
            self._calls.pop(request_id, None)
            self._send_nowait(ErrorResponse(id=request_id, error=self._error_for(exc, message)))
            return True
        if cancel is None:
            self._calls.pop(request_id, None)
            return False
        call.cancel = cancel
        self._fast[request_id] = call
        return True

    @staticmethod
    def _progress_writer(
        token: Any, send: Callable[[Message], None]
    ) -> Callable[[dict[str, Any]], None]:
        def forward(progress: dict[str, Any]) -> None:
            send(
                Notification(
                    method="notifications/progress",
                    params=to_raw({**progress, "progressToken": token}),
                )
            )

        return forward

    def close(self) -> None:
        """The client is gone: withdraw its hot-path calls (their backends are told)."""
        for call in list(self._fast.values()):
            call.withdraw()
        self._fast.clear()

    async def handle(self, message: Message | DecodeError) -> None:
        """Handle one message from the client (or the error decoding it)."""
        if isinstance(message, DecodeError):
            await self._send(
                ErrorResponse(
                    id=message.request_id,
                    error=ErrorObject(code=message.code, message=str(message)),
                )
            )
        elif isinstance(message, Request):
            await self._handle_request(message)
        elif isinstance(message, Notification):
            self._handle_notification(message)
        else:
            waiting = self._asks.get(message.id) if isinstance(message.id, str) else None
            if waiting is None:
                logger.debug("ignored a response from the client to %r", message.id)
                return
            done, answer = waiting
            if not done.is_set():
                answer.append(message)
                done.set()

    # ------------------------------------------------------------------ requests

    async def _handle_request(self, request: Request) -> None:
        modern = False
        traced = (
            _telemetry.start_server(request, self._protocol_version) if _telemetry.enabled else None
        )
        try:
            meta = (
                from_raw(request.params, _RequestMeta).meta
                if isinstance(request.params, Raw)
                else UNSET
            )
            if isinstance(meta, dict) and _META_VERSION in meta:
                modern = self._modern = True
                self._check_version(meta[_META_VERSION])
                capabilities = meta.get(_META_CAPABILITIES)
                if isinstance(capabilities, dict):
                    self._capabilities = capabilities
            self._last_active = time.monotonic()
            with anyio.CancelScope() as scope:
                self._in_flight[request.id] = scope
                result = await self._dispatch(request, modern=modern)
            if scope.cancelled_caught:
                return  # the client cancelled: MCP says send nothing
            if modern:
                result = _mark_complete(result)
            if traced is not None:
                traced.succeeded(result)
            await self._send(Response(id=request.id, result=result))
        except Exception as exc:  # noqa: BLE001 - every failure is an answer; none ends the session
            error = self._error_for(exc, request)
            if traced is not None:
                traced.failed(error.code, error.message)
            await self._send(ErrorResponse(id=request.id, error=error))
        finally:
            self._in_flight.pop(request.id, None)
            self._calls.pop(request.id, None)
            if traced is not None:
                traced.end()

    def _meta_for_backend(self, client_meta: Any) -> dict[str, Any]:
        """What a stateless-era backend must hear of this client in a request's ``_meta``.

        The client's capabilities (what the backend may ask it, through funnel) and the
        log level it wants (its own per request, or the one ``logging/setLevel`` set). A
        handshake-era backend ignores both.
        """
        # Always, even empty: the backend must not think the client can do what it cannot.
        out: dict[str, Any] = {_META_CAPABILITIES: dict(self._capabilities)}
        level = client_meta.get(_META_LOG_LEVEL) if isinstance(client_meta, dict) else None
        level = level if level in _LOG_LEVELS else self._log_level
        if level is not None:
            out[_META_LOG_LEVEL] = level
        return out

    def _error_for(self, exc: Exception, request: Request) -> ErrorObject:
        known = self._calls.get(request.id)
        server = known.server if known is not None else "a backend"
        return error_object(
            exc,
            method=request.method,
            server=server,
            authorize_url=self._authorize_url(server) if known is not None else None,
        )

    def _authorize_url(self, server: str) -> str | None:
        state = next((s for s in self._funnel.states() if s.name == server), None)
        return state.authorize_url if state is not None else None

    def _check_version(self, version: object) -> None:
        if version not in MODERN_VERSIONS:
            raise _Failure(
                -32022,
                "Unsupported protocol version",
                {"supported": list(MODERN_VERSIONS), "requested": version},
            )

    async def _error(
        self, request_id: RequestId, code: int, message: str, data: Any = None
    ) -> None:
        error = ErrorObject(
            code=code, message=message, data=to_raw(data) if data is not None else UNSET
        )
        await self._send(ErrorResponse(id=request_id, error=error))

    async def _dispatch(self, request: Request, *, modern: bool) -> Raw:
        method = request.method
        params: Mapping[str, Any] = (
            from_raw(request.params, dict[str, Any])
            if isinstance(request.params, Raw) and method != "tools/call"
            else {}
        )
        if method == "initialize":
            capabilities = params.get("capabilities")
            self._capabilities = capabilities if isinstance(capabilities, dict) else {}
            return self._initialize(params)
        if method == "server/discover":
            return to_raw(self._discover())
        if method == "ping":
            return Raw(b"{}")
        if method in _LISTS and not self._funnel_ready:
            self._funnel_ready = await self._funnel.wait_ready(self._first_list_wait) or True
        if method == "tools/list":
            # Tools that run only as a 2025-11-25 task: for handshake clients that declared
            # tasks (a 2026-07-28 client's tasks are the server's choice, per call).
            tasks = not modern and client_declares_tasks(self._capabilities)
            tools = self._funnel.list_tools_raw(tasks=tasks)
            return self._list({"tools": tools}, modern=modern)
        if method == "tools/call":
            return await self._call_tool(request, modern=modern)
        if method == "prompts/list":
            return self._list({"prompts": list(self._funnel.surface.prompts)}, modern=modern)
        if method == "prompts/get":
            return await self._get_prompt(params, request)
        if method == "resources/list":
            return self._list({"resources": list(self._funnel.surface.resources)}, modern=modern)
        if method == "resources/templates/list":
            return self._list(
                {"resourceTemplates": list(self._funnel.surface.resource_templates)}, modern=modern
            )
        if method == "resources/read":
            return await self._read_resource(request.id, params)
        if method == "subscriptions/listen":
            return await self._listen(request.id, params)
        if method == "logging/setLevel":
            return await self._set_level(params)
        if method == "completion/complete":
            return await self._complete(request.id, params)
        if method in TASK_METHODS:
            route = self._funnel.find_task(params, self._task_owner)
            # A call to the task's backend meanwhile (what the task asks comes with it).
            self._calls[request.id] = InFlight(route.server, request.id)
            return await self._funnel.task_request(method, _without_reserved_meta(params), route)
        if method == "tasks/list":
            return await self._funnel.list_tasks(self._task_owner)
        if method == "resources/subscribe":
            await self._funnel.subscribe_resource(self, self._uri(params))
            return Raw(b"{}")
        if method == "resources/unsubscribe":
            await self._funnel.unsubscribe_resource(self, self._uri(params))
            return Raw(b"{}")
        raise _Failure(-32601, f"Method not found: {method}")

    @property
    def _task_owner(self) -> object | None:
        # A stateless-era client has no session that could own a task: any may use it.
        return None if self._modern else self

    @staticmethod
    def _uri(params: Mapping[str, Any]) -> str:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise _Failure(-32602, "Invalid params: uri must be a string")
        return uri

    async def _set_level(self, params: Mapping[str, Any]) -> Raw:
        level = params.get("level")
        if level not in _LOG_LEVELS:
            raise _Failure(-32602, f"Invalid params: level must be one of {', '.join(_LOG_LEVELS)}")
        self._log_level = level
        await self._funnel.set_log_level(level)
        return Raw(b"{}")

    async def _complete(self, request_id: RequestId, params: Mapping[str, Any]) -> Raw:
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise _Failure(-32602, "Invalid params: completion/complete needs a ref")
        surface = self._funnel.surface
        forwarded = _without_reserved_meta(params)
        if ref.get("type") == "ref/prompt":
            name = ref.get("name")
            owner = surface.prompt_owner.get(name) if isinstance(name, str) else None
            if owner is None:
                raise _Failure(-32602, f"Prompt not found: {name}")
            server, original = owner
            forwarded["ref"] = {**ref, "name": original}
        elif ref.get("type") == "ref/resource":
            uri = ref.get("uri")
            found = surface.owner_of_template(uri) if isinstance(uri, str) else None
            if found is None:
                raise _Failure(-32602, f"Resource template not found: {uri}")
            server = found
        else:
            raise _Failure(-32602, f"Invalid params: unknown ref type {ref.get('type')!r}")
        self._calls[request_id] = InFlight(server, request_id)
        return await self._funnel.forward(server, "completion/complete", forwarded)

    def _initialize(self, params: Mapping[str, Any]) -> Raw:
        requested = params.get("protocolVersion")
        version = requested if requested in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[0]
        self._protocol_version = version
        self._initialized = True
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": self._funnel.capabilities(current=False),
            "serverInfo": self._info,
        }
        if self._instructions:
            result["instructions"] = self._instructions
        return to_raw(result)

    def _discover(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "resultType": "complete",
            "supportedVersions": list(MODERN_VERSIONS),
            "capabilities": self._funnel.capabilities(),
            "_meta": {"io.modelcontextprotocol/serverInfo": self._info},
        }
        if self._instructions:
            result["instructions"] = self._instructions
        return result

    @staticmethod
    def _list(body: dict[str, Any], *, modern: bool) -> Raw:
        if modern:
            # The list changes whenever a backend's does: clients may not cache it.
            body = {"resultType": "complete", **body, "ttlMs": 0, "cacheScope": "private"}
        return to_raw(body)

    async def _call_tool(self, request: Request, *, modern: bool) -> Raw:
        if not isinstance(request.params, Raw):
            raise _Failure(-32602, "Invalid params: tools/call needs a name")
        params = from_raw(request.params, _CallParams)
        client_token = params.meta.get("progressToken") if isinstance(params.meta, dict) else None
        on_progress = self._progress_forwarder(client_token) if client_token is not None else None
        arguments = params.arguments if isinstance(params.arguments, Raw) else None
        entry = self._funnel.resolve_tool(params.name)
        self._calls[request.id] = InFlight(entry.server, request.id)
        meta = {
            key: value
            for key, value in (params.meta.items() if isinstance(params.meta, dict) else ())
            if not key.startswith(_RESERVED_META_PREFIX) and key != "progressToken"
        }
        if self._funnel.backend_era(entry.server) == "modern":
            meta.update(self._meta_for_backend(params.meta))
        state = params.request_state
        if StateSealer.is_ours(state):
            # The retry of a call funnel parked for this (modern) client.
            call = self._funnel.parked.find(state)
            if call is None:
                raise _Failure(-32602, "Invalid or expired requestState")
            if isinstance(params.input_responses, Raw):
                responses = from_raw(params.input_responses)
                call.answer(responses if isinstance(responses, dict) else {})
            return await self._resume(call)
        extra: dict[str, Any] = {}
        if params.task is not UNSET and not modern:
            # 2026-07-28 has no task-augmented requests: a modern client's ``task`` is
            # not of its era and is ignored, as a receiver that does not offer it must.
            self._funnel.check_task_call(entry)
            extra["task"] = params.task
        if isinstance(params.input_responses, Raw):
            extra["inputResponses"] = params.input_responses
        if state is not UNSET:
            extra["requestState"] = state
        if (
            modern
            and entry.server != CORE_SERVER
            and self._funnel.backend_era(entry.server) == "legacy"
        ):
            # A handshake-era backend may send requests mid-call, which a modern client
            # cannot take: the call runs parked and its requests become input_required.
            call = self._funnel.parked.new(entry.server, self._capabilities)
            self._funnel.park(
                call,
                lambda: self._funnel.call_tool(
                    entry, arguments, meta=meta or None, extra=extra or None
                ),
            )
            return await self._resume(call)
        result = await self._funnel.call_tool(
            entry, arguments, meta=meta or None, on_progress=on_progress, extra=extra or None
        )
        if "task" in extra or (modern and entry.server != CORE_SERVER):
            # A task the backend created (asked for, or in 2026-07-28 its own choice).
            result = self._funnel.remember_task(entry.server, result, self._task_owner)
        if not modern and is_input_required(result):
            # A modern backend asks for input: ask this handshake-era client, retry.
            async def retry(responses: dict[str, Any], backend_state: Any) -> Raw:
                again: dict[str, Any] = {"inputResponses": responses}
                if backend_state is not None:
                    again["requestState"] = backend_state
                return await self._funnel.call_tool(
                    entry, arguments, meta=meta or None, on_progress=on_progress, extra=again
                )

            mine = self._calls.get(request.id)
            result = await drive_rounds(
                result, retry, lambda method, raw, _: self.ask(method, raw, mine)
            )
        return result

    async def _resume(self, call: ParkedCall) -> Raw:
        outcome = await call.next()
        if isinstance(outcome, dict):
            return input_required(outcome, self._funnel.parked.sealer.seal(call.id))
        self._funnel.parked.forget(call)
        return outcome

    def _progress_forwarder(self, token: Any) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def forward(progress: dict[str, Any]) -> None:
            await self._send(
                Notification(
                    method="notifications/progress",
                    params=to_raw({**progress, "progressToken": token}),
                )
            )

        return forward

    async def _get_prompt(self, params: Mapping[str, Any], request: Request) -> Raw:
        name = params.get("name")
        owner = self._funnel.surface.prompt_owner.get(name) if isinstance(name, str) else None
        if owner is None:
            raise _Failure(-32602, f"Prompt not found: {name}")
        server, original = owner
        self._calls[request.id] = InFlight(server, request.id)
        return await self._funnel.forward(
            server, "prompts/get", {**_without_reserved_meta(params), "name": original}
        )

    async def _read_resource(self, request_id: RequestId, params: Mapping[str, Any]) -> Raw:
        uri = params.get("uri")
        server = self._funnel.surface.owner_of_resource(uri) if isinstance(uri, str) else None
        if server is None:
            raise _Failure(-32002, f"Resource not found: {uri}", {"uri": uri})
        self._calls[request_id] = InFlight(server, request_id)
        return await self._funnel.forward(server, "resources/read", _without_reserved_meta(params))

    async def _listen(self, request_id: RequestId, params: Mapping[str, Any]) -> Raw:
        wanted = (
            params.get("notifications") if isinstance(params.get("notifications"), dict) else {}
        )
        assert isinstance(wanted, dict)  # noqa: S101 - narrowed just above
        granted = {flag: True for _, flag in _LIST_NOTIFICATIONS.values() if wanted.get(flag)}
        kinds = frozenset(
            kind for kind, (_, flag) in _LIST_NOTIFICATIONS.items() if flag in granted
        )
        await self._send(
            Notification(
                method="notifications/subscriptions/acknowledged",
                params=to_raw(
                    {"_meta": {_META_SUBSCRIPTION: request_id}, "notifications": granted}
                ),
            )
        )
        self._subscriptions[request_id] = kinds
        try:
            await anyio.sleep_forever()
        finally:
            self._subscriptions.pop(request_id, None)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ notifications

    def _handle_notification(self, message: Notification) -> None:
        if message.method == "notifications/initialized":
            self._initialized = True
        elif message.method == "notifications/cancelled" and isinstance(message.params, Raw):
            try:
                request_id = from_raw(message.params, dict[str, Any]).get("requestId")
            except DecodeError:
                return
            scope = self._in_flight.get(request_id)  # type: ignore[arg-type]
            if scope is not None:
                scope.cancel()
            call = self._fast.pop(request_id, None)  # type: ignore[arg-type]
            if call is not None:
                self._calls.pop(request_id, None)  # type: ignore[arg-type]
                call.withdraw()

    async def _notify_changes(self, event: FunnelEvent) -> None:
        if event.kind != "list_changed":
            return
        for kind in sorted(event.lists):
            method, _ = _LIST_NOTIFICATIONS[kind]
            if self._initialized:
                await self._send(Notification(method=method))
            for subscription, kinds in list(self._subscriptions.items()):
                if kind in kinds:
                    await self._send(
                        Notification(
                            method=method,
                            params=to_raw({"_meta": {_META_SUBSCRIPTION: subscription}}),
                        )
                    )


def error_object(
    exc: Exception, *, method: str, server: str, authorize_url: str | None = None
) -> ErrorObject:
    """The JSON-RPC error a client gets for ``exc`` (anything a request can raise)."""
    code, message, data = _error_parts(
        exc, method=method, server=server, authorize_url=authorize_url
    )
    return ErrorObject(code=code, message=message, data=to_raw(data) if data is not None else UNSET)


def _error_parts(
    exc: Exception, *, method: str, server: str, authorize_url: str | None
) -> tuple[int, str, Any]:
    if isinstance(exc, _Failure):
        return exc.code, exc.message, exc.data
    if isinstance(exc, DecodeError):
        return -32602, f"Invalid params: {exc}", None
    if isinstance(exc, ToolNotFound):
        return -32602, str(exc), None
    if isinstance(exc, BackendUnavailable):
        return -32000, str(exc), {"server": exc.server, "status": exc.status}
    if isinstance(exc, RpcError):
        return exc.code, exc.message, exc.data
    if isinstance(exc, RequestTimeout):
        return -32001, str(exc), {"server": server}
    if isinstance(exc, TransportError):
        return -32000, str(exc), {"server": server}
    if isinstance(exc, AuthorizationRequired):
        # The authorization server's own URL: a person opens it from any client, stdio
        # included; the dashboard's route is there too for those who use it.
        return (
            -32000,
            f"{server} needs a login: open the URL in data.authorizeUrl, then retry",
            {
                "server": server,
                "action": "authorize",
                "authorizeUrl": exc.authorization_url,
                "dashboardPath": authorize_url,
            },
        )
    if isinstance(exc, AuthError):
        return -32000, f"authorization failed for {server}: {redact(str(exc))}", {"server": server}
    if isinstance(exc, ProxyError):
        return -32000, str(exc), None
    logger.error("internal error handling %s", method, exc_info=exc)
    return -32603, f"Internal error handling {method}", None


def _without_reserved_meta(params: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(params)
    meta = out.get("_meta")
    if isinstance(meta, dict):
        kept = {
            key: value for key, value in meta.items() if not key.startswith(_RESERVED_META_PREFIX)
        }
        if kept:
            out["_meta"] = kept
        else:
            out.pop("_meta")
    return out
