"""Every way a config can be wrong, with the exact message the user reads."""

import json
from typing import Any

import pytest

from funnel_proxy import ConfigError, parse_config

F = ".mcp-funnel.json"
HTTP = {"url": "https://example.com/mcp"}


def srv(**entry: Any) -> dict[str, Any]:
    return {"servers": {"x": entry}}


CASES: list[tuple[str, Any, str]] = [
    # --- reading ---------------------------------------------------------------------
    (
        "invalid json",
        '{\n  "servers": {\n    "a": tru\n  }\n}',
        f"{F}: invalid JSON: Expecting value at line 3, column 10",
    ),
    ("empty file", "", f"{F}: invalid JSON: Expecting value at line 1, column 1"),
    ("not an object", "[1]", f"{F}: $: the config must be a JSON object, got an array"),
    (
        "trailing commas and comments are fine, but not bare words",
        '{"hideTools": [], // c\n "x": no,}',
        f"{F}: invalid JSON: Expecting value at line 2, column 7",
    ),
    (
        "duplicate key",
        '{"hideTools": [], "hideTools": []}',
        f'{F}: duplicate key "hideTools" (a key may appear only once in an object)',
    ),
    # --- unknown keys ----------------------------------------------------------------
    (
        "unknown top key",
        {"hideTool": []},
        f'{F}: $.hideTool: unknown key "hideTool" (did you mean "hideTools"?)',
    ),
    (
        "unknown server key",
        srv(trasport={}),
        f'{F}: $.servers.x.trasport: unknown key "trasport" (did you mean "transport"?)',
    ),
    (
        "unknown server key without a close match",
        srv(command="x", timeout=5),
        f'{F}: $.servers.x.timeout: unknown key "timeout" (expected one of: args, auth, command, cwd, disabled, env, envFile, headers, name, prefix, secretProviders, transport, type, url)',
    ),
    (
        "unknown transport key",
        srv(transport={"type": "sse", "url": "http://a", "reconect": {}}),
        f'{F}: $.servers.x.transport.reconect: unknown key "reconect" (did you mean "reconnect"?)',
    ),
    (
        "key of another transport type",
        srv(transport={"type": "stdio", "command": "x", "url": "http://a"}),
        f'{F}: $.servers.x.transport.url: unknown key "url" (expected one of: args, command, cwd, env, type)',
    ),
    (
        "unknown reconnect key",
        srv(transport={"type": "http", "url": "http://a", "reconnect": {"maxRetries": 1}}),
        f'{F}: $.servers.x.transport.reconnect.maxRetries: unknown key "maxRetries" (expected one of: backoffMultiplier, initialDelayMs, jitter, maxAttempts, maxDelayMs)',
    ),
    (
        "unknown autoReconnect key",
        {"autoReconnect": {"maxAttempt": 1}},
        f'{F}: $.autoReconnect.maxAttempt: unknown key "maxAttempt" (did you mean "maxAttempts"?)',
    ),
    (
        "unknown auth key",
        srv(**HTTP, auth={"type": "oauth2-client", "clientid": "a"}),
        f'{F}: $.servers.x.auth.clientid: unknown key "clientid" (did you mean "clientId"?)',
    ),
    (
        "unknown provider option (wrapper form)",
        srv(command="x", secretProviders=[{"type": "dotenv", "config": {"pth": ".env"}}]),
        f'{F}: $.servers.x.secretProviders[0].config.pth: unknown key "pth" (did you mean "path"?)',
    ),
    (
        "unknown provider option (flat form)",
        {"defaultSecretProviders": [{"type": "process", "prefixx": "A_"}]},
        f'{F}: $.defaultSecretProviders[0].prefixx: unknown key "prefixx" (did you mean "prefix"?)',
    ),
    (
        "unknown rateLimits key",
        {"rateLimits": {"tool": {}}},
        f'{F}: $.rateLimits.tool: unknown key "tool" (did you mean "tools"?)',
    ),
    # --- wrong types -----------------------------------------------------------------
    (
        "command not a string",
        srv(command=1),
        f"{F}: $.servers.x.command: expected a string, got an integer",
    ),
    (
        "args not an array",
        srv(command="x", args="a b"),
        f"{F}: $.servers.x.args: expected an array of strings, got a string",
    ),
    (
        "arg not a string",
        srv(command="x", args=["a", 2]),
        f"{F}: $.servers.x.args[1]: expected a string, got an integer",
    ),
    (
        "env value not a string",
        srv(command="x", env={"PORT": 80}),
        f"{F}: $.servers.x.env.PORT: expected a string, got an integer",
    ),
    (
        "header value not a string",
        srv(**HTTP, headers={"X-Key": True}),
        f"{F}: $.servers.x.headers.X-Key: expected a string, got a boolean",
    ),
    (
        "servers not a container",
        {"servers": "a"},
        f"{F}: $.servers: expected an object (name → server) or an array of servers, got a string",
    ),
    (
        "server not an object",
        {"servers": {"x": []}},
        f"{F}: $.servers.x: expected an object, got an array",
    ),
    (
        "hideTools not an array",
        {"hideTools": "github__*"},
        f"{F}: $.hideTools: expected an array of strings, got a string",
    ),
    (
        "timeout a string",
        srv(transport={"type": "sse", "url": "http://a", "timeout": "5"}),
        f"{F}: $.servers.x.transport.timeout: expected a number, got a string",
    ),
    (
        "timeout zero",
        srv(transport={"type": "websocket", "url": "ws://a", "timeout": 0}),
        f"{F}: $.servers.x.transport.timeout: expected a number > 0 (milliseconds)",
    ),
    (
        "disabled not a boolean",
        srv(command="x", disabled="yes"),
        f"{F}: $.servers.x.disabled: expected a boolean, got a string",
    ),
    (
        "auth token not a string",
        srv(**HTTP, auth={"type": "bearer", "token": 5}),
        f"{F}: $.servers.x.auth.token: expected a string, got an integer",
    ),
    (
        "auth missing field",
        srv(**HTTP, auth={"type": "oauth2-client", "clientId": "a"}),
        f'{F}: $.servers.x.auth: missing required key "clientSecret"',
    ),
    (
        "auth bad endpoint",
        srv(
            **HTTP,
            auth={
                "type": "oauth2-client",
                "clientId": "a",
                "clientSecret": "s",
                "tokenEndpoint": "ftp://x",
            },
        ),
        f"{F}: $.servers.x.auth.tokenEndpoint: expected an http:// or https:// URL",
    ),
    (
        "auth empty bearer",
        srv(**HTTP, auth={"type": "bearer", "token": "${T:}"}),
        f"{F}: $.servers.x.auth.token: the token is empty",
    ),
    (
        "rate limit calls",
        {"rateLimits": {"tools": {"a__*": {"calls": 0, "perSeconds": 1}}}},
        f'{F}: $.rateLimits.tools["a__*"].calls: expected an integer >= 1',
    ),
    (
        "rate limit window",
        {"rateLimits": {"tools": {"a__*": {"calls": 1, "perSeconds": "1"}}}},
        f'{F}: $.rateLimits.tools["a__*"].perSeconds: expected a number, got a string',
    ),
    # --- types and tags --------------------------------------------------------------
    (
        "unknown transport type",
        srv(transport={"type": "htp", "url": "http://a"}),
        f'{F}: $.servers.x.transport.type: unknown transport type "htp" (did you mean "http"?)',
    ),
    (
        "transport without type",
        srv(transport={"url": "http://a"}),
        f'{F}: $.servers.x.transport: missing required key "type" (expected one of: sse, stdio, streamable-http, websocket)',
    ),
    (
        "unknown auth type",
        srv(**HTTP, auth={"type": "oauth"}),
        f'{F}: $.servers.x.auth.type: unknown auth type "oauth" (did you mean "oauth2-code"?)',
    ),
    (
        "auth on stdio",
        srv(command="x", auth={"type": "none"}),
        f"{F}: $.servers.x.auth: auth applies to HTTP transports only (stdio servers get credentials through env or secretProviders)",
    ),
    (
        "unknown provider type",
        {"defaultSecretProviders": [{"type": "dotnev", "config": {}}]},
        f'{F}: $.defaultSecretProviders[0].type: unknown secret provider type "dotnev" (did you mean "dotenv"?)',
    ),
    (
        "process provider takes everything",
        {"defaultSecretProviders": [{"type": "process"}]},
        f"{F}: $.defaultSecretProviders[0]: a process provider needs a prefix or an allowlist (without either it would pass funnel's whole environment)",
    ),
    # --- server shape ----------------------------------------------------------------
    (
        "neither command nor url",
        srv(env={}),
        f'{F}: $.servers.x: a server needs "command" (a local process) or "url" / "transport"',
    ),
    (
        "command on an http server",
        srv(command="x", **HTTP, type="http"),
        f'{F}: $.servers.x.command: "command" does not apply to a "streamable-http" server (remove it, or fix the transport type)',
    ),
    (
        "shorthand next to transport",
        srv(type="sse", transport={"type": "sse", "url": "http://a"}),
        f'{F}: $.servers.x.type: "type" next to "transport" (move it into "transport")',
    ),
    (
        "stdio transport without command",
        srv(transport={"type": "stdio"}),
        f'{F}: $.servers.x.transport: missing required key "command"',
    ),
    ("empty command", srv(command=" "), f"{F}: $.servers.x.command: must not be empty"),
    (
        "array entry without name",
        {"servers": [{"command": "x"}]},
        f'{F}: $.servers[0]: missing required key "name"',
    ),
    (
        "duplicate name",
        {"servers": [{"name": "a", "command": "x"}, {"name": "a", "command": "y"}]},
        f'{F}: $.servers[1]: duplicate server name "a" (also at $.servers[0])',
    ),
    (
        "duplicate across servers and mcpServers",
        {"servers": {"a": {"command": "x"}}, "mcpServers": {"a": {"command": "y"}}},
        f'{F}: $.mcpServers.a: duplicate server name "a" (also at $.servers.a)',
    ),
    (
        "record name mismatch",
        {"servers": {"a": {"name": "b", "command": "x"}}},
        f'{F}: $.servers.a.name: "name" differs from the key "a" (in a record the key is the name; drop "name")',
    ),
    (
        "server name with a space",
        {"servers": {"Brave Search": {"command": "x"}}},
        f'{F}: $.servers["Brave Search"]: invalid server name "Brave Search": a server name may only contain letters, digits, "-" and "_" (try "Brave-Search")',
    ),
    (
        "server name with __",
        {"servers": [{"name": "a__b", "command": "x"}]},
        f'{F}: $.servers[0]: invalid server name "a__b": a server name must not contain "__" (it separates server and tool) (try "a_b")',
    ),
    (
        "bad env name",
        srv(command="x", env={"A B": "1"}),
        f'{F}: $.servers.x.env["A B"]: invalid environment variable name "A B"',
    ),
    (
        "bad header name",
        srv(**HTTP, headers={"X Key": "1"}),
        f'{F}: $.servers.x.headers["X Key"]: invalid header name "X Key"',
    ),
    (
        "header injection",
        srv(**HTTP, headers={"X-Key": "a\r\nEvil: 1"}),
        f"{F}: $.servers.x.headers.X-Key: a header value must not contain line breaks",
    ),
    # --- URLs ------------------------------------------------------------------------
    (
        "ftp URL",
        srv(url="ftp://example.com"),
        f'{F}: $.servers.x.url: invalid URL (scheme "ftp"): expected http:// or https://',
    ),
    (
        "URL without scheme",
        srv(url="example.com/mcp"),
        f"{F}: $.servers.x.url: invalid URL: expected http:// or https://",
    ),
    ("URL without host", srv(url="https:///mcp"), f"{F}: $.servers.x.url: invalid URL: no host"),
    (
        "ws URL for http",
        srv(transport={"type": "streamable-http", "url": "ws://a"}),
        f'{F}: $.servers.x.transport.url: invalid URL (scheme "ws"): expected http:// or https://',
    ),
    (
        "ftp URL for websocket",
        srv(transport={"type": "websocket", "url": "ftp://a"}),
        f'{F}: $.servers.x.transport.url: invalid URL (scheme "ftp"): expected http:// or https:// or ws:// or wss://',
    ),
    ("broken IPv6 URL", srv(url="http://[::1/mcp"), f"{F}: $.servers.x.url: invalid URL"),
    # --- interpolation ---------------------------------------------------------------
    (
        "missing variable",
        srv(command="${NOPE}"),
        f'{F}: $.servers.x.command: environment variable "NOPE" is not set (set it, or give a default: ${{NOPE:default}})',
    ),
    (
        "missing variable in a header",
        srv(**HTTP, headers={"Authorization": "Bearer ${TOKEN}"}),
        f'{F}: $.servers.x.headers.Authorization: environment variable "TOKEN" is not set (set it, or give a default: ${{TOKEN:default}})',
    ),
    (
        "missing variable in a pattern",
        {"hideTools": ["${HIDE}"]},
        f'{F}: $.hideTools[0]: environment variable "HIDE" is not set (set it, or give a default: ${{HIDE:default}})',
    ),
    (
        "unterminated reference",
        srv(command="${HOME"),
        f'{F}: $.servers.x.command: unterminated "${{" (no closing "}}") (write ${{NAME}}, or $${{ for a literal "${{")',
    ),
    (
        "invalid variable name",
        srv(command="${1X}"),
        f'{F}: $.servers.x.command: invalid variable name "1X" (names are letters, digits and "_", not starting with a digit: ${{NAME}} or ${{NAME:default}})',
    ),
    (
        "empty reference",
        srv(command="${}"),
        f'{F}: $.servers.x.command: invalid variable name "" (names are letters, digits and "_", not starting with a digit: ${{NAME}} or ${{NAME:default}})',
    ),
    (
        "VS Code input",
        srv(command="x", args=["${input:token}"]),
        f"{F}: $.servers.x.args[0]: VS Code input variables (${{input:...}}) are not supported (put the value in an environment variable and write ${{NAME}})",
    ),
    (
        "bad syntax in env checked at load",
        srv(command="x", env={"A": "${"}),
        f'{F}: $.servers.x.env.A: unterminated "${{" (no closing "}}") (write ${{NAME}}, or $${{ for a literal "${{")',
    ),
    # --- patterns --------------------------------------------------------------------
    (
        "empty pattern",
        {"hideTools": [""]},
        f'{F}: $.hideTools[0]: empty pattern (use "*" to match every tool)',
    ),
    (
        "pattern with space",
        {"exposeTools": ["github__create issue"]},
        f'{F}: $.exposeTools[0]: invalid pattern "github__create issue": tool names never contain whitespace',
    ),
    (
        "core tool typo",
        {"exposeCoreTools": ["discover_tool_by_words"]},
        f'{F}: $.exposeCoreTools[0]: pattern "discover_tool_by_words" matches no core tool (did you mean "discover_tools_by_words"?)',
    ),
    (
        "toolset pattern",
        {"toolsets": {"dev": ["ok__*", ""]}},
        f'{F}: $.toolsets.dev[1]: empty pattern (use "*" to match every tool)',
    ),
    (
        "toolsets not an object",
        {"toolsets": ["a"]},
        f"{F}: $.toolsets: expected an object, got an array",
    ),
    (
        "passthrough name",
        {"defaultPassthroughEnv": ["PATH", "MY VAR"]},
        f'{F}: $.defaultPassthroughEnv[1]: invalid environment variable name "MY VAR" (names are letters, digits and "_"; "*" is a wildcard)',
    ),
    # --- reconnect values ------------------------------------------------------------
    (
        "negative attempts",
        {"autoReconnect": {"maxAttempts": -1}},
        f"{F}: $.autoReconnect.maxAttempts: expected an integer >= 0",
    ),
    (
        "fractional attempts",
        {"autoReconnect": {"maxAttempts": 1.5}},
        f"{F}: $.autoReconnect.maxAttempts: expected an integer, got a number",
    ),
    (
        "multiplier of 1",
        {"autoReconnect": {"backoffMultiplier": 1}},
        f"{F}: $.autoReconnect.backoffMultiplier: expected a number > 1",
    ),
    (
        "negative delay",
        {"autoReconnect": {"initialDelayMs": -5}},
        f"{F}: $.autoReconnect.initialDelayMs: expected a number >= 0",
    ),
    (
        "jitter above 1",
        {"autoReconnect": {"jitter": 2}},
        f"{F}: $.autoReconnect.jitter: expected a number <= 1",
    ),
    (
        "enabled a string",
        {"autoReconnect": {"enabled": "true"}},
        f"{F}: $.autoReconnect.enabled: expected a boolean, got a string",
    ),
    (
        "max below initial",
        {"autoReconnect": {"initialDelayMs": 5000, "maxDelayMs": 100}},
        f"{F}: $.autoReconnect.maxDelayMs: maxDelayMs (100) must be >= initialDelayMs (5000)",
    ),
    (
        "transport reconnect below the type's default initial delay",
        srv(transport={"type": "http", "url": "http://a", "reconnect": {"maxDelayMs": 10}}),
        f"{F}: $.servers.x.transport.reconnect.maxDelayMs: maxDelayMs (10) must be >= initialDelayMs (1000)",
    ),
    (
        "transport reconnect multiplier",
        srv(
            transport={
                "type": "streamable-http",
                "url": "http://a",
                "reconnect": {"backoffMultiplier": 0.5},
            }
        ),
        f"{F}: $.servers.x.transport.reconnect.backoffMultiplier: expected a number > 1",
    ),
    # --- keys that would do nothing are refused ----------------------------------------
    (
        "sse reconnect",
        srv(transport={"type": "sse", "url": "http://a", "reconnect": {"maxAttempts": 1}}),
        f'{F}: $.servers.x.transport.reconnect: "reconnect" is not supported for a "sse" transport (remove it: funnel reconnects the whole backend as the top-level "autoReconnect" says)',
    ),
    (
        "websocket reconnect",
        srv(transport={"type": "ws", "url": "ws://a", "reconnect": {}}),
        f'{F}: $.servers.x.transport.reconnect: "reconnect" is not supported for a "websocket" transport (remove it: funnel reconnects the whole backend as the top-level "autoReconnect" says)',
    ),
    (
        "session id",
        srv(transport={"type": "streamable-http", "url": "http://a", "sessionId": "abc"}),
        f'{F}: $.servers.x.transport.sessionId: "sessionId" is not supported (remove it: funnel starts its own session on every connection and resumes it by itself)',
    ),
    # --- msgspec's paths mapped back to what the user wrote ---------------------------
    (
        "an args item of a legacy server",
        srv(command="x", args=["a", 2]),
        f"{F}: $.servers.x.args[1]: expected a string, got an integer",
    ),
    (
        "an auth field in a server of an array",
        {
            "servers": [
                {"name": "a", "url": "http://a", "auth": {"type": "oauth2-client", "clientId": "c"}}
            ]
        },
        f'{F}: $.servers[0].auth: missing required key "clientSecret"',
    ),
    (
        "a missing variable in a server's env",
        srv(command="x", env={"TOKEN": "${NOT_SET_ANYWHERE}"}),
        f'{F}: $.servers.x.env.TOKEN: environment variable "NOT_SET_ANYWHERE" is not set (set it, or give a default: ${{NOT_SET_ANYWHERE:default}})',
    ),
    (
        "a missing variable in a transport's env",
        srv(transport={"type": "stdio", "command": "x", "env": {"T": "${NOT_SET_ANYWHERE}"}}),
        f'{F}: $.servers.x.transport.env.T: environment variable "NOT_SET_ANYWHERE" is not set (set it, or give a default: ${{NOT_SET_ANYWHERE:default}})',
    ),
    (
        "a wrong autoReconnect value",
        {"autoReconnect": {"maxAttempts": "3"}},
        f"{F}: $.autoReconnect.maxAttempts: expected an integer, got a string",
    ),
]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_is_reported_with_file_path_and_fix(data: Any, message: str) -> None:
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source=F, environ={})
    assert str(caught.value) == message


