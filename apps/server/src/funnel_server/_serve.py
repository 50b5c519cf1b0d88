"""Running the app on uvicorn, on a socket bound beforehand.

Binding first (port 0 allowed) tells the caller the real port before the funnel starts,
which the OAuth redirect URI needs, and lets tests connect without waiting: a listening
socket queues connections until uvicorn accepts them. uvicorn itself is imported only
when a server starts (``funnel-server --stdio`` may never need it).
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    import uvicorn
    from litestar import Litestar

__all__ = ["RunningServer", "bind", "display_host", "running_server"]

logger = logging.getLogger("funnel_server")

_WS_MAX_SIZE = 4 * 1024 * 1024


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (``port`` 0 picks a free one).

    Accepted connections have ``TCP_NODELAY`` set: responses go out at once.

    Raises:
        OSError: The address is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on an accepted connection
    # only when the socket says it is TCP, and accepted sockets inherit the listener's
    # protocol. Without it every small response waits ~40 ms (Nagle + delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Linux hands the listener's TCP_NODELAY on to accepted connections too, whatever
        # event loop accepts them.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def display_host(host: str) -> str:
    """The host to show in URLs for a bind address (a wildcard shows as loopback)."""
    if host in ("0.0.0.0", ""):  # noqa: S104 - recognising the wildcard, not binding it
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@functools.cache
def _quiet_server() -> type[uvicorn.Server]:
    import uvicorn

    class _QuietServer(uvicorn.Server):
        """A uvicorn server that leaves signals to its owner.

        uvicorn normally takes SIGINT/SIGTERM for itself and re-raises them after shutting
        down, which would kill the process before the funnel has stopped its backends.
        funnel-server handles both signals in its event loop instead (see ``_cli``) and
        stops this server through ``should_exit``.
        """

        @contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    return _QuietServer


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A server started by :func:`running_server`.

    Attributes:
        server: The uvicorn server (``should_exit`` stops it).
        port: The port it listens on.
        stopped: Set when uvicorn has stopped (after Ctrl-C or SIGTERM, say).
    """

    server: uvicorn.Server
    port: int
    stopped: anyio.Event


@asynccontextmanager
async def running_server(
    app: Litestar, sock: socket.socket, *, http: str = "auto", graceful_timeout: float = 2.0
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` on ``sock`` for the duration of the block, then shut it down (bounded).

    Leaving the block stops accepting connections at once and gives the requests in
    flight ``graceful_timeout`` seconds to finish (the drain), then closes the rest.

    Args:
        app: The app.
        sock: A bound, listening socket (see :func:`bind`); closed on exit.
        http: uvicorn's HTTP/1.1 implementation: ``auto`` (``httptools`` when it is
            installed, else ``h11``), ``httptools`` or ``h11``.
        graceful_timeout: Seconds in-flight requests get when the block ends.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=http,
        ws="websockets-sansio",
        ws_max_size=_WS_MAX_SIZE,
        # uvicorn's type says int; asyncio takes any number of seconds.
        timeout_graceful_shutdown=max(0.1, graceful_timeout),  # type: ignore[arg-type]
        server_header=False,
    )
    server = _quiet_server()(config)
    running = RunningServer(server=server, port=sock.getsockname()[1], stopped=anyio.Event())
    # uvicorn must stop through should_exit, never by having its task cancelled from
    # outside (a signal, an error elsewhere): cancelled mid-lifespan it leaves tracebacks
    # and open connections. Its scope is shielded, and cancelled only as a backstop.
    serve_scope = anyio.CancelScope(shield=True)

    async def serve() -> None:
        try:
            with serve_scope:
                await server.serve([sock])
        finally:
            running.stopped.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            try:
                yield running
            finally:
                endpoint = getattr(app.state, "mcp_endpoint", None)
                if endpoint is not None:
                    endpoint.close_all()  # ends long-lived /mcp streams so shutdown is quick
                server.should_exit = True
                # uvicorn's graceful timeout bounds the shutdown; this is the backstop.
                with anyio.CancelScope(shield=True), anyio.move_on_after(graceful_timeout + 8):
                    await running.stopped.wait()
                serve_scope.cancel()
    finally:
        sock.close()
