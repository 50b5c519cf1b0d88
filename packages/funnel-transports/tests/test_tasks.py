"""Owned background tasks: cancellable from anywhere, never wrapping the owner's errors."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from funnel_transports import TaskHost, hosted_tasks

pytestmark = pytest.mark.anyio


async def fail_inside() -> None:
    async with hosted_tasks("test") as host:
        host.tg.start_soon(anyio.sleep_forever)
        raise KeyError("mine")


async def test_the_callers_exception_comes_out_as_itself() -> None:
    with pytest.raises(KeyError):
        await fail_inside()


async def test_cancelling_from_another_task_stops_the_tasks_but_not_the_caller() -> None:
    stopped = anyio.Event()

    async def background() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()

    async def cancel_from_elsewhere(host: TaskHost) -> None:
        host.cancel()

    async with hosted_tasks("test") as host:
        host.tg.start_soon(background)
        async with anyio.create_task_group() as other:
            other.start_soon(cancel_from_elsewhere, host)
        with anyio.fail_after(5):
            await stopped.wait()
        # The caller's block goes on after its tasks were cancelled.
        await anyio.lowlevel.checkpoint()
    assert not host.running


async def test_an_outer_cancellation_unwinds_cleanly_at_any_point() -> None:
    with anyio.move_on_after(0) as outer:
        async with hosted_tasks("test") as host:
            host.tg.start_soon(anyio.sleep_forever)
            await anyio.sleep_forever()
    assert outer.cancelled_caught
