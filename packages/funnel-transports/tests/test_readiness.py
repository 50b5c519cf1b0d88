"""read_chunks: every chunk of a pipe handed over in order, on asyncio's loop and uvloop,
and on the portable path; failures and cancellation leave the descriptor unregistered."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import anyio
import pytest

from funnel_transports import read_chunks
from funnel_transports._readiness import _read_waiting

pytestmark = pytest.mark.anyio

Reader = Callable[[int, Callable[[bytes], None]], Coroutine[Any, Any, None]]


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=["callback", "waiting"])
def reader(request: pytest.FixtureRequest) -> Reader:
    """The readiness-callback path, and the portable one other backends get."""
    if request.param == "callback":
        return lambda fd, handle: read_chunks(fd, handle, size=7)
    return lambda fd, handle: _read_waiting(fd, handle, 7)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):  # closed by the test already
            os.close(fd)


async def test_every_chunk_arrives_in_order_until_end_of_file(
    pipe: tuple[int, int], reader: Reader
) -> None:
    read_fd, write_fd = pipe
    received: list[bytes] = []
    sent = [f"message {i}\n".encode() for i in range(50)]

    async def write_slowly() -> None:
        for data in sent:
            os.write(write_fd, data)
            await anyio.lowlevel.checkpoint()
        os.close(write_fd)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_slowly)
            await reader(read_fd, received.append)
    assert b"".join(received) == b"".join(sent)
    assert all(0 < len(chunk) <= 7 for chunk in received)


async def test_what_the_handler_raises_ends_the_reading_and_reaches_the_caller(
    pipe: tuple[int, int], reader: Reader
) -> None:
    read_fd, write_fd = pipe
    seen: list[bytes] = []

    def handle(chunk: bytes) -> None:
        seen.append(chunk)
        raise ValueError("this chunk is unacceptable")

    os.write(write_fd, b"first chunk and more")
    with anyio.fail_after(10), pytest.raises(ValueError, match="unacceptable"):
        await reader(read_fd, handle)
    assert seen == [b"first c"]
    # Unregistered: a new reader takes the descriptor and gets the rest, nothing lost.
    os.close(write_fd)
    rest: list[bytes] = []
    with anyio.fail_after(10):
        await reader(read_fd, rest.append)
    assert b"".join(rest) == b"hunk and more"


async def test_cancelling_the_reader_unregisters_the_descriptor(
    pipe: tuple[int, int], reader: Reader
) -> None:
    read_fd, write_fd = pipe
    first: list[bytes] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader, read_fd, first.append)
            os.write(write_fd, b"abc")
            while not first:
                await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
    assert first == [b"abc"]
    # Data written now is not taken by the cancelled reader: the next one gets all of it.
    os.write(write_fd, b"later")
    os.close(write_fd)
    second: list[bytes] = []
    with anyio.fail_after(10):
        await reader(read_fd, second.append)
    assert first == [b"abc"]
    assert b"".join(second) == b"later"
