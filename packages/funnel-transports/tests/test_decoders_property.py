"""Property tests: every decoder is total, and what is valid survives a round trip.

The decoders sit where bytes from peers nobody controls enter funnel: any bytes must give
messages or a ``DecodeError`` (``MessageTooLarge`` for the framers), never any other
exception, and never a ``RecursionError`` however deep the nesting or however deep the
caller's own stack.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from funnel_transports import (
    MAX_DEPTH,
    DecodeError,
    ErrorObject,
    ErrorResponse,
    InvalidParams,
    InvalidRequest,
    LineFramer,
    Message,
    MessageTooLarge,
    Notification,
    ParseError,
    Request,
    Response,
    decode_message,
    encode_message,
    from_raw,
    recover_request_id,
    to_raw,
    validate_params,
)
from funnel_transports._jsonrpc import _deeper_than
from funnel_transports._sse_decoder import ServerSentEvent, SSEDecoder

# Deterministic in CI, no example database written into the work tree, and no per-example
# deadline: a timing window would make these fail on a loaded machine.
settings.register_profile(
    "funnel",
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("funnel")

# ------------------------------------------------------------------------- strategies

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
# Text that is valid as JSON (no lone surrogates, which msgspec cannot encode).
json_text = st.text(st.characters(exclude_categories=["Cs"]))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4)
    ),
    max_leaves=30,
)
json_containers = st.lists(json_values, max_size=4) | st.dictionaries(
    json_text, json_values, max_size=4
)
request_ids = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(
    st.characters(exclude_categories=["Cs"]), max_size=40
)
methods = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)


def _raw_or_unset(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(msgspec.UNSET), values.map(to_raw))


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Request, id=request_ids, method=methods, params=_raw_or_unset(json_containers)),
    st.builds(Notification, method=methods, params=_raw_or_unset(json_containers)),
    st.builds(Response, id=request_ids, result=json_values.map(to_raw)),
    st.builds(
        ErrorResponse,
        id=st.none() | request_ids,
        error=st.builds(
            ErrorObject,
            code=st.integers(min_value=-(2**31), max_value=2**31),
            message=json_text,
            data=_raw_or_unset(json_values),
        ),
    ),
)


def _same(a: Any, b: Any) -> bool:
    """Messages compared by their encoding (``msgspec.Raw`` compares by identity)."""
    return bool(msgspec.json.encode(a) == msgspec.json.encode(b))


def _depth(value: Any) -> int:
    """The reference nesting depth: a scalar is 0, ``[]`` is 1."""
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _only_decode_errors(call: Callable[[], object]) -> None:
    with contextlib.suppress(DecodeError):
        call()


def _nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


def _at_stack_depth(frames: int, call: Callable[[], object]) -> object:
    """Run ``call`` from ``frames`` Python frames deeper than here."""
    if frames <= 0:
        return call()
    return _at_stack_depth(frames - 1, call)


# ------------------------------------------------------------------ decode_message


@given(st.binary(max_size=2000))
@example(b'{"jsonrpc":"2.0","id":1,"method":"\xff"}')
@example(b'{"jsonrpc":"\xc3","id":1,"method":"x"}')
@example(b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"\xed\xa0\x80"}}')
@example(b'{"jsonrpc":"2.0","id":1,"method":"x","params":' + _nested(5000) + b"}")
@example(b'{"jsonrpc":"2.0","id":1,"result":' + _nested(100_000, b"{", b"}") + b"}")
@example(b'{"jsonrpc":"2.0","id":1e400,"method":"x"}')
@example(b'[{"jsonrpc":"2.0","id":1,"method":"x","params":' + _nested(3000) + b"}]")
def test_decode_message_raises_only_decode_errors_for_any_bytes(data: bytes) -> None:
    _only_decode_errors(lambda: decode_message(data))
    _only_decode_errors(lambda: decode_message(data, max_depth=8, max_size=1000))
    _only_decode_errors(lambda: decode_message(bytearray(data)))


@given(st.text(max_size=500))
@example("\ud800")
@example('{"jsonrpc":"2.0","id":1,"method":"\udfff"}')
def test_decode_message_raises_only_decode_errors_for_any_text(text: str) -> None:
    _only_decode_errors(lambda: decode_message(text))


@given(json_values)
def test_decode_message_raises_only_decode_errors_for_any_json(value: Any) -> None:
    data = msgspec.json.encode(value)
    _only_decode_errors(lambda: decode_message(data))
    _only_decode_errors(lambda: decode_message(data, max_depth=3))


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "jsonrpc": json_values,
            "id": json_values,
            "method": json_values,
            "params": json_values,
            "result": json_values,
            "error": json_values,
        },
    )
)
def test_envelopes_with_members_of_any_type_raise_only_decode_errors(envelope: Any) -> None:
    _only_decode_errors(lambda: decode_message(msgspec.json.encode(envelope)))
    _only_decode_errors(lambda: decode_message(msgspec.json.encode([envelope, envelope])))


@given(messages)
def test_every_valid_message_round_trips(message: Message) -> None:
    data = encode_message(message)
    assert _same(decode_message(data), message)
    assert _same(decode_message(data, max_depth=MAX_DEPTH), message)
    assert _same(decode_message(data.decode()), message)


@given(st.lists(messages, min_size=1, max_size=5))
def test_every_valid_batch_round_trips(batch: list[Message]) -> None:
    data = msgspec.json.encode(batch)
    decoded = decode_message(data)
    assert isinstance(decoded, list)
    assert all(_same(a, b) for a, b in zip(decoded, batch, strict=True))


@given(st.integers(min_value=1, max_value=50_000), st.sampled_from([0, 200, 600, 900]))
@example(5000, 0)
@example(1000, 900)
def test_deep_nesting_is_a_parse_error_at_any_stack_depth(depth: int, frames: int) -> None:
    data = b'{"jsonrpc":"2.0","id":3,"method":"x","params":' + _nested(depth) + b"}"

    def decode() -> object:
        try:
            return decode_message(data)
        except ParseError as exc:
            return exc

    outcome = _at_stack_depth(frames, decode)
    if isinstance(outcome, ParseError):
        assert outcome.code == -32700
        assert outcome.request_id == 3
    else:
        assert isinstance(outcome, Request)


@given(st.integers(min_value=1, max_value=400))
def test_max_depth_is_an_exact_bound(depth: int) -> None:
    data = b'{"jsonrpc":"2.0","id":1,"method":"x","params":' + _nested(depth) + b"}"
    # The envelope is one level, the params array the other ``depth``.
    if depth + 1 > MAX_DEPTH:
        with pytest.raises(ParseError, match="deeper than 128") as caught:
            decode_message(data, max_depth=MAX_DEPTH)
        assert caught.value.request_id == 1
    else:
        assert isinstance(decode_message(data, max_depth=MAX_DEPTH), Request)


@given(st.binary(min_size=1, max_size=64).filter(lambda b: not _is_utf8(b)))
def test_invalid_utf8_anywhere_is_a_parse_error(junk: bytes) -> None:
    for data in (
        b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"a":"' + junk + b'"}}',
        b'{"jsonrpc":"2.0","id":5,"result":["' + junk + b'"]}',
        b'{"jsonrpc":"2.0","id":5,"method":"' + junk + b'"}',
    ):
        with pytest.raises(ParseError) as caught:
            decode_message(data)
        assert caught.value.code == -32700
        assert caught.value.request_id == 5


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
def test_max_size_refuses_larger_messages_as_invalid_request(data: bytes, limit: int) -> None:
    try:
        decode_message(data, max_size=limit)
    except InvalidRequest as exc:
        if "exceeds the limit" in str(exc):
            assert len(data) > limit
    except DecodeError:
        pass
    else:
        assert len(data) <= limit


@given(st.binary(max_size=300) | json_values.map(msgspec.json.encode))
def test_from_raw_raises_only_invalid_request(data: bytes) -> None:
    for target in (Any, dict[str, Any], list[int]):
        with contextlib.suppress(InvalidRequest):
            from_raw(data, target)


def test_from_raw_maps_deep_nesting_and_bad_utf8() -> None:
    with pytest.raises(InvalidRequest, match="too deeply"):
        from_raw(_nested(100_000))
    with pytest.raises(InvalidRequest, match="UTF-8"):
        from_raw(b'{"a":"\xff"}', dict[str, str])


# ------------------------------------------------------------ nesting and params


# Strings full of brackets, quotes and backslashes must not fool the scan.
tricky_text = st.text(st.sampled_from('[]{}"\\ab\n\u00e9'), max_size=12)
tricky_values = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(tricky_text, children, max_size=3)
    ),
    max_leaves=40,
)


@given(tricky_values, st.integers(min_value=0, max_value=12))
def test_the_bracket_scan_agrees_with_the_real_depth(value: Any, limit: int) -> None:
    for data in (msgspec.json.encode(value), json.dumps(value).encode()):
        assert _deeper_than(data, limit) == (_depth(value) > limit)


@given(json_containers)
def test_valid_params_pass_validation(value: Any) -> None:
    validate_params(to_raw(value), max_depth=max(_depth(value), 1))
    validate_params(json.dumps(value).encode(), max_depth=max(_depth(value), 1))


@given(st.integers(min_value=2, max_value=300))
def test_params_deeper_than_the_bound_are_invalid_params(depth: int) -> None:
    data = _nested(depth, b'{"k":', b"}").replace(b"}", b"1}", 1)
    if depth > MAX_DEPTH:
        with pytest.raises(InvalidParams, match="nested deeper") as caught:
            validate_params(data, what="arguments")
        assert caught.value.code == -32602
    else:
        validate_params(data)


@given(st.binary(min_size=1, max_size=32).filter(lambda b: not _is_utf8(b)))
def test_params_with_invalid_utf8_are_invalid_params(junk: bytes) -> None:
    with pytest.raises(InvalidParams, match="UTF-8"):
        validate_params(msgspec.Raw(b'{"message":"' + junk + b'"}'))


escapes = st.lists(
    st.sampled_from(["\\ud800", "\\udbff", "\\udc00", "\\uDFFF", "\\\\", "\\u0041", "a", '\\"']),
    max_size=6,
).map("".join)


@given(escapes)
@example("\\ud800\\udc00")
@example("\\\\ud800")
@example("\\ud800\\ud800\\udc00")
def test_unpaired_surrogate_escapes_are_refused_exactly_when_msgspec_refuses_them(
    body: str,
) -> None:
    data = ('{"s":"' + body + '"}').encode()
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        with pytest.raises(InvalidParams, match="surrogate"):
            validate_params(data)
    else:
        validate_params(data)


@given(request_ids, methods, _raw_or_unset(json_containers))
def test_the_id_is_recovered_from_the_head_of_an_encoded_request(
    rid: int | str, method: str, params: Any
) -> None:
    data = encode_message(Request(id=rid, method=method, params=params))
    assert recover_request_id(data[:256]) == rid


@given(st.binary(max_size=600))
def test_recover_request_id_never_raises(data: bytes) -> None:
    assert recover_request_id(data) is None or isinstance(recover_request_id(data), int | str)


# ---------------------------------------------------------------------- framing

lines = st.lists(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    max_size=12,
)
chunkings = st.lists(st.integers(min_value=1, max_value=50), max_size=30)


def _split(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, start = [], 0
    for size in sizes:
        chunks.append(data[start : start + size])
        start += size
    chunks.append(data[start:])
    return chunks


def _expected_lines(items: list[bytes], limit: int) -> list[bytes | str]:
    out: list[bytes | str] = []
    for line in items:
        if len(line) > limit:
            out.append("too large")
            continue
        stripped = line[:-1] if line.endswith(b"\r") else line
        if stripped.strip():
            out.append(stripped)
    return out


@given(lines, chunkings, st.integers(min_value=1, max_value=30))
def test_the_framer_yields_every_line_in_order_and_skips_only_oversized_ones(
    items: list[bytes], sizes: list[int], limit: int
) -> None:
    framer = LineFramer(limit, peer="p")
    got: list[bytes | str] = []
    for chunk in _split(b"".join(line + b"\n" for line in items), sizes):
        got.extend(
            "too large" if isinstance(item, MessageTooLarge) else item
            for item in framer.feed(chunk, skip_oversized=True)
        )
    assert got == _expected_lines(items, limit)
    assert framer.pending == 0


@given(st.binary(max_size=3000), chunkings, st.integers(min_value=1, max_value=100))
def test_the_framer_raises_only_message_too_large_and_stays_bounded(
    data: bytes, sizes: list[int], limit: int
) -> None:
    framer = LineFramer(limit)
    for chunk in _split(data, sizes):
        refused: list[MessageTooLarge] = []
        try:
            framer.feed(chunk)
        except MessageTooLarge as exc:
            refused.append(exc)
        assert all(exc.size > limit and len(exc.head) <= 256 for exc in refused)
        assert framer.pending <= limit


def test_an_oversized_line_names_its_head_so_its_id_can_be_recovered() -> None:
    framer = LineFramer(64, peer="srv")
    big = b'{"jsonrpc":"2.0","id":42,"result":"' + b"x" * 500 + b'"}'
    items = framer.feed(big[:100], skip_oversized=True)
    assert len(items) == 1
    assert isinstance(items[0], MessageTooLarge)
    assert recover_request_id(items[0].head) == 42
    # The rest of the huge line is dropped, and the next line comes through.
    assert framer.feed(big[100:] + b'\n{"ok":1}\n', skip_oversized=True) == [b'{"ok":1}']


# ------------------------------------------------------------------------ SSE

sse_streams = st.lists(
    st.sampled_from(
        [
            b"data: x",
            b"data:",
            b"data: \xff\xfe",
            b"data: h\xc3\xa9llo",
            b"event: e",
            b"id: 7",
            b"id: a\x00b",
            b"retry: 1500",
            b"retry: " + b"9" * 40,
            b": comment",
            b"unknown: field",
            b"data: " + b"y" * 60,
            b"",
            b"\xef\xbb\xbf",
        ]
    ).flatmap(lambda field: st.sampled_from([field + b"\n", field + b"\r\n", field + b"\r"])),
    max_size=25,
).map(b"".join)


def _sse_items(decoder: SSEDecoder, chunks: list[bytes]) -> list[ServerSentEvent | str]:
    out: list[ServerSentEvent | str] = []
    for chunk in chunks:
        out.extend(
            "too large" if isinstance(item, MessageTooLarge) else item
            for item in decoder.feed(chunk, skip_oversized=True)
        )
    return out


@given(st.binary(max_size=2000) | sse_streams, chunkings, st.none() | st.integers(1, 100))
def test_the_sse_decoder_raises_only_message_too_large(
    data: bytes, sizes: list[int], limit: int | None
) -> None:
    decoder = SSEDecoder(max_event_size=limit)
    for chunk in _split(data, sizes):
        try:
            events = decoder.feed(chunk)
        except MessageTooLarge:
            continue
        for event in events:
            assert isinstance(event, ServerSentEvent)
            if limit is not None:
                assert len(event.data) <= limit


@given(sse_streams, chunkings, st.none() | st.integers(1, 100))
def test_sse_events_do_not_depend_on_how_the_stream_is_chunked(
    data: bytes, sizes: list[int], limit: int | None
) -> None:
    whole = _sse_items(SSEDecoder(max_event_size=limit), [data])
    chunked = _sse_items(SSEDecoder(max_event_size=limit), _split(data, sizes))
    one_byte = _sse_items(SSEDecoder(max_event_size=limit), [bytes([b]) for b in data])
    assert chunked == whole
    assert one_byte == whole


def test_a_huge_retry_field_is_ignored_not_fatal() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: " + b"9" * 5000 + b"\ndata: x\n\n") == [ServerSentEvent(data="x")]
    assert decoder.retry is None


def test_an_oversized_event_is_skipped_and_the_next_one_decodes() -> None:
    decoder = SSEDecoder(max_event_size=20)
    items = decoder.feed(
        b"data: 1\ndata: " + b"z" * 50 + b"\ndata: 2\n\ndata: ok\n\n", skip_oversized=True
    )
    assert len(items) == 2
    assert isinstance(items[0], MessageTooLarge)
    assert items[1] == ServerSentEvent(data="ok")


def test_deep_recursion_limit_is_untouched() -> None:
    # The decoders must not lower or raise the interpreter's limit to do their work.
    limit = sys.getrecursionlimit()
    with pytest.raises(ParseError):
        decode_message(b'{"jsonrpc":"2.0","id":1,"result":' + _nested(10_000) + b"}")
    assert sys.getrecursionlimit() == limit


def test_an_id_inside_params_is_never_taken_for_the_messages_id() -> None:
    assert recover_request_id(b'{"jsonrpc":"2.0","method":"x","params":{"id":5') is None
    assert recover_request_id(b'{"jsonrpc":"2.0","method":"x","params":[{"id":5') is None
    assert recover_request_id(b'{"jsonrpc":"2.0","id":5,"method":"x","params":{"id":6') == 5


def test_a_parse_error_after_a_readable_id_is_addressed_to_it() -> None:
    with pytest.raises(ParseError) as caught:
        decode_message(b'{"jsonrpc":"2.0","id":"q","method":"x","params":{"s":"\\ud800"}}')
    assert caught.value.request_id == "q"


@given(st.lists(st.booleans(), min_size=1, max_size=300))
def test_the_depth_scan_counts_mixed_objects_and_arrays_exactly(kinds: list[bool]) -> None:
    # An object or an array per level, in any mix: {"k":[{"k":[...]}]}.
    opened = b"".join(b'{"k":' if is_object else b"[" for is_object in kinds)
    closed = b"".join(b"}" if is_object else b"]" for is_object in reversed(kinds))
    data = opened + b"0" + closed
    depth = len(kinds)
    assert _deeper_than(data, depth - 1)
    assert not _deeper_than(data, depth)


# ------------------------------------------------------- classification, by the rules

any_ids = (
    st.booleans()
    | st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(json_text, st.integers(), max_size=1)
)
error_members = (
    st.fixed_dictionaries(
        {"code": st.integers(min_value=-(2**31), max_value=2**31), "message": json_text},
        optional={"data": json_values},
    )
    | json_values
)


def _by_the_rules(envelope: dict[str, Any]) -> tuple[str, Any]:
    """What JSON-RPC 2.0 makes of an envelope, written from the spec, not from the code."""
    absent = "id" not in envelope
    rid = envelope.get("id")
    valid_id = not absent and (
        (isinstance(rid, int) and not isinstance(rid, bool)) or isinstance(rid, str)
    )
    if envelope.get("jsonrpc") != "2.0" or not (valid_id or rid is None):
        return "invalid", None
    if "method" in envelope:
        params = envelope.get("params", {})
        if (
            not isinstance(envelope["method"], str)
            or "result" in envelope
            or "error" in envelope
            or not isinstance(params, dict | list)
            or (rid is None and not absent)
        ):
            return "invalid", None
        return ("notification", None) if absent else ("request", rid)
    if "result" in envelope:
        if "error" in envelope or not valid_id:
            return "invalid", None
        return "response", rid
    if "error" in envelope:
        error = envelope["error"]
        readable = (
            isinstance(error, dict)
            and set(error) <= {"code", "message", "data"}
            and isinstance(error.get("code"), int)
            and not isinstance(error.get("code"), bool)
            and isinstance(error.get("message"), str)
        )
        if not readable or absent:
            return "invalid", None
        return "error", rid
    return "invalid", None


_KINDS: dict[type, str] = {
    Request: "request",
    Notification: "notification",
    Response: "response",
    ErrorResponse: "error",
}


@given(
    st.fixed_dictionaries(
        {"jsonrpc": st.just("2.0") | json_values},
        optional={
            "id": any_ids,
            "method": methods | st.none() | st.integers(),
            "params": json_values,
            "result": json_values,
            "error": error_members,
        },
    )
)
@example({"jsonrpc": "2.0", "id": True, "method": "tools/call", "params": {}})
@example({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": "name"})
@example({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": None})
@example({"jsonrpc": "2.0", "id": "", "method": "tools/call", "params": []})
@example({"jsonrpc": "2.0", "id": None, "method": "tools/call"})
@example({"jsonrpc": "2.0", "id": 1.0, "result": {}})
@example({"jsonrpc": "2.0", "id": None, "error": {"code": 1, "message": "x"}})
def test_messages_are_classified_by_the_json_rpc_rules(envelope: dict[str, Any]) -> None:
    # The decoder's fast checks (first byte of params, the id's exact type) must agree
    # with the rules for ids of every type and params that are not an object.
    expected_kind, expected_id = _by_the_rules(envelope)
    try:
        decoded = decode_message(msgspec.json.encode(envelope))
    except DecodeError:
        assert expected_kind == "invalid", envelope
        return
    assert not isinstance(decoded, list)
    assert _KINDS[type(decoded)] == expected_kind, envelope
    if expected_kind != "notification":
        assert decoded.id == expected_id  # type: ignore[union-attr] # only notifications lack it
        assert type(decoded.id) is type(expected_id)  # type: ignore[union-attr] # as above
