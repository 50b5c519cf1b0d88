"""``/mcp`` over HTTP: server-everything's own streamable HTTP, funnel (both eras), FastMCP.

Theory of operation. Three servers run on 127.0.0.1, each on a free port:

- **server-everything** in its own streamable HTTP mode (``PORT=N … streamableHttp``): the
  direct figure (it listens on every interface; the bench only ever talks to 127.0.0.1);
- **funnel-server** (the web app, ``/mcp``) in front of one stdio server-everything,
  measured twice: a 2025-11-25 client (``initialize``, then ``Mcp-Session-Id`` on every
  POST) and 2026-07-28 stateless requests (``_meta`` with the protocol version, client
  info and capabilities, mirrored in the ``MCP-Protocol-Version``/``Mcp-Method``/
  ``Mcp-Name`` headers, no session);
- **FastMCP**'s proxy with its HTTP transport over one stdio server-everything.

The driver is bare too: 64 clients, each its own :class:`httpx.AsyncClient` with a pool
bounded to one keep-alive connection (no environment proxies), the JSON-RPC bodies
encoded by ``msgspec``, the answer read whole and decoded whether it came as
``application/json`` or as an SSE stream. (One client with a 64-connection pool was
tried first: httpcore's pool then costs the driver about 1.8 ms of CPU per call and caps
every target at about 300 calls/s; 64 one-connection clients cost it about 0.5 ms.)
Serial: one client, one call at a time, the latency of each. Concurrent: the 64 clients
(64 sessions in the handshake era) calling in parallel, the throughput. Rounds rotate the
order as in ``_calls.py``; every answer is checked the same way.

The driver is Python, on the same two cores as the servers: over HTTP it costs about
0.5–0.7 ms of CPU per call (shown in the table), so a fast server is partly measured by
it; all targets share that cost alike.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import httpx
import msgspec
from _common import (
    EVERYTHING,
    FASTMCP_VERSION,
    LOOPBACK,
    Command,
    Section,
    ServerProcess,
    Workspace,
    fastmcp_command,
    free_port,
    funnel_config,
    funnel_env,
    funnel_server_argv,
    node_everything_command,
    quantile,
    ratios,
    spread,
)
from _driver import (
    CLIENT_INFO,
    HANDSHAKE_VERSION,
    Checks,
    PeerError,
    argument,
    check_call,
    find_echo,
)

CLIENTS: Final = 64
MODERN_VERSION: Final = "2026-07-28"
DIRECT: Final = "server-everything streamable HTTP"
_encode: Final = msgspec.json.Encoder().encode
_decode_any: Final = msgspec.json.Decoder().decode


class _Envelope(msgspec.Struct):
    id: int | str | None = None
    method: str | None = None
    result: msgspec.Raw = msgspec.Raw()
    error: msgspec.Raw = msgspec.Raw()


_decode_envelope: Final = msgspec.json.Decoder(_Envelope).decode


def _messages(response: httpx.Response) -> list[_Envelope]:
    """Every JSON-RPC message in an answer, JSON or an SSE stream (empty events skipped)."""
    body = response.content
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        found = []
        for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
            data = b"\n".join(
                line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
            )
            if data.strip():
                found.append(_decode_envelope(data))
        return found
    return [_decode_envelope(body)] if body.strip() else []


class McpHttpClient:
    """One MCP client on ``/mcp``: a handshake-era session, or stateless requests.

    Args:
        http: The shared HTTP client (its pool bounds the connections).
        url: The endpoint.
        era: ``"session"`` (2025-11-25) or ``"stateless"`` (2026-07-28).
        headers: Extra headers on every request (``Authorization``).
    """

    def __init__(
        self, http: httpx.AsyncClient, url: str, era: str, headers: Mapping[str, str]
    ) -> None:
        self._http = http
        self._url = url
        self._era = era
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            **headers,
        }
        self._next_id = 0
        self.tool = ""
        self.retries = 0

    async def open(self) -> None:
        """The handshake (session era), then find ``echo``."""
        if self._era == "session":
            response = await self._post(
                "initialize",
                {
                    "protocolVersion": HANDSHAKE_VERSION,
                    "capabilities": {},
                    "clientInfo": CLIENT_INFO,
                },
            )
            session = response.headers.get("mcp-session-id")
            result = self._result(response, "initialize")
            if session:
                self._headers["mcp-session-id"] = session
            self._headers["mcp-protocol-version"] = str(
                result.get("protocolVersion", HANDSHAKE_VERSION)
            )
            done = await self._http.post(
                self._url,
                content=b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
                headers=self._headers,
            )
            if done.status_code >= 300:
                raise PeerError(f"{self._url}: notifications/initialized got {done.status_code}")
        self.tool = find_echo(await self.list_tools())

    async def list_tools(self) -> list[dict[str, Any]]:
        """``tools/list`` (first page: every target here has one)."""
        response = await self._post("tools/list", {})
        return list(self._result(response, "tools/list").get("tools", []))

    def _body(self, request_id: int, method: str, params: dict[str, Any]) -> bytes:
        if self._era == "stateless":
            params = {
                **params,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                    "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            }
        return _encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})

    def _request_headers(self, method: str, name: str | None) -> dict[str, str]:
        if self._era != "stateless":
            return self._headers
        headers = {**self._headers, "mcp-protocol-version": MODERN_VERSION, "mcp-method": method}
        if name is not None:
            headers["mcp-name"] = name
        return headers

    async def _post(
        self, method: str, params: dict[str, Any], name: str | None = None
    ) -> httpx.Response:
        self._next_id += 1
        body = self._body(self._next_id, method, params)
        return await self._http.post(
            self._url, content=body, headers=self._request_headers(method, name)
        )

    def _result(self, response: httpx.Response, what: str) -> dict[str, Any]:
        for message in _messages(response):
            if message.method is None and message.id == self._next_id:
                if message.error or not message.result:
                    raise PeerError(f"{what}: {bytes(message.error)[:200]!r}")
                result: dict[str, Any] = _decode_any(message.result)
                return result
        raise PeerError(
            f"{what}: HTTP {response.status_code}, no response in {response.text[:200]!r}"
        )

    async def call(self, checks: Checks) -> float:
        """One ``tools/call echo``: its latency in µs (the answer checked after the clock)."""
        self._next_id += 1
        request_id = self._next_id
        body = self._body(
            request_id,
            "tools/call",
            {"name": self.tool, "arguments": {"message": argument(request_id)}},
        )
        headers = self._request_headers("tools/call", self.tool)
        start = time.perf_counter()
        try:
            try:
                response = await self._http.post(self._url, content=body, headers=headers)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # The server closed this idle keep-alive connection as the request went out
                # (uvicorn does after 5 s; a round can be longer): send it once more, anew.
                self.retries += 1
                response = await self._http.post(self._url, content=body, headers=headers)
        except httpx.TransportError as exc:
            # A dropped connection is a failed answer, not the end of the bench.
            checks.checked += 1
            checks.fail(f"{type(exc).__name__} from {self._url}: {exc}")
            return (time.perf_counter() - start) * 1e6
        try:
            messages = _messages(response)
        except msgspec.DecodeError:
            messages = []  # not JSON-RPC (an error page): counted as a failure below
        elapsed = (time.perf_counter() - start) * 1e6
        for message in messages:
            if message.method is None and message.id == request_id:
                check_call(message.result, message.error, argument(request_id), checks)
                break
        else:
            checks.checked += 1
            checks.fail(
                f"HTTP {response.status_code} without the response: {response.text[:120]!r}"
            )
        return elapsed


@dataclass(frozen=True, slots=True)
class Plan:
    """How many calls, in how many rounds."""

    rounds: int
    serial: int
    concurrent: int
    warmup: int


@dataclass(slots=True)
class HttpTarget:
    """One ``/mcp`` endpoint in one era, and what was measured."""

    label: str
    url: str
    era: str
    headers: dict[str, str] = field(default_factory=dict)
    clients: list[McpHttpClient] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    driver_cpu: list[float] = field(default_factory=list)  # µs of driver CPU per call
    checks: Checks = field(default_factory=Checks)
    failure: str = ""


@dataclass(slots=True)
class _Servers:
    processes: list[ServerProcess] = field(default_factory=list)
    targets: list[HttpTarget] = field(default_factory=list)
    ready: dict[str, ServerProcess] = field(default_factory=dict)

    def close(self) -> None:
        for process in self.processes:
            process.close()


def _start(ws: Workspace, fastmcp: str | None) -> _Servers:
    servers = _Servers()
    everything = node_everything_command()
    if everything is None:
        return servers
    port = free_port()
    # server-everything reads PORT; it binds every interface, we only connect to loopback.
    direct = ServerProcess(
        Command(
            (everything.argv[0], str(EVERYTHING), "streamableHttp"),
            {**os.environ, "PORT": str(port)},
        ),
        "everything-http",
        ws,
    )
    servers.processes.append(direct)
    servers.targets.append(HttpTarget(DIRECT, f"http://{LOOPBACK}:{port}/mcp", "session"))
    servers.ready[DIRECT] = direct

    port = free_port()
    token = "bench-" + os.urandom(16).hex()
    config = funnel_config(ws, {"everything": everything})
    funnel = ServerProcess(
        Command(
            (
                *funnel_server_argv(),
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--config",
                str(config),
            ),
            funnel_env(ws, FUNNEL_API_TOKEN=token),
        ),
        "funnel-http",
        ws,
    )
    servers.processes.append(funnel)
    auth = {"authorization": f"Bearer {token}"}
    for era, label in (
        ("session", f"funnel-server /mcp, {HANDSHAKE_VERSION} sessions"),
        ("stateless", f"funnel-server /mcp, {MODERN_VERSION} stateless"),
    ):
        servers.targets.append(HttpTarget(label, f"http://{LOOPBACK}:{port}/mcp", era, auth))
        servers.ready[label] = funnel

    if fastmcp is not None:
        port = free_port()
        label = f"FastMCP {FASTMCP_VERSION} HTTP proxy"
        proxy = ServerProcess(
            fastmcp_command(ws, fastmcp, {"everything": everything}, http_port=port),
            "fastmcp-http",
            ws,
        )
        servers.processes.append(proxy)
        servers.targets.append(HttpTarget(label, f"http://{LOOPBACK}:{port}/mcp", "session"))
        servers.ready[label] = proxy
    return servers


def _pool() -> httpx.AsyncClient:
    """One client's HTTP connection: a pool of one, no proxies from the environment."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=30.0,
        trust_env=False,
    )


