"""Good configs of every form, interpolation, and the project-over-user merge."""

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from funnel_auth import BearerAuth, NoAuth, OAuth2ClientCredentials, Secret
from funnel_proxy import (
    AutoReconnect,
    ConfigError,
    ConfigNotFound,
    DotenvProvider,
    FunnelConfig,
    InlineProvider,
    ProcessProvider,
    RateLimit,
    ReconnectPolicy,
    ServerConfig,
    SseTransportConfig,
    StdioTransportConfig,
    StreamableHttpTransportConfig,
    WebSocketTransportConfig,
    load_config,
    parse_config,
    user_config_path,
)


def parse(data: Any, environ: dict[str, str] | None = None, **kwargs: Any) -> FunnelConfig:
    text = data if isinstance(data, str) else json.dumps(data)
    return parse_config(text, environ=environ or {}, **kwargs)


# ----------------------------------------------------------------------------- forms


def test_empty_config_has_the_documented_defaults() -> None:
    config = parse({})
    assert config == FunnelConfig()
    assert config.servers == ()
    assert config.hide_tools is None
    assert config.expose_tools is None
    assert config.always_visible_tools is None
    assert config.expose_core_tools is None
    assert config.toolsets == {}
    assert config.auto_reconnect == AutoReconnect(
        enabled=True,
        max_attempts=10,
        initial_delay_ms=1000,
        backoff_multiplier=2,
        max_delay_ms=60000,
        jitter=0.25,
    )
    assert config.default_passthrough_env is None
    assert config.default_secret_providers == ()
    assert config.rate_limits.tools == {}


def test_record_and_array_forms_give_the_same_servers() -> None:
    record = parse({"servers": {"a": {"command": "x"}, "b": {"url": "http://h/mcp"}}})
    array = parse(
        {"servers": [{"name": "a", "command": "x"}, {"name": "b", "url": "http://h/mcp"}]}
    )
    assert record == array
    assert [s.name for s in record.servers] == ["a", "b"]
    # A record entry may repeat its own name.
    assert parse({"servers": {"a": {"name": "a", "command": "x"}}}).servers[0].name == "a"


def test_legacy_form_becomes_a_stdio_transport() -> None:
    config = parse(
        {"servers": {"memory": {"command": "npx", "args": ["-y", "srv"], "env": {"K": "v"}}}}
    )
    assert config.servers[0] == ServerConfig(
        name="memory",
        transport=StdioTransportConfig(command="npx", args=("-y", "srv"), env={"K": "v"}),
    )
    assert config.servers[0].env == {"K": "v"}


def test_stdio_transport_falls_back_to_root_command_and_merges_env() -> None:
    config = parse(
        {
            "servers": {
                "s": {
                    "command": "root-cmd",
                    "args": ["root"],
                    "env": {"A": "root", "B": "root"},
                    "transport": {"type": "stdio", "env": {"B": "transport"}},
                }
            }
        }
    )
    assert config.servers[0].transport == StdioTransportConfig(
        command="root-cmd", args=("root",), env={"A": "root", "B": "transport"}
    )
    config = parse(
        {"servers": {"s": {"command": "root", "transport": {"type": "stdio", "command": "t"}}}}
    )
    assert config.servers[0].transport == StdioTransportConfig(command="t")


def test_extended_transports_with_defaults_and_units() -> None:
    config = parse(
        {
            "servers": {
                "h": {"transport": {"type": "streamable-http", "url": "https://h/mcp"}},
                "s": {"transport": {"type": "sse", "url": "http://h/sse", "timeout": 5000}},
                "w": {"transport": {"type": "websocket", "url": "https://h/ws"}},
                "r": {
                    "transport": {
                        "type": "streamable-http",
                        "url": "http://h",
                        "reconnect": {"maxAttempts": 7},
                    }
                },
            }
        }
    )
    h, s, w, r = (server.transport for server in config.servers)
    assert h == StreamableHttpTransportConfig(url="https://h/mcp", timeout=30.0, reconnect=None)
    assert isinstance(s, SseTransportConfig)
    assert s.timeout == 5.0  # milliseconds in the file, seconds in the model
    assert isinstance(w, WebSocketTransportConfig)
    assert w.url == "wss://h/ws"  # https → wss
    assert isinstance(r, StreamableHttpTransportConfig)
    assert r.reconnect == ReconnectPolicy(
        max_attempts=7, initial_delay_ms=1000, max_delay_ms=30000, backoff_multiplier=1.5
    )
    assert r.reconnect.backoff().max_attempts == 7  # what the transport's GET stream uses