def test_error_parts_are_attributes() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(srv(trasport={})), source=F, environ={})
    error = caught.value
    assert error.file == F
    assert error.path == "$.servers.x.trasport"
    assert error.message == 'unknown key "trasport"'
    assert error.hint == 'did you mean "transport"?'


def test_errors_never_show_secret_values() -> None:
    secret = "hunter2-very-secret"
    cases = [
        srv(url=f"ftp://user:{secret}@example.com"),
        srv(**HTTP, headers={"X-Key": f"{secret}\n"}),
        srv(**HTTP, auth={"type": "bearer", "token": secret, "extra": 1}),
        srv(command="x", env={"A": f"{secret}${{"}),
    ]
    for case in cases:
        with pytest.raises(ConfigError) as caught:
            parse_config(json.dumps(case), environ={"S": secret})
        assert secret not in str(caught.value)


def test_mapping_input_is_validated_like_text() -> None:
    with pytest.raises(ConfigError, match=r'\$\.hideTool: unknown key "hideTool"'):
        parse_config({"hideTool": []}, environ={})
    with pytest.raises(ConfigError, match=r"<config>: \$: the config must be a JSON object"):
        parse_config([], environ={})  # type: ignore[arg-type]  # a caller's mistake, on purpose


def test_bytes_must_be_utf8() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(b'{"a": "\xff"}', source=F, environ={})
    assert str(caught.value) == f"{F}: not UTF-8 text (invalid start byte)"
    assert parse_config(b"{}", environ={}) == parse_config("{}", environ={})
