"""The stdio transport against small scripted servers that misbehave on purpose."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from funnel_transports import (
    ClientSession,
    ConnectError,
    ConnectionLost,
    MessageTooLarge,
    Request,
    RequestTimeout,
    StdioTransport,
    TransportClosed,
)

pytestmark = pytest.mark.anyio

MakeTransport = Callable[..., StdioTransport]


@pytest.fixture
def transport(peers: Any) -> MakeTransport:
    def make(behaviour: str, **kwargs: Any) -> StdioTransport:
        command, args = peers.scripted(behaviour)
        options: dict[str, Any] = {"env": peers.base_env(), "name": behaviour, **kwargs}
        return StdioTransport(command, args, **options)

    return make


async def test_the_child_sees_exactly_the_environment_it_was_given(
    transport: MakeTransport, peers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNNEL_PARENT_SECRET", "must-not-leak")
    given = {**peers.base_env(), "ONLY_THIS": "yes"}
    async with transport("env", env=given) as t, ClientSession(t, mode="legacy") as session:
        result = await session.call_tool("env")
    seen: Mapping[str, str] = json.loads(result["content"][0]["text"])
    assert "FUNNEL_PARENT_SECRET" not in seen
    assert seen["ONLY_THIS"] == "yes"
    # Python itself may add a few variables (LC_CTYPE on some platforms); nothing else.
    assert set(seen) - set(given) <= {"LC_CTYPE", "__CF_USER_TEXT_ENCODING"}


async def test_every_stderr_line_is_logged_with_the_server_name(
    transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="funnel_transports.stdio")
    async with transport("normal") as t, ClientSession(t, mode="legacy") as session:
        await session.ping()
    assert "[normal] scripted server (normal) ready" in caplog.messages


async def test_garbage_lines_are_logged_and_skipped_and_the_session_carries_on(
    transport: MakeTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="funnel_transports.stdio")
    async with transport("garbage") as t, ClientSession(t, mode="legacy") as session:
        result = await session.call_tool("echo", {"message": "still here"})
    assert result["content"][0]["text"] == "Echo: still here"
    assert any(
        "skipped output that is not JSON-RPC" in m and "this is not json" in m
        for m in caplog.messages
    )
    assert any('"method" must be a string' in m for m in caplog.messages)


async def test_a_server_that_exits_mid_call_fails_the_call_at_once_naming_the_server(
    transport: MakeTransport,
) -> None:
    async with transport("normal", name="crashy") as t, ClientSession(t, mode="legacy") as session:
        with anyio.fail_after(5):
            with pytest.raises(ConnectionLost, match=r"crashy: the server exited with status 3"):
                await session.call_tool("crash")
            reason = await session.wait_closed()
        assert isinstance(reason, ConnectionLost)
        with pytest.raises(ConnectionLost):
            await session.call_tool("echo")
        with pytest.raises(ConnectionLost, match="crashy"):
            await t.send(Request(id=99, method="ping"))


async def test_a_server_that_never_answers_makes_connecting_time_out(
    transport: MakeTransport,
) -> None:
    with anyio.fail_after(10):
        async with transport("silent") as t:
            with pytest.raises(
                RequestTimeout, match=r"silent: no answer to initialize within 0\.3 s"
            ):
                async with ClientSession(t, probe_timeout=0.3, request_timeout=0.3):
                    pass


async def test_a_line_over_the_size_limit_fails_pending_calls_fast(
    transport: MakeTransport,
) -> None:
    async with transport("huge-line") as t, ClientSession(t, mode="legacy") as session:
        with anyio.fail_after(10), pytest.raises(MessageTooLarge, match="huge-line sent a message"):
            await session.list_tools()


async def test_a_smaller_configured_limit_is_enforced(transport: MakeTransport) -> None:
    async with transport("normal", max_message_size=64) as t:
        with anyio.fail_after(10), pytest.raises(MessageTooLarge, match="the limit is 64"):
            async with ClientSession(t, mode="legacy"):
                pass


async def test_a_server_that_ignores_stdin_and_sigterm_is_killed_within_the_bound(
    transport: MakeTransport,
) -> None:
    t = transport("stubborn", shutdown_timeout=0.3)
    async with t, ClientSession(t, mode="legacy") as session:
        await session.ping()
    # Two bounded stages passed (stdin closed, SIGTERM ignored) before SIGKILL did it.
    assert t.returncode == -9


async def test_closing_reaps_the_child_and_its_process_group(peers: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    command = (
        "sleep 300 & echo $! > "
        + str(pid_file)
        + "; exec "
        + sys.executable
        + " "
        + str(peers.servers / "scripted.py")
        + " normal"
    )
    t = StdioTransport("sh", ["-c", command], env=peers.base_env(), name="group")
    async with t, ClientSession(t, mode="legacy") as session:
        await session.ping()
        child = t.pid
    assert t.returncode is not None
    assert child is not None
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # already reaped: no zombie left behind
    grandchild = int(pid_file.read_text())
    stat = Path(f"/proc/{grandchild}/stat")

    def running() -> bool:
        # Gone, or a zombie waiting for init: either way no longer running.
        try:
            return stat.read_text().split()[2] != "Z"
        except FileNotFoundError:
            return False

    # SIGTERM was sent to the group on close; give the kernel a bounded moment to act.
    for _ in range(200):
        if not running():
            break
        await anyio.sleep(0.025)
    assert not running()


async def test_a_missing_command_is_a_connect_error(peers: Any) -> None:
    with pytest.raises(ConnectError, match="ghost: command not found: no-such-mcp-server"):
        async with StdioTransport("no-such-mcp-server", env=peers.base_env(), name="ghost"):
            pass


async def test_send_and_receive_after_close_raise_transport_closed(
    transport: MakeTransport,
) -> None:
    t = transport("normal")
    async with t:
        pass
    with pytest.raises(TransportClosed):
        await t.send(Request(id=1, method="ping"))
    with pytest.raises(TransportClosed):
        await t.receive()
    await t.aclose()  # idempotent