def test_claude_desktop_file_loads() -> None:
    claude = {
        "mcpServers": {
            "filesystem": {
                "command": "npx",
                "args": ["-y", "@modelcontextprotocol/server-filesystem", "/srv/files"],
            },
            "remote": {"type": "http", "url": "https://mcp.example.com/mcp"},
            "legacy-sse": {"type": "sse", "url": "https://mcp.example.com/sse"},
            "cursor-style": {"url": "https://x.example.com/mcp", "headers": {"X-Key": "k"}},
            "with-env": {
                "type": "stdio",
                "command": "uvx",
                "args": ["mcp-server-git"],
                "env": {"TOKEN": "${GH_TOKEN:-none}"},
            },
        }
    }
    config = parse(claude)
    kinds = {s.name: type(s.transport).__name__ for s in config.servers}
    assert kinds == {
        "filesystem": "StdioTransportConfig",
        "remote": "StreamableHttpTransportConfig",
        "legacy-sse": "SseTransportConfig",
        "cursor-style": "StreamableHttpTransportConfig",
        "with-env": "StdioTransportConfig",
    }
    remote = config.server("cursor-style")
    assert remote is not None
    assert isinstance(remote.transport, StreamableHttpTransportConfig)
    assert remote.transport.headers == {"X-Key": "k"}
    # env templates are kept for start time.
    with_env = config.server("with-env")
    assert with_env is not None
    assert with_env.env == {"TOKEN": "${GH_TOKEN:-none}"}


def test_vscode_file_loads_with_comments_env_file_and_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ".env").write_text("API_KEY=from-file\n")
    vscode = """{
      // VS Code's .vscode/mcp.json is JSONC
      "inputs": [{"type": "promptString", "id": "key"}],
      "servers": {
        "github": {"type": "http", "url": "https://api.githubcopilot.com/mcp/",
                   "headers": {"Authorization": "Bearer ${env:API_KEY}"}},
        "local": {"type": "stdio", "command": "node", "args": ["srv.js"],
                  "envFile": ".env", "dev": {"watch": "src/**"}},  /* trailing comma next */
      },
    }"""
    with caplog.at_level(logging.WARNING, "funnel_proxy"):
        config = parse(vscode, environ={"API_KEY": "k"}, source="mcp.json", base_dir=tmp_path)
    github = config.server("github")
    assert github is not None
    assert isinstance(github.transport, StreamableHttpTransportConfig)
    # ${env:NAME} is VS Code's spelling of ${NAME}.
    assert github.transport.headers == {"Authorization": "Bearer k"}
    local = config.server("local")
    assert local is not None
    assert local.secret_providers == (DotenvProvider(path=str(tmp_path / ".env")),)
    assert "mcp.json: $.inputs:" in caplog.text
    assert "mcp.json: $.servers.local.dev:" in caplog.text


def test_vscode_env_reference_resolves() -> None:
    config = parse(
        {"servers": {"g": {"type": "http", "url": "https://h", "headers": {"A": "${env:K}"}}}},
        environ={"K": "v"},
    )
    transport = config.servers[0].transport
    assert isinstance(transport, StreamableHttpTransportConfig)
    assert transport.headers == {"A": "v"}


