"""JSON-RPC 2.0 messages and their codec.

Theory of operation: a message is decoded in a single msgspec pass into an envelope
whose ``params``, ``result`` and ``error.data`` stay :class:`msgspec.Raw`, then
classified into one of four message types by which members are present. Nothing the
proxy only forwards is ever turned into Python objects and back: a ``tools/call``
result travels from a backend to a client as the exact bytes the backend sent.

Decoding never raises anything but :class:`~funnel_transports.DecodeError` subclasses
(:class:`ParseError` for bytes that are not JSON, :class:`InvalidRequest` for JSON that is
not JSON-RPC), each carrying the JSON-RPC error code to answer with and, when it could
be recovered, the offending message's id. A reader loop catches that one type, answers or
logs, and carries on.

Absent members are :data:`msgspec.UNSET`, never ``None``: ``"id": null`` and a missing
``id`` mean different things in JSON-RPC, and ``"jsonrpc": "2.0"`` must always be sent.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias, TypeVar, overload

import msgspec
from msgspec import UNSET, Raw, UnsetType

from funnel_transports._errors import InvalidRequest, ParseError

__all__ = [
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
    "to_raw",
]

RequestId: TypeAlias = int | str
"""A JSON-RPC request id. MCP forbids ``null`` ids on requests."""

JSONRPC_VERSION: Final = "2.0"


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
        InvalidRequest: The JSON does not match ``type`` (or is not JSON at all).
    """
    try:
        return msgspec.json.decode(raw, type=type)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid params: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"invalid JSON: {exc}") from exc


def _recover_id(value: Any) -> RequestId | None:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def _classify(env: _Envelope) -> Message:
    rid = _recover_id(env.id)
    if env.jsonrpc != JSONRPC_VERSION:
        raise InvalidRequest('"jsonrpc" must be "2.0"', request_id=rid)
    if env.id is not UNSET and env.id is not None and rid is None:
        raise InvalidRequest('"id" must be a string or an integer')
    if env.method is not UNSET:
        if not isinstance(env.method, str):
            raise InvalidRequest('"method" must be a string', request_id=rid)
        if env.result is not UNSET or env.error is not UNSET:
            raise InvalidRequest("a request cannot carry a result or an error", request_id=rid)
        if isinstance(env.params, Raw) and bytes(memoryview(env.params)[:1]) not in (b"{", b"["):
            raise InvalidRequest('"params" must be an object or an array', request_id=rid)
        if env.id is UNSET:
            return Notification(method=env.method, params=env.params)
        if rid is None:
            raise InvalidRequest('a request "id" must not be null')
        return Request(id=rid, method=env.method, params=env.params)
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


def decode_message(data: bytes | str) -> Message | list[Message | InvalidRequest]:
    """Decode one JSON-RPC message, or a batch.

    A batch (a JSON array of objects) decodes to a list in which each element is either
    a message or the :class:`InvalidRequest` describing why that element is invalid, so
    that a server can answer the valid ones and report the others.

    Raises:
        ParseError: ``data`` is not JSON.
        InvalidRequest: ``data`` is JSON but not a JSON-RPC message (or is an empty batch).
    """
    try:
        decoded = _any_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"not a JSON-RPC message: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ParseError(f"invalid JSON: {exc}") from exc
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
