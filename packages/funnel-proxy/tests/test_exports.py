import funnel_proxy

EXPECTED = [
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


def test_all_pins_the_public_names() -> None:
    # Sorted the way ruff's RUF022 sorts: constants, classes, then functions.
    assert funnel_proxy.__all__ == EXPECTED


def test_every_public_name_is_importable_and_documented() -> None:
    for name in funnel_proxy.__all__:
        value = getattr(funnel_proxy, name)
        if callable(value):
            assert value.__doc__, name
