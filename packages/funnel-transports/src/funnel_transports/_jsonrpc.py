"""JSON-RPC 2.0 messages and their codec.

Theory of operation: a message is decoded in a single msgspec pass into an envelope
whose ``params``, ``result`` and ``error.data`` stay :class:`msgspec.Raw`, then
classified into one of four message types by which members are present. Nothing the
proxy only forwards is ever turned into Python objects and back: a ``tools/call``
result travels from a backend to a client as the exact bytes the backend sent.

Decoding is total: for any bytes or text it returns messages or raises a
:class:`~funnel_transports.DecodeError` subclass, never anything else
(:class:`ParseError` for bytes that are not JSON, including invalid UTF-8 and nesting
deeper than the decoder's recursion budget; :class:`InvalidRequest` for JSON that is not
JSON-RPC, or a message over ``max_size``), each carrying the JSON-RPC error code to answer
with and, when it could be recovered, the offending message's id. A reader loop catches
that one type, answers or logs, and carries on.

The checks are priced for the hot path. UTF-8 validity costs one ``bytes.isascii()``
(vectorised, tens of GB/s) for ASCII messages and a decode only for the others. Nesting
costs nothing by default: msgspec's own recursion guard raises ``RecursionError`` for JSON
nested deeper than the interpreter's remaining stack (about a thousand levels), which is
caught and mapped; a caller that wants a fixed bound, such as a server reading a client,
passes ``max_depth`` and pays an exact bracket scan only for messages long enough to be
that deep and holding enough brackets. :func:`validate_params` applies the same checks to
a :class:`msgspec.Raw` value before it is passed on to a backend.

Absent members are :data:`msgspec.UNSET`, never ``None``: ``"id": null`` and a missing
``id`` mean different things in JSON-RPC, and ``"jsonrpc": "2.0"`` must always be sent.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal, TypeAlias, TypeVar, overload

import msgspec
from msgspec import UNSET, Raw, UnsetType

from funnel_transports._errors import InvalidParams, InvalidRequest, ParseError

__all__ = [
    "MAX_DEPTH",
    "ErrorObject",
    "ErrorResponse",
    "Message",
    "Notification",
    "Request",
    "RequestId",
    "Response",
    "decode_message",
    "encode_message",
    "from_raw",
    "recover_request_id",
    "to_raw",
    "validate_params",
]

RequestId: TypeAlias = int | str
"""A JSON-RPC request id. MCP forbids ``null`` ids on requests."""

JSONRPC_VERSION: Final = "2.0"

MAX_DEPTH: Final = 128
"""The default nesting bound (arrays and objects, the envelope included) where one is
applied: deep enough for any real tool schema or argument, shallow enough for every
peer's parser (pydantic's stops at 200, CPython's ``json`` near the recursion limit)."""


class Request(msgspec.Struct, kw_only=True, frozen=True):
    """A JSON-RPC request: expects exactly one response with the same ``id``."""

    jsonrpc: Literal["2.0"] = JSONRPC_VERSION
    id: RequestId
    method: str
    params: Raw | UnsetType = UNSET


class Notification(msgspec.Struct, kw_only=True, frozen=True):
    """A JSON-RPC notification: no ``id``, no response."""

    jsonrpc: Literal["2.0"] = JSONRPC_VERSION
    method: str
    params: Raw | UnsetType = UNSET


class Response(msgspec.Struct, kw_only=True, frozen=True):
    """A successful JSON-RPC response; ``result`` is kept as the peer's raw bytes."""

    jsonrpc: Literal["2.0"] = JSONRPC_VERSION
    id: RequestId
    result: Raw


class ErrorObject(msgspec.Struct, kw_only=True, frozen=True):
    """The ``error`` member of an error response."""

    code: int
    message: str
    data: Raw | UnsetType = UNSET


class ErrorResponse(msgspec.Struct, kw_only=True, frozen=True):
    """A JSON-RPC error response. ``id`` is ``None`` when the request's id was unreadable."""

    jsonrpc: Literal["2.0"] = JSONRPC_VERSION
    id: RequestId | None
    error: ErrorObject


Message: TypeAlias = Request | Notification | Response | ErrorResponse
"""Any single JSON-RPC message."""


class _Envelope(msgspec.Struct, kw_only=True):
    """Every member any JSON-RPC message may have; classified after decoding."""

    jsonrpc: Any = UNSET
    id: Any = UNSET
    method: Any = UNSET
    params: Raw | UnsetType = UNSET
    result: Raw | UnsetType = UNSET
    error: Raw | UnsetType = UNSET


_encoder: Final = msgspec.json.Encoder()
_single_decoder: Final = msgspec.json.Decoder(_Envelope)
_any_decoder: Final = msgspec.json.Decoder(_Envelope | list[_Envelope])
_error_decoder: Final = msgspec.json.Decoder(ErrorObject)

T = TypeVar("T")


def encode_message(message: Message) -> bytes:
    """Encode one message to compact JSON bytes (no trailing newline)."""
    return _encoder.encode(message)


