"""OpenTelemetry: spans and metrics per the MCP semantic conventions, on every path.

The SDK's in-memory span exporter and metric reader stand in for a collector; the
backends are real MCP servers built on the official SDK (``tests/servers/trace_server.py``
tells what ``_meta.traceparent`` it received). Providers are handed to
:func:`enable_telemetry`, never set globally, so the SDK client in this process (which
has OpenTelemetry of its own) stays silent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import msgspec
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from support.asgi import serve_funnel

from funnel_auth._audit import audit
from funnel_proxy import (
    ConfigError,
    Funnel,
    McpHttpEndpoint,
    McpServerSession,
    configure_telemetry_from_env,
    disable_telemetry,
    enable_telemetry,
    parse_config,
    serve_stdio,
)
from funnel_transports import Message, Request, Response, to_raw

pytestmark = pytest.mark.anyio

SERVERS = Path(__file__).resolve().parents[3] / "tests" / "servers"
TRACE_SERVER = SERVERS / "trace_server.py"
ENV = {"PATH": os.environ["PATH"]}
INCOMING_TRACE = "0af7651916cd43dd8448eb211c80319c"
INCOMING_SPAN = "b7ad6b7169203331"


class Telemetry:
    """An SDK tracer and meter provider with in-memory sinks, enabled for one test."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.spans.get_finished_spans())

    def named(self, name: str, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name == name and s.kind == kind]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for found in scope.metrics
            if found.name == metric
            for point in found.data.data_points
        ]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    sinks = Telemetry()
    enable_telemetry(tracer_provider=sinks.tracer_provider, meter_provider=sinks.meter_provider)
    try:
        yield sinks
    finally:
        disable_telemetry()
        sinks.tracer_provider.shutdown()
        sinks.meter_provider.shutdown()


def trace_config() -> Any:
    return parse_config(
        {"servers": {"trace": {"command": sys.executable, "args": [str(TRACE_SERVER)]}}},
        environ=ENV,
    )


def seen_by_backend(result: dict[str, Any]) -> dict[str, Any]:
    """What the trace server reported of its request's ``_meta``."""
    seen: dict[str, Any] = json.loads(result["content"][0]["text"])
    return seen


def ids(traceparent: str) -> tuple[str, str]:
    """The trace id and parent span id of a W3C ``traceparent`` (flags vary by SDK)."""
    version, trace_id, span_id, _flags = traceparent.split("-")
    assert version == "00"
    return trace_id, span_id


def span_hex(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class StdioClient:
    """The client end of two pipes that :func:`serve_stdio` serves (the real stdio path)."""

    def __init__(self) -> None:
        self._to_server_r, self._to_server_w = os.pipe()
        self._from_server_r, self._from_server_w = os.pipe()
        os.set_blocking(self._from_server_r, False)
        self.stdin = os.fdopen(self._to_server_r, "rb", buffering=0)
        self.stdout = os.fdopen(self._from_server_w, "wb", buffering=0)
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        os.write(self._to_server_w, json.dumps(message).encode() + b"\n")

    async def receive(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            await anyio.wait_readable(self._from_server_r)
            self._buffer += os.read(self._from_server_r, 65536)
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    async def answer(self, request_id: int) -> dict[str, Any]:
        """The response to ``request_id`` (notifications before it are skipped)."""
        while True:
            message = await self.receive()
            if message.get("id") == request_id and "method" not in message:
                return message

    def close_input(self) -> None:
        os.close(self._to_server_w)

    def close(self) -> None:
        self.stdin.close()
        self.stdout.close()
        os.close(self._from_server_r)


@asynccontextmanager
async def stdio_funnel() -> AsyncIterator[StdioClient]:
    client = StdioClient()
    try:
        async with Funnel(trace_config(), environ=ENV) as funnel, anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: serve_stdio(
                    funnel, version="test", stdin=client.stdin, stdout=client.stdout
                )
            )
            client.send(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "test", "version": "0"},
                    },
                }
            )
            await client.answer(1)
            client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            try:
                yield client
            finally:
                client.close_input()  # serve_stdio ends when its stdin does
    finally:
        client.close()