def test_the_originals_illustrative_config_loads(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GITHUB_PERSONAL_ACCESS_TOKEN=ghp_fromdotenv\n")
    text = """{
      "servers": {
        "memory": { "command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"] },
        "github": {
          "transport": { "type": "streamable-http", "url": "https://api.githubcopilot.com/mcp/" },
          "auth": { "type": "bearer", "token": "${GITHUB_PERSONAL_ACCESS_TOKEN}" },
          "secretProviders": [{ "type": "dotenv", "config": { "path": ".env" } }]
        }
      },
      "defaultPassthroughEnv": ["PATH", "HOME"],
      "hideTools": ["github__*_workflow_*"],
      "alwaysVisibleTools": ["memory__store_*"],
      "exposeTools": [],
      "exposeCoreTools": ["discover_tools_by_words", "get_tool_schema", "load_toolset", "bridge_tool_request"],
      "toolsets": { "reviewer": ["github__*_pull_request*"] },
      "autoReconnect": { "enabled": true, "maxAttempts": 10 }
    }"""
    config = parse(text, base_dir=tmp_path)
    github = config.server("github")
    assert github is not None
    # The token comes from the server's own dotenv provider (the original sent the
    # literal "${GITHUB_PERSONAL_ACCESS_TOKEN}").
    assert github.auth == BearerAuth(token=Secret("ghp_fromdotenv"))
    assert config.expose_tools == ()
    assert config.hide_tools == ("github__*_workflow_*",)
    assert config.toolsets == {"reviewer": ("github__*_pull_request*",)}
    assert config.default_passthrough_env == ("PATH", "HOME")


def test_auth_variants_and_aliases() -> None:
    config = parse(
        {
            "servers": {
                "a": {"url": "https://h", "auth": {"type": "none"}},
                "b": {
                    "url": "https://h",
                    "auth": {
                        "type": "oauth2-client",
                        "clientId": "${CID}",
                        "clientSecret": "${CSECRET}",
                        "tokenUrl": "https://as/token",
                        "scopes": ["read", "write"],
                    },
                },
            }
        },
        environ={"CID": "client", "CSECRET": "s3cret"},
    )
    assert config.servers[0].auth == NoAuth()
    auth = config.servers[1].auth
    assert isinstance(auth, OAuth2ClientCredentials)
    assert auth.client_id == "client"
    assert auth.client_secret == Secret("s3cret")
    assert auth.token_endpoint == "https://as/token"
    assert auth.scope == "read write"
    assert "s3cret" not in repr(config)


def test_secret_providers_in_both_forms() -> None:
    config = parse(
        {
            "defaultSecretProviders": [
                {"type": "process", "config": {"prefix": "FUNNEL_"}},
                {"type": "process", "allowlist": ["A"], "blocklist": ["B"]},
                {"type": "inline", "values": {"K": "v"}},
                {"type": "dotenv", "path": "rel/.env", "name": "ignored"},
            ]
        }
    )
    assert config.default_secret_providers == (
        ProcessProvider(prefix="FUNNEL_"),
        ProcessProvider(allowlist=("A",), blocklist=("B",)),
        InlineProvider(values={"K": "v"}),
        DotenvProvider(path="rel/.env"),  # no base_dir: stays relative
    )
    assert "hush" not in repr(InlineProvider(values={"K": "hush"}))


def test_rate_limits_and_toolsets() -> None:
    config = parse(
        {
            "rateLimits": {"tools": {"github__*": {"calls": 10, "perSeconds": 60}}},
            "toolsets": {"dev": ["a__*", "b__x"]},
        }
    )
    assert config.rate_limits.tools == {"github__*": RateLimit(calls=10, per_seconds=60)}
    assert config.toolsets == {"dev": ("a__*", "b__x")}


def test_disabled_server_and_stdio_cwd(tmp_path: Path) -> None:
    config = parse(
        {
            "servers": {
                "a": {"command": "x", "cwd": "sub", "disabled": True, "args": ["${MISSING}"]}
            }
        },
        base_dir=tmp_path,
    )
    server = config.servers[0]
    assert server.disabled is True
    assert isinstance(server.transport, StdioTransportConfig)
    assert server.transport.cwd == str(tmp_path / "sub")
    # A disabled server's missing variables do not fail the whole config.
    assert server.transport.args == ("${MISSING}",)


def test_repr_masks_env_headers_and_inline_values() -> None:
    config = parse(
        {
            "servers": {
                "a": {"command": "x", "env": {"TOKEN": "literal-secret"}},
                "b": {"url": "https://h", "headers": {"Authorization": "Bearer literal-secret"}},
            }
        }
    )
    text = repr(config)
    assert "literal-secret" not in text
    assert "TOKEN" in text
    assert "Authorization" in text


def test_ignored_keys_of_the_original_load_with_one_warning_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "funnel_proxy"):
        parse(
            {
                "$schema": "https://example.com/schema.json",
                "commands": {"enabled": True},
                "registries": ["https://registry.modelcontextprotocol.io"],
                "exposeCoreTools": ["manage_commands", "get_tool_schema"],
            },
            source="f.json",
        )
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        'f.json: $.commands: "commands" is accepted but ignored (command plugins are Node-specific)',
        'f.json: $.registries: "registries" is accepted but ignored (registry search is not implemented)',
        'f.json: $.exposeCoreTools[0]: core tool "manage_commands" is not available in funnel',
    ]


