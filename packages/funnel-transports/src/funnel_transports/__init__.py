"""funnel-transports: a small, fast MCP client.

JSON-RPC 2.0 in msgspec with forwarded payloads kept raw, client transports (stdio,
streamable HTTP, legacy SSE, WebSocket) behind one :class:`Transport` protocol, and a
:class:`ClientSession` that speaks both MCP protocol eras.
"""

from funnel_transports._backoff import Backoff
from funnel_transports._errors import (
    AuthRequired,
    ConnectError,
    ConnectionLost,
    DecodeError,
    HttpStatusError,
    InvalidRequest,
    MessageTooLarge,
    NegotiationError,
    ParseError,
    RequestTimeout,
    RpcError,
    SessionExpired,
    TransportClosed,
    TransportError,
)
from funnel_transports._inbox import Inbox
from funnel_transports._jsonrpc import (
    ErrorObject,
    ErrorResponse,
    Message,
    Notification,
    Request,
    RequestId,
    Response,
    decode_message,
    encode_message,
    from_raw,
    to_raw,
)
from funnel_transports._transport import Transport

__version__ = "0.1.0"

__all__ = [
    "AuthRequired",
    "Backoff",
    "ConnectError",
    "ConnectionLost",
    "DecodeError",
    "ErrorObject",
    "ErrorResponse",
    "HttpStatusError",
    "Inbox",
    "InvalidRequest",
    "Message",
    "MessageTooLarge",
    "NegotiationError",
    "Notification",
    "ParseError",
    "Request",
    "RequestId",
    "RequestTimeout",
    "Response",
    "RpcError",
    "SessionExpired",
    "Transport",
    "TransportClosed",
    "TransportError",
    "__version__",
    "decode_message",
    "encode_message",
    "from_raw",
    "to_raw",
]