def call(request_id: int, tool: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": {}}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def test_a_proxied_stdio_call_is_a_server_span_over_a_client_span_the_backend_continues(
    telemetry: Telemetry,
) -> None:
    with anyio.fail_after(30):
        async with stdio_funnel() as client:
            client.send(call(2, "trace__meta"))
            answer = await client.answer(2)
    seen = seen_by_backend(answer["result"])
    (server,) = telemetry.named("tools/call trace__meta", SpanKind.SERVER)
    (backend,) = telemetry.named("tools/call meta", SpanKind.CLIENT)
    server_trace, server_span = span_hex(server)
    backend_trace, backend_span = span_hex(backend)
    assert server.parent is None  # no trace context came in: a new trace
    assert backend_trace == server_trace
    assert backend.parent is not None and f"{backend.parent.span_id:016x}" == server_span
    # The backend got the CLIENT span's context in params._meta.
    assert ids(seen["traceparent"]) == (backend_trace, backend_span)
    assert dict(server.attributes or {}) == {
        "mcp.method.name": "tools/call",
        "jsonrpc.request.id": "2",
        "mcp.protocol.version": "2025-11-25",
        "network.transport": "pipe",
        "gen_ai.tool.name": "trace__meta",
        "gen_ai.operation.name": "execute_tool",
    }
    attributes = dict(backend.attributes or {})
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.tool.name"] == "meta"  # the backend's own name
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["funnel.backend.name"] == "trace"
    assert attributes["network.transport"] == "pipe"
    assert attributes["mcp.protocol.version"]
    assert server.status.status_code == StatusCode.UNSET
    assert telemetry.named("initialize", SpanKind.SERVER)


async def test_a_clients_traceparent_in_meta_is_continued_down_to_the_backend(
    telemetry: Telemetry,
) -> None:
    incoming = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"
    with anyio.fail_after(30):
        async with stdio_funnel() as client:
            client.send(call(2, "trace__meta", {"traceparent": incoming, "tracestate": "k=v"}))
            answer = await client.answer(2)
    seen = seen_by_backend(answer["result"])
    (server,) = telemetry.named("tools/call trace__meta", SpanKind.SERVER)
    (backend,) = telemetry.named("tools/call meta", SpanKind.CLIENT)
    assert server.parent is not None
    assert server.parent.is_remote
    assert f"{server.parent.trace_id:032x}" == INCOMING_TRACE
    assert f"{server.parent.span_id:016x}" == INCOMING_SPAN
    assert span_hex(backend)[0] == INCOMING_TRACE
    # The backend hears funnel's CLIENT span, not the client's span: one hop at a time.
    assert ids(seen["traceparent"]) == (INCOMING_TRACE, span_hex(backend)[1])
    assert seen["tracestate"] == "k=v"


async def test_errors_are_typed_by_json_rpc_code_and_tool_errors_as_tool_error(
    telemetry: Telemetry,
) -> None:
    with anyio.fail_after(30):
        async with stdio_funnel() as client:
            client.send(call(2, "trace__nope"))
            unknown = await client.answer(2)
            client.send(call(3, "trace__fail"))
            failed = await client.answer(3)
    assert unknown["error"]["code"] == -32602
    assert failed["result"]["isError"] is True
    (refused,) = telemetry.named("tools/call trace__nope", SpanKind.SERVER)
    assert refused.attributes is not None
    assert refused.attributes["error.type"] == "-32602"
    assert refused.attributes["rpc.response.status_code"] == "-32602"
    assert refused.status.status_code == StatusCode.ERROR
    assert refused.status.description == unknown["error"]["message"]
    (server,) = telemetry.named("tools/call trace__fail", SpanKind.SERVER)
    (backend,) = telemetry.named("tools/call fail", SpanKind.CLIENT)
    for span in (server, backend):
        assert span.attributes is not None
        assert span.attributes["error.type"] == "tool_error"
        assert span.status.status_code == StatusCode.ERROR
        assert "rpc.response.status_code" not in span.attributes


async def test_operation_durations_and_backend_status_are_metrics(telemetry: Telemetry) -> None:
    with anyio.fail_after(30):
        async with stdio_funnel() as client:
            client.send(call(2, "trace__meta"))
            await client.answer(2)
            status = {
                point.attributes["funnel.backend.status"]: point.value
                for point in telemetry.points("funnel.backend.status")
                if point.attributes["funnel.backend.name"] == "trace"
            }
    assert status == {
        "connecting": 0,
        "connected": 1,
        "reconnecting": 0,
        "auth_required": 0,
        "failed": 0,
        "disabled": 0,
    }
    server = [
        p
        for p in telemetry.points("mcp.server.operation.duration")
        if p.attributes.get("gen_ai.tool.name") == "trace__meta"
    ]
    assert len(server) == 1
    assert server[0].count == 1
    assert server[0].attributes["mcp.method.name"] == "tools/call"
    assert "jsonrpc.request.id" not in server[0].attributes  # metrics stay low-cardinality
    client_points = [
        p
        for p in telemetry.points("mcp.client.operation.duration")
        if p.attributes.get("gen_ai.tool.name") == "meta"
    ]
    assert len(client_points) == 1
    assert client_points[0].attributes["funnel.backend.name"] == "trace"
    assert 0 < client_points[0].sum <= server[0].sum