def test_patterns_naming_no_server_are_warned_with_a_hint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "funnel_proxy"):
        parse(
            {
                "servers": {"github": {"url": "https://h"}},
                "hideTools": ["gihub__delete_*", "github__x", "*__y", "other*"],
                "toolsets": {"t": ["nope__*"]},
            },
            source="f.json",
        )
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        'f.json: $.hideTools[0]: pattern "gihub__delete_*" names no configured server "gihub" (did you mean "github"?)',
        'f.json: $.toolsets.t[0]: pattern "nope__*" names no configured server "nope"',
    ]


# ----------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${A}", "a"),
        ("x-${A}-${B}", "x-a-b"),
        ("${MISSING:fallback}", "fallback"),
        ("${MISSING:-fallback}", "fallback"),
        ("${MISSING:}", ""),
        ("${A:unused}", "a"),
        ("${env:A}", "a"),
        ("$${A}", "${A}"),
        ("cost: $5", "cost: $5"),
        ("$", "$"),
        ("${lower_case}", "lc"),
        ("${NESTED}", "${A}"),  # values are data: no recursion
        ("${MISSING:a:b}", "a:b"),
    ],
)
def test_interpolation_in_every_string(template: str, expected: str) -> None:
    environ = {"A": "a", "B": "b", "lower_case": "lc", "NESTED": "${A}"}
    config = parse(
        {
            "servers": {
                "s": {"command": "cmd", "args": [template]},
                "h": {
                    "url": "https://h",
                    "headers": {"X": template},
                    "auth": {"type": "bearer", "token": f"t{template}"},
                },
            },
        },
        environ=environ,
    )
    stdio = config.servers[0].transport
    assert isinstance(stdio, StdioTransportConfig)
    assert stdio.args == (expected,)
    http = config.servers[1].transport
    assert isinstance(http, StreamableHttpTransportConfig)
    assert http.headers == {"X": expected}
    auth = config.servers[1].auth
    assert isinstance(auth, BearerAuth)
    assert auth.token.reveal() == f"t{expected}"


def test_url_and_dotenv_path_are_interpolated(tmp_path: Path) -> None:
    config = parse(
        {
            "servers": {
                "h": {
                    "url": "https://${HOST}/mcp",
                    "secretProviders": [{"type": "dotenv", "path": "${DIR}/.env"}],
                }
            }
        },
        environ={"HOST": "example.com", "DIR": "conf"},
        base_dir=tmp_path,
    )
    server = config.servers[0]
    assert isinstance(server.transport, StreamableHttpTransportConfig)
    assert server.transport.url == "https://example.com/mcp"
    assert server.secret_providers == (DotenvProvider(path=str(tmp_path / "conf" / ".env")),)


