"""Newline framing: chunk boundaries, line endings and the size limit."""

from __future__ import annotations

import pytest

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
