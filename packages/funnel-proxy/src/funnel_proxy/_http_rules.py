"""The rules of the streamable HTTP endpoint, as pure functions: eras, headers, statuses.

Nothing here does I/O; :mod:`funnel_proxy._http_server` applies these decisions.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from msgspec import UNSET, Raw

from funnel_transports import (
    MODERN_VERSIONS,
    DecodeError,
    ErrorResponse,
    Message,
    Notification,
    ParamHeader,
    Request,
    from_raw,
    param_headers,
)

__all__ = [
    "HEADER_MISMATCH",
    "METHOD_NOT_FOUND",
    "MISSING_CAPABILITY",
    "SESSION_HEADER",
    "UNSUPPORTED_VERSION",
    "VERSION_HEADER",
    "classify",
    "decode_sentinel",
    "header_mismatch",
    "param_header_mismatch",
    "progress_token",
    "stateless_refusal",
    "status_for",
]

SESSION_HEADER: Final = "mcp-session-id"
VERSION_HEADER: Final = "mcp-protocol-version"
_META_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
_NAME_PARAMS: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
HEADER_MISMATCH: Final = -32020
MISSING_CAPABILITY: Final = -32021
_META_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
#: Methods of the handshake era that 2026-07-28 removed: 404 and -32601 on its path.
_REMOVED_STATELESS: Final = frozenset(
    {"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}
)
UNSUPPORTED_VERSION: Final = -32022
METHOD_NOT_FOUND: Final = -32601


class _Meta(msgspec.Struct):
    meta: dict[str, Any] | msgspec.UnsetType = msgspec.field(default=UNSET, name="_meta")


def decode_sentinel(value: str | None) -> str | None:
    """A header value, with the ``=?base64?…?=`` sentinel decoded (``None`` if malformed)."""
    if value is None or not (value.startswith("=?base64?") and value.endswith("?=")):
        return value
    try:
        return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def header_mismatch(
    method: str, params: Mapping[str, Any], version: object, headers: Mapping[str, str]
) -> str | None:
    """Why a stateless-era request's headers disagree with its body (``None``: they agree).

    Args:
        method: The body's method.
        params: The body's params.
        version: The protocol version in the body's ``_meta``.
        headers: The request headers, lower-case names.
    """
    if headers.get(VERSION_HEADER) != version:
        return "MCP-Protocol-Version header does not match the request's protocol version"
    if headers.get("mcp-method") != method:
        return "Mcp-Method header does not match the request's method"
    key = _NAME_PARAMS.get(method)
    if (
        key is not None
        and params.get(key) is not None
        and decode_sentinel(headers.get("mcp-name")) != params.get(key)
    ):
        return f"Mcp-Name header does not match the request's {key}"
    return None


def param_header_mismatch(
    specs: tuple[ParamHeader, ...], arguments: Any, headers: Mapping[str, str]
) -> str | None:
    """Why ``Mcp-Param-*`` headers disagree with the arguments they mirror (``None``: agree).

    Each annotated argument present in the body must come with its header, equal to it
    once the Base64 sentinel is decoded; a header must hold only visible ASCII, space and
    tab; a header with no value in the body is a mismatch too.
    """
    expected = param_headers(specs, arguments, lambda text: text)
    for spec in specs:
        header_name = f"Mcp-Param-{spec.name}"
        raw = headers.get(header_name.lower())
        if raw is not None and any(not (0x20 <= ord(c) <= 0x7E or c == "\t") for c in raw):
            return f"{header_name} holds characters a header value must not"
        value = expected.get(header_name)
        if raw is None and value is None:
            continue
        if raw is None:
            return f"{header_name} is missing although the arguments carry its value"
        if value is None:
            return f"{header_name} is sent but the arguments carry no such value"
        if decode_sentinel(raw) != value:
            return f"{header_name} does not match the arguments"
    return None


def classify(message: Message, headers: Mapping[str, str]) -> tuple[bool, object]:
    """Which era a message belongs to: ``(True, version)`` for the stateless one.

    A request whose ``params._meta`` names a protocol version, or whose
    ``MCP-Protocol-Version`` header is a modern one, or ``server/discover``, is stateless;
    the version is the one its body names (``None`` when only the header says so).
    """
    body_version: object = None
    if isinstance(message, Request | Notification) and isinstance(message.params, Raw):
        try:
            meta = from_raw(message.params, _Meta).meta
        except DecodeError:
            meta = UNSET
        if isinstance(meta, dict) and _META_VERSION in meta:
            return True, meta[_META_VERSION]
    modern = headers.get(VERSION_HEADER) in MODERN_VERSIONS or (
        isinstance(message, Request) and message.method == "server/discover"
    )
    return modern, body_version


def stateless_refusal(
    method: str, params: Mapping[str, Any], version: object
) -> tuple[int, int, str] | None:
    """Why a stateless-era request is refused before it runs: ``(HTTP status, code, message)``.

    A method 2026-07-28 removed is a 404 with -32601; a request whose ``_meta`` lacks the
    protocol version or the client capabilities is a 400 with -32602.
    """
    if method in _REMOVED_STATELESS:
        return (
            404,
            METHOD_NOT_FOUND,
            f"Method not found: {method} is not part of MCP {MODERN_VERSIONS[0]}",
        )
    meta = params.get("_meta")
    if (
        version is None
        or not isinstance(meta, dict)
        or not isinstance(meta.get(_META_CAPABILITIES), dict)
    ):
        return (
            400,
            -32602,
            f"Invalid params: _meta must carry {_META_VERSION} and {_META_CAPABILITIES}",
        )
    return None


def status_for(message: Message, *, modern: bool) -> int:
    """The HTTP status a response travels with: 404/400 for the stateless era's refusals."""
    if modern and isinstance(message, ErrorResponse):
        if message.error.code == METHOD_NOT_FOUND:
            return 404
        if message.error.code in (HEADER_MISMATCH, UNSUPPORTED_VERSION, MISSING_CAPABILITY):
            return 400
    return 200


def progress_token(request: Request) -> Any:
    """The request's progress token when it is one a response can be routed by."""
    if not isinstance(request.params, Raw):
        return None
    try:
        meta = from_raw(request.params, _Meta).meta
    except DecodeError:
        return None
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    # A progress token is a string or an integer; anything else is not one we can route.
    if isinstance(token, str) or (isinstance(token, int) and not isinstance(token, bool)):
        return token
    return None
