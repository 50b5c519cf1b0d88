"""Misbehaving backends behind ``funnel-server --stdio``: each fault costs only the call
it hits, with an error that names the server, within a bound; the backend recovers; the
healthy backend never notices; memory stays flat."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from support.faults import (
    CALL,
    PROBE,
    HttpBackend,
    StdioSession,
    error_text,
    healthy_backend,
    hostile_backend,
    result_text,
    rss_kib,
    running_stdio,
)

pytestmark = [pytest.mark.anyio, pytest.mark.npm]


@pytest.fixture(scope="module")
async def funnel(module_tmp: Path, http_backend: HttpBackend) -> AsyncIterator[StdioSession]:
    config = {
        "servers": {
            "healthy": healthy_backend(),
            "hostile": hostile_backend(),
            "remote": {
                "transport": {"type": "streamable-http", "url": http_backend.url, "timeout": 2000}
            },
        },
        "autoReconnect": {"initialDelayMs": 200, "maxDelayMs": 2000},
    }
    async with running_stdio(module_tmp, config) as session:
        yield session


@pytest.fixture
async def remote(funnel: StdioSession, http_backend: HttpBackend) -> AsyncIterator[HttpBackend]:
    http_backend.mode("normal")
    try:
        yield http_backend
    finally:
        http_backend.mode("normal")
        await funnel.heal("remote")


@pytest.fixture(autouse=True)
async def _independent(funnel: StdioSession) -> AsyncIterator[None]:
    yield
    if funnel.serving and not await _answers(funnel, "hostile__echo"):
        await funnel.heal("hostile")


async def _answers(funnel: StdioSession, tool: str) -> bool:
    try:
        reply = await funnel.call(tool, {"message": "m"}, timeout=PROBE)
    except AssertionError:
        return False
    return "result" in reply


async def _fails_naming(funnel: StdioSession, tool: str, server: str) -> None:
    """Calling ``tool`` fails within the bound, with an error that names ``server``."""
    reply = await funnel.call(tool, {"message": "m"}, timeout=CALL)
    text = error_text(reply)
    assert text, f"expected an error, got {reply}"
    assert server in text, f"the error does not name {server!r}: {text}"


# ------------------------------------------------------------------ stdio backend


async def test_garbage_around_an_answer_costs_nothing(funnel: StdioSession) -> None:
    await funnel.ensure()
    reply = await funnel.call("hostile__garbage", timeout=CALL)
    assert result_text(reply) == "survived garbage"
    await funnel.assert_serving()


async def test_an_answer_with_invalid_utf8_fails_only_that_call(funnel: StdioSession) -> None:
    await funnel.ensure()
    await _fails_naming(funnel, "hostile__badutf8", "hostile")
    await funnel.until_answers("hostile__echo", "Echo: back")
    await funnel.assert_serving()


async def test_an_answer_nested_5000_deep_fails_only_that_call(funnel: StdioSession) -> None:
    await funnel.ensure()
    await _fails_naming(funnel, "hostile__deep", "hostile")
    await funnel.until_answers("hostile__echo", "Echo: back")
    await funnel.assert_serving()


async def test_a_12_mb_answer_fails_that_call_and_the_backend_recovers(
    funnel: StdioSession,
) -> None:
    await funnel.ensure()
    await _fails_naming(funnel, "hostile__giant", "hostile")
    await funnel.until_answers("hostile__echo", "Echo: back")
    await funnel.assert_serving()


async def test_a_backend_that_crashes_mid_call_fails_it_and_comes_back(
    funnel: StdioSession,
) -> None:
    await funnel.ensure()
    await _fails_naming(funnel, "hostile__crash", "hostile")
    await funnel.until_answers("hostile__echo", "Echo: back")
    await funnel.assert_serving()


async def test_a_hanging_call_blocks_nobody_and_its_cancel_reaches_the_backend(
    funnel: StdioSession,
) -> None:
    await funnel.ensure()
    hung = funnel.new_id("hang")
    params = {"name": "hostile__hang", "arguments": {}}
    await funnel.send(
        json.dumps(
            {"jsonrpc": "2.0", "id": hung, "method": "tools/call", "params": params}
        ).encode()
    )
    await funnel.assert_serving()  # the healthy backend answers meanwhile
    assert result_text(await funnel.call("hostile__echo", {"message": "m"})) == "Echo: m"
    await funnel.notify("notifications/cancelled", {"requestId": hung, "reason": "probe"})
    with anyio.fail_after(PROBE):
        while True:  # bounded: the cancel is forwarded asynchronously
            if json.loads(result_text(await funnel.call("hostile__cancelled"))):
                break
            await anyio.sleep(0.05)
    await funnel.assert_serving()


async def test_a_slow_drip_answer_arrives_whole(funnel: StdioSession) -> None:
    await funnel.ensure()
    assert result_text(await funnel.call("hostile__drip", timeout=CALL)) == "dripped"
    await funnel.assert_serving()


async def test_a_backend_stopped_with_sigstop_blocks_nobody_and_resumes(
    funnel: StdioSession,
) -> None:
    await funnel.ensure()
    pid = int(result_text(await funnel.call("hostile__pid")))
    frozen = funnel.new_id("freeze")
    params = {"name": "hostile__freeze", "arguments": {}}
    try:
        await funnel.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": frozen, "method": "tools/call", "params": params}
            ).encode()
        )
        with anyio.fail_after(PROBE):
            while True:  # bounded: waiting for the backend to stop itself
                if Path(f"/proc/{pid}/stat").read_text().split()[2] == "T":
                    break
                await anyio.sleep(0.05)
        await funnel.assert_serving()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert result_text(await funnel.reply_to(frozen, timeout=PROBE)) == "thawed"
    await funnel.until_answers("hostile__echo", "Echo: back")
    await funnel.assert_serving()


@pytest.mark.slow
async def test_a_notification_flood_keeps_progress_before_the_result_and_memory_flat(
    funnel: StdioSession,
) -> None:
    await funnel.ensure()
    funnel.keep_notifications = False

    async def flood(token: str, count: int) -> None:
        funnel.log.clear()
        request_id = funnel.new_id("flood")
        params = {
            "name": "hostile__flood",
            "arguments": {"count": count},
            "_meta": {"progressToken": token},
        }
        await funnel.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
            ).encode()
        )
        reply = await funnel.reply_to(request_id, timeout=60)
        assert result_text(reply) == f"flooded {count}"
        order = [kind for kind, key in funnel.log if key in (token, request_id)]
        assert order.count("note") > 0, "no progress notification reached the client"
        assert order[-1] == "reply", "a progress notification arrived after the result"

    try:
        await flood("warm", 1000)
        before = rss_kib(funnel.funnel.pid)
        for round_ in range(3):
            await flood(f"t{round_}", 3000)
        after = rss_kib(funnel.funnel.pid)
    finally:
        funnel.keep_notifications = True
    assert after - before < 40 * 1024, f"RSS grew from {before} KiB to {after} KiB"
    await funnel.assert_serving()


@pytest.mark.slow
async def test_a_list_changed_flood_is_absorbed(funnel: StdioSession) -> None:
    await funnel.ensure()
    funnel.keep_notifications = False
    try:
        reply = await funnel.call("hostile__listflood", {"count": 3000}, timeout=60)
    finally:
        funnel.keep_notifications = True
    assert result_text(reply) == "flooded 3000"
    await funnel.assert_serving()
    assert result_text(await funnel.call("hostile__echo", {"message": "m"})) == "Echo: m"


# ------------------------------------------------------------------ HTTP backend


async def test_a_backend_that_never_sends_headers_is_bounded_by_its_timeout(
    funnel: StdioSession, remote: HttpBackend
) -> None:
    await funnel.ensure()
    remote.mode("no-headers")
    await _fails_naming(funnel, "remote__echo", "remote")
    await funnel.assert_serving()
    remote.mode("normal")
    await funnel.until_answers("remote__echo", "Echo: back")


async def test_a_backend_that_never_sends_the_body_is_bounded_by_its_timeout(
    funnel: StdioSession, remote: HttpBackend
) -> None:
    await funnel.ensure()
    remote.mode("slow-body")
    await _fails_naming(funnel, "remote__echo", "remote")
    await funnel.assert_serving()
    remote.mode("normal")
    await funnel.until_answers("remote__echo", "Echo: back")


@pytest.mark.parametrize("mode", ["forget", "expire"], ids=["400-no-valid-session", "404"])
async def test_a_forgotten_session_is_renewed_and_the_call_retried(
    funnel: StdioSession, remote: HttpBackend, mode: str
) -> None:
    await funnel.ensure()
    await funnel.until_answers("remote__echo", "Echo: back")
    remote.mode(mode)
    reply = await funnel.call("remote__echo", {"message": "again"}, timeout=CALL)
    assert "result" in reply, f"the call was not retried on a fresh session: {reply}"
    assert result_text(reply) == "Echo: again"
    await funnel.assert_serving()


@pytest.mark.parametrize("mode", ["429", "500", "502", "503", "drop", "garbage"])
async def test_an_http_failure_fails_the_call_naming_the_server_and_heals(
    funnel: StdioSession, remote: HttpBackend, mode: str
) -> None:
    await funnel.ensure()
    await funnel.until_answers("remote__echo", "Echo: back")
    remote.mode(mode)
    await _fails_naming(funnel, "remote__echo", "remote")
    await funnel.assert_serving()
    remote.mode("normal")
    await funnel.until_answers("remote__echo", "Echo: back")
    await funnel.assert_serving()
