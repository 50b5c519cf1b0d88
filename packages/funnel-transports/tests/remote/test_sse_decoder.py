"""The sans-I/O SSE decoder, byte by byte, without any I/O."""

from __future__ import annotations

import pytest

from funnel_transports import MessageTooLarge
from funnel_transports._sse_decoder import ServerSentEvent, SSEDecoder


def decode_all(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_ends_lines_and_events(eol: bytes) -> None:
    data = b"event: ping" + eol + b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol
    expected = [ServerSentEvent(event="ping", data="a\nb"), ServerSentEvent(data="c")]
    assert decode_all(data) == expected
    assert decode_all(*one_byte_at_a_time(data)) == expected


def test_a_crlf_split_across_chunks_is_one_line_ending() -> None:
    assert decode_all(b"data: x\r", b"\n\r", b"\n") == [ServerSentEvent(data="x")]


def test_a_cr_then_lf_in_a_later_chunk_after_an_empty_chunk_is_still_crlf() -> None:
    assert decode_all(b"data: x\r", b"", b"\n\r\n") == [ServerSentEvent(data="x")]


def test_mixed_line_endings_in_one_stream() -> None:
    assert decode_all(b"data: a\r\n\rdata: b\n\n") == [
        ServerSentEvent(data="a"),
        ServerSentEvent(data="b"),
    ]


def test_comments_are_ignored_and_keep_nothing() -> None:
    assert decode_all(b": keepalive\n\n:\r\n\r\ndata: x\n: between\n\n") == [
        ServerSentEvent(data="x")
    ]


def test_one_leading_space_is_stripped_from_values_and_only_one() -> None:
    assert decode_all(b"data:no-space\n\ndata:  two\n\n") == [
        ServerSentEvent(data="no-space"),
        ServerSentEvent(data=" two"),
    ]


def test_a_field_without_colon_has_an_empty_value() -> None:
    assert decode_all(b"data\ndata\n\n") == [ServerSentEvent(data="\n")]


def test_an_event_without_data_is_not_dispatched_but_its_id_is_kept() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 7\n\n") == []
    assert decoder.last_event_id == "7"
    assert decoder.feed(b"data: x\n\n") == [ServerSentEvent(data="x", id="7")]


def test_a_priming_event_with_empty_data_is_dispatched_with_empty_data() -> None:
    assert decode_all(b"id: p1\ndata:\n\n") == [ServerSentEvent(data="", id="p1")]


def test_an_id_with_nul_is_ignored() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: a\n\nid: b\0c\ndata: x\n\n")
    assert decoder.last_event_id == "a"


def test_an_empty_id_resets_the_last_event_id() -> None:
    events = decode_all(b"id: 1\ndata: a\n\nid\ndata: b\n\n")
    assert [event.id for event in events] == ["1", ""]


def test_retry_takes_only_digits() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"retry: 1500\ndata: a\n\nretry: 2x\ndata: b\n\nretry: -1\n\n")
    assert [event.retry for event in events] == [1500, None]
    assert decoder.retry == 1500


def test_unknown_fields_are_ignored() -> None:
    assert decode_all(b"foo: bar\ndata: x\nbaz\n\n") == [ServerSentEvent(data="x")]


def test_a_leading_bom_is_dropped_once_even_when_split() -> None:
    bom = "\ufeff".encode()
    assert decode_all(bom[:1], bom[1:] + b"data: x\n\n") == [ServerSentEvent(data="x")]
    assert decode_all(bom + bom + b"data: x\n\n") == []  # a second BOM makes a bogus field name


def test_multibyte_characters_split_across_chunks() -> None:
    data = "data: héllo 世界\n\n".encode()
    assert decode_all(*one_byte_at_a_time(data)) == [ServerSentEvent(data="héllo 世界")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert decode_all(b"data: \xff\n\n") == [ServerSentEvent(data="\ufffd")]


def test_an_unfinished_event_at_the_end_is_not_dispatched() -> None:
    assert decode_all(b"data: complete\n\ndata: partial\n") == [ServerSentEvent(data="complete")]


def test_event_type_resets_after_each_event() -> None:
    events = decode_all(b"event: endpoint\ndata: /m\n\ndata: x\n\n")
    assert [event.event for event in events] == ["endpoint", "message"]


def test_too_much_data_raises_message_too_large_and_the_decoder_recovers() -> None:
    decoder = SSEDecoder(max_event_size=10)
    with pytest.raises(MessageTooLarge):
        decoder.feed(b"data: 0123456789abc\n\n")
    assert decoder.feed(b"\ndata: ok\n\n") == [ServerSentEvent(data="ok")]


def test_a_huge_line_without_an_ending_raises_before_it_ends() -> None:
    decoder = SSEDecoder(max_event_size=100)
    with pytest.raises(MessageTooLarge):
        decoder.feed(b"data: " + b"x" * 200)


def test_many_data_lines_add_up_against_the_limit() -> None:
    decoder = SSEDecoder(max_event_size=20)
    with pytest.raises(MessageTooLarge):
        decoder.feed(b"data: 12345\n" * 5)
