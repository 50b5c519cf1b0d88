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


async def test_login_names_an_unknown_server_and_leaves_a_connected_one_alone(
    tmp_path: Path,
) -> None:
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
    plain = await anyio.run_process(
        [FUNNEL, "--config", str(config), "--port", "0", "login", "demo"],
        cwd=tmp_path,
        env=environment(tmp_path),
        check=False,
    )
    assert plain.returncode == 0
    assert "demo is connected; nothing to do" in plain.stderr.decode()


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
