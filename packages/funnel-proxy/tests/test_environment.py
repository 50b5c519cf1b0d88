from pathlib import Path

import pytest

from funnel_proxy import (
    ConfigError,
    DotenvProvider,
    FunnelConfig,
    InlineProvider,
    ProcessProvider,
    ServerConfig,
    StdioTransportConfig,
    StreamableHttpTransportConfig,
    parse_config,
)
from funnel_proxy._environment import DEFAULT_PASSTHROUGH_ENV, build_server_env

PARENT = {
    "HOME": "/home/u",
    "PATH": "/usr/bin",
    "LANG": "C.UTF-8",
    "AWS_SECRET_ACCESS_KEY": "parent-secret",
    "SSH_AUTH_SOCK": "/run/user/1000/agent.sock",
    "GITHUB_TOKEN": "gh-from-shell",
    "FUNNEL_GH_TOKEN": "prefixed",
    "LC_TIME": "de_DE",
}


def stdio(env: dict[str, str] | None = None, **kwargs: object) -> ServerConfig:
    return ServerConfig(
        name="s",
        transport=StdioTransportConfig(command="x", env=env or {}),
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_parent_environment_does_not_leak(tmp_path: Path) -> None:
    env = build_server_env(
        stdio(), FunnelConfig(), environ=PARENT, base_dir=tmp_path, platform="linux"
    )
    assert env == {"HOME": "/home/u", "PATH": "/usr/bin", "LANG": "C.UTF-8"}
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert "SSH_AUTH_SOCK" not in env


def test_default_passthrough_list() -> None:
    assert DEFAULT_PASSTHROUGH_ENV == (
        "HOME",
        "USER",
        "PATH",
        "TERM",
        "CI",
        "DEBUG",
        "NODE_ENV",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "SHELL",
    )


def test_configured_passthrough_replaces_the_default_and_takes_wildcards(tmp_path: Path) -> None:
    config = FunnelConfig(default_passthrough_env=("PATH", "LC_*"))
    env = build_server_env(stdio(), config, environ=PARENT, base_dir=tmp_path, platform="linux")
    assert env == {"PATH": "/usr/bin", "LC_TIME": "de_DE"}
    nothing = FunnelConfig(default_passthrough_env=())
    assert (
        build_server_env(stdio(), nothing, environ=PARENT, base_dir=tmp_path, platform="linux")
        == {}
    )


def test_windows_keeps_its_essentials_case_insensitively(tmp_path: Path) -> None:
    parent = {"SYSTEMROOT": "C:\\Windows", "Path": "C:\\bin", "Secret": "x", "TEMP": "C:\\t"}
    config = FunnelConfig(default_passthrough_env=("PATH",))
    env = build_server_env(stdio(), config, environ=parent, base_dir=tmp_path, platform="win32")
    assert env == {"SYSTEMROOT": "C:\\Windows", "Path": "C:\\bin", "TEMP": "C:\\t"}


def test_layers_apply_in_order_later_wins(tmp_path: Path) -> None:
    (tmp_path / "d.env").write_text("LAYER=default-file\nONLY_DEFAULT=1\n")
    config = FunnelConfig(
        default_passthrough_env=("PATH", "LAYER"),
        default_secret_providers=(DotenvProvider(path="d.env"),),
    )
    parent = {**PARENT, "LAYER": "passthrough"}
    server = stdio(
        env={"LAYER": "env", "FROM_ENV": "${ONLY_DEFAULT}"},
        secret_providers=(InlineProvider(values={"LAYER": "server", "S": "1"}),),
    )
    env = build_server_env(server, config, environ=parent, base_dir=tmp_path, platform="linux")
    assert env == {
        "PATH": "/usr/bin",
        "LAYER": "env",
        "ONLY_DEFAULT": "1",
        "S": "1",
        "FROM_ENV": "1",
    }
    without_env = stdio(secret_providers=(InlineProvider(values={"LAYER": "server"}),))
    env = build_server_env(without_env, config, environ=parent, base_dir=tmp_path, platform="linux")
    assert env["LAYER"] == "server"


def test_env_references_see_secrets_first_then_the_parent(tmp_path: Path) -> None:
    server = stdio(
        env={
            "A": "${GITHUB_TOKEN}",  # named explicitly: granted from the parent
            "B": "${SECRET}",
            "C": "${NOPE:-fallback}",
            "D": "${A:-no chaining}",
        },
        secret_providers=(InlineProvider(values={"SECRET": "from-provider", "GITHUB_TOKEN": "p"}),),
    )
    env = build_server_env(
        server, FunnelConfig(default_passthrough_env=()), environ=PARENT, base_dir=tmp_path
    )
    assert env["A"] == "p"
    assert env["B"] == "from-provider"
    assert env["C"] == "fallback"
    assert env["D"] == "no chaining"
    server = stdio(env={"A": "${GITHUB_TOKEN}"})
    env = build_server_env(
        server, FunnelConfig(default_passthrough_env=()), environ=PARENT, base_dir=tmp_path
    )
    assert env == {"A": "gh-from-shell"}


def test_a_missing_variable_names_the_server_and_path(tmp_path: Path) -> None:
    server = stdio(env={"TOKEN": "${MISSING}"})
    with pytest.raises(ConfigError) as caught:
        build_server_env(server, FunnelConfig(), environ={}, base_dir=tmp_path)
    assert str(caught.value) == (
        '$.servers.s.env.TOKEN: environment variable "MISSING" is not set (needed to start '
        "server 's') (set it, or give a default: ${MISSING:default})"
    )


def test_process_provider_semantics(tmp_path: Path) -> None:
    def run(provider: ProcessProvider) -> dict[str, str]:
        config = FunnelConfig(default_passthrough_env=())
        return build_server_env(
            stdio(secret_providers=(provider,)), config, environ=PARENT, base_dir=tmp_path
        )

    assert run(ProcessProvider(prefix="FUNNEL_")) == {"GH_TOKEN": "prefixed"}
    assert run(ProcessProvider(prefix="FUNNEL_", blocklist=("FUNNEL_GH_TOKEN",))) == {}
    assert run(ProcessProvider(allowlist=("GITHUB_TOKEN", "ABSENT"))) == {
        "GITHUB_TOKEN": "gh-from-shell"
    }
    assert run(ProcessProvider(allowlist=("FUNNEL_GH_TOKEN", "HOME"), prefix="FUNNEL_")) == {
        "GH_TOKEN": "prefixed",
        "HOME": "/home/u",
    }
    assert run(ProcessProvider(allowlist=("HOME",), blocklist=("HOME",))) == {}
    assert run(ProcessProvider(prefix="HOME")) == {}  # the stripped name would be empty


def test_a_missing_dotenv_file_is_a_warning_not_silence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = stdio(secret_providers=(DotenvProvider(path="absent.env"),))
    with caplog.at_level("WARNING", "funnel_proxy"):
        env = build_server_env(
            server, FunnelConfig(default_passthrough_env=()), environ={}, base_dir=tmp_path
        )
    assert env == {}
    assert caplog.records[0].getMessage() == (
        f"secret file {tmp_path / 'absent.env'} not found; its dotenv provider adds no variables"
    )


def test_an_unreadable_dotenv_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.env").write_bytes(b"A=\xff\n")
    server = stdio(secret_providers=(DotenvProvider(path=str(tmp_path / "x.env")),))
    with pytest.raises(ConfigError, match="cannot read the dotenv file"):
        build_server_env(server, FunnelConfig(), environ={}, base_dir=Path("/nonexistent"))


def test_http_servers_get_only_passthrough_and_secrets(tmp_path: Path) -> None:
    server = ServerConfig(name="h", transport=StreamableHttpTransportConfig(url="https://h"))
    assert build_server_env(
        server, FunnelConfig(default_passthrough_env=("PATH",)), environ=PARENT, base_dir=tmp_path
    ) == {"PATH": "/usr/bin"}


def test_end_to_end_from_a_loaded_config(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('API_KEY="from dotenv"\n')
    config = parse_config(
        '{"servers": {"s": {"command": "x", "envFile": ".env", "env": {"KEY": "${API_KEY}"}}},'
        ' "defaultPassthroughEnv": ["PATH"]}',
        environ=PARENT,
        base_dir=tmp_path,
    )
    env = build_server_env(config.servers[0], config, environ=PARENT, base_dir=tmp_path)
    assert env == {"PATH": "/usr/bin", "API_KEY": "from dotenv", "KEY": "from dotenv"}
