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
an unknown tool -32602, a backend that is down -32000 naming the server and its status.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import anyio
import msgspec
from msgspec import UNSET, Raw, UnsetType

from funnel_proxy._errors import BackendUnavailable, ToolNotFound
from funnel_proxy._funnel import Funnel, FunnelEvent
from funnel_transports import (
    HANDSHAKE_VERSIONS,
    MODERN_VERSIONS,
    DecodeError,
    ErrorObject,
    ErrorResponse,
    Message,
    Notification,
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
_SERVER_NAME: Final = "funnel"
_CAPABILITIES: Final = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"listChanged": True},
}
_LIST_NOTIFICATIONS: Final = {
    "tools": ("notifications/tools/list_changed", "toolsListChanged"),
    "prompts": ("notifications/prompts/list_changed", "promptsListChanged"),
    "resources": ("notifications/resources/list_changed", "resourcesListChanged"),
}


class _CallParams(msgspec.Struct):
    name: str
    arguments: Raw | UnsetType = UNSET
    meta: dict[str, Any] | UnsetType = msgspec.field(default=UNSET, name="_meta")


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


class McpServerSession:
    """Serves one downstream MCP client over a :class:`Funnel`.

    Args:
        funnel: The funnel to serve.
        send: Delivers a message to the client.
        version: funnel's version, announced as server info.
        instructions: Usage instructions for models, sent on ``initialize``.
    """

    def __init__(
        self, funnel: Funnel, send: Send, *, version: str, instructions: str | None = None
    ) -> None:
        self._funnel = funnel
        self._send = send
        self._info = {"name": _SERVER_NAME, "version": version}
        self._instructions = instructions
        self._initialized = False
        self._in_flight: dict[RequestId, anyio.CancelScope] = {}
        self._subscriptions: dict[RequestId, frozenset[str]] = {}

    async def watch(self) -> None:
        """Forward the funnel's list changes to this client until cancelled."""
        async with self._funnel.events() as events:
            async for event in events:
                await self._notify_changes(event)

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
            logger.debug("ignored a response from the client to %r", message.id)

    # ------------------------------------------------------------------ requests

    async def _handle_request(self, request: Request) -> None:
        modern = False
        try:
            meta = (
                from_raw(request.params, _RequestMeta).meta
                if isinstance(request.params, Raw)
                else UNSET
            )
            if isinstance(meta, dict) and _META_VERSION in meta:
                modern = True
                self._check_version(meta[_META_VERSION])
            with anyio.CancelScope() as scope:
                self._in_flight[request.id] = scope
                result = await self._dispatch(request, modern=modern)
            if scope.cancelled_caught:
                return  # the client cancelled: MCP says send nothing
            if modern:
                result = _mark_complete(result)
            await self._send(Response(id=request.id, result=result))
        except _Failure as exc:
            await self._error(request.id, exc.code, exc.message, exc.data)
        except DecodeError as exc:
            await self._error(request.id, -32602, f"Invalid params: {exc}")
        except ToolNotFound as exc:
            await self._error(request.id, -32602, str(exc))
        except BackendUnavailable as exc:
            await self._error(
                request.id, -32000, str(exc), {"server": exc.server, "status": exc.status}
            )
        except RpcError as exc:
            await self._error(request.id, exc.code, exc.message, exc.data)
        except RequestTimeout as exc:
            await self._error(request.id, -32001, str(exc))
        except TransportError as exc:
            await self._error(request.id, -32000, str(exc))
        finally:
            self._in_flight.pop(request.id, None)

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
            return self._initialize(params)
        if method == "server/discover":
            return to_raw(self._discover())
        if method == "ping":
            return Raw(b"{}")
        if method == "tools/list":
            return self._list({"tools": self._funnel.list_tools_raw()}, modern=modern)
        if method == "tools/call":
            return await self._call_tool(request)
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
            return await self._read_resource(params)
        if method == "subscriptions/listen":
            return await self._listen(request.id, params)
        raise _Failure(-32601, f"Method not found: {method}")

    def _initialize(self, params: Mapping[str, Any]) -> Raw:
        requested = params.get("protocolVersion")
        version = requested if requested in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[0]
        self._initialized = True
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": _CAPABILITIES,
            "serverInfo": self._info,
        }
        if self._instructions:
            result["instructions"] = self._instructions
        return to_raw(result)

    def _discover(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "resultType": "complete",
            "supportedVersions": list(MODERN_VERSIONS),
            "capabilities": _CAPABILITIES,
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

    async def _call_tool(self, request: Request) -> Raw:
        if not isinstance(request.params, Raw):
            raise _Failure(-32602, "Invalid params: tools/call needs a name")
        params = from_raw(request.params, _CallParams)
        client_token = params.meta.get("progressToken") if isinstance(params.meta, dict) else None
        on_progress = self._progress_forwarder(client_token) if client_token is not None else None
        arguments = params.arguments if isinstance(params.arguments, Raw) else None
        entry = self._funnel.resolve_tool(params.name)
        meta = {
            key: value
            for key, value in (params.meta.items() if isinstance(params.meta, dict) else ())
            if not key.startswith(_RESERVED_META_PREFIX) and key != "progressToken"
        }
        return await self._funnel.call_tool(
            entry, arguments, meta=meta or None, on_progress=on_progress
        )

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
        return await self._funnel.forward(
            server, "prompts/get", {**_without_reserved_meta(params), "name": original}
        )

    async def _read_resource(self, params: Mapping[str, Any]) -> Raw:
        uri = params.get("uri")
        server = self._funnel.surface.owner_of_resource(uri) if isinstance(uri, str) else None
        if server is None:
            raise _Failure(-32602, f"Resource not found: {uri}")
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
