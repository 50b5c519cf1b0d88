"""The ``funnel-server`` command: HTTP mode, refusing a public bind without a token, login."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.text import TextReceiveStream

from funnel_tokenstore import StateKeys

pytestmark = pytest.mark.anyio

FUNNEL = str(Path(sys.executable).with_name("funnel-server"))
SIGN_IN = re.compile(r"dashboard (http://127\.0\.0\.1:(\d+))/\?token=(\S+)")


def environment(tmp_path: Path, **more: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "MCP_FUNNEL_HOME": str(tmp_path / "home"), **more}


async def lines_of(process: Process) -> AsyncIterator[str]:
    assert process.stderr is not None
    buffer = ""
    async for chunk in TextReceiveStream(process.stderr):
        buffer += chunk
        *complete, buffer = buffer.split("\n")
        for line in complete:
            yield line


async def test_funnel_server_serves_the_app_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    async with await anyio.open_process(
        [FUNNEL, "--port", "0", "--log-level", "WARNING"],
        cwd=tmp_path,
        env=environment(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    ) as process:
        try:
            seen: list[str] = []
            with anyio.fail_after(30):
                async for line in lines_of(process):
                    seen.append(line)
                    if match := SIGN_IN.search(line):
                        break
            assert match is not None, seen
            base, _, token = match.groups()
            async with httpx.AsyncClient(base_url=base) as http:
                health = await http.get("/api/health")
                servers = await http.get(
                    "/api/servers", headers={"Authorization": f"Bearer {token}"}
                )
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(20):
                rest = [line async for line in lines_of(process)]
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert [s["name"] for s in servers.json()["servers"]] == ["demo"]
    assert code == 0
    token_file = tmp_path / "home" / "api-token"
    assert token_file.read_text().strip() == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    lines_with_token = [line for line in [*seen, *rest] if token in line]
    assert len(lines_with_token) == 1, "only the sign-in line shows the token"
    audit = (tmp_path / "home" / "audit.log").read_text()
    assert token not in audit


async def test_stdio_mode_starts_the_web_app_at_its_first_visitor(tmp_path: Path) -> None:
    # --stdio loads Litestar and uvicorn only when someone connects to the web app; the
    # socket listens from the start, so the first visitor is served, not refused.
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    async with await anyio.open_process(
        [FUNNEL, "--stdio", "--port", "0", "--log-level", "WARNING"],
        cwd=tmp_path,
        env=environment(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        try:
            with anyio.fail_after(30):
                async for line in lines_of(process):
                    if match := SIGN_IN.search(line):
                        break
                assert match is not None
                base, _, token = match.groups()
                await process.stdin.send(json.dumps(init).encode() + b"\n")
                stdout = BufferedByteReceiveStream(process.stdout)
                answer = json.loads(await stdout.receive_until(b"\n", 1 << 20))
                async with httpx.AsyncClient(base_url=base) as http:
                    health = await http.get("/api/health")
                    servers = await http.get(
                        "/api/servers", headers={"Authorization": f"Bearer {token}"}
                    )
                await process.stdin.aclose()  # the desktop client quits
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert answer["id"] == 1 and "serverInfo" in answer["result"]
    assert health.status_code == 200
    assert [s["name"] for s in servers.json()["servers"]] == ["demo"]
    assert code == 0


@pytest.mark.parametrize("sigint", ["default", "ignored"])
async def test_sigterm_stops_the_backends_like_ctrl_c(tmp_path: Path, sigint: str) -> None:
    # A backend that outlives its stdin: only the funnel's own shutdown stops it. uvicorn
    # re-raises SIGTERM after its shutdown, which used to kill funnel-server before that.
    pid_file = tmp_path / "backend.pid"
    script = 'echo $$ > "$1"; "$0" -m funnel_server._demo; exec sleep 300'
    stubborn = {"command": "/bin/sh", "args": ["-c", script, sys.executable, str(pid_file)]}
    config = tmp_path / ".mcp-funnel.json"
    config.write_text(json.dumps({"servers": {"demo": stubborn}}))
    backend: int | None = None
    try:
        argv = [FUNNEL, "--config", str(config), "--port", "0", "--log-level", "WARNING"]
        if sigint == "ignored":
            # As in a background job or under a service manager: SIGINT is ignored and
            # SIGTERM is the only way to stop it.
            argv = ["/bin/sh", "-c", 'trap "" INT; exec "$0" "$@"', *argv]
        async with await anyio.open_process(
            argv,
            cwd=tmp_path,
            env=environment(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        ) as process:
            try:
                with anyio.fail_after(30):
                    async for line in lines_of(process):
                        if SIGN_IN.search(line):
                            break
                backend = int(pid_file.read_text())
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(20):
                    rest = [line async for line in lines_of(process)]
                    code = await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        assert code == 0, rest
        with pytest.raises(ProcessLookupError):
            os.kill(backend, 0)
        backend = None
        assert not any("Traceback" in line for line in rest), rest
    finally:
        if backend is not None:
            os.kill(backend, signal.SIGKILL)


async def test_a_public_bind_without_a_configured_token_is_refused(tmp_path: Path) -> None:
    result = await anyio.run_process(
        [FUNNEL, "--host", "0.0.0.0", "--port", "0"],  # noqa: S104 - refused before binding
        cwd=tmp_path,
        env=environment(tmp_path),
        check=False,
    )
    assert result.returncode == 2
    message = result.stderr.decode()
    assert "refusing to listen on 0.0.0.0 without FUNNEL_API_TOKEN" in message
    assert result.stdout == b""
    assert not (tmp_path / "home").exists(), "nothing was started or written"


async def test_a_too_short_configured_token_is_refused(tmp_path: Path) -> None:
    result = await anyio.run_process(
        [FUNNEL, "--port", "0"],
        cwd=tmp_path,
        env=environment(tmp_path, FUNNEL_API_TOKEN="short"),
        check=False,
    )
    assert result.returncode == 2
    assert "FUNNEL_API_TOKEN is too short" in result.stderr.decode()


async def test_login_names_an_unknown_server(tmp_path: Path) -> None:
    config = tmp_path / ".mcp-funnel.json"
    demo: dict[str, Any] = {"command": sys.executable, "args": ["-m", "funnel_server._demo"]}
    config.write_text(json.dumps({"servers": {"demo": demo}}))
    unknown = await anyio.run_process(
        [FUNNEL, "--config", str(config), "--port", "0", "login", "ghost"],
        cwd=tmp_path,
        env=environment(tmp_path),
        check=False,
    )
    assert unknown.returncode == 2
    assert "no server named 'ghost' (configured: demo)" in unknown.stderr.decode()


@pytest.mark.parametrize("order", ["before", "after"])
def test_options_work_before_or_after_the_command(tmp_path: Path, order: str) -> None:
    config = tmp_path / "funnel.json"
    config.write_text(
        json.dumps(
            {"servers": {"ok": {"command": sys.executable, "args": ["-c", "pass"]}}, "nope": 1}
        )
    )
    options = ["--config", str(config)]
    argv = [FUNNEL, *options, "check"] if order == "before" else [FUNNEL, "check", *options]
    done = subprocess.run(
        argv, env=environment(tmp_path), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert 'unknown key "nope"' in done.stderr


# --------------------------------------------------------------------------- helpers


def demo_entry() -> dict[str, Any]:
    return {"command": sys.executable, "args": ["-m", "funnel_server._demo"]}


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / ".mcp-funnel.json"
    path.write_text(json.dumps(config))
    return path


async def funnel(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(60):
        return await anyio.run_process(
            [FUNNEL, *argv],
            cwd=tmp_path,
            env=environment(tmp_path, **env),
            stdin=subprocess.DEVNULL,
            check=False,
        )


TOOLS_LINE = re.compile(r"^(\d+) tools exposed to clients .*about (\d+) tokens", re.MULTILINE)


async def client_view(tmp_path: Path, config: Path) -> list[dict[str, Any]]:
    """tools/list as the official SDK's client gets it from ``funnel-server --stdio``."""
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=FUNNEL,
        args=["--stdio", "--config", str(config), "--port", "0", "--log-level", "WARNING"],
        env=environment(tmp_path),
        cwd=str(tmp_path),
    )
    with anyio.fail_after(60):
        async with Client(params) as client:
            listed = await client.list_tools()
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed.tools]


