"""Write coalescing: what a batch collects leaves once, in order, even when the block fails."""

from __future__ import annotations

import pytest

from funnel_transports import defer, write_batch


class _Pipe:
    """A deferrable writer over a list of system-call-sized writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.batched: list[bytes] = []

    def write(self, data: bytes) -> None:
        if self.batched or defer(self):
            self.batched.append(data)
        else:
            self.writes.append(data)

    def flush(self) -> None:
        if self.batched:
            self.writes.append(b"".join(self.batched))
            self.batched.clear()


def test_outside_a_batch_every_write_goes_out_at_once() -> None:
    pipe = _Pipe()
    pipe.write(b"a")
    pipe.write(b"b")
    assert pipe.writes == [b"a", b"b"]


def test_a_batch_writes_each_writer_once_in_order_when_it_ends() -> None:
    one, two = _Pipe(), _Pipe()
    with write_batch():
        for n in range(3):
            one.write(b"%d" % n)
            two.write(b"x%d" % n)
        assert one.writes == [] and two.writes == []
    assert one.writes == [b"012"] and two.writes == [b"x0x1x2"]
    one.write(b"after")
    assert one.writes == [b"012", b"after"]


def test_a_nested_batch_flushes_what_it_was_given_at_its_own_end() -> None:
    outer_only, inner = _Pipe(), _Pipe()
    with write_batch():
        outer_only.write(b"o1")
        with write_batch():
            inner.write(b"i1")
            inner.write(b"i2")
        assert inner.writes == [b"i1i2"], "flushed by the inner block"
        assert outer_only.writes == []
        outer_only.write(b"o2")
    assert outer_only.writes == [b"o1o2"]


def test_a_failing_block_still_writes_what_it_collected() -> None:
    pipe = _Pipe()

    def route() -> None:
        with write_batch():
            pipe.write(b"kept")
            raise RuntimeError("routing failed")

    with pytest.raises(RuntimeError):
        route()
    assert pipe.writes == [b"kept"]
    pipe.write(b"next")
    assert pipe.writes == [b"kept", b"next"], "no batch is left open"
