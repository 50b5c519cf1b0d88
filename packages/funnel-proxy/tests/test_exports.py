import funnel_proxy

EXPECTED = [
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


def test_all_pins_the_public_names() -> None:
    # Sorted the way ruff's RUF022 sorts: constants, classes, then functions.
    assert funnel_proxy.__all__ == EXPECTED


def test_every_public_name_is_importable_and_documented() -> None:
    for name in funnel_proxy.__all__:
        value = getattr(funnel_proxy, name)
        if callable(value):
            assert value.__doc__, name
