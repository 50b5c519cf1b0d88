"""funnel-proxy: many MCP servers behind one filtered, namespaced tool surface.

The names here are what an embedder uses: load a config, run a :class:`Funnel` over it,
serve it (:func:`serve_stdio`, :class:`McpServerSession`), read its :class:`Surface`.
The building blocks behind them (name tables, patterns, search, environments) live in
private modules and may change between releases.
"""

from importlib import metadata as _metadata

from funnel_proxy._backend import BackendState
from funnel_proxy._config import (
    CONFIG_FILE_NAME,
    LoadedConfig,
    load_config,
    parse_config,
    user_config_path,
)
from funnel_proxy._dispatcher import McpServerSession
from funnel_proxy._errors import (
    BackendUnavailable,
    ConfigError,
    ConfigNotFound,
    ProxyError,
    ToolNotFound,
)
from funnel_proxy._funnel import Funnel, FunnelEvent
from funnel_proxy._http_server import McpHttpEndpoint
from funnel_proxy._limits import RATE_LIMITED, ToolCallLimits, ToolRateLimited
from funnel_proxy._models import (
    AutoReconnect,
    FunnelConfig,
    RateLimit,
    RateLimits,
    ReconnectPolicy,
    ServerConfig,
    SseTransportConfig,
    StdioTransportConfig,
    StreamableHttpTransportConfig,
    TransportConfig,
    WebSocketTransportConfig,
)
from funnel_proxy._names import namespaced_name
from funnel_proxy._patterns import PatternSet
from funnel_proxy._reload import ReloadReport, diff_configs
from funnel_proxy._search import SearchEntry, SearchHit, SearchIndex, search_entry, words
from funnel_proxy._secrets import (
    DotenvProvider,
    InlineProvider,
    ProcessProvider,
    SecretProvider,
)
from funnel_proxy._semantic import Embedder, load_embedder
from funnel_proxy._session_sharing import EventBus, SessionSharing, SessionStore
from funnel_proxy._stdio_server import serve_stdio
from funnel_proxy._surface import Conflict, Surface, ToolEntry, build_surface
from funnel_proxy._telemetry import configure_from_env as configure_telemetry_from_env
from funnel_proxy._telemetry import disable as disable_telemetry
from funnel_proxy._telemetry import enable as enable_telemetry
from funnel_proxy._visibility import Reason

__version__ = _metadata.version("funnel-proxy")  # one source: pyproject.toml

__all__ = [
    "CONFIG_FILE_NAME",
    "RATE_LIMITED",
    "AutoReconnect",
    "BackendState",
    "BackendUnavailable",
    "ConfigError",
    "ConfigNotFound",
    "Conflict",
    "DotenvProvider",
    "Embedder",
    "EventBus",
    "Funnel",
    "FunnelConfig",
    "FunnelEvent",
    "InlineProvider",
    "LoadedConfig",
    "McpHttpEndpoint",
    "McpServerSession",
    "PatternSet",
    "ProcessProvider",
    "ProxyError",
    "RateLimit",
    "RateLimits",
    "Reason",
    "ReconnectPolicy",
    "ReloadReport",
    "SearchEntry",
    "SearchHit",
    "SearchIndex",
    "SecretProvider",
    "ServerConfig",
    "SessionSharing",
    "SessionStore",
    "SseTransportConfig",
    "StdioTransportConfig",
    "StreamableHttpTransportConfig",
    "Surface",
    "ToolCallLimits",
    "ToolEntry",
    "ToolNotFound",
    "ToolRateLimited",
    "TransportConfig",
    "WebSocketTransportConfig",
    "__version__",
    "build_surface",
    "configure_telemetry_from_env",
    "diff_configs",
    "disable_telemetry",
    "enable_telemetry",
    "load_config",
    "load_embedder",
    "namespaced_name",
    "parse_config",
    "search_entry",
    "serve_stdio",
    "user_config_path",
    "words",
]
