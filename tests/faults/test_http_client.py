"""Hostile clients on ``funnel-server`` over HTTP (``/mcp``, REST, ``/ws``) with
``FUNNEL_API_TOKEN`` set: bad input gets a JSON-RPC error or an HTTP 4xx naming the
problem, never a 500, a traceback or a dead process; the right token always works."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import websockets
from support.faults import (
    API_TOKEN,
    CORPUS,
    ECHO_OK,
    HUGE,
    PROBE,
    REFUSALS,
    FunnelProcess,
    Hostile,
    error_code,
    healthy_backend,
    materialise,
)

pytestmark = [pytest.mark.anyio, pytest.mark.npm]

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
MCP_HEADERS = {
    **AUTH,
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
}


class HttpFunnel:
    def __init__(self, funnel: FunnelProcess) -> None:
        self.funnel = funnel
        self.session: str | None = None
        self.version = "2025-06-18"
        self._next = 0

    def new_id(self) -> str:
        self._next += 1
        return f"h-{self._next}"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.funnel.base, timeout=PROBE)

    async def ensure(self) -> None:
        if not self.funnel.alive:
            await self.funnel.stop()
            await self.funnel.start()
            self.session = None
        if self.session is None:
            await self.initialize()

    async def initialize(self) -> None:
        body = {
            "jsonrpc": "2.0",
            "id": "init",
            "method": "initialize",
            "params": {
                "protocolVersion": self.version,
                "capabilities": {},
                "clientInfo": {"name": "fault-suite", "version": "1"},
            },
        }
        async with self.client() as http:
            response = await http.post("/mcp", json=body, headers=MCP_HEADERS)
            assert response.status_code == 200, response.text
            self.session = response.headers["mcp-session-id"]
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await http.post("/mcp", json=note, headers=self.headers())

    def headers(self) -> dict[str, str]:
        assert self.session is not None
        return {**MCP_HEADERS, "Mcp-Session-Id": self.session, "MCP-Protocol-Version": self.version}

    async def post(
        self, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[httpx.Response, list[dict[str, Any]]]:
        """POST a body to /mcp; the JSON-RPC messages of the answer (JSON or SSE)."""
        async with self.client() as http:
            response = await http.post("/mcp", content=body, headers=headers or self.headers())
        assert "Traceback" not in response.text
        kind = response.headers.get("content-type", "")
        if kind.startswith("text/event-stream"):
            messages = [
                json.loads(line[5:])
                for line in response.text.splitlines()
                if line.startswith("data:") and line[5:].strip()
            ]
        elif kind.startswith("application/json") and response.content:
            decoded = json.loads(response.content)
            messages = decoded if isinstance(decoded, list) else [decoded]
        else:
            messages = []
        return response, messages

    async def assert_serving(self) -> None:
        assert self.funnel.alive, f"funnel-server exited:\n{self.funnel.stderr_text()[-3000:]}"
        async with self.client() as http:
            health = await http.get("/api/health")
            assert health.status_code == 200
            called = await http.post(
                "/api/tools/healthy__echo/call",
                json={"arguments": {"message": "still here"}},
                headers=AUTH,
            )
        assert called.status_code == 200, called.text
        assert called.json()["result"]["content"][0]["text"] == ECHO_OK
        body = {
            "jsonrpc": "2.0",
            "id": "alive",
            "method": "tools/call",
            "params": {"name": "healthy__echo", "arguments": {"message": "still here"}},
        }
        response, messages = await self.post(json.dumps(body).encode())
        assert response.status_code == 200, response.text
        (reply,) = [m for m in messages if m.get("id") == "alive"]
        assert reply["result"]["content"][0]["text"] == ECHO_OK
        self.funnel.assert_no_traceback()


@pytest.fixture(scope="module")
async def server(module_tmp: Path) -> AsyncIterator[HttpFunnel]:
    funnel = FunnelProcess(module_tmp, {"servers": {"healthy": healthy_backend()}}, stdio=False)
    try:
        await funnel.start()
        yield HttpFunnel(funnel)
    finally:
        await funnel.stop()


# ------------------------------------------------------------------------- /mcp


@pytest.mark.parametrize("probe", CORPUS, ids=repr)
async def test_a_hostile_mcp_body_gets_a_clear_answer(server: HttpFunnel, probe: Hostile) -> None:
    await server.ensure()
    request_id = server.new_id()
    with anyio.fail_after(PROBE):
        response, messages = await server.post(materialise(probe, request_id))
    assert response.status_code < 500, response.text
    replies = [m for m in messages if "method" not in m]
    if not probe.answered:
        assert response.status_code in (200, 202), response.text
    elif probe.codes and not (
        probe.ok and response.status_code == 200 and replies and "result" in replies[-1]
    ):
        assert replies, (
            f"HTTP {response.status_code} without a JSON-RPC error: {response.text[:300]}"
        )
        assert error_code(replies[-1]) in probe.codes, replies[-1]
        assert replies[-1].get("id") in (request_id, None)
        assert response.status_code in (200, 400), response.status_code
    await server.assert_serving()


@pytest.mark.slow
async def test_a_huge_mcp_body_is_refused_with_413_or_400(server: HttpFunnel) -> None:
    await server.ensure()
    with anyio.fail_after(30):
        response, messages = await server.post(materialise(Hostile("huge", HUGE), server.new_id()))
    assert response.status_code in (400, 413), response.text[:300]
    assert messages, "no JSON-RPC error"
    assert error_code(messages[0]) in REFUSALS
    await server.assert_serving()


async def test_a_batch_on_mcp_is_answered_or_refused_as_a_whole(server: HttpFunnel) -> None:
    await server.ensure()
    body = (
        b'[{"jsonrpc":"2.0","id":"b1","method":"ping"},{"jsonrpc":"2.0","id":"b2","method":"ping"}]'
    )
    with anyio.fail_after(PROBE):
        response, messages = await server.post(body)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert error_code(messages[0]) == -32600
    else:
        assert {m.get("id") for m in messages} == {"b1", "b2"}
    await server.assert_serving()


async def test_an_mcp_body_that_is_not_declared_json_is_refused(server: HttpFunnel) -> None:
    await server.ensure()
    async with server.client() as http:
        response = await http.post(
            "/mcp", content=b"\xff\xfe", headers={**server.headers(), "Content-Type": "text/plain"}
        )
    assert response.status_code in (400, 415), response.text
    await server.assert_serving()


MODERN_BODIES: list[tuple[str, bytes, bool]] = [
    ("no-meta", b'{"jsonrpc":"2.0","id":"m","method":"tools/list"}', False),
    (
        "version-is-number",
        b'{"jsonrpc":"2.0","id":"m","method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":5}}}',
        False,
    ),
    (
        "meta-is-string",
        b'{"jsonrpc":"2.0","id":"m","method":"tools/list","params":{"_meta":"x"}}',
        False,
    ),
    (
        "capabilities-is-string",
        b'{"jsonrpc":"2.0","id":"m","method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":"x"}}}',
        True,
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "ok"), MODERN_BODIES, ids=[name for name, _, _ in MODERN_BODIES]
)
async def test_a_stateless_request_with_bad_meta_gets_a_clear_answer(
    server: HttpFunnel, name: str, body: bytes, ok: bool
) -> None:
    await server.ensure()
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": "2026-07-28"}
    with anyio.fail_after(PROBE):
        response, messages = await server.post(body, headers)
    assert response.status_code in (200, 400), f"{response.status_code}: {response.text[:300]}"
    replies = [m for m in messages if m.get("id") in ("m", None) and "method" not in m]
    assert replies, f"no JSON-RPC answer: {response.text[:300]}"
    if not ok:
        assert "error" in replies[-1], replies[-1]
    await server.assert_serving()


# ------------------------------------------------------------------------- REST

REST_BODIES: list[tuple[str, bytes]] = [
    ("not-json", b"hello"),
    ("invalid-utf8", b'{"arguments":{"message":"\xff\xfe"}}'),
    ("lone-surrogate-escape", b'{"arguments":{"message":"\\ud800"}}'),
    ("deep-5000", b'{"arguments":{"message":"m","x":' + b"[" * 5000 + b"]" * 5000 + b"}}"),
    ("deep-600", b'{"arguments":{"message":"m","x":' + b"[" * 600 + b"]" * 600 + b"}}"),
    ("arguments-is-number", b'{"arguments":5}'),
    ("arguments-is-array", b'{"arguments":[1]}'),
    ("body-is-array", b"[]"),
    ("body-is-string", b'"x"'),
    ("unknown-member", b'{"arguments":{},"extra":1}'),
    ("truncated", b'{"arguments":{"message":"m"'),
    ("huge", b'{"arguments":{"message":"' + b"h" * (20 * 1024 * 1024) + b'"}}'),
]


@pytest.mark.parametrize(("name", "body"), REST_BODIES, ids=[name for name, _ in REST_BODIES])
async def test_a_hostile_rest_body_gets_a_4xx(server: HttpFunnel, name: str, body: bytes) -> None:
    await server.ensure()
    async with server.client() as http:
        with anyio.fail_after(30):
            response = await http.post(
                "/api/tools/healthy__echo/call",
                content=body,
                headers={**AUTH, "Content-Type": "application/json"},
            )
    assert "Traceback" not in response.text
    expected = (400, 413) if name == "huge" else (400,)
    assert response.status_code in expected, f"{response.status_code}: {response.text[:300]}"
    await server.assert_serving()


# ------------------------------------------------------------------------- /ws

WS_FRAMES: list[tuple[str, str | bytes]] = [
    ("not-json", "hello"),
    (
        "binary-invalid-utf8",
        b'{"type":"execute","id":"w","tool":"healthy__echo","arguments":{"message":"\xff"}}',
    ),
    (
        "deep-5000",
        '{"type":"execute","id":"w","tool":"healthy__echo","arguments":{"x":'
        + "[" * 5000
        + "]" * 5000
        + "}}",
    ),
    (
        "deep-600",
        '{"type":"execute","id":"w","tool":"healthy__echo","arguments":{"message":"m","x":'
        + "[" * 600
        + "]" * 600
        + "}}",
    ),
    (
        "lone-surrogate-escape",
        '{"type":"execute","id":"w","tool":"healthy__echo","arguments":{"message":"\\ud800"}}',
    ),
    ("unknown-type", '{"type":"explode"}'),
    ("no-type", '{"id":"w"}'),
    ("arguments-is-string", '{"type":"execute","id":"w","tool":"healthy__echo","arguments":"x"}'),
    ("events-is-string", '{"type":"subscribe","events":"everything"}'),
    ("array", "[1,2,3]"),
    (
        "huge",
        '{"type":"execute","id":"w","tool":"healthy__echo","arguments":{"message":"'
        + "h" * (5 * 1024 * 1024)
        + '"}}',
    ),
]


async def _ws_echo_works(server: HttpFunnel) -> None:
    url = f"ws://127.0.0.1:{server.funnel.port}/ws"
    async with websockets.connect(url, additional_headers=AUTH, max_size=None) as ws:
        await _ws_execute_echo(ws)


async def _ws_execute_echo(ws: Any) -> None:
    await ws.send(
        json.dumps(
            {
                "type": "execute",
                "id": "ok",
                "tool": "healthy__echo",
                "arguments": {"message": "still here"},
            }
        )
    )
    with anyio.fail_after(PROBE):
        while True:
            message = json.loads(await ws.recv())
            if message.get("type") in ("tool.result", "tool.error") and message.get("id") == "ok":
                break
    assert message["type"] == "tool.result", message
    assert message["result"]["content"][0]["text"] == ECHO_OK


@pytest.mark.parametrize(("name", "frame"), WS_FRAMES, ids=[name for name, _ in WS_FRAMES])
async def test_a_hostile_ws_frame_gets_an_error_message_and_the_socket_survives(
    server: HttpFunnel, name: str, frame: str | bytes
) -> None:
    await server.ensure()
    url = f"ws://127.0.0.1:{server.funnel.port}/ws"
    async with websockets.connect(url, additional_headers=AUTH, max_size=None) as ws:
        await ws.send(frame)
        closed: websockets.ConnectionClosed | None = None
        try:
            with anyio.fail_after(PROBE):
                while True:
                    message = json.loads(await ws.recv())
                    if message.get("type") in ("error", "tool.error", "tool.result"):
                        break
            assert message["type"] != "tool.result", f"accepted and executed: {message}"
            assert "Traceback" not in json.dumps(message)
            await _ws_execute_echo(ws)
        except websockets.ConnectionClosed as exc:
            closed = exc
    if closed is not None:
        # Only a frame over the size limit may end the socket, and with 1009.
        assert name == "huge", f"socket closed: {closed!r}"
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1009, closed
    await _ws_echo_works(server)
    await server.assert_serving()


# ------------------------------------------------------------------------- auth


async def test_wrong_tokens_from_a_neighbour_never_lock_out_the_right_token(
    server: HttpFunnel,
) -> None:
    await server.ensure()
    async with server.client() as http:
        for attempt in range(30):
            wrong = await http.get(
                "/api/servers", headers={"Authorization": f"Bearer wrong-{attempt}"}
            )
            assert wrong.status_code in (401, 429), wrong.text
        right = await http.get("/api/servers", headers=AUTH)
        assert right.status_code == 200, f"the right token got {right.status_code}: {right.text}"
        on_mcp = await http.post(
            "/mcp",
            content=b'{"jsonrpc":"2.0","id":"p","method":"ping"}',
            headers=server.headers(),
        )
        assert on_mcp.status_code == 200, f"the right token got {on_mcp.status_code} on /mcp"
    await server.assert_serving()