# --------------------------------------------------------------------------- tools


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("everything", {}),
        ("hidden", {"hideTools": ["demo__add", "demo__new_uuid"]}),
        ("allowlist", {"exposeTools": ["demo__echo", "demo__word_count"]}),
        ("core tools only", {"exposeTools": []}),
        ("some core tools", {"exposeTools": [], "exposeCoreTools": ["discover_tools_by_words"]}),
        ("no core tools", {"exposeCoreTools": []}),
    ],
)
async def test_tools_reports_exactly_what_a_client_lists(
    tmp_path: Path, mode: str, extra: dict[str, Any]
) -> None:
    config = write_config(tmp_path, {"servers": {"demo": demo_entry()}, **extra})
    report = await funnel(tmp_path, "tools", "--config", str(config), "--log-level", "WARNING")
    seen = await client_view(tmp_path, config)
    out = report.stdout.decode()
    assert report.returncode == 0, report.stderr.decode()
    match = TOOLS_LINE.search(out)
    assert match is not None, out
    listed_by_cli = sorted(re.findall(r"^  \+ (\S+)", out, re.MULTILINE))
    names = sorted(tool["name"] for tool in seen)
    assert names, f"{mode}: the client sees tools in every mode here"
    assert listed_by_cli == names, mode
    assert int(match.group(1)) == len(seen), mode
    # The estimate is about 4 bytes of tools/list JSON per token: the client's view of the
    # same list (re-encoded by the SDK, so not byte-identical) is within a few percent.
    client_tokens = len(json.dumps({"tools": seen}, separators=(",", ":"))) / 4
    assert abs(int(match.group(2)) - client_tokens) <= 0.1 * client_tokens, (mode, out)


