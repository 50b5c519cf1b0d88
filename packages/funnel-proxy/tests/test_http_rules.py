"""The streamable HTTP endpoint's rules, as pure functions: eras, headers, refusals, statuses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec import UNSET

from funnel_proxy._http_rules import (
    METHOD_NOT_FOUND,
    classify,
    decode_sentinel,
    header_mismatch,
    param_header_mismatch,
    progress_token,
    stateless_refusal,
    status_for,
)
from funnel_transports import (
    ErrorObject,
    ErrorResponse,
    Notification,
    Request,
    Response,
    header_params,
    to_raw,
)

MODERN = "2026-07-28"
CAPS = "io.modelcontextprotocol/clientCapabilities"
VERSION = "io.modelcontextprotocol/protocolVersion"


def request(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> Request:
    return Request(id=request_id, method=method, params=to_raw(params) if params else UNSET)


def test_stateless_headers_must_mirror_the_body() -> None:
    headers = {
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": "demo__echo",
    }
    params = {"name": "demo__echo"}
    assert header_mismatch("tools/call", params, MODERN, headers) is None
    assert "Mcp-Name" in str(header_mismatch("tools/call", {"name": "other"}, MODERN, headers))
    assert "Mcp-Method" in str(header_mismatch("tools/list", {}, MODERN, headers))
    assert "Protocol-Version" in str(
        header_mismatch("tools/call", params, MODERN, {**headers, "mcp-protocol-version": "x"})
    )
    encoded = {**headers, "mcp-name": "=?base64?ZGVtb19fZWNobw==?="}
    assert header_mismatch("tools/call", params, MODERN, encoded) is None
    broken = {**headers, "mcp-name": "=?base64?!!!?="}
    assert header_mismatch("tools/call", params, MODERN, broken) is not None


@given(st.text())
def test_the_base64_sentinel_round_trips_any_text(text: str) -> None:
    import base64

    encoded = "=?base64?" + base64.b64encode(text.encode()).decode() + "?="
    assert decode_sentinel(encoded) == text
    if not text.startswith("=?base64?"):
        assert decode_sentinel(text) == text


@pytest.mark.parametrize(
    ("message", "headers", "expected"),
    [
        (request("tools/list", {"_meta": {VERSION: MODERN, CAPS: {}}}), {}, (True, MODERN)),
        (request("tools/list"), {"mcp-protocol-version": MODERN}, (True, None)),
        (request("server/discover"), {}, (True, None)),
        (request("initialize", {"protocolVersion": "2025-11-25"}), {}, (False, None)),
        (request("tools/list"), {"mcp-protocol-version": "2025-11-25"}, (False, None)),
        (Notification(method="notifications/initialized"), {}, (False, None)),
        (Response(id=1, result=to_raw({})), {}, (False, None)),
    ],
)
def test_the_era_comes_from_the_body_the_header_or_the_method(
    message: Any, headers: dict[str, str], expected: tuple[bool, object]
) -> None:
    assert classify(message, headers) == expected


def test_a_meta_that_is_not_an_object_does_not_make_a_request_stateless() -> None:
    assert classify(request("tools/list", {"_meta": "nonsense"}), {}) == (False, None)


def test_removed_methods_are_404_and_missing_meta_is_400() -> None:
    removed = stateless_refusal("initialize", {}, MODERN)
    assert removed is not None
    assert removed[:2] == (404, METHOD_NOT_FOUND)
    cases: list[tuple[dict[str, Any], object]] = [
        ({}, MODERN),
        ({"_meta": {VERSION: MODERN}}, MODERN),
        ({"_meta": {VERSION: MODERN, CAPS: []}}, MODERN),
        ({"_meta": {CAPS: {}}}, None),
    ]
    for params, version in cases:
        refusal = stateless_refusal("tools/list", params, version)
        assert refusal is not None
        assert refusal[:2] == (400, -32602), params
    assert stateless_refusal("tools/list", {"_meta": {VERSION: MODERN, CAPS: {}}}, MODERN) is None


def test_only_the_stateless_eras_refusals_change_the_http_status() -> None:
    def error(code: int) -> ErrorResponse:
        return ErrorResponse(id=1, error=ErrorObject(code=code, message="x"))

    assert status_for(error(METHOD_NOT_FOUND), modern=True) == 404
    assert status_for(error(-32020), modern=True) == 400
    assert status_for(error(METHOD_NOT_FOUND), modern=False) == 200
    assert status_for(error(-32603), modern=True) == 200
    assert status_for(Response(id=1, result=to_raw({})), modern=True) == 200


@pytest.mark.parametrize(
    ("token", "routable"),
    [("t-1", True), (7, True), (True, False), (1.5, False), ({"a": 1}, False), (None, False)],
)
def test_progress_tokens_are_strings_or_integers(token: object, routable: bool) -> None:
    message = request("tools/call", {"name": "x", "_meta": {"progressToken": token}})
    assert progress_token(message) == (token if routable else None)


def test_param_headers_must_match_the_arguments_they_mirror() -> None:
    specs = header_params(
        {
            "type": "object",
            "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
        }
    )
    assert param_header_mismatch(specs, {"region": "eu"}, {"mcp-param-region": "eu"}) is None
    assert "missing" in str(param_header_mismatch(specs, {"region": "eu"}, {}))
    assert "does not match" in str(
        param_header_mismatch(specs, {"region": "eu"}, {"mcp-param-region": "us"})
    )
    assert "no such value" in str(param_header_mismatch(specs, {}, {"mcp-param-region": "eu"}))
    assert "characters" in str(
        param_header_mismatch(specs, {"region": "eu"}, {"mcp-param-region": "e\x01u"})
    )
