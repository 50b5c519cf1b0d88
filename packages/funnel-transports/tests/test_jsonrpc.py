"""The JSON-RPC codec: every message shape, and every way input can be wrong."""

from __future__ import annotations

import msgspec
import pytest

from funnel_transports import (
    ErrorObject,
    ErrorResponse,
    InvalidRequest,
    Notification,
    ParseError,
    Request,
    Response,
    decode_message,
    encode_message,
    from_raw,
    to_raw,
)


def test_a_request_decodes_with_params_kept_as_raw_bytes() -> None:
    data = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"a":[1,2]}}}'
    message = decode_message(data)
    assert isinstance(message, Request)
    assert message.id == 7
    assert message.method == "tools/call"
    assert isinstance(message.params, msgspec.Raw)
    assert bytes(message.params) == b'{"name":"x","arguments":{"a":[1,2]}}'


def test_a_forwarded_result_is_re_encoded_byte_for_byte() -> None:
    result = b'{"content":[{"type":"text","text":"\\u00e9 \xe2\x82\xac"}],"isError":false}'
    message = decode_message(b'{"jsonrpc":"2.0","id":"a","result":' + result + b"}")
    assert isinstance(message, Response)
    forwarded = Response(id=1, result=message.result)
    assert encode_message(forwarded) == b'{"jsonrpc":"2.0","id":1,"result":' + result + b"}"


def test_a_notification_has_no_id_and_absent_params_stay_absent() -> None:
    message = decode_message(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert message == Notification(method="notifications/initialized")
    assert encode_message(Notification(method="x")) == b'{"jsonrpc":"2.0","method":"x"}'


def test_an_error_response_decodes_its_error_object() -> None:
    message = decode_message(
        b'{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"nope","data":{"k":1}}}'
    )
    assert isinstance(message, ErrorResponse)
    assert message.id == 3
    assert message.error.code == -32601
    assert message.error.message == "nope"
    assert from_raw(message.error.data) == {"k": 1}  # type: ignore[arg-type]


def test_an_error_response_may_have_a_null_id() -> None:
    message = decode_message(
        b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}'
    )
    assert message == ErrorResponse(id=None, error=ErrorObject(code=-32700, message="Parse error"))


def test_encoding_always_sends_the_jsonrpc_member() -> None:
    encoded = encode_message(Request(id=1, method="ping"))
    assert encoded == b'{"jsonrpc":"2.0","id":1,"method":"ping"}'


@pytest.mark.parametrize("data", [b"", b"not json", b"{", b'{"jsonrpc":"2.0",}', b"\xff\xfe"])
def test_bytes_that_are_not_json_raise_a_parse_error_with_code_32700(data: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        decode_message(data)
    assert caught.value.code == -32700


@pytest.mark.parametrize(
    ("data", "request_id", "fragment"),
    [
        (b"5", None, "not a JSON-RPC message"),
        (b'"hello"', None, "not a JSON-RPC message"),
        (b"[]", None, "empty batch"),
        (b'{"id":1,"method":"x"}', 1, '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc":"1.0","id":"a","method":"x"}', "a", '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc":"2.0","id":1,"method":5}', 1, '"method" must be a string'),
        (b'{"jsonrpc":"2.0","id":null,"method":"x"}', None, "must not be null"),
        (b'{"jsonrpc":"2.0","id":true,"method":"x"}', None, '"id" must be a string or an integer'),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"x","params":3}',
            1,
            '"params" must be an object or an array',
        ),
        (b'{"jsonrpc":"2.0","id":1,"method":"x","result":{}}', 1, "cannot carry a result"),
        (
            b'{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}',
            1,
            "both result and error",
        ),
        (b'{"jsonrpc":"2.0","result":{}}', None, 'needs an "id"'),
        (b'{"jsonrpc":"2.0","id":2,"error":{"code":"x"}}', 2, 'malformed "error"'),
        (b'{"jsonrpc":"2.0","id":4}', 4, "not a JSON-RPC request"),
    ],
)
def test_json_that_is_not_jsonrpc_raises_invalid_request_with_the_id_when_known(
    data: bytes, request_id: object, fragment: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_message(data)
    assert caught.value.code == -32600
    assert caught.value.request_id == request_id
    assert fragment in str(caught.value)


def test_a_batch_decodes_element_by_element_keeping_the_errors() -> None:
    batch = decode_message(
        b'[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":2,"method":7},'
        b'{"jsonrpc":"2.0","method":"n"}]'
    )
    assert isinstance(batch, list)
    assert batch[0] == Request(id=1, method="a")
    assert isinstance(batch[1], InvalidRequest)
    assert batch[1].request_id == 2
    assert batch[2] == Notification(method="n")


def test_a_batch_of_non_objects_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest):
        decode_message(b"[1, 2]")


def test_to_raw_and_from_raw_round_trip_and_validate() -> None:
    raw = to_raw({"a": [1, "b"]})
    assert from_raw(raw) == {"a": [1, "b"]}
    assert from_raw(raw, dict[str, list[object]]) == {"a": [1, "b"]}
    with pytest.raises(InvalidRequest):
        from_raw(raw, list[int])
    with pytest.raises(InvalidRequest):
        from_raw(b"{nope")