async def _connect(stack: AsyncExitStack, target: HttpTarget, process: ServerProcess) -> None:
    """Open the 64 clients once the server listens and lists ``echo`` (bounded)."""
    deadline = time.monotonic() + 60
    last = ""
    http = await stack.enter_async_context(_pool())
    while True:
        if process.process.poll() is not None:
            raise PeerError(f"{target.label}: exited ({process.log_tail()})")
        client = McpHttpClient(http, target.url, target.era, target.headers)
        try:
            await client.open()
            break
        except (httpx.TransportError, PeerError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise PeerError(f"{target.label}: not ready in 60 s ({last[:200]})")
        await anyio.sleep(0.1)
    target.clients = [client]
    for _ in range(CLIENTS - 1):
        http = await stack.enter_async_context(_pool())
        other = McpHttpClient(http, target.url, target.era, target.headers)
        await other.open()
        target.clients.append(other)


async def _serial(target: HttpTarget, count: int) -> list[float]:
    client = target.clients[0]
    return [await client.call(target.checks) for _ in range(count)]


async def _concurrent(target: HttpTarget, count: int) -> float:
    """``count`` calls from the 64 clients at once: calls/s (and the driver's CPU)."""
    remaining = count

    async def worker(client: McpHttpClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await client.call(target.checks)

    start, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for client in target.clients:
            tg.start_soon(worker, client)
    target.driver_cpu.append((time.process_time() - cpu) / count * 1e6)
    return count / (time.perf_counter() - start)


async def measure(ws: Workspace, fastmcp: str | None, plan: Plan) -> list[HttpTarget]:
    """Start the servers, open the clients, run the interleaved rounds, stop everything."""
    servers = _start(ws, fastmcp)
    try:
        async with AsyncExitStack() as stack:
            for target in servers.targets:
                try:
                    with anyio.fail_after(120):
                        await _connect(stack, target, servers.ready[target.label])
                        await _serial(target, plan.warmup)
                        await _concurrent(target, plan.warmup * 4)
                        target.driver_cpu.clear()
                except (PeerError, httpx.HTTPError, TimeoutError) as exc:
                    target.failure = f"{type(exc).__name__}: {exc}"[:200]
            live = [t for t in servers.targets if not t.failure]
            for round_ in range(plan.rounds):
                shift = round_ % len(live) if live else 0
                for target in live[shift:] + live[:shift]:
                    if target.failure:
                        continue
                    try:
                        with anyio.fail_after(300):
                            latencies = await _serial(target, plan.serial)
                            target.latencies += latencies
                            target.p50.append(quantile(latencies, 0.5))
                            target.throughput.append(await _concurrent(target, plan.concurrent))
                    except (PeerError, httpx.HTTPError, TimeoutError) as exc:
                        target.failure = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        servers.close()
    return servers.targets


def report(found: list[HttpTarget], plan: Plan) -> Section:
    """The table: serial latency and concurrent throughput, ratios per round."""
    direct = next((t for t in found if t.label == DIRECT and not t.failure), None)
    fastmcp = next((t for t in found if t.label.startswith("FastMCP") and not t.failure), None)
    rows: list[list[str]] = []
    data: dict[str, object] = {}
    for target in found:
        ok = not target.failure and target.checks.failed == 0
        nan = [math.nan] * len(target.p50)
        x_direct = ratios(target.p50, direct.p50) if direct and ok else nan
        t_direct = ratios(target.throughput, direct.throughput) if direct and ok else nan
        t_fastmcp = ratios(target.throughput, fastmcp.throughput) if fastmcp and ok else nan
        checked = f"{target.checks.checked:,}"
        if not ok:
            checked += f" FAILED: {target.failure or target.checks.first_failure}"
        rows.append(
            [
                target.label,
                spread(target.p50),
                f"{quantile(target.latencies, 0.99):,.0f}",
                spread(x_direct, "{:.2f}"),
                spread(target.throughput),
                spread(t_direct, "{:.2f}"),
                spread(t_fastmcp, "{:.2f}"),
                spread(target.driver_cpu),
                checked,
            ]
        )
        data[target.label] = {
            "p50_us": target.p50,
            "p99_us": quantile(target.latencies, 0.99),
            "throughput": target.throughput,
            "x_direct": x_direct,
            "throughput_x_direct": t_direct,
            "throughput_x_fastmcp": t_fastmcp,
            "driver_cpu_us": target.driver_cpu,
            "retries_on_stale_connections": sum(c.retries for c in target.clients),
            "checked": target.checks.checked,
            "failed": target.checks.failed,
            "failure": target.failure or target.checks.first_failure,
        }
    return Section(
        title=(
            f"HTTP /mcp: tools/call echo, httpx driver on 127.0.0.1; {plan.rounds} rounds "
            f"interleaved, each {plan.serial} serial calls + {plan.concurrent} calls from "
            f"{CLIENTS} concurrent clients per target"
        ),
        notes=[
            "",
            "p50 per round (range), p99 over all serial calls. Driver CPU: what the httpx "
            "driver itself spent per call in the concurrent blocks (it shares the 2 cores).",
        ],
        headers=[
            "target",
            "p50 µs",
            "p99 µs",
            "x direct",
            f"calls/s, {CLIENTS} clients",
            "x direct",
            "x FastMCP",
            "driver CPU µs/call",
            "answers checked",
        ],
        rows=rows,
        data=data,
    )