def test_server_secrets_win_over_the_environment_for_its_own_values(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("TOKEN=from-server-file\n")
    (tmp_path / "d.env").write_text("TOKEN=from-default-file\nHOST=default.example\n")
    config = parse(
        {
            "defaultSecretProviders": [{"type": "dotenv", "path": "d.env"}],
            "servers": {
                "a": {
                    "url": "https://${HOST}",
                    "auth": {"type": "bearer", "token": "${TOKEN}"},
                    "secretProviders": [{"type": "dotenv", "path": "a.env"}],
                },
                "b": {"url": "https://h", "auth": {"type": "bearer", "token": "${TOKEN}"}},
            },
        },
        environ={"TOKEN": "from-environ", "HOST": "environ.example"},
        base_dir=tmp_path,
    )
    a, b = config.servers
    assert isinstance(a.auth, BearerAuth)
    assert a.auth.token.reveal() == "from-server-file"
    assert isinstance(a.transport, StreamableHttpTransportConfig)
    assert a.transport.url == "https://default.example"
    assert isinstance(b.auth, BearerAuth)
    assert b.auth.token.reveal() == "from-default-file"


def test_secrets_are_read_only_when_a_server_refers_to_a_variable(tmp_path: Path) -> None:
    # A broken dotenv file matters only once something needs it.
    (tmp_path / "bad.env").write_text("not a line\n")
    providers = [{"type": "dotenv", "path": "bad.env"}]
    parse({"servers": {"a": {"command": "x", "secretProviders": providers}}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r'bad\.env: line 1: expected "=" after "not"'):
        parse(
            {"servers": {"a": {"command": "${X}", "secretProviders": providers}}},
            base_dir=tmp_path,
        )


# ----------------------------------------------------------------------------- load_config


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def env_for(home: Path) -> dict[str, str]:
    return {"MCP_FUNNEL_HOME": str(home)}


def test_user_config_path_honours_funnel_home(tmp_path: Path) -> None:
    assert user_config_path({"MCP_FUNNEL_HOME": str(tmp_path)}) == tmp_path / ".mcp-funnel.json"
    assert user_config_path({"MCP_FUNNEL_HOME": "  "}).parent.name == ".mcp-funnel"


def test_no_config_anywhere_raises_config_not_found(home: Path, project: Path) -> None:
    with pytest.raises(ConfigNotFound) as caught:
        load_config(cwd=project, environ=env_for(home))
    assert caught.value.file == ".mcp-funnel.json"


def test_a_named_config_that_does_not_exist_is_an_error_not_the_demo(
    home: Path, project: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("nope.json", cwd=project, environ=env_for(home))
    assert type(caught.value) is ConfigError
    assert str(caught.value) == "nope.json: config file not found"
    with pytest.raises(ConfigError, match="not a file"):
        load_config(".", cwd=project, environ=env_for(home))


def test_project_config_found_in_cwd(home: Path, project: Path) -> None:
    path = write(project / ".mcp-funnel.json", {"servers": {"a": {"command": "x"}}})
    loaded = load_config(cwd=project, environ=env_for(home))
    assert loaded.sources == (path,)
    assert loaded.base_dir == project.resolve()
    assert [s.name for s in loaded.config.servers] == ["a"]
    assert loaded.warnings == ()


def test_user_config_alone_is_used(home: Path, project: Path) -> None:
    user = write(home / ".mcp-funnel.json", {"servers": {"u": {"command": "x"}}})
    loaded = load_config(cwd=project, environ=env_for(home))
    assert loaded.sources == (user,)
    assert loaded.base_dir == project.resolve()


def test_explicit_path_is_relative_to_cwd(home: Path, project: Path) -> None:
    path = write(project / "conf" / "funnel.json", {"servers": {"a": {"command": "x"}}})
    loaded = load_config("conf/funnel.json", cwd=project, environ=env_for(home))
    assert loaded.sources == (path,)
    assert loaded.base_dir == path.parent.resolve()


def test_servers_merge_by_name_project_first(home: Path, project: Path) -> None:
    write(
        home / ".mcp-funnel.json",
        {
            "servers": {
                "shared": {"command": "user-version"},
                "user-only": {"command": "u"},
                "switched-off": {"command": "s"},
            },
            "hideTools": ["user__*"],
            "toolsets": {"a": ["user__*"], "b": ["user__*"]},
            "autoReconnect": {"maxAttempts": 3, "jitter": 0},
            "rateLimits": {"tools": {"x__*": {"calls": 1, "perSeconds": 1}}},
        },
    )
    write(
        project / ".mcp-funnel.json",
        {
            "servers": [
                {"name": "project-only", "url": "https://h"},
                {"name": "shared", "url": "https://shared"},
                {"name": "switched-off", "disabled": True},
            ],
            "hideTools": ["project__*"],
            "toolsets": {"b": ["project__*"]},
            "autoReconnect": {"maxAttempts": 5},
            "rateLimits": {"tools": {"y__*": {"calls": 2, "perSeconds": 2}}},
        },
    )
    config = load_config(cwd=project, environ=env_for(home)).config
    assert [s.name for s in config.servers] == [
        "project-only",
        "shared",
        "switched-off",
        "user-only",
    ]
    shared = config.server("shared")
    assert shared is not None
    # The project entry replaces the user's entry whole (a different transport even).
    assert shared.transport == StreamableHttpTransportConfig(url="https://shared")
    switched = config.server("switched-off")
    assert switched is not None
    assert switched.disabled is True
    assert switched.transport == StdioTransportConfig(command="s")
    # Lists are replaced; toolsets and rate limits merge by name; objects are replaced.
    assert config.hide_tools == ("project__*",)
    assert config.toolsets == {"a": ("user__*",), "b": ("project__*",)}
    assert config.auto_reconnect == AutoReconnect(max_attempts=5)
    assert set(config.rate_limits.tools) == {"x__*", "y__*"}


def test_errors_name_the_file_they_are_in(home: Path, project: Path) -> None:
    write(home / ".mcp-funnel.json", {"servers": {"u": {"comand": "x"}}})
    write(project / ".mcp-funnel.json", {"servers": {}})
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project, environ=env_for(home))
    assert caught.value.file == str(home / ".mcp-funnel.json")
    assert caught.value.path == "$.servers.u.comand"


def test_dotenv_paths_resolve_against_the_declaring_file(home: Path, project: Path) -> None:
    write(
        home / ".mcp-funnel.json",
        {"defaultSecretProviders": [{"type": "dotenv", "path": "user.env"}]},
    )
    write(
        project / ".mcp-funnel.json",
        {
            "servers": {
                "a": {"command": "x", "secretProviders": [{"type": "dotenv", "path": ".env"}]}
            }
        },
    )
    config = load_config(cwd=project, environ=env_for(home)).config
    assert config.default_secret_providers == (DotenvProvider(path=str(home / "user.env")),)
    assert config.servers[0].secret_providers == (DotenvProvider(path=str(project / ".env")),)


def test_the_same_file_as_project_and_user_is_read_once(home: Path) -> None:
    path = write(home / ".mcp-funnel.json", {"servers": {"a": {"command": "x"}}})
    loaded = load_config(cwd=home, environ=env_for(home))
    assert loaded.sources == (path,)


def test_unreadable_and_non_utf8_files(home: Path, project: Path) -> None:
    (project / ".mcp-funnel.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ConfigError, match=r"^\.mcp-funnel\.json: not UTF-8 text"):
        load_config(cwd=project, environ=env_for(home))


def test_warnings_are_returned_and_logged(
    home: Path, project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(project / ".mcp-funnel.json", {"registries": []})
    with caplog.at_level(logging.WARNING, "funnel_proxy"):
        loaded = load_config(cwd=project, environ=env_for(home))
    assert loaded.warnings == (
        '.mcp-funnel.json: $.registries: "registries" is accepted but ignored (registry search is not implemented)',
    )
    assert [r.getMessage() for r in caplog.records] == list(loaded.warnings)


def test_backoff_policies_convert_to_seconds() -> None:
    backoff = AutoReconnect(initial_delay_ms=500, max_delay_ms=4000, max_attempts=3).backoff()
    assert (backoff.initial, backoff.max_delay, backoff.max_attempts) == (0.5, 4.0, 3)
    assert backoff.multiplier == 2
    assert backoff.jitter == 0.25
    policy = ReconnectPolicy(
        max_attempts=2, initial_delay_ms=100, max_delay_ms=200, backoff_multiplier=3, jitter=0
    )
    assert list(policy.backoff().delays()) == [0.1, 0.2]


def test_an_error_after_the_merge_names_the_file_and_path_it_was_written_in(
    home: Path, project: Path
) -> None:
    # The user file's server lands after the project's in the merged list; msgspec's
    # "$.servers[1].disabled" must still point into the user file as written.
    user = home / ".mcp-funnel.json"
    write(user, {"servers": [{"name": "u", "command": "x", "disabled": "yes"}]})
    write(project / ".mcp-funnel.json", {"servers": {"p": {"command": "y"}}})
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project, environ=env_for(home))
    assert str(caught.value) == f"{user}: $.servers[0].disabled: expected a boolean, got a string"
    # And a toolset merged by name from the user file keeps the user file's name.
    write(user, {"servers": {"u": {"command": "x"}}, "toolsets": {"mine": ["u__ a"]}})
    write(project / ".mcp-funnel.json", {"toolsets": {"theirs": ["p__*"]}})
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project, environ=env_for(home))
    assert str(caught.value).startswith(f"{user}: $.toolsets.mine[0]: invalid pattern")
