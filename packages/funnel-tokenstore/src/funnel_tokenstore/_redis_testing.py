"""A private ``redis-server`` for tests: started on a free loopback port, stopped after.

Used through :func:`funnel_tokenstore.testing.redis_server`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO

__all__ = ["RedisUnavailable", "redis_server"]

# TCP says "Ready to accept connections"; a Unix socket, "now ready to accept connections at".
_READY = "ready to accept connections"
_MAX_LOG_LINES = 500


class RedisUnavailable(RuntimeError):
    """``redis-server`` is not installed (``apt-get install redis-server``)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_ready(log: IO[str], process: subprocess.Popen[str]) -> list[str]:
    """Read the server's log until it says it is ready; its lines if it never does."""
    seen: list[str] = []
    for line in log:
        seen.append(line.rstrip())
        if _READY in line.lower():
            return []
        if len(seen) >= _MAX_LOG_LINES:
            break
    process.kill()
    process.wait()
    return seen


@contextmanager
def redis_server(
    executable: str = "redis-server",
    *,
    unix_socket: str | os.PathLike[str] | None = None,
    args: Sequence[str] = (),
) -> Iterator[str]:
    """Run a throwaway ``redis-server`` on 127.0.0.1 and yield its ``redis://`` URL.

    Nothing is persisted (no RDB, no AOF) and the server is stopped, and waited for, when
    the block ends. Readiness is read from the server's own log line, never timed.

    Args:
        executable: The server binary (``valkey-server`` works too).
        unix_socket: Listen on this Unix socket (mode 0700) instead of TCP, and yield
            its ``unix://`` URL.
        args: More server options, such as ``["--requirepass", "pw"]``.

    Raises:
        RedisUnavailable: The binary is not on ``PATH``.
        RuntimeError: The server exited before it was ready (its log is in the message).
    """
    binary = shutil.which(executable)
    if binary is None:
        raise RedisUnavailable(f"{executable} is not installed (apt-get install redis-server)")
    for _attempt in range(5):  # another process may take the free port first
        port = 0 if unix_socket is not None else _free_port()
        listen = (
            ["--unixsocket", os.fspath(unix_socket), "--unixsocketperm", "700"]
            if unix_socket is not None
            else []
        )
        process = subprocess.Popen(  # noqa: S603 - a fixed binary and our own arguments
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "notice",
                "--logfile",
                "",
                *listen,
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "LC_ALL": "C"},
        )
        assert process.stdout is not None  # noqa: S101 - stdout=PIPE above
        failure = _wait_ready(process.stdout, process)
        if failure:
            if any("Address already in use" in line for line in failure):
                continue
            raise RuntimeError("redis-server did not start:\n" + "\n".join(failure[-20:]))
        try:
            if unix_socket is not None:
                yield f"unix://{os.fspath(unix_socket)}?db=0"
            else:
                yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
        return
    raise RuntimeError("redis-server found no free port in 5 attempts")
