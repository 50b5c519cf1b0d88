"""Every exception funnel_transports raises.

The tree is drawn by what a caller does about each branch::

    TransportError                    anything from this package
    ├── DecodeError                   a message that is not valid JSON-RPC; carries `code`
    │   ├── ParseError                  -32700: not JSON at all
    │   ├── InvalidRequest              -32600: JSON, but not a JSON-RPC message
    │   └── InvalidParams               -32602: params unsafe to pass on (bad UTF-8, too deep)
    ├── MessageTooLarge               a peer sent more than the configured maximum
    ├── TransportClosed               the transport was closed cleanly; stop reading
    ├── ConnectError                  could not start or reach the peer; retry with backoff
    ├── ConnectionLost                an open connection broke; in-flight requests failed;
    │   │                             reconnect and re-issue (the request may or may not
    │   │                             have run)
    │   └── SessionExpired            the server forgot our MCP session (HTTP 404);
    │                                 reconnect with a fresh session
    ├── AuthRequired                  the server wants credentials the auth cannot give;
    │                                 carries the WWW-Authenticate challenge
    ├── HttpStatusError               an HTTP answer the transport cannot use (5xx, 429…);
    │                                 carries `status` and `retry_after`
    ├── RequestTimeout                no response within the request's deadline
    ├── RpcError                      the peer answered with a JSON-RPC error object
    └── NegotiationError              no protocol version both sides speak

Third-party exceptions (httpx, websockets, OS errors) are mapped at the boundary with
``raise X(...) from exc`` so that callers only ever catch these.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthRequired",
    "ConnectError",
    "ConnectionLost",
    "DecodeError",
    "HttpStatusError",
    "InvalidParams",
    "InvalidRequest",
    "MessageTooLarge",
    "NegotiationError",
    "ParseError",
    "RequestTimeout",
    "RpcError",
    "SessionExpired",
    "TransportClosed",
    "TransportError",
]

# JSON-RPC 2.0 and MCP error codes used across the package.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: MCP 2026-07-28: the server does not speak the requested protocol version.
UNSUPPORTED_PROTOCOL_VERSION = -32022
#: MCP 2026-07-28: the HTTP headers disagree with the message body.
HEADER_MISMATCH = -32020
#: MCP 2026-07-28: a capability the request needs was not declared by the client.
MISSING_REQUIRED_CLIENT_CAPABILITY = -32021
#: funnel's own code (implementation-defined range) for "the backend is not reachable".
BACKEND_UNAVAILABLE = -32000
#: funnel's own code for "the request timed out".
REQUEST_TIMED_OUT = -32001


class TransportError(Exception):
    """Root of every exception raised by funnel_transports."""


class DecodeError(TransportError):
    """A message could not be decoded as JSON-RPC.

    Attributes:
        code: The JSON-RPC error code to answer with (-32700 or -32600).
        request_id: The id of the offending message when it could be recovered, so that
            a server can still address its error response.
    """

    code: int = INVALID_REQUEST

    def __init__(self, message: str, *, request_id: int | str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class ParseError(DecodeError):
    """The bytes are not JSON (JSON-RPC code -32700)."""

    code = PARSE_ERROR


class InvalidRequest(DecodeError):
    """The JSON is not a valid JSON-RPC message (JSON-RPC code -32600)."""

    code = INVALID_REQUEST


class InvalidParams(DecodeError):
    """Params or arguments that must not be passed on (JSON-RPC code -32602).

    Raised by :func:`~funnel_transports.validate_params` for JSON that msgspec accepted
    inside a :class:`msgspec.Raw` but a peer might not: invalid UTF-8, unpaired
    surrogate escapes, nesting beyond the bound.
    """

    code = INVALID_PARAMS


class MessageTooLarge(TransportError):
    """A peer sent a message larger than the transport accepts.

    Attributes:
        size: How many bytes had arrived when the limit was passed.
        limit: The limit.
        head: The first bytes of the oversized message (at most 256), from which a
            caller may recover its id (:func:`~funnel_transports.recover_request_id`)
            and fail or answer just that request.
    """

    def __init__(self, size: int, limit: int, *, peer: str = "peer", head: bytes = b"") -> None:
        super().__init__(f"{peer} sent a message of at least {size} bytes; the limit is {limit}")
        self.size = size
        self.limit = limit
        self.head = head


class TransportClosed(TransportError):
    """The transport is closed; no more messages will come or can be sent."""


class ConnectError(TransportError):
    """The peer could not be started or reached."""


class ConnectionLost(TransportError):
    """An established connection broke.

    Requests in flight fail with this error. Whether the peer acted on them is unknown;
    a caller may re-issue idempotent requests after reconnecting.
    """


class SessionExpired(ConnectionLost):
    """The server no longer knows our MCP session (HTTP 404 on a session request)."""


class AuthRequired(TransportError):
    """The server demands authorization that the configured auth could not provide.

    Attributes:
        status: The HTTP status (401, or 403 for insufficient scope).
        challenge: The raw ``WWW-Authenticate`` header, if the server sent one.
    """

    def __init__(self, message: str, *, status: int = 401, challenge: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.challenge = challenge


class HttpStatusError(TransportError):
    """An HTTP response the transport cannot use.

    Attributes:
        status: The HTTP status code.
        retry_after: Seconds the server asked us to wait (``Retry-After``), if any.
    """

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RequestTimeout(TransportError):
    """A request got no response within its deadline (the request was cancelled)."""


class RpcError(TransportError):
    """The peer answered a request with a JSON-RPC error.

    Attributes:
        code: The JSON-RPC error code.
        message: The peer's error message.
        data: The peer's optional ``data`` member, decoded.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


class NegotiationError(TransportError):
    """Client and server share no protocol version, or the server's answer made no sense."""
