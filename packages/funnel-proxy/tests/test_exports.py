import funnel_proxy

EXPECTED = [
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


def test_all_pins_the_public_names() -> None:
    # Sorted the way ruff's RUF022 sorts: constants, classes, then functions.
    assert funnel_proxy.__all__ == EXPECTED


def test_every_public_name_is_importable_and_documented() -> None:
    for name in funnel_proxy.__all__:
        value = getattr(funnel_proxy, name)
        if callable(value):
            assert value.__doc__, name
