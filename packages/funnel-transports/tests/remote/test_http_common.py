"""Sans-I/O helpers of the HTTP transports: MCP headers, Retry-After, synthesized errors."""

from __future__ import annotations

import base64

import httpx
import pytest

from funnel_transports import ErrorResponse, Notification, Request, Response, to_raw
from funnel_transports._http_common import (
    header_value,
    is_modern,
    message_headers,
    parse_retry_after,
    redact_url,
    same_origin,
    status_error_response,
)

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("us-west1", "us-west1"),
        ("Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        (" padded ", "=?base64?IHBhZGRlZCA=?="),
        ("line1\nline2", "=?base64?bGluZTEKbGluZTI=?="),
        ("=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
        ("file:///a b.txt", "file:///a b.txt"),
    ],
)
def test_header_values_follow_the_spec_examples(value: str, encoded: str) -> None:
    assert header_value(value) == encoded
    if encoded.startswith("=?base64?"):
        assert base64.b64decode(encoded[9:-2]).decode() == value


def test_modern_is_2026_07_28_and_later() -> None:
    assert not is_modern(None)
    assert not is_modern("2025-11-25")
    assert is_modern("2026-07-28")


def test_a_tools_call_carries_method_and_name_and_the_meta_version() -> None:
    params = {"name": "get_weather", "arguments": {}, "_meta": META}
    headers = message_headers(
        Request(id=1, method="tools/call", params=to_raw(params)),
        protocol_version=None,
        session_id=None,
    )
    assert headers == {
        "Mcp-Method": "tools/call",
        "Mcp-Name": "get_weather",
        "MCP-Protocol-Version": "2026-07-28",
    }


def test_resources_read_names_the_uri_and_prompts_get_the_name() -> None:
    read = Request(id=1, method="resources/read", params=to_raw({"uri": "file:///x", "name": "n"}))
    assert (
        message_headers(read, protocol_version="2026-07-28", session_id=None)["Mcp-Name"]
        == "file:///x"
    )
    prompt = Request(id=1, method="prompts/get", params=to_raw({"name": "héllo"}))
    assert message_headers(prompt, protocol_version="2026-07-28", session_id=None)[
        "Mcp-Name"
    ].startswith("=?base64?")


def test_other_methods_have_no_name_header() -> None:
    listing = Request(id=1, method="tools/list", params=to_raw({"name": "ignored"}))
    assert "Mcp-Name" not in message_headers(
        listing, protocol_version="2026-07-28", session_id=None
    )


def test_the_session_id_goes_only_with_handshake_versions() -> None:
    request = Request(id=1, method="tools/list")
    legacy = message_headers(request, protocol_version="2025-11-25", session_id="abc")
    assert legacy["Mcp-Session-Id"] == "abc"
    assert legacy["MCP-Protocol-Version"] == "2025-11-25"
    modern = message_headers(request, protocol_version="2026-07-28", session_id="abc")
    assert "Mcp-Session-Id" not in modern


def test_before_negotiation_there_is_no_version_header() -> None:
    headers = message_headers(
        Request(id=1, method="initialize", params=to_raw({})),
        protocol_version=None,
        session_id=None,
    )
    assert "MCP-Protocol-Version" not in headers
    assert headers["Mcp-Method"] == "initialize"


def test_notifications_and_responses_carry_no_method_headers() -> None:
    note = message_headers(
        Notification(method="notifications/initialized"),
        protocol_version="2025-11-25",
        session_id="s",
    )
    assert note == {"MCP-Protocol-Version": "2025-11-25", "Mcp-Session-Id": "s"}
    answer = message_headers(
        Response(id=1, result=to_raw({})), protocol_version=None, session_id=None
    )
    assert answer == {}


def test_params_that_are_not_an_object_yield_no_name() -> None:
    request = Request(id=1, method="tools/call", params=to_raw([1, 2]))
    assert "Mcp-Name" not in message_headers(request, protocol_version=None, session_id=None)


def test_retry_after_as_seconds_and_as_a_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now=now) == 10.0
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:27 GMT", now=now) == 0.0


def test_a_refused_request_gets_the_servers_jsonrpc_error_readdressed() -> None:
    body = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32022,"message":"unsupported"}}'
    answer = status_error_response(5, 400, body, "srv")
    assert isinstance(answer, ErrorResponse)
    assert answer.id == 5
    assert answer.error.code == -32022


def test_a_refused_request_without_a_jsonrpc_body_gets_an_invalid_request_naming_the_server() -> (
    None
):
    answer = status_error_response(5, 400, b"Bad Request:\n  no   session", "srv")
    assert answer.error.code == -32600
    assert answer.error.message == "HTTP 400 from srv: Bad Request: no session"
    empty = status_error_response(5, 405, b"", "srv")
    assert empty.error.message == "HTTP 405 from srv"


def test_an_error_for_another_request_id_is_not_taken_as_ours() -> None:
    body = b'{"jsonrpc":"2.0","id":99,"error":{"code":-32601,"message":"nope"}}'
    assert status_error_response(5, 404, body, "srv").error.code == -32600


def test_urls_are_redacted_for_logs() -> None:
    assert redact_url("https://user:pw@h:8443/mcp?token=x#f") == "https://h:8443/mcp"


def test_same_origin_compares_scheme_host_and_effective_port() -> None:
    assert same_origin(httpx.URL("http://h/sse"), httpx.URL("http://h:80/message"))
    assert not same_origin(httpx.URL("http://h/sse"), httpx.URL("https://h/message"))
    assert not same_origin(httpx.URL("http://h/sse"), httpx.URL("http://evil/message"))
    assert not same_origin(httpx.URL("http://h:1/sse"), httpx.URL("http://h:2/message"))