def to_raw(value: Any) -> Raw:
    """Encode any msgspec-encodable value into :class:`msgspec.Raw` JSON."""
    return Raw(_encoder.encode(value))


@overload
def from_raw(raw: Raw | bytes) -> Any: ...
@overload
def from_raw(raw: Raw | bytes, type: type[T]) -> T: ...
def from_raw(raw: Raw | bytes, type: Any = Any) -> Any:
    """Decode raw JSON, validating it against ``type`` when one is given.

    Raises:
        InvalidRequest: The JSON does not match ``type``, is not JSON at all, is not valid
            UTF-8 or is nested too deeply to decode.
    """
    try:
        return msgspec.json.decode(raw, type=type)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid params: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"invalid JSON: {exc}") from exc
    except UnicodeError as exc:
        raise InvalidRequest("invalid JSON: not valid UTF-8") from exc
    except RecursionError as exc:
        raise InvalidRequest("invalid JSON: nested too deeply") from exc


# Bytes that matter to nesting: quotes (strings may hold brackets) and the brackets.
_NOT_STRUCTURAL: Final = bytes(sorted(set(range(256)) - set(b'"[]{}')))
# A request id near the start of a message too large or too broken to decode.
_ID_PATTERN: Final = re.compile(rb'"id"\s*:\s*(-?[0-9]{1,19}(?![0-9.eE])|"(?:[^"\\]|\\.){0,200}")')
_INNERMOST_PAIR: Final = re.compile(rb"\[\]|\{\}")
_LONE_SURROGATE: Final = re.compile(
    rb"(?<!\\)(?:\\\\)*\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})(?<!\\)(?:\\\\)*\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _utf8_error(data: bytes) -> str | None:
    """Why ``data`` is not valid UTF-8, or ``None``; ASCII costs one vectorised pass."""
    if data.isascii():
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start})"
    return None


def _deeper_than(data: bytes, limit: int) -> bool:
    """Whether the JSON text ``data`` nests arrays and objects more than ``limit`` deep.

    ``data`` must be valid JSON (brackets balanced outside strings). Cheap exits first: a
    text shorter than ``2 * limit`` or with at most ``limit`` opening brackets cannot be
    that deep. Otherwise the exact scan, all in C-speed bytes operations: drop escaped
    backslashes and quotes, keep only quotes and brackets, drop the strings, then peel
    one level of empty ``[]``/``{}`` pairs per pass; balanced brackets vanish after
    exactly their depth in passes.
    """
    if len(data) <= 2 * limit or data.count(b"[") + data.count(b"{") <= limit:
        return False
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    structural = data.translate(None, _NOT_STRUCTURAL).replace(b'""', b"")
    if b'"' in structural:
        structural = b"".join(structural.split(b'"')[::2])
    for _ in range(limit):
        # One scan removes only the pairs that were innermost before it: ``{[]}`` loses
        # its ``[]`` and keeps ``{}`` for the next pass (two replace() calls in a row
        # would peel both levels at once and undercount alternating nesting).
        peeled = _INNERMOST_PAIR.sub(b"", structural)
        if not peeled:
            return False
        if len(peeled) == len(structural):
            return True  # unbalanced: not JSON, so certainly not within the bound
        structural = peeled
    return True


def recover_request_id(head: bytes) -> RequestId | None:
    """Find the request id near the start of a message that could not be decoded.

    Used to address an error response to a message that was too large, too deep or not
    UTF-8, when its beginning still shows ``"id": ...``. A best effort: ``None`` when no
    plausible id is there.
    """
    match = _ID_PATTERN.search(head[:4096])
    if match is None:
        return None
    # Only a member of the envelope itself: an "id" inside params (a notification's, say)
    # must not address an error to some other request. Conservative: a brace or bracket
    # inside an earlier string also makes it give up.
    before = head[: match.start()]
    if before.count(b"{") != 1 or b"[" in before or not before.lstrip().startswith(b"{"):
        return None
    token = match.group(1)
    try:
        value = msgspec.json.decode(token)
    except (msgspec.DecodeError, UnicodeError):
        return None
    return value if isinstance(value, int | str) else None


def validate_params(raw: Raw | bytes, *, max_depth: int = MAX_DEPTH, what: str = "params") -> None:
    r"""Check that ``raw`` JSON is safe to pass on to a peer.

    ``raw`` is JSON text that msgspec has already accepted (params or arguments taken
    from a decoded message or request body); its syntax is not checked again. What is
    checked is what msgspec does not check inside :class:`msgspec.Raw`: valid UTF-8, no
    lone UTF-16 surrogate escapes (``"\ud800"``, which many peers' JSON libraries
    accept and then fail to encode), and nesting at most ``max_depth`` deep.

    Args:
        raw: The JSON text.
        max_depth: The deepest nesting accepted; ``raw`` itself counts as one level.
        what: Names the value in the error message.

    Raises:
        InvalidParams: One of the checks failed (JSON-RPC -32602).
    """
    data = bytes(raw) if type(raw) is not bytes else raw
    if not data.isascii() and (reason := _utf8_error(data)) is not None:
        raise InvalidParams(f"{what}: {reason}")
    # (The length test is _deeper_than's own first exit, inlined for the short texts most
    # calls carry.)
    if len(data) > 2 * max_depth and _deeper_than(data, max_depth):
        raise InvalidParams(f"{what}: nested deeper than {max_depth} levels")
    if b"\\u" in data and _LONE_SURROGATE.search(data):
        raise InvalidParams(f"{what}: contains an unpaired UTF-16 surrogate escape")


