"""The per-server ``prefix`` key: what the loader accepts and what it refuses."""

import json
import logging
from typing import Any

import pytest

from funnel_proxy import ConfigError, FunnelConfig, parse_config

F = ".mcp-funnel.json"


def parse(data: Any) -> FunnelConfig:
    return parse_config(json.dumps(data), source=F, environ={})


def test_a_server_without_prefix_is_namespaced_by_its_name() -> None:
    config = parse({"servers": {"github": {"command": "gh-mcp"}}})
    (server,) = config.servers
    assert server.prefix is None
    assert server.namespace == "github"
    assert config.prefixes == {"github": "github"}


def test_a_prefix_and_an_empty_prefix_are_kept_in_config_order() -> None:
    config = parse(
        {
            "servers": [
                {"name": "zeta", "command": "z", "prefix": ""},
                {"name": "github-enterprise", "url": "https://h/mcp", "prefix": "gh"},
                {"name": "alpha", "command": "a"},
            ]
        }
    )
    assert [s.prefix for s in config.servers] == ["", "gh", None]
    assert list(config.prefixes.items()) == [
        ("zeta", ""),
        ("github-enterprise", "gh"),
        ("alpha", "alpha"),
    ]


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (
            "a__b",
            '.mcp-funnel.json: $.servers.x.prefix: invalid prefix "a__b": a prefix must not '
            'contain "__" (it separates server and tool) (try "a_b", or "" for the '
            "backend's own names)",
        ),
        (
            "my tools",
            '.mcp-funnel.json: $.servers.x.prefix: invalid prefix "my tools": a prefix may only '
            'contain letters, digits, "-" and "_" (try "my-tools", or "" for the backend\'s own '
            "names)",
        ),
        (3, ".mcp-funnel.json: $.servers.x.prefix: expected a string, got an integer"),
    ],
)
def test_a_bad_prefix_is_an_error_at_its_path(prefix: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"servers": {"x": {"command": "c", "prefix": prefix}}})
    assert str(caught.value) == message


def test_patterns_may_name_a_prefix_instead_of_a_server(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        parse(
            {
                "servers": {"github-enterprise": {"command": "c", "prefix": "gh"}},
                "hideTools": ["gh__delete_*"],
            }
        )
    assert "names no configured server" not in caplog.text
