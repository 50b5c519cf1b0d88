"""``x-mcp-header``: which annotations are valid, and the headers a call's arguments give."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funnel_transports import InvalidHeaderAnnotation, ParamHeader, header_params, param_headers
from funnel_transports._http_common import header_value


def schema(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def test_annotated_properties_are_found_along_their_properties_path() -> None:
    found = header_params(
        schema(
            region={"type": "string", "x-mcp-header": "Region"},
            nested={
                "type": "object",
                "properties": {"dry": {"type": "boolean", "x-mcp-header": "Dry-Run"}},
            },
            query={"type": "string"},
        )
    )
    assert found == (ParamHeader("Region", ("region",)), ParamHeader("Dry-Run", ("nested", "dry")))


@pytest.mark.parametrize(
    "bad",
    [
        schema(a={"type": "string", "x-mcp-header": ""}),
        schema(a={"type": "string", "x-mcp-header": "Has Space"}),
        schema(a={"type": "string", "x-mcp-header": "Bad\r\nName"}),
        schema(a={"type": "number", "x-mcp-header": "Ratio"}),
        schema(a={"type": "object", "x-mcp-header": "Obj"}),
        schema(
            a={"type": "string", "x-mcp-header": "Same"},
            b={"type": "string", "x-mcp-header": "same"},
        ),
        schema(a={"type": "array", "items": {"type": "string", "x-mcp-header": "Item"}}),
        schema(a={"anyOf": [{"type": "string", "x-mcp-header": "Either"}]}),
        {"type": "string", "x-mcp-header": "Root"},
    ],
)
def test_invalid_annotations_make_the_tool_invalid(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidHeaderAnnotation):
        header_params(bad)


def test_values_are_encoded_as_the_spec_says_and_absent_ones_send_nothing() -> None:
    specs = (
        ParamHeader("Region", ("region",)),
        ParamHeader("Count", ("count",)),
        ParamHeader("Flag", ("flag",)),
        ParamHeader("Greeting", ("greeting",)),
        ParamHeader("Missing", ("nowhere",)),
    )
    headers = param_headers(
        specs,
        {"region": "us-west1", "count": -7, "flag": False, "greeting": "Hello, 世界"},
        header_value,
    )
    assert headers == {
        "Mcp-Param-Region": "us-west1",
        "Mcp-Param-Count": "-7",
        "Mcp-Param-Flag": "false",
        "Mcp-Param-Greeting": "=?base64?SGVsbG8sIOS4lueVjA==?=",
    }


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_any_json_schema_either_validates_or_is_refused_with_a_reason(value: Any) -> None:
    try:
        found = header_params(value)
    except InvalidHeaderAnnotation as exc:
        reason = str(exc)
        assert reason, "a refusal says why"
    else:
        assert all(header.path for header in found)


@given(st.text())
def test_every_header_value_is_safe_to_send(text: str) -> None:
    encoded = header_value(text)
    assert all(0x20 <= ord(c) <= 0x7E or c == "\t" for c in encoded)
    assert "\r" not in encoded
    assert "\n" not in encoded