# --------------------------------------------------------------------------- config errors


async def test_a_missing_variable_in_a_servers_env_is_a_config_error_everywhere(
    tmp_path: Path,
) -> None:
    # The README's own example: "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"}.
    server = {**demo_entry(), "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"}}
    config = write_config(tmp_path, {"servers": {"github": server}})
    for argv in (["check"], ["tools"], ["--port", "0"], ["--stdio", "--port", "0"]):
        done = await funnel(tmp_path, *argv, "--config", str(config))
        err = done.stderr.decode()
        assert done.returncode == 2, (argv, err)
        assert "Traceback" not in err, argv
        assert ".mcp-funnel.json: $.servers.github.env.GITHUB_PERSONAL_ACCESS_TOKEN" in err, argv
        assert '"GITHUB_TOKEN" is not set' in err, argv
        assert "${GITHUB_TOKEN:default}" in err, argv
        assert done.stdout == b"", argv
    # Set, it runs; and a disabled server's missing variables wait until it is enabled.
    ok = await funnel(tmp_path, "check", "--config", str(config), GITHUB_TOKEN="x")
    assert ok.returncode == 0, ok.stderr.decode()
    config = write_config(tmp_path, {"servers": {"github": {**server, "disabled": True}}})
    off = await funnel(tmp_path, "check", "--config", str(config))
    assert off.returncode == 0, off.stderr.decode()


@pytest.mark.parametrize(
    ("text", "path", "fix"),
    [
        ('{"servers": {"a": ', None, "line 1"),
        ('{"servers": {"a": {"command": "x"}}, "hideTool": []}', "$.hideTool", "hideTools"),
        ('{"servers": {"a": {"url": "${NOPE_URL}"}}}', "$.servers.a.url", "${NOPE_URL:default}"),
        ('{"servers": {"a": {"command": 3}}}', "$.servers.a.command", "a string"),
        ('{"servers": {"a": {"url": "ftp://x"}}}', "$.servers.a.url", "https://"),
        ('{"servers": {"a": {"command": "x", "auth": {"type": "bearer", "token": "t"}}}}',
         "$.servers.a.auth", "env or secretProviders"),
    ],
)  # fmt: skip
async def test_config_errors_exit_2_naming_file_path_and_fix(
    tmp_path: Path, text: str, path: str | None, fix: str
) -> None:
    config = tmp_path / ".mcp-funnel.json"
    config.write_text(text)
    for argv in (["check"], ["tools"], ["--port", "0"], ["login", "a"]):
        done = await funnel(tmp_path, *argv, "--log-level", "WARNING")
        err = done.stderr.decode()
        assert done.returncode == 2, (argv, err)
        assert "Traceback" not in err
        assert ".mcp-funnel.json" in err, err
        if path is not None:
            assert path in err, err
        assert fix in err, err


# --------------------------------------------------------------------------- check, login


class _ProtectedMcp:
    """An MCP endpoint that answers 401 as the MCP authorization spec says, plus metadata.

    Enough for funnel to discover the authorization server and find that a person must
    log in; nobody ever gets a token here.
    """

    def __init__(self) -> None:
        self.base = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        path = scope["path"]
        metadata: dict[str, Any] | None = None
        if path == "/.well-known/oauth-protected-resource/mcp":
            metadata = {"resource": f"{self.base}/mcp", "authorization_servers": [self.base]}
        elif path in (
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration",
        ):
            metadata = {
                "issuer": self.base,
                "authorization_endpoint": f"{self.base}/authorize",
                "token_endpoint": f"{self.base}/token",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
            }
        if metadata is not None:
            body = json.dumps(metadata).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        elif path == "/mcp":
            body = b""
            challenge = (
                f'Bearer resource_metadata="{self.base}/.well-known/oauth-protected-resource/mcp"'
            )
            headers = [(b"www-authenticate", challenge.encode())]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
        else:
            body = b""
            await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": body})


