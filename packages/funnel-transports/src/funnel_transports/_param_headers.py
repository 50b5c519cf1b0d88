"""``x-mcp-header``: tool parameters mirrored into ``Mcp-Param-*`` headers (MCP 2026-07-28).

A server may mark a tool parameter's schema with ``"x-mcp-header": "Region"``; a client
speaking streamable HTTP must then send the argument's value as ``Mcp-Param-Region`` on
every ``tools/call`` of that tool, and must leave out of its tool list any tool whose
annotations break the rules (:func:`header_params` says why). Pure functions: the
session reads the tool list, the HTTP transport adds the headers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["InvalidHeaderAnnotation", "ParamHeader", "header_params", "param_headers"]

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SAFE_INTEGER: Final = 2**53 - 1
#: Keywords an annotated property must not sit beneath: only ``properties`` chains count.
_OTHER_SCHEMA_KEYS: Final = (
    "items",
    "prefixItems",
    "additionalProperties",
    "patternProperties",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "$defs",
    "definitions",
    "dependentSchemas",
    "contains",
)


class InvalidHeaderAnnotation(ValueError):
    """A tool's ``x-mcp-header`` annotations break the rules; the message says how."""


@dataclass(frozen=True, slots=True)
class ParamHeader:
    """One mirrored parameter: the header's name part and the property path to its value."""

    name: str
    path: tuple[str, ...]


def header_params(input_schema: Any) -> tuple[ParamHeader, ...]:
    """Every ``x-mcp-header`` of a tool's ``inputSchema``, checked.

    Raises:
        InvalidHeaderAnnotation: An annotation is empty, not an HTTP token, repeated
            (case-insensitively), on a non-primitive or ``number`` property, or not
            reachable through ``properties`` keys alone.
    """
    found: list[ParamHeader] = []
    if isinstance(input_schema, Mapping):
        _walk(input_schema, (), found, reachable=True)
    seen: set[str] = set()
    for header in found:
        folded = header.name.lower()
        if folded in seen:
            raise InvalidHeaderAnnotation(f"x-mcp-header {header.name!r} is used twice")
        seen.add(folded)
    return tuple(found)


def _walk(
    schema: Mapping[str, Any], path: tuple[str, ...], found: list[ParamHeader], *, reachable: bool
) -> None:
    if "x-mcp-header" in schema:
        if not reachable or not path:
            raise InvalidHeaderAnnotation(
                "x-mcp-header may only annotate a property reached through 'properties' keys"
            )
        name = schema["x-mcp-header"]
        if not isinstance(name, str) or not name or _TOKEN.fullmatch(name) is None:
            raise InvalidHeaderAnnotation(f"x-mcp-header {name!r} is not an HTTP token")
        kind = schema.get("type")
        if kind not in ("string", "integer", "boolean"):
            raise InvalidHeaderAnnotation(
                f"x-mcp-header {name!r} is on a property of type {kind!r}; "
                "only string, integer and boolean are allowed"
            )
        found.append(ParamHeader(name, path))
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for key, child in properties.items():
            if isinstance(child, Mapping):
                _walk(child, (*path, str(key)), found, reachable=reachable)
    for keyword in _OTHER_SCHEMA_KEYS:
        _walk_any(schema.get(keyword), path, found)


def _walk_any(value: Any, path: tuple[str, ...], found: list[ParamHeader]) -> None:
    # Anything below another keyword is unreachable: an annotation there is an error.
    if isinstance(value, Mapping):
        _walk(value, path, found, reachable=False)
    elif isinstance(value, list):
        for item in value:
            _walk_any(item, path, found)


def param_headers(headers: tuple[ParamHeader, ...], arguments: Any, encode: Any) -> dict[str, str]:
    """The ``Mcp-Param-*`` headers for one call's ``arguments`` (absent values: no header).

    ``encode`` turns a string into a header value (Base64 sentinel where needed).
    """
    out: dict[str, str] = {}
    for header in headers:
        value: Any = arguments
        for key in header.path:
            if not isinstance(value, Mapping) or key not in value:
                value = None
                break
            value = value[key]
        text = _as_text(value)
        if text is not None:
            out[f"Mcp-Param-{header.name}"] = encode(text)
    return out


def _as_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) <= _SAFE_INTEGER else None
    if isinstance(value, str):
        return value
    return None
