"""funnel-transports: a small, fast MCP client.

JSON-RPC 2.0 in msgspec with forwarded payloads kept raw, client transports (stdio,
streamable HTTP, legacy SSE, WebSocket) behind one :class:`Transport` protocol, and a
:class:`ClientSession` that speaks both MCP protocol eras.
"""

from importlib import metadata as _metadata

from funnel_transports._backoff import Backoff
from funnel_transports._batch import Deferrable, defer, write_batch
from funnel_transports._errors import (
    AuthRequired,
    ConnectError,
    ConnectionLost,
    DecodeError,
    HttpStatusError,
    InvalidParams,
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
from funnel_transports._framing import LineFramer
from funnel_transports._http import StreamableHttpTransport
from funnel_transports._inbox import Inbox
from funnel_transports._jsonrpc import (
    MAX_DEPTH,
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
    recover_request_id,
    to_raw,
    validate_params,
)
from funnel_transports._mcp import (
    HANDSHAKE_VERSIONS,
    LATEST_VERSION,
    MODERN_VERSIONS,
    DiscoverResult,
    Implementation,
    InitializeResult,
)
from funnel_transports._param_headers import (
    InvalidHeaderAnnotation,
    ParamHeader,
    header_params,
    param_headers,
)
from funnel_transports._readiness import read_chunks
from funnel_transports._session import (
    ClientSession,
    NotificationHandler,
    Outcome,
    ProgressHandler,
    RequestHandler,
    SessionMode,
)
from funnel_transports._sse import SseTransport
from funnel_transports._stdio import StdioTransport
from funnel_transports._tasks import TaskHost, hosted_tasks
from funnel_transports._transport import Transport
from funnel_transports._websocket import HeaderFactory, WebSocketTransport

__version__ = _metadata.version("funnel-transports")  # one source: pyproject.toml

__all__ = [
    "HANDSHAKE_VERSIONS",
    "LATEST_VERSION",
    "MAX_DEPTH",
    "MODERN_VERSIONS",
    "AuthRequired",
    "Backoff",
    "ClientSession",
    "ConnectError",
    "ConnectionLost",
    "DecodeError",
    "Deferrable",
    "DiscoverResult",
    "ErrorObject",
    "ErrorResponse",
    "HeaderFactory",
    "HttpStatusError",
    "Implementation",
    "Inbox",
    "InitializeResult",
    "InvalidHeaderAnnotation",
    "InvalidParams",
    "InvalidRequest",
    "LineFramer",
    "Message",
    "MessageTooLarge",
    "NegotiationError",
    "Notification",
    "NotificationHandler",
    "Outcome",
    "ParamHeader",
    "ParseError",
    "ProgressHandler",
    "Request",
    "RequestHandler",
    "RequestId",
    "RequestTimeout",
    "Response",
    "RpcError",
    "SessionExpired",
    "SessionMode",
    "SseTransport",
    "StdioTransport",
    "StreamableHttpTransport",
    "TaskHost",
    "Transport",
    "TransportClosed",
    "TransportError",
    "WebSocketTransport",
    "__version__",
    "decode_message",
    "defer",
    "encode_message",
    "from_raw",
    "header_params",
    "hosted_tasks",
    "param_headers",
    "read_chunks",
    "recover_request_id",
    "to_raw",
    "validate_params",
    "write_batch",
]
