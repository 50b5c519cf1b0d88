"""The config diff behind a live reload: pure, no I/O."""

from __future__ import annotations

import sys
from typing import Any

from funnel_proxy import ReloadReport, diff_configs, parse_config


def config(**data: Any) -> Any:
    return parse_config(data, environ={"PATH": "/usr/bin", "TOKEN": "t"})


def stdio(*args: str, **extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": list(args), **extra}


BASE: dict[str, Any] = {
    "a": stdio("a.py"),
    "b": stdio("b.py"),
    "web": {"transport": {"type": "streamable-http", "url": "http://127.0.0.1:9/mcp"}},
}


def test_an_identical_config_changes_nothing() -> None:
    report = diff_configs(config(servers=BASE), config(servers=dict(BASE)))
    assert report == ReloadReport(unchanged=("a", "b", "web"))
    assert not report.changed
    assert report.summary() == "nothing changed"


def test_servers_are_added_removed_and_restarted_by_name() -> None:
    new = {"b": stdio("b.py", "--verbose"), "web": BASE["web"], "c": stdio("c.py")}
    report = diff_configs(config(servers=BASE), config(servers=new))
    assert report.added == ("c",)
    assert report.removed == ("a",)
    assert report.restarted == ("b",)
    assert report.unchanged == ("web",)
    assert not report.filters_changed
    assert report.summary() == "added c; restarted b; removed a"


def test_a_changed_env_value_or_disabled_flag_restarts_only_that_server() -> None:
    old = config(servers={**BASE, "a": stdio("a.py", env={"X": "1"})})
    new = config(
        servers={**BASE, "a": stdio("a.py", env={"X": "2"}), "b": {**BASE["b"], "disabled": True}}
    )
    report = diff_configs(old, new)
    assert report.restarted == ("a", "b")
    assert report.unchanged == ("web",)


def test_filter_changes_restart_nothing() -> None:
    old = config(servers=BASE)
    for key, value in (
        ("hideTools", ["a__x"]),
        ("exposeTools", []),
        ("alwaysVisibleTools", ["b__*"]),
        ("exposeCoreTools", ["get_tool_schema"]),
        ("toolsets", {"files": ["a__*"]}),
    ):
        report = diff_configs(old, config(servers=BASE, **{key: value}))
        assert report.filters_changed, key
        assert report.unchanged == ("a", "b", "web"), key
        assert report.summary() == "tool filters changed"


def test_passthrough_env_restarts_stdio_servers_but_not_http_ones() -> None:
    report = diff_configs(
        config(servers=BASE), config(servers=BASE, defaultPassthroughEnv=["PATH", "LANG"])
    )
    assert report.restarted == ("a", "b")
    assert report.unchanged == ("web",)


def test_a_new_reconnect_policy_restarts_every_server() -> None:
    report = diff_configs(
        config(servers=BASE), config(servers=BASE, autoReconnect={"maxAttempts": 2})
    )
    assert report.restarted == ("a", "b", "web")


def test_rate_limits_are_not_a_backend_change() -> None:
    limits = {"tools": {"a__*": {"calls": 1, "perSeconds": 1}}}
    report = diff_configs(config(servers=BASE), config(servers=BASE, rateLimits=limits))
    assert not report.changed
