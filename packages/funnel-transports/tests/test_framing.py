"""Newline framing: chunk boundaries, line endings and the size limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnel_transports import LineFramer, MessageTooLarge


def test_lines_split_across_chunks_are_joined() -> None:
    framer = LineFramer(100)
    assert framer.feed(b'{"a":') == []
    assert framer.pending == 5
    assert framer.feed(b'1}\n{"b"') == [b'{"a":1}']
    assert framer.feed(b":2}\n") == [b'{"b":2}']
    assert framer.pending == 0


def test_one_chunk_with_many_lines_yields_them_in_order() -> None:
    assert LineFramer(100).feed(b"a\nb\nc\n") == [b"a", b"b", b"c"]


def test_crlf_endings_and_blank_lines_are_dropped() -> None:
    assert LineFramer(100).feed(b"a\r\n\r\n  \nb\n") == [b"a", b"b"]


def test_a_line_at_the_limit_passes_and_one_byte_more_fails() -> None:
    framer = LineFramer(5)
    assert framer.feed(b"12345\n") == [b"12345"]
    with pytest.raises(MessageTooLarge) as caught:
        framer.feed(b"123456\n")
    assert caught.value.limit == 5


def test_an_unterminated_line_is_refused_as_soon_as_it_exceeds_the_limit() -> None:
    framer = LineFramer(10, peer="srv")
    framer.feed(b"12345")
    with pytest.raises(MessageTooLarge) as caught:
        framer.feed(b"678901")
    assert str(caught.value) == "srv sent a message of at least 11 bytes; the limit is 10"
    assert framer.pending == 0


def test_a_limit_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        LineFramer(0)


def _items(framer: LineFramer, chunks: list[bytes], *, bounded: bool) -> list[object]:
    out: list[object] = []
    for chunk in chunks:
        fed = framer._feed_bounded(chunk) if bounded else framer.feed(chunk, skip_oversized=True)
        out.extend(
            (item.limit, item.head, str(item)) if isinstance(item, MessageTooLarge) else item
            for item in fed
        )
    out.append(framer.pending)
    return out


@settings(max_examples=500, deadline=None)
@given(
    chunks=st.lists(
        st.binary(max_size=40).map(lambda b: b.replace(b"x", b"\n").replace(b"y", b"\r")),
        max_size=12,
    ),
    limit=st.integers(min_value=1, max_value=30),
)
def test_the_quick_split_and_the_bounded_scan_frame_every_stream_alike(
    chunks: list[bytes], limit: int
) -> None:
    # feed() splits a chunk in one C call when no line of it can pass the limit, and scans
    # line by line otherwise; for any stream and any chunking both give the same lines,
    # the same refusals and the same leftover.
    quick = _items(LineFramer(limit, peer="p"), chunks, bounded=False)
    assert quick == _items(LineFramer(limit, peer="p"), chunks, bounded=True)
