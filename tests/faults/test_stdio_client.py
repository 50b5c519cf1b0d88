"""Hostile clients on ``funnel-server --stdio``: every bad line gets a clear JSON-RPC error
(or, for what needs no answer, nothing), and the session and every backend survive it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from support.faults import (
    CORPUS,
    HUGE,
    INVALID,
    REFUSALS,
    Hostile,
    StdioSession,
    error_code,
    healthy_backend,
    materialise,
    rss_kib,
    running_stdio,
)

pytestmark = [pytest.mark.anyio, pytest.mark.npm]


@pytest.fixture(scope="module")
async def funnel(module_tmp: Path) -> AsyncIterator[StdioSession]:
    async with running_stdio(module_tmp, {"servers": {"healthy": healthy_backend()}}) as session:
        yield session


@pytest.mark.parametrize("probe", CORPUS, ids=repr)
async def test_a_hostile_line_gets_a_clear_answer_and_the_session_survives(
    funnel: StdioSession, probe: Hostile
) -> None:
    await funnel.ensure()
    funnel.orphans.clear()
    request_id = funnel.new_id("probe")
    await funnel.send(materialise(probe, request_id))
    if probe.answered:
        reply = await (
            funnel.reply_to(request_id) if probe.addressed else funnel.answer(request_id)
        )
        if "error" in reply:
            assert probe.codes, f"no error expected, got {reply}"
            assert error_code(reply) in probe.codes, reply
            assert reply.get("id") in (request_id, None), reply
        else:
            assert probe.ok or not probe.codes, f"expected an error {set(probe.codes)}, got {reply}"
    await funnel.assert_serving()


@pytest.mark.slow
async def test_a_line_over_the_size_limit_is_refused_and_the_session_survives(
    funnel: StdioSession,
) -> None:
    await funnel.ensure()
    funnel.orphans.clear()
    request_id = funnel.new_id("huge")
    await funnel.send(HUGE.replace(b"__ID__", request_id.encode()))
    reply = await funnel.answer(request_id, timeout=20)
    assert error_code(reply) in REFUSALS, reply
    await funnel.assert_serving()


async def test_a_batch_is_answered_or_refused_as_a_whole_and_the_session_survives(
    funnel: StdioSession,
) -> None:
    await funnel.ensure()
    funnel.orphans.clear()
    first, second = funnel.new_id("b"), funnel.new_id("b")
    await funnel.send(
        b'[{"jsonrpc":"2.0","id":"%s","method":"ping"},{"jsonrpc":"2.0","id":"%s","method":"ping"},7]'
        % (first.encode(), second.encode())
    )
    reply = await funnel.answer(first)
    if reply.get("id") is None:
        assert error_code(reply) == INVALID, reply  # batching refused (MCP 2025-06-18 dropped it)
    else:
        assert "result" in reply, reply
        assert "result" in await funnel.reply_to(second)
    await funnel.assert_serving()


@pytest.mark.slow
async def test_a_flood_of_requests_and_notifications_leaves_memory_flat(
    funnel: StdioSession,
) -> None:
    await funnel.ensure()
    funnel.keep_notifications = False

    async def flood(count: int) -> None:
        ids = [funnel.new_id("flood") for _ in range(count)]
        lines = b"".join(
            b'{"jsonrpc":"2.0","id":"%s","method":"ping"}\n'
            b'{"jsonrpc":"2.0","method":"notifications/bogus","params":{"pad":"%s"}}\n'
            % (rid.encode(), b"p" * 200)
            for rid in ids
        )
        await funnel.send(lines)
        with anyio.fail_after(60):
            for rid in ids:
                assert "result" in await funnel.reply_to(rid, timeout=60)

    try:
        await flood(1000)  # warm up allocators and caches
        before = rss_kib(funnel.funnel.pid)
        for _ in range(3):
            await flood(2000)
        after = rss_kib(funnel.funnel.pid)
    finally:
        funnel.keep_notifications = True
    assert after - before < 40 * 1024, f"RSS grew from {before} KiB to {after} KiB"
    await funnel.assert_serving()
