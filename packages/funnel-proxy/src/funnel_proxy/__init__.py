"""funnel-proxy: many MCP servers behind one filtered, namespaced tool surface."""

from importlib import metadata as _metadata

from funnel_proxy._backend import Backend, BackendState
from funnel_proxy._config import (
    CONFIG_FILE_NAME,
    LoadedConfig,
    load_config,
    parse_config,
    user_config_path,
)
from funnel_proxy._dispatcher import McpServerSession
from funnel_proxy._environment import (
    DEFAULT_PASSTHROUGH_ENV,
    WINDOWS_ESSENTIAL_ENV,
    build_server_env,
    passthrough_env,
)
from funnel_proxy._errors import (
    BackendUnavailable,
    ConfigError,
    ConfigNotFound,
    ProxyError,
    ToolNotFound,
)
from funnel_proxy._funnel import Funnel, FunnelEvent, Surface, ToolEntry
from funnel_proxy._models import (
    AutoReconnect,
    FunnelConfig,
    RateLimit,
    RateLimits,
    ReconnectPolicy,
    ServerConfig,
    SseTransport,
    StdioTransport,
    StreamableHttpTransport,
    Transport,
    WebSocketTransport,
)
from funnel_proxy._names import (
    CORE_TOOL_NAMES,
    MAX_SERVER_NAME_LENGTH,
    NameTable,
    is_valid_tool_name,
    namespaced_name,
    server_name_problem,
    suggest_server_name,
)
from funnel_proxy._patterns import PatternSet
from funnel_proxy._reload import ReloadReport, diff_configs
from funnel_proxy._search import SearchEntry, SearchHit, SearchIndex, search_entry, words
from funnel_proxy._secrets import (
    DotenvProvider,
    InlineProvider,
    ProcessProvider,
    SecretProvider,
    parse_dotenv,
    resolve_secrets,
)
from funnel_proxy._semantic import Embedder, load_embedder
from funnel_proxy._stdio_server import serve_stdio
from funnel_proxy._visibility import Reason, Visibility, VisibilityPolicy

__version__ = _metadata.version("funnel-proxy")  # one source: pyproject.toml

__all__ = [
    "CONFIG_FILE_NAME",
    "CORE_TOOL_NAMES",
    "DEFAULT_PASSTHROUGH_ENV",
    "MAX_SERVER_NAME_LENGTH",
    "WINDOWS_ESSENTIAL_ENV",
    "AutoReconnect",
    "Backend",
    "BackendState",
    "BackendUnavailable",
    "ConfigError",
    "ConfigNotFound",
    "DotenvProvider",
    "Embedder",
    "Funnel",
    "FunnelConfig",
    "FunnelEvent",
    "InlineProvider",
    "LoadedConfig",
    "McpServerSession",
    "NameTable",
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
    "SseTransport",
    "StdioTransport",
    "StreamableHttpTransport",
    "Surface",
    "ToolEntry",
    "ToolNotFound",
    "Transport",
    "Visibility",
    "VisibilityPolicy",
    "WebSocketTransport",
    "__version__",
    "build_server_env",
    "diff_configs",
    "is_valid_tool_name",
    "load_config",
    "load_embedder",
    "namespaced_name",
    "parse_config",
    "parse_dotenv",
    "passthrough_env",
    "resolve_secrets",
    "search_entry",
    "serve_stdio",
    "server_name_problem",
    "suggest_server_name",
    "user_config_path",
    "words",
]