def _recover_id(value: Any) -> RequestId | None:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


_OPENING_BRACKETS: Final = (ord("{"), ord("["))


def _classify(env: _Envelope) -> Message:
    # The common ids first, without a call: ``type() is`` also keeps bools out (True is an
    # int to isinstance, and not an id).
    rid = env.id
    if type(rid) is not int and type(rid) is not str:
        rid = _recover_id(rid)
    if env.jsonrpc != JSONRPC_VERSION:
        raise InvalidRequest('"jsonrpc" must be "2.0"', request_id=rid)
    if env.id is not UNSET and env.id is not None and rid is None:
        raise InvalidRequest('"id" must be a string or an integer')
    if env.method is not UNSET:
        if not isinstance(env.method, str):
            raise InvalidRequest('"method" must be a string', request_id=rid)
        if env.result is not UNSET or env.error is not UNSET:
            raise InvalidRequest("a request cannot carry a result or an error", request_id=rid)
        params = env.params
        if params is not UNSET and memoryview(params)[0] not in _OPENING_BRACKETS:
            raise InvalidRequest('"params" must be an object or an array', request_id=rid)
        if env.id is UNSET:
            return Notification(method=env.method, params=params)
        if rid is None:
            raise InvalidRequest('a request "id" must not be null')
        return Request(id=rid, method=env.method, params=params)
    if isinstance(env.result, Raw):
        if env.error is not UNSET:
            raise InvalidRequest("a response cannot carry both result and error", request_id=rid)
        if rid is None:
            raise InvalidRequest('a result response needs an "id"')
        return Response(id=rid, result=env.result)
    if isinstance(env.error, Raw):
        try:
            error = _error_decoder.decode(env.error)
        except msgspec.DecodeError as exc:
            raise InvalidRequest(f'malformed "error" member: {exc}', request_id=rid) from exc
        if env.id is UNSET:
            raise InvalidRequest('an error response needs an "id" (null allowed)')
        return ErrorResponse(id=rid, error=error)
    raise InvalidRequest("not a JSON-RPC request, notification or response", request_id=rid)


def decode_message(
    data: bytes | bytearray | memoryview | str,
    *,
    max_depth: int | None = None,
    max_size: int | None = None,
) -> Message | list[Message | InvalidRequest]:
    """Decode one JSON-RPC message, or a batch.

    A batch (a JSON array of objects) decodes to a list in which each element is either
    a message or the :class:`InvalidRequest` describing why that element is invalid, so
    that a server can answer the valid ones and report the others.

    Args:
        data: The JSON text, as bytes (UTF-8) or str.
        max_depth: The deepest nesting of arrays and objects accepted, the envelope
            counting as one level (:data:`MAX_DEPTH` is a good bound for input from
            clients). ``None`` leaves only msgspec's recursion guard, at no cost.
        max_size: The most bytes accepted; ``None`` for no limit (transports bound
            their frames themselves).

    Raises:
        ParseError: ``data`` is not JSON: malformed, not UTF-8, or nested too deeply.
        InvalidRequest: ``data`` is JSON but not a JSON-RPC message, is an empty batch,
            or is larger than ``max_size``.
    """
    if type(data) is not bytes:  # the hot path gets bytes; everything else is converted
        if isinstance(data, str):
            try:
                data = data.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ParseError(f"invalid text: unpaired surrogate at {exc.start}") from exc
        else:
            data = bytes(data)
    if max_size is not None and len(data) > max_size:
        raise InvalidRequest(
            f"message of {len(data)} bytes exceeds the limit of {max_size}",
            request_id=recover_request_id(data[:4096]),
        )
    if not data.isascii() and (reason := _utf8_error(data)) is not None:
        raise ParseError(f"invalid JSON: {reason}", request_id=recover_request_id(data[:4096]))
    try:
        decoded = _any_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"not a JSON-RPC message: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ParseError(
            f"invalid JSON: {exc}", request_id=recover_request_id(data[:4096])
        ) from exc
    except RecursionError as exc:
        raise ParseError(
            "invalid JSON: nested too deeply", request_id=recover_request_id(data[:4096])
        ) from exc
    if max_depth is not None and _deeper_than(data, max_depth):
        raise ParseError(
            f"invalid JSON: nested deeper than {max_depth} levels",
            request_id=recover_request_id(data[:4096]),
        )
    if isinstance(decoded, _Envelope):
        return _classify(decoded)
    if not decoded:
        raise InvalidRequest("empty batch")
    batch: list[Message | InvalidRequest] = []
    for env in decoded:
        try:
            batch.append(_classify(env))
        except InvalidRequest as exc:
            batch.append(exc)
    return batch
