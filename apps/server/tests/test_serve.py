"""The listening socket: accepted connections send small responses at once."""

from __future__ import annotations

import socket

import anyio
import httpx
import pytest
from litestar import Litestar

from funnel_server._serve import bind, running_server


def test_accepted_connections_have_tcp_nodelay() -> None:
    # asyncio sets TCP_NODELAY on an accepted socket only when its proto is IPPROTO_TCP
    # (accepted sockets copy the listener's); the listener's own TCP_NODELAY is inherited
    # by the kernel whatever loop accepts. Without either, small answers wait ~40 ms.
    listener = bind("127.0.0.1", 0)
    try:
        listener.settimeout(5)
        with socket.create_connection(listener.getsockname(), timeout=5):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()


@pytest.mark.anyio
async def test_the_server_parses_http_with_httptools() -> None:
    # httptools is a dependency because it measured 1.3-1.6x faster per request here
    # (tools/bench/http_stack.py); "auto" would silently fall back to h11 without it.
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    async with (
        running_server(Litestar(route_handlers=[]), sock) as running,
        httpx.AsyncClient() as http,
    ):
        with anyio.fail_after(10):
            response = await http.get(f"http://127.0.0.1:{port}/nothing")
        protocol = running.server.config.http_protocol_class
    assert response.status_code == 404
    assert getattr(protocol, "__name__", "") == "HttpToolsProtocol"


@pytest.mark.parametrize(("setting", "loop_module"), [("", "uvloop"), ("asyncio", "asyncio")])
def test_the_command_runs_on_uvloop_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, setting: str, loop_module: str
) -> None:
    # Which asyncio loop class anyio runs is exactly what this checks.
    import asyncio  # noqa: TID251

    from funnel_server._cli import EVENT_LOOP_ENV, _event_loop

    monkeypatch.setenv(EVENT_LOOP_ENV, setting)
    seen: list[str] = []

    async def main() -> int:
        seen.append(type(asyncio.get_running_loop()).__module__.split(".")[0])
        return 7

    assert _event_loop(main) == 7
    assert seen == [loop_module]
