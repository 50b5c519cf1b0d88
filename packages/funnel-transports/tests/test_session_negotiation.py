"""Session behaviour with the test playing the server over an in-memory transport.

This tier sees what real peers rarely do on demand: every negotiation branch, server
requests, stray responses, progress routing and handler failures.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from types import MappingProxyType, TracebackType
from typing import Any, Self

import anyio
import msgspec
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from funnel_transports import (
    ClientSession,
    ConnectionLost,
    ErrorObject,
    ErrorResponse,
    Message,
    NegotiationError,
    Notification,
    Request,
    Response,
    RpcError,
    TransportClosed,
    from_raw,
    to_raw,
)

pytestmark = pytest.mark.anyio


class MemoryTransport:
    """A transport whose far end is the test."""

    def __init__(self) -> None:
        self.to_server: MemoryObjectSendStream[Message]
        self.from_client: MemoryObjectReceiveStream[Message]
        self.to_client: MemoryObjectSendStream[Message]
        self.from_server: MemoryObjectReceiveStream[Message]
        self.to_server, self.from_client = anyio.create_memory_object_stream[Message](math.inf)
        self.to_client, self.from_server = anyio.create_memory_object_stream[Message](math.inf)
        self.versions: list[str] = []

    @property
    def name(self) -> str:
        return "fake"

    def set_protocol_version(self, version: str) -> None:
        self.versions.append(version)

    async def send(self, message: Message) -> None:
        try:
            await self.to_server.send(message)
        except anyio.ClosedResourceError as exc:
            raise TransportClosed("fake: closed") from exc

    async def receive(self) -> Message:
        try:
            return await self.from_server.receive()
        except anyio.EndOfStream as exc:
            raise ConnectionLost("fake: the server went away") from exc

    async def aclose(self) -> None:
        for stream in (self.to_server, self.from_client, self.to_client, self.from_server):
            stream.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


Script = Callable[[MemoryTransport], Coroutine[Any, Any, None]]


async def next_request(t: MemoryTransport) -> Request:
    while True:
        message = await t.from_client.receive()
        if isinstance(message, Request):
            return message


def reply(t: MemoryTransport, request: Request, result: dict[str, Any]) -> None:
    t.to_client.send_nowait(Response(id=request.id, result=to_raw(result)))


def fail(t: MemoryTransport, request: Request, code: int, message: str, data: Any = None) -> None:
    t.to_client.send_nowait(
        ErrorResponse(
            id=request.id,
            error=ErrorObject(
                code=code,
                message=message,
                data=to_raw(data) if data is not None else msgspec_unset(),
            ),
        )
    )


def msgspec_unset() -> Any:

    return msgspec.UNSET


async def answer_initialize(t: MemoryTransport, version: str = "2025-06-18") -> Request:
    request = await next_request(t)
    assert request.method == "initialize"
    reply(
        t,
        request,
        {
            "protocolVersion": version,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "s", "version": "1"},
        },
    )
    return request


@asynccontextmanager
async def served(
    script: Script, **options: Any
) -> AsyncIterator[tuple[ClientSession, MemoryTransport]]:
    transport = MemoryTransport()
    try:
        async with transport, anyio.create_task_group() as tg:
            tg.start_soon(script, transport)
            with anyio.fail_after(5):
                async with ClientSession(transport, **options) as session:
                    yield session, transport
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Let tests see the session's own error, not the harness's task group around it.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def test_a_discover_result_with_a_modern_version_makes_the_session_modern() -> None:
    async def server(t: MemoryTransport) -> None:
        probe = await next_request(t)
        assert probe.method == "server/discover"
        reply(
            t,
            probe,
            {
                "supportedVersions": ["2026-07-28"],
                "capabilities": {"tools": {}},
                "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern", "version": "2"}},
                "instructions": "be nice",
            },
        )
        call = await next_request(t)
        params = from_raw(call.params)  # type: ignore[arg-type]
        reply(t, call, {"meta": params["_meta"]})

    async with served(server) as (session, t):
        assert session.era == "modern"
        assert session.protocol_version == "2026-07-28"
        assert session.server_info is not None and session.server_info.name == "modern"
        assert session.instructions == "be nice"
        echoed = from_raw(await session.request("tools/list"))
    meta = echoed["meta"]
    assert meta["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    assert meta["io.modelcontextprotocol/clientInfo"]["name"] == "funnel"
    assert meta["io.modelcontextprotocol/clientCapabilities"] == {}
    assert t.versions[-1] == "2026-07-28"


@pytest.mark.parametrize(
    ("code", "data"),
    [(-32601, None), (-32602, None), (-32600, {"why": "no session"}), (-32000, None)],
)
async def test_any_non_modern_error_to_the_probe_falls_back_to_initialize(
    code: int, data: Any
) -> None:
    async def server(t: MemoryTransport) -> None:
        fail(t, await next_request(t), code, "nope", data)
        await answer_initialize(t)
        initialized = await t.from_client.receive()
        assert isinstance(initialized, Notification)
        assert initialized.method == "notifications/initialized"

    async with served(server) as (session, t):
        assert session.era == "legacy"
        assert session.protocol_version == "2025-06-18"
        assert t.versions[-1] == "2025-06-18"


async def test_an_unanswered_probe_falls_back_to_initialize_and_is_cancelled() -> None:
    async def server(t: MemoryTransport) -> None:
        probe = await next_request(t)
        cancel = await t.from_client.receive()
        assert isinstance(cancel, Notification)
        assert cancel.method == "notifications/cancelled"
        assert from_raw(cancel.params)["requestId"] == probe.id  # type: ignore[arg-type]
        await answer_initialize(t)
        await anyio.sleep_forever()

    async with served(server, probe_timeout=0.05) as (session, _):
        assert session.era == "legacy"


async def test_unsupported_version_naming_a_mutual_modern_version_retries_with_it() -> None:
    async def server(t: MemoryTransport) -> None:
        first = await next_request(t)
        fail(
            t,
            first,
            -32022,
            "Unsupported protocol version",
            {"supported": ["2026-07-28"], "requested": "x"},
        )
        second = await next_request(t)
        assert second.method == "server/discover"
        reply(t, second, {"supportedVersions": ["2026-07-28"], "capabilities": {}})
        await anyio.sleep_forever()

    async with served(server) as (session, _):
        assert session.era == "modern"


async def test_a_modern_only_server_with_no_shared_version_is_a_negotiation_error() -> None:
    async def server(t: MemoryTransport) -> None:
        for _ in range(2):
            fail(t, await next_request(t), -32022, "Unsupported", {"supported": ["2031-01-01"]})
        await anyio.sleep_forever()

    with pytest.raises(NegotiationError, match="the server speaks only 2031-01-01"):
        async with served(server):
            pass


async def test_a_discover_result_without_modern_versions_falls_back_to_initialize() -> None:
    async def server(t: MemoryTransport) -> None:
        reply(t, await next_request(t), {"supportedVersions": ["2025-06-18"], "capabilities": {}})
        await answer_initialize(t)
        await anyio.sleep_forever()

    async with served(server) as (session, _):
        assert session.era == "legacy"


async def test_an_initialize_answer_with_an_unknown_version_is_refused() -> None:
    async def server(t: MemoryTransport) -> None:
        await answer_initialize(t, version="1999-01-01")
        await anyio.sleep_forever()

    with pytest.raises(NegotiationError, match="'1999-01-01'"):
        async with served(server, mode="legacy"):
            pass


async def test_modern_mode_refuses_a_handshake_era_server() -> None:
    async def server(t: MemoryTransport) -> None:
        fail(t, await next_request(t), -32601, "Method not found")
        await anyio.sleep_forever()

    with pytest.raises(NegotiationError, match="server/discover failed"):
        async with served(server, mode="modern"):
            pass


async def test_server_requests_are_answered_ping_by_the_session_others_by_the_handler() -> None:
    answers: dict[object, Message] = {}
    done = anyio.Event()

    async def server(t: MemoryTransport) -> None:
        await answer_initialize(t)
        t.to_client.send_nowait(Request(id="p", method="ping"))
        t.to_client.send_nowait(Request(id="r", method="roots/list"))
        t.to_client.send_nowait(Request(id="x", method="sampling/createMessage"))
        while len(answers) < 3:
            message = await t.from_client.receive()
            if isinstance(message, Response | ErrorResponse):
                answers[message.id] = message
        done.set()
        await anyio.sleep_forever()

    async def handler(request: Request) -> Any:
        if request.method == "roots/list":
            return {"roots": []}
        raise RpcError(-32601, f"no {request.method}")

    async with served(server, mode="legacy", request_handler=handler):
        await done.wait()
    assert isinstance(answers["p"], Response) and bytes(answers["p"].result) == b"{}"
    assert isinstance(answers["r"], Response) and from_raw(answers["r"].result) == {"roots": []}
    assert (
        isinstance(answers["x"], ErrorResponse)
        and answers["x"].error.message == "no sampling/createMessage"
    )


async def test_without_a_handler_server_requests_get_method_not_found() -> None:
    got: list[ErrorResponse] = []
    done = anyio.Event()

    async def server(t: MemoryTransport) -> None:
        await answer_initialize(t)
        t.to_client.send_nowait(Request(id=1, method="elicitation/create"))
        while not got:
            message = await t.from_client.receive()
            if isinstance(message, ErrorResponse):
                got.append(message)
        done.set()
        await anyio.sleep_forever()

    async with served(server, mode="legacy"):
        await done.wait()
    assert got[0].error.code == -32601


async def test_progress_goes_to_the_request_that_asked_and_other_notifications_to_the_handler() -> (
    None
):
    seen: list[str] = []

    async def server(t: MemoryTransport) -> None:
        await answer_initialize(t)
        call = await next_request(t)
        token = from_raw(call.params)["_meta"]["progressToken"]  # type: ignore[arg-type]
        for step in (1, 2):
            t.to_client.send_nowait(
                Notification(
                    method="notifications/progress",
                    params=to_raw({"progressToken": token, "progress": step}),
                )
            )
        t.to_client.send_nowait(
            Notification(
                method="notifications/progress",
                params=to_raw({"progressToken": "someone-else", "progress": 9}),
            )
        )
        t.to_client.send_nowait(Notification(method="notifications/tools/list_changed"))
        t.to_client.send_nowait(Response(id=12345, result=to_raw({})))  # stray: ignored
        reply(t, call, {"content": []})
        await anyio.sleep_forever()

    progress: list[float] = []

    async def on_progress(params: dict[str, Any]) -> None:
        progress.append(params["progress"])

    both_seen = anyio.Event()

    async def on_notification(message: Notification) -> None:
        seen.append(message.method)
        if message.method == "notifications/tools/list_changed":
            both_seen.set()
            raise RuntimeError("a failing handler must not end the session")

    async with served(server, mode="legacy", notification_handler=on_notification) as (session, _):
        assert await session.call_tool("t", {}, on_progress=on_progress) == {"content": []}
        with anyio.fail_after(5):
            await both_seen.wait()
        assert not session.closed
    assert progress == [1, 2]
    assert seen == ["notifications/progress", "notifications/tools/list_changed"]


async def test_a_caller_that_gives_up_makes_the_session_send_a_cancellation() -> None:
    cancelled = anyio.Event()
    call_ids: list[object] = []

    async def server(t: MemoryTransport) -> None:
        await answer_initialize(t)
        call = await next_request(t)
        call_ids.append(call.id)
        while True:
            message = await t.from_client.receive()
            if isinstance(message, Notification) and message.method == "notifications/cancelled":
                assert from_raw(message.params)["requestId"] == call.id  # type: ignore[arg-type]
                cancelled.set()

    async with served(server, mode="legacy") as (session, _):
        with anyio.move_on_after(0.05):
            await session.call_tool("slow")
        with anyio.fail_after(5):
            await cancelled.wait()


async def test_pending_requests_fail_when_the_transport_breaks() -> None:
    async def server(t: MemoryTransport) -> None:
        await answer_initialize(t)
        await next_request(t)
        t.to_client.close()

    async with served(server, mode="legacy") as (session, _):
        with pytest.raises(ConnectionLost, match="fake: the server went away"):
            await session.call_tool("anything")
        assert isinstance(await session.wait_closed(), ConnectionLost)
        assert session.closed


async def test_server_errors_become_rpc_errors_with_code_message_and_data() -> None:
    async def server(t: MemoryTransport) -> None:
        await answer_initialize(t)
        fail(t, await next_request(t), -32602, "Unknown tool: nope", {"tool": "nope"})
        await anyio.sleep_forever()

    async with served(server, mode="legacy") as (session, _):
        with pytest.raises(RpcError) as caught:
            await session.call_tool("nope")
    assert (caught.value.code, caught.value.message, caught.value.data) == (
        -32602,
        "Unknown tool: nope",
        {"tool": "nope"},
    )


async def test_an_answer_to_a_withdrawn_request_is_dropped_and_later_answers_still_arrive() -> None:
    withdrawn_seen = anyio.Event()

    async def server(t: MemoryTransport) -> None:
        await answer_initialize(t)
        withdrawn: Any = None
        while withdrawn is None:  # the call may be withdrawn before or after it went out
            message = await t.from_client.receive()
            if isinstance(message, Notification) and message.method == "notifications/cancelled":
                withdrawn = from_raw(message.params)["requestId"]  # type: ignore[arg-type]
        withdrawn_seen.set()
        second = await next_request(t)
        while from_raw(second.params)["name"] != "fast":  # type: ignore[arg-type]
            second = await next_request(t)
        # Late answers to the withdrawn call (a result and an error), a notification and
        # a stray error in between, then the second call's answer.
        t.to_client.send_nowait(Response(id=withdrawn, result=to_raw({"content": []})))
        t.to_client.send_nowait(Notification(method="notifications/message", params=to_raw({})))
        t.to_client.send_nowait(
            ErrorResponse(id=withdrawn, error=ErrorObject(code=-32603, message="too late"))
        )
        t.to_client.send_nowait(
            ErrorResponse(id=None, error=ErrorObject(code=-32700, message="stray"))
        )
        reply(t, second, {"content": [{"type": "text", "text": "second"}]})
        await anyio.sleep_forever()

    outcomes: list[object] = []
    notified = anyio.Event()

    def on_notification(message: Notification) -> None:
        notified.set()

    async with served(server, mode="legacy", notification_handler=on_notification) as (
        session,
        _,
    ):
        request_id = session.start_request("tools/call", {"name": "slow"}, outcomes.append)
        session.cancel_request(request_id, "the client cancelled the call")
        with anyio.fail_after(5):
            await withdrawn_seen.wait()
            result = await session.call_tool("fast")
            await notified.wait()
        assert result == {"content": [{"type": "text", "text": "second"}]}
        assert session.in_flight == 0
        assert not session.closed
    assert outcomes == [], "a withdrawn request's callback is never called"


async def test_params_of_any_mapping_go_out_as_given_and_are_never_changed() -> None:
    seen: list[Any] = []

    async def server(t: MemoryTransport) -> None:
        await answer_initialize(t)
        for _ in range(2):
            call = await next_request(t)
            seen.append(from_raw(call.params))  # type: ignore[arg-type]
            reply(t, call, {"content": []})
        await anyio.sleep_forever()

    frozen = MappingProxyType({"name": "t", "arguments": {"a": 1}})
    plain = {"name": "t", "_meta": {"k": "v"}}

    async def on_progress(params: dict[str, Any]) -> None:
        pass

    async with served(server, mode="legacy") as (session, _):
        await session.request("tools/call", frozen)
        await session.request("tools/call", plain, on_progress=on_progress)
    assert seen[0] == {"name": "t", "arguments": {"a": 1}}
    assert seen[1]["_meta"]["k"] == "v" and "progressToken" in seen[1]["_meta"]
    assert plain == {"name": "t", "_meta": {"k": "v"}}, "the caller's params are not changed"
