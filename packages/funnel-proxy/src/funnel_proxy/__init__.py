"""funnel-proxy: many MCP servers behind one filtered, namespaced tool surface."""

from funnel_proxy._errors import ConfigError, ConfigNotFound, ProxyError
from funnel_proxy._names import (
    MAX_SERVER_NAME_LENGTH,
    NameTable,
    is_valid_tool_name,
    namespaced_name,
    server_name_problem,
    suggest_server_name,
)
from funnel_proxy._patterns import PatternSet

__version__ = "0.1.0"

__all__ = [
    "MAX_SERVER_NAME_LENGTH",
    "ConfigError",
    "ConfigNotFound",
    "NameTable",
    "PatternSet",
    "ProxyError",
    "__version__",
    "is_valid_tool_name",
    "namespaced_name",
    "server_name_problem",
    "suggest_server_name",
]
