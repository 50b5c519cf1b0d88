"""OpenTelemetry in funnel-server: REST and ``/ws`` tool calls, and the SDK set up from ``OTEL_*``.

In process, the SDK's in-memory exporter is handed to :func:`enable_telemetry` (never set
globally). The command-line tests run the real ``funnel-server --stdio`` and read what it
exports to stderr with ``OTEL_TRACES_EXPORTER=console``, or check with ``-X importtime``
that without those variables it never imports ``opentelemetry``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from websockets.asyncio.client import connect

from funnel_proxy import FunnelConfig, disable_telemetry, enable_telemetry
from funnel_server.testing import Served

pytestmark = pytest.mark.anyio

Serve = Callable[..., AbstractAsyncContextManager[Served]]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SIGN_IN = re.compile(r"dashboard (http://127\.0\.0\.1:(\d+))/\?token=(\S+)")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    enable_telemetry(tracer_provider=provider)
    try:
        yield exporter
    finally:
        disable_telemetry()
        provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name and s.kind == kind]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


async def test_a_rest_call_is_a_server_span_continuing_the_requests_traceparent(
    serve: Serve, spans: InMemorySpanExporter
) -> None:
    async with serve() as served, httpx.AsyncClient(base_url=served.base) as http:
        response = await http.post(
            "/api/tools/demo__echo/call",
            json={"arguments": {"message": "traced"}},
            headers={**served.auth, "traceparent": f"00-{TRACE}-{PARENT}-01"},
        )
    assert response.status_code == 200, response.text
    (server,) = named(spans, "tools/call demo__echo", SpanKind.SERVER)
    (backend,) = named(spans, "tools/call echo", SpanKind.CLIENT)
    assert server.parent is not None and f"{server.parent.span_id:016x}" == PARENT
    assert hex_ids(server)[0] == hex_ids(backend)[0] == TRACE
    assert backend.parent is not None and backend.parent.span_id == int(hex_ids(server)[1], 16)
    assert dict(server.attributes or {}) == {
        "mcp.method.name": "tools/call",
        "gen_ai.tool.name": "demo__echo",
        "gen_ai.operation.name": "execute_tool",
        "network.transport": "tcp",
        "network.protocol.name": "http",
    }


async def test_a_refused_rest_call_is_typed_by_its_json_rpc_code(
    serve: Serve, make_config: Callable[[dict[str, Any]], FunnelConfig], demo_server: dict[str, Any]
) -> None:
    config = make_config(
        {
            "servers": {"demo": demo_server},
            "rateLimits": {"tools": {"demo__echo": {"calls": 1, "perSeconds": 3600}}},
        }
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with serve(config) as served, httpx.AsyncClient(base_url=served.base) as http:
        enable_telemetry(tracer_provider=provider)
        try:
            calls = [
                await http.post(
                    "/api/tools/demo__echo/call",
                    json={"arguments": {"message": "x"}},
                    headers=served.auth,
                )
                for _ in range(2)
            ]
        finally:
            disable_telemetry()
    assert [c.status_code for c in calls] == [200, 429]
    ok, limited = named(exporter, "tools/call demo__echo", SpanKind.SERVER)
    assert "error.type" not in (ok.attributes or {})
    assert limited.attributes is not None
    assert limited.attributes["error.type"] == "-32029"
    assert limited.attributes["rpc.response.status_code"] == "-32029"
    assert limited.status.status_code == StatusCode.ERROR


async def test_a_ws_execution_is_a_server_span_over_the_backend_call(
    serve: Serve, spans: InMemorySpanExporter
) -> None:
    async with (
        serve() as served,
        connect(served.ws_url, additional_headers=served.auth, open_timeout=5) as ws,
    ):
        await ws.send(
            json.dumps(
                {
                    "type": "execute",
                    "id": 1,
                    "tool": "demo__echo",
                    "arguments": {"message": "w"},
                }
            )
        )
        with anyio.fail_after(10):
            while (message := json.loads(await ws.recv()))["type"] != "tool.result":
                pass
    assert message["id"] == 1
    (server,) = named(spans, "tools/call demo__echo", SpanKind.SERVER)
    (backend,) = named(spans, "tools/call echo", SpanKind.CLIENT)
    assert hex_ids(backend)[0] == hex_ids(server)[0]
    assert (server.attributes or {})["network.protocol.name"] == "websocket"


# ---------------------------------------------------------------------------- the command


FUNNEL = str(Path(sys.executable).with_name("funnel-server"))
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
CALL = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "demo__echo", "arguments": {"message": "from stdio"}},
}


@asynccontextmanager
async def funnel_stdio(
    tmp_path: Path, argv: list[str], env: dict[str, str]
) -> AsyncIterator[Process]:
    process = await anyio.open_process(
        argv,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "MCP_FUNNEL_HOME": str(tmp_path / "home"), **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()


async def stdio_session(process: Process) -> tuple[list[dict[str, Any]], str]:
    """Initialize, call demo__echo and a REST call, quit; the stdout messages and stderr."""
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    stderr = BufferedByteReceiveStream(process.stderr)
    seen = b""
    with anyio.fail_after(60):
        while not (match := SIGN_IN.search(seen.decode(errors="replace"))):
            seen += await stderr.receive()
        base, _, token = match.groups()
        stdout = BufferedByteReceiveStream(process.stdout)
        answers: list[dict[str, Any]] = []
        for message in (INIT, CALL):
            await process.stdin.send(json.dumps(message).encode() + b"\n")
            while not answers or answers[-1].get("id") != message["id"]:
                answers.append(json.loads(await stdout.receive_until(b"\n", 1 << 20)))
        async with httpx.AsyncClient(base_url=base) as http:
            rest = await http.post(
                "/api/tools/demo__echo/call",
                json={"arguments": {"message": "rest"}},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert rest.status_code == 200, rest.text
        await process.stdin.aclose()
        async with anyio.create_task_group() as tg:

            async def drain() -> None:
                nonlocal seen
                try:
                    while True:
                        seen += await stderr.receive()
                except anyio.EndOfStream:
                    pass

            tg.start_soon(drain)
            rest_of_stdout = b""
            try:
                while True:
                    rest_of_stdout += await stdout.receive()
            except anyio.EndOfStream:
                pass
            assert await process.wait() == 0
    answers.extend(json.loads(line) for line in rest_of_stdout.splitlines())  # MCP only
    return answers, seen.decode(errors="replace")


async def test_without_otel_variables_funnel_server_never_imports_opentelemetry(
    tmp_path: Path,
) -> None:
    argv = [sys.executable, "-X", "importtime", "-m", "funnel_server", "--stdio", "--port", "0"]
    async with funnel_stdio(tmp_path, argv, {}) as process:
        answers, stderr = await stdio_session(process)
    (answer,) = [a for a in answers if a.get("id") == 2]
    assert answer["result"]["content"][0]["text"] == "from stdio"
    assert "| funnel_server" in stderr and "| litestar" in stderr  # importtime is reporting
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }
    # Litestar peeks at its own OpenTelemetry plugin when it builds an app (it tries
    # opentelemetry.instrumentation and opentelemetry.semconv, if installed; here they
    # partly are). What funnel would import when on, the API and the SDK, must be absent.
    funnels = ("opentelemetry.trace", "opentelemetry.metrics", "opentelemetry.propagate")
    assert not [n for n in imported if n.startswith((*funnels, "opentelemetry.sdk"))]
    assert "litestar.plugins.opentelemetry" in imported  # the peek happened: the check saw it


async def test_otel_traces_exporter_console_sets_up_the_sdk_and_writes_spans_to_stderr(
    tmp_path: Path,
) -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "funnel-under-test",
    }
    async with funnel_stdio(tmp_path, [FUNNEL, "--stdio", "--port", "0"], env) as process:
        answers, stderr = await stdio_session(process)
    assert all(a["jsonrpc"] == "2.0" for a in answers)  # stdout: MCP only, no spans
    assert [a["id"] for a in answers if "id" in a] == [1, 2]
    exported = _console_spans(stderr)
    names = [(span["name"], span["kind"]) for span in exported]
    assert ("tools/call demo__echo", "SpanKind.SERVER") in names
    assert ("tools/call echo", "SpanKind.CLIENT") in names
    stdio_call = next(
        s
        for s in exported
        if s["name"] == "tools/call demo__echo"
        and s["attributes"].get("network.transport") == "pipe"
    )
    assert stdio_call["attributes"]["jsonrpc.request.id"] == "2"
    assert stdio_call["resource"]["attributes"]["service.name"] == "funnel-under-test"
    rest_call = next(
        s
        for s in exported
        if s["name"] == "tools/call demo__echo"
        and s["attributes"].get("network.transport") == "tcp"
    )
    assert rest_call["attributes"]["network.protocol.name"] == "http"


class OtlpReceiver:
    """An OTLP/HTTP receiver on 127.0.0.1: keeps every decoded trace and metric export."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.metrics: list[str] = []
        self.resources: list[dict[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"] == "/v1/traces":
            traces = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            for resource in traces.resource_spans:
                self.resources.append(
                    {a.key: a.value.string_value for a in resource.resource.attributes}
                )
                self.spans += [span for scoped in resource.scope_spans for span in scoped.spans]
        elif scope["path"] == "/v1/metrics":
            metrics = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
            self.metrics += [
                metric.name
                for resource in metrics.resource_metrics
                for scoped in resource.scope_metrics
                for metric in scoped.metrics
            ]
        status = 200 if scope["path"] in ("/v1/traces", "/v1/metrics") else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[str, OtlpReceiver]]:
    import socket

    import uvicorn

    receiver = OtlpReceiver()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(
        uvicorn.Config(receiver, log_config=None, log_level="warning", lifespan="off")
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{sock.getsockname()[1]}", receiver
            finally:
                server.should_exit = True
    finally:
        sock.close()


async def test_an_otlp_endpoint_gets_the_spans_and_metrics_of_a_funnel_server_run(
    tmp_path: Path,
) -> None:
    async with otlp_receiver() as (endpoint, receiver):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
        async with funnel_stdio(tmp_path, [FUNNEL, "--stdio", "--port", "0"], env) as process:
            answers, _ = await stdio_session(process)  # exits 0: the SDK flushed on the way out
    assert [a["id"] for a in answers if "id" in a] == [1, 2]
    names = {span.name for span in receiver.spans}
    assert {"initialize", "tools/call demo__echo", "tools/call echo"} <= names
    server_traces = {s.trace_id for s in receiver.spans if s.name == "tools/call demo__echo"}
    client_traces = {s.trace_id for s in receiver.spans if s.name == "tools/call echo"}
    assert len(server_traces) == 2  # the stdio call and the REST call
    assert client_traces == server_traces  # each backend call in its request's trace
    assert {"service.name": "funnel-server"}.items() <= receiver.resources[0].items()
    assert {
        "mcp.server.operation.duration",
        "mcp.client.operation.duration",
        "funnel.backend.status",
    } <= set(receiver.metrics)


def _console_spans(stderr: str) -> list[dict[str, Any]]:
    """The JSON objects the console exporter wrote between log lines."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    index = stderr.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(stderr, index)
        except json.JSONDecodeError:
            index = stderr.find("{", index + 1)
            continue
        if isinstance(value, dict) and "context" in value and "kind" in value:
            found.append(value)
        index = stderr.find("{", end)
    return found


async def test_an_unknown_otel_exporter_is_a_usage_error_naming_the_variable(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [FUNNEL, "--stdio", "--port", "0"],
            cwd=tmp_path,
            env={
                "PATH": os.environ["PATH"],
                "MCP_FUNNEL_HOME": str(tmp_path / "home"),
                "OTEL_TRACES_EXPORTER": "jaeger",
            },
            stdin=subprocess.DEVNULL,
            check=False,
        )
    assert done.returncode == 2
    assert (
        b"OTEL_TRACES_EXPORTER: unknown exporter 'jaeger' (use otlp, console or none)"
        in done.stderr
    )
    assert done.stdout == b""