async def test_token_refreshes_are_counted_from_funnel_auth_audit_events(
    telemetry: Telemetry,
) -> None:
    audit("auth.token_refreshed", server="github", outcome="success", grant_type="refresh_token")
    audit("auth.token_refreshed", server="github", outcome="success", grant_type="refresh_token")
    audit("auth.refresh_failed", server="github", outcome="failure", reason="invalid_grant")
    audit("auth.token_acquired", server="github", outcome="success")  # not a refresh
    counts = {
        point.attributes["outcome"]: point.value
        for point in telemetry.points("funnel.auth.token.refreshes")
        if point.attributes["funnel.backend.name"] == "github"
    }
    assert counts == {"success": 2, "failure": 1}


def test_a_refresh_after_telemetry_is_off_is_not_counted() -> None:
    sinks = Telemetry()
    enable_telemetry(tracer_provider=sinks.tracer_provider, meter_provider=sinks.meter_provider)
    disable_telemetry()
    audit("auth.token_refreshed", server="github", outcome="success")
    assert sinks.points("funnel.auth.token.refreshes") == []
    sinks.meter_provider.shutdown()
    sinks.tracer_provider.shutdown()


async def test_a_stateless_clients_parked_call_of_a_handshake_era_backend_stays_in_its_trace(
    telemetry: Telemetry,
) -> None:
    config = parse_config(
        {
            "servers": {
                "old": {"command": sys.executable, "args": [str(SERVERS / "scripted.py"), "normal"]}
            }
        },
        environ=ENV,
    )
    sent: list[Message] = []
    got = anyio.Event()

    async def send(message: Message) -> None:
        sent.append(message)
        got.set()

    params = {
        "name": "old__echo",
        "arguments": {"text": "parked"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "traceparent": f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01",
        },
    }
    with anyio.fail_after(30):
        async with Funnel(config, environ=ENV) as funnel:
            assert await funnel.wait_ready(20)
            assert funnel.backend_era("old") == "legacy"
            session = McpServerSession(funnel, send, version="test")
            await session.handle(Request(id=1, method="tools/call", params=to_raw(params)))
            await got.wait()
    assert isinstance(sent[0], Response)
    (server,) = telemetry.named("tools/call old__echo", SpanKind.SERVER)
    (backend,) = telemetry.named("tools/call echo", SpanKind.CLIENT)
    assert (server.attributes or {})["mcp.protocol.version"] == "2026-07-28"
    assert span_hex(server)[0] == span_hex(backend)[0] == INCOMING_TRACE
    assert backend.parent is not None
    assert f"{backend.parent.span_id:016x}" == span_hex(server)[1]


# ---------------------------------------------------------------------------- /mcp


@asynccontextmanager
async def served() -> AsyncIterator[tuple[str, McpHttpEndpoint]]:
    async with serve_funnel(trace_config(), ENV) as served_at:
        yield served_at


@pytest.mark.parametrize(("mode", "version"), [("legacy", "2025-11-25"), ("auto", "2026-07-28")])
async def test_mcp_over_http_gets_the_same_spans_in_both_eras(
    telemetry: Telemetry, mode: str, version: str
) -> None:
    with anyio.fail_after(60):
        async with (
            served() as (url, endpoint),
            httpx2.AsyncClient() as http,
            Client(streamable_http_client(url, http_client=http), mode=mode) as client,
        ):
            result = await client.call_tool("trace__meta", {})
            sessions = list(endpoint._sessions)
    seen = json.loads(result.content[0].text)  # type: ignore[union-attr]
    (server,) = telemetry.named("tools/call trace__meta", SpanKind.SERVER)
    (backend,) = telemetry.named("tools/call meta", SpanKind.CLIENT)
    assert span_hex(backend)[0] == span_hex(server)[0]
    assert ids(seen["traceparent"]) == span_hex(backend)
    attributes = dict(server.attributes or {})
    assert attributes["network.transport"] == "tcp"
    assert attributes["network.protocol.name"] == "http"
    assert attributes["mcp.protocol.version"] == version
    assert attributes["gen_ai.tool.name"] == "trace__meta"
    if mode == "legacy":
        assert attributes["mcp.session.id"] == sessions[0]
    else:
        assert "mcp.session.id" not in attributes  # stateless: there is no session


