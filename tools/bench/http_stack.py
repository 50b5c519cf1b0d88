"""funnel-server's HTTP stack side by side: TCP_NODELAY, uvicorn's parser, the event loop.

Each variant is the real app (funnel with the built-in demo backend, Litestar, uvicorn)
in its own process on 127.0.0.1, all running at once; one client (a plain blocking
keep-alive socket, so the client costs the same for everyone) sends serial requests,
in rounds that visit the variants in a new random order. Printed: median and p90 per
request, and the ratio to the fastest variant of the same request.

    uv run --locked python tools/bench/http_stack.py            # 10 rounds of 200 requests
    uv run --locked python tools/bench/http_stack.py --rounds 3 --requests 100

Variants: ``nodelay``: the listening socket as ``funnel_server._serve.bind`` makes it
(IPPROTO_TCP + TCP_NODELAY) or as before the fix (``socket.socket()``, protocol 0);
``http``: uvicorn's ``h11`` or ``httptools`` (a dependency of funnel-server); ``loop``:
anyio's asyncio backend with the stdlib loop or with ``uvloop``, which is a
dependency where it installs (not Windows); ``FUNNEL_EVENT_LOOP`` does not apply here.
Variants whose package is not installed are skipped.
Nothing asserts a timing; this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Final

TOKEN: Final = "bench-api-token-0123456789abcdef"
REQUESTS: Final = {
    "GET /api/health": b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "GET /api/servers": (
        b"GET /api/servers HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\n\r\n"
    ),
    "POST tools/demo__echo/call": (
        b"POST /api/tools/demo__echo/call HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 33\r\n\r\n"
        b'{"arguments": {"message": "hi!"}}'
    ),
}


@dataclass(frozen=True)
class Variant:
    """One server configuration."""

    nodelay: bool
    http: str
    loop: str

    @property
    def name(self) -> str:
        return f"{'nodelay' if self.nodelay else 'proto-0'} {self.http} {self.loop}"


def serve(variant: Variant) -> None:
    """Run the app for ``variant`` until stdin closes (the child side)."""
    import anyio  # only the child needs the app

    from funnel_server._app import AppSettings, create_app
    from funnel_server._calls import ServerFunnel
    from funnel_server._cli import demo_config
    from funnel_server._serve import bind, running_server

    if variant.nodelay:
        sock = bind("127.0.0.1", 0)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)

    async def main() -> None:
        async with ServerFunnel(demo_config()) as funnel:
            app = create_app(funnel, AppSettings(api_token=TOKEN))
            async with running_server(app, sock, http=variant.http):
                print(sock.getsockname()[1], flush=True)
                await anyio.to_thread.run_sync(sys.stdin.read)

    anyio.run(main, backend_options={"use_uvloop": variant.loop == "uvloop"})


class Client:
    """A keep-alive HTTP/1.1 client on a blocking socket (Content-Length bodies only)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def request(self, data: bytes) -> int:
        self.sock.sendall(data)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self.buffer += self._recv()
        self.buffer = self.buffer[length:]
        return status

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def variants() -> list[Variant]:
    https = ["h11"] + (["httptools"] if importlib.util.find_spec("httptools") else [])
    loops = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])
    found = [Variant(nodelay=False, http="h11", loop="asyncio")]
    found += [Variant(nodelay=True, http=http, loop=loop) for http in https for loop in loops]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200, help="per request kind and round")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        nodelay, http, loop = args.serve.split(",")
        serve(Variant(nodelay=nodelay == "1", http=http, loop=loop))
        return 0
    env = {**os.environ, "MCP_FUNNEL_HOME": os.environ.get("MCP_FUNNEL_HOME", "/tmp/funnel-bench")}
    found = variants()
    procs: list[subprocess.Popen[str]] = []
    clients: dict[Variant, Client] = {}
    samples: dict[tuple[Variant, str], list[float]] = {}
    try:
        for variant in found:
            spec = f"{int(variant.nodelay)},{variant.http},{variant.loop}"
            proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", spec],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            procs.append(proc)
            assert proc.stdout is not None
            clients[variant] = Client(int(proc.stdout.readline()))
        for variant, client in clients.items():  # warm-up, and proof that each answers
            for kind, data in REQUESTS.items():
                for _ in range(50):
                    status = client.request(data)
                    if status != 200:
                        raise SystemExit(f"{variant.name}: {kind} answered {status}")
        for _ in range(args.rounds):
            order = list(clients.items())
            random.shuffle(order)
            for variant, old in order:
                # A fresh connection per visit: uvicorn closes idle keep-alive ones (5 s).
                old.close()
                client = clients[variant] = Client(old.port)
                for kind, data in REQUESTS.items():
                    times = samples.setdefault((variant, kind), [])
                    for _ in range(args.requests):
                        started = time.perf_counter()
                        client.request(data)
                        times.append(time.perf_counter() - started)
    finally:
        for client in clients.values():
            client.close()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(f"serial requests, {args.rounds} rounds x {args.requests} per kind and variant")
    for kind in REQUESTS:
        print(f"\n{kind}")
        print(f"  {'variant':<30} {'median':>10} {'p90':>10}  ratio")
        medians = {v: statistics.median(samples[v, kind]) for v in found}
        best = min(medians.values())
        for variant in found:
            values = sorted(samples[variant, kind])
            p90 = values[int(len(values) * 0.9)]
            print(
                f"  {variant.name:<30} {medians[variant] * 1e6:>8.0f}µs {p90 * 1e6:>8.0f}µs"
                f"  {medians[variant] / best:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