def _serving_protected() -> tuple[Any, Any, str]:
    import socket as _socket

    import uvicorn

    app = _ProtectedMcp()
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    app.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        app, lifespan="off", ws="none", http="h11", log_config=None, log_level="warning"
    )
    return uvicorn.Server(config), sock, app.base


async def test_check_tells_how_to_log_in_and_the_serve_log_shows_the_url(tmp_path: Path) -> None:
    server, sock, base = _serving_protected()
    entry = {"url": f"{base}/mcp", "auth": {"type": "oauth2-code", "clientId": "funnel-test"}}
    write_config(tmp_path, {"servers": {"linear": entry, "demo": demo_entry()}})
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                checked = await funnel(
                    tmp_path, "check", "--log-level", "WARNING", MCP_FUNNEL_TOKEN_STORE="memory"
                )
                async with await anyio.open_process(
                    [FUNNEL, "--port", "0"],
                    cwd=tmp_path,
                    env=environment(tmp_path, MCP_FUNNEL_TOKEN_STORE="memory"),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                ) as process:
                    try:
                        log: list[str] = []
                        with anyio.fail_after(30):
                            async for line in lines_of(process):
                                log.append(line)
                                if "linear" in line and "/api/oauth/authorize/" in line:
                                    break
                    finally:
                        process.kill()
                        await process.wait()
            finally:
                server.should_exit = True
    finally:
        sock.close()
    out = checked.stdout.decode()
    assert checked.returncode == 1, (out, checked.stderr.decode())
    assert re.search(r"^linear\s+auth_required", out, re.MULTILINE), out
    assert "to fix" not in out, "stdout is the table only"
    fix = checked.stderr.decode().split("to fix:", 1)[1]
    assert 'run "funnel-server login linear"' in fix
    assert "http://localhost:3456/api/oauth/authorize/linear" in fix
    assert "demo:" not in fix, "a connected backend needs no fix"
    auth_line = log[-1]
    assert "[REDACTED]" not in auth_line, log
    assert "/api/oauth/authorize/linear" in auth_line, log


async def test_login_refuses_a_server_without_oauth_with_exit_2(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "servers": {
                "demo": demo_entry(),
                "api": {"url": "http://127.0.0.1:9/mcp", "headers": {"X-Key": "k"}},
            }
        },
    )
    stdio = await funnel(tmp_path, "login", "demo", "--port", "0")
    assert stdio.returncode == 2
    assert "demo is a stdio server: it has no login" in stdio.stderr.decode()
    remote = await funnel(tmp_path, "login", "api", "--config", str(config), "--port", "0")
    assert remote.returncode == 2
    message = remote.stderr.decode()
    assert 'its auth type is "none"' in message
    assert '"auth": {"type": "oauth2-code"} on servers.api' in message


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ([], ["--stdio", "tools", "check", "login SERVER", "exit codes", "COMMAND --help"]),
        (["tools"], ["tools/list", "core tools", "tokens", "exit codes"]),
        (["check"], ["funnel-server login", "status table", "exit codes"]),
        (["login"], ["oauth2-code", "--timeout", "--port", "keychain", "exit codes"]),
    ],
)
async def test_every_command_has_useful_help(
    tmp_path: Path, command: list[str], words: list[str]
) -> None:
    done = await funnel(tmp_path, *command, "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.decode().split())
    for word in words:
        assert word in text, (command, word, text)


# --------------------------------------------------------------------------- stdin


async def test_mcp_on_stdin_without_stdio_is_reported_instead_of_hanging(tmp_path: Path) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "desktop", "version": "1"},
        },
    }
    async with await anyio.open_process(
        [FUNNEL, "--port", "0", "--log-level", "WARNING"],
        cwd=tmp_path,
        env=environment(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as process:
        try:
            assert process.stdin is not None and process.stdout is not None
            await process.stdin.send(json.dumps(initialize).encode() + b"\n")
            with anyio.fail_after(30):
                err = "\n".join([line async for line in lines_of(process)])
                code = await process.wait()
                out = b"".join([chunk async for chunk in process.stdout])
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 2, err
    assert "MCP messages are arriving on stdin" in err
    assert '"--stdio"' in err
    assert out == b""


def test_state_key_prints_a_fresh_key_the_shared_state_accepts(tmp_path: Path) -> None:
    runs = [
        subprocess.run(
            [FUNNEL, "state-key"],
            env=environment(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        for _ in range(2)
    ]
    first, second = (run.stdout.strip() for run in runs)
    assert first != second
    keys = StateKeys.parse(f"{first},{second}")
    assert keys.open(StateKeys.parse(second).seal(b"x")) == b"x"