async def test_an_http_traceparent_header_is_continued_when_meta_has_none(
    telemetry: Telemetry,
) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {
            "name": "trace__meta",
            "arguments": {},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    with anyio.fail_after(60):
        async with served() as (url, _), httpx2.AsyncClient() as http:
            response = await http.post(
                url,
                json=body,
                headers={
                    "Accept": "application/json, text/event-stream",
                    "MCP-Protocol-Version": "2026-07-28",
                    "Mcp-Method": "tools/call",
                    "Mcp-Name": "trace__meta",
                    "traceparent": f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01",
                },
            )
    assert response.status_code == 200, response.text
    (server,) = telemetry.named("tools/call trace__meta", SpanKind.SERVER)
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == INCOMING_SPAN
    assert span_hex(server)[0] == INCOMING_TRACE


# ---------------------------------------------------------------------------- secrets


@asynccontextmanager
async def http_trace_server(token: str) -> AsyncIterator[str]:
    """The trace server over HTTP, wanting ``Bearer <token>``; yields its URL."""
    process = await anyio.open_process(
        [sys.executable, str(TRACE_SERVER), "http"],
        env={**os.environ, "TRACE_SERVER_TOKEN": token},
        stderr=None,
    )
    try:
        assert process.stdout is not None
        buffer = b""
        with anyio.fail_after(20):
            while b"\n" not in buffer:
                buffer += await process.stdout.receive()
        yield buffer.split(b"\n", 1)[0].decode().strip()
    finally:
        with anyio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_no_attribute_of_any_span_or_metric_holds_a_credential(telemetry: Telemetry) -> None:
    token = "tok-" + "s3cr3t" * 6
    query_secret = "qs-" + "hush" * 6
    async with http_trace_server(token) as url:
        config = parse_config(
            {
                "servers": {
                    "remote": {
                        "transport": {
                            "type": "streamable-http",
                            "url": f"{url}?api_key={query_secret}",
                        },
                        "auth": {"type": "bearer", "token": "${REMOTE_TOKEN}"},
                    }
                }
            },
            environ={**ENV, "REMOTE_TOKEN": token},
        )
        sent: list[Message] = []
        got = anyio.Event()

        async def send(message: Message) -> None:
            sent.append(message)
            got.set()

        with anyio.fail_after(30):
            async with Funnel(config, environ={**ENV, "REMOTE_TOKEN": token}) as funnel:
                assert await funnel.wait_ready(20)
                session = McpServerSession(funnel, send, version="test")
                params = {"name": "remote__meta", "arguments": {}}
                await session.handle(Request(id=1, method="tools/call", params=to_raw(params)))
                await got.wait()
    (answer,) = sent
    assert isinstance(answer, Response)
    seen = seen_by_backend(msgspec.json.decode(bytes(answer.result)))
    (backend,) = telemetry.named("tools/call meta", SpanKind.CLIENT)
    assert ids(seen["traceparent"]) == span_hex(backend)
    attributes = dict(backend.attributes or {})
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == port
    assert attributes["network.protocol.name"] == "http"
    values = [
        str(value) for span in telemetry.finished() for value in (span.attributes or {}).values()
    ] + [str(span.status.description) for span in telemetry.finished()]
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    values += [str(value) for value in data.to_json().split('"')]
    assert values
    for value in values:
        assert token not in value
        assert "s3cr3t" not in value
        assert query_secret not in value
        assert "api_key" not in value


# ---------------------------------------------------------------------------- off


def test_with_telemetry_off_a_proxied_call_never_imports_opentelemetry() -> None:
    script = f"""
import os, sys, anyio
from funnel_proxy import Funnel, McpServerSession, parse_config
from funnel_transports import Request, Response, to_raw

async def main():
    env = {{"PATH": os.environ["PATH"]}}
    config = parse_config(
        {{"servers": {{"trace": {{"command": sys.executable, "args": [{str(TRACE_SERVER)!r}]}}}}}},
        environ=env,
    )
    sent, got = [], anyio.Event()
    async def send(message):
        sent.append(message)
        got.set()
    with anyio.fail_after(30):
        async with Funnel(config, environ=env) as funnel:
            session = McpServerSession(funnel, send, version="test")
            params = to_raw({{"name": "trace__meta", "arguments": {{}}}})
            await session.handle(Request(id=1, method="tools/call", params=params))
            await got.wait()
    assert isinstance(sent[0], Response), sent
    loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
    print("loaded:", loaded)

anyio.run(main)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout


def test_configure_from_env_does_nothing_without_its_variables() -> None:
    assert configure_telemetry_from_env({}) is False
    assert configure_telemetry_from_env({"OTEL_SERVICE_NAME": "x"}) is False
    disabled = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}
    assert configure_telemetry_from_env(disabled) is False


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "prom"},
            "OTEL_METRICS_EXPORTER",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_a_bad_otel_setting_is_a_config_error_naming_the_variable(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        configure_telemetry_from_env(environ)
    assert named in str(caught.value)
