"""Small raw-ASGI MCP servers with faults on demand, for the transport tests.

``FaultApp`` speaks just enough handshake-era streamable HTTP on ``/mcp`` (sessions, a
GET stream, DELETE) and legacy HTTP+SSE on ``/sse`` + ``/messages``. The tool called
picks the behaviour: ``echo``; ``status`` (answer any HTTP status); ``early_close``
(SSE stream ends before the response); ``drop`` (the connection breaks mid-stream);
``malformed`` (garbage SSE events before the response); ``slowloris`` (headers, then
silence); ``flaky`` (429 with Retry-After: 0 once, then success); ``expire`` (forget
the session); ``end_stream`` (legacy: close the SSE stream).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Broken(Exception):
    """Raised by the app to make uvicorn cut the connection mid-response."""


def sse(data: Any, *, event: str | None = None, event_id: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    head = (f"event: {event}\n" if event else "") + (f"id: {event_id}\n" if event_id else "")
    return (head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n").encode()


class FaultApp:
    def __init__(self, *, endpoint: str | None = "/messages?sid=1", session: bool = True) -> None:
        self.endpoint = endpoint
        self.use_session = session
        self.sessions: set[str] = set()
        self.requests: list[dict[str, Any]] = []  # method, headers of every POST to /mcp
        self.deleted: list[str] = []
        self.get_count = 0
        self.flaky_done = False
        self.legacy_streams: dict[str, MemoryObjectSendStream[bytes | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        if path == "/mcp" and method == "POST":
            await self.post(headers, await body_of(receive), receive, send)
        elif path == "/mcp" and method == "GET":
            await self.get_stream(headers, receive, send)
        elif path == "/mcp" and method == "DELETE":
            self.deleted.append(headers.get("mcp-session-id", ""))
            await respond(send, 200, b"")
        elif path == "/sse" and method == "GET":
            await self.legacy_stream(receive, send)
        elif path == "/messages" and method == "POST":
            await self.legacy_post(scope, await body_of(receive), send)
        else:
            await respond(send, 404, b"not found")

    # ------------------------------------------------------------ streamable HTTP
    async def post(
        self, headers: dict[str, str], body: bytes, receive: Receive, send: Send
    ) -> None:
        message = json.loads(body)
        self.requests.append({"method": message.get("method"), "headers": headers})
        session = headers.get("mcp-session-id")
        if session is not None and session not in self.sessions:
            await respond(
                send,
                404,
                b'{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}',
            )
            return
        if "id" not in message:
            await respond(send, 202, b"")
            return
        rid, name = message["id"], message.get("method")
        params = message.get("params") or {}
        if name == "initialize":
            extra = []
            if self.use_session:
                self.sessions.add("s-1")
                extra = [(b"mcp-session-id", b"s-1")]
            result = {
                "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "fault", "version": "1"},
            }
            await respond(
                send,
                200,
                json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode(),
                extra,
            )
            return
        if name != "tools/call":
            await respond(
                send,
                200,
                json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"tools": []}}).encode(),
            )
            return
        await self.tool(
            rid,
            name=params.get("name"),
            args=params.get("arguments") or {},
            session=session,
            receive=receive,
            send=send,
        )

    async def tool(
        self,
        rid: Any,
        *,
        name: str | None,
        args: dict[str, Any],
        session: str | None,
        receive: Receive,
        send: Send,
    ) -> None:
        ok = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": rid,
                "result": {"content": [{"type": "text", "text": f"Echo: {args.get('message')}"}]},
            }
        )
        progress = {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": 1, "progress": 1},
        }
        if name == "status":
            extra = (
                [(b"retry-after", str(args["retry_after"]).encode())]
                if "retry_after" in args
                else []
            )
            extra.append(
                (b"www-authenticate", b'Bearer resource_metadata="http://127.0.0.1/.well-known"')
            )
            await respond(send, args["status"], args.get("body", "").encode(), extra)
        elif name == "flaky" and not self.flaky_done:
            self.flaky_done = True
            await respond(send, 429, b"slow down", [(b"retry-after", b"0")])
        elif name == "expire":
            self.sessions.discard(session or "")
            await respond(send, 200, ok.encode())
        elif name == "early_close":
            await start_sse(send)
            await send({"type": "http.response.body", "body": sse(progress), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif name == "drop":
            await start_sse(send)
            await send({"type": "http.response.body", "body": sse(progress), "more_body": True})
            raise Broken("cut the connection mid-stream")
        elif name == "malformed":
            await start_sse(send)
            junk = (
                b"data: {not json\n\n"
                + sse({"jsonrpc": "1.0", "id": rid})
                + sse("ignored", event="other")
                + b": a comment\n\nid: only-an-id\n\n"
                + b"data\n\n"
            )
            await send({"type": "http.response.body", "body": junk, "more_body": True})
            await send({"type": "http.response.body", "body": sse(ok), "more_body": False})
        elif name == "slowloris":
            await start_sse(send)
            await send({"type": "http.response.body", "body": b": hold on\n\n", "more_body": True})
            await until_disconnect(receive)
        elif name == "slow_json":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"1000"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b'{"jsonrpc"', "more_body": True})
            await until_disconnect(receive)
        elif name == "sse_echo":
            await start_sse(send)
            await send(
                {
                    "type": "http.response.body",
                    "body": sse("", event_id="prime") + sse(progress) + sse(ok),
                    "more_body": False,
                }
            )
        else:
            await respond(send, 200, ok.encode())

    async def get_stream(self, headers: dict[str, str], receive: Receive, send: Send) -> None:
        session = headers.get("mcp-session-id")
        if self.use_session and session not in self.sessions:
            await respond(send, 404 if session else 400, b"no session")
            return
        self.get_count += 1
        await start_sse(send)
        note = (
            "notifications/tools/list_changed"
            if self.get_count == 1
            else "notifications/resources/list_changed"
        )
        event = (
            sse({"jsonrpc": "2.0", "method": note}, event_id=f"g{self.get_count}")
            + b"retry: 10\n\n"
        )
        if self.get_count == 1:
            await send({"type": "http.response.body", "body": event, "more_body": False})
            return
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await until_disconnect(receive)

    # ------------------------------------------------------------ legacy HTTP+SSE
    async def legacy_stream(self, receive: Receive, send: Send) -> None:
        outbox: MemoryObjectSendStream[bytes | None]
        inbox: MemoryObjectReceiveStream[bytes | None]
        outbox, inbox = anyio.create_memory_object_stream[bytes | None](100)
        self.legacy_streams["1"] = outbox
        with outbox:
            await self.legacy_events(inbox, receive, send)

    async def legacy_events(
        self, inbox: MemoryObjectReceiveStream[bytes | None], receive: Receive, send: Send
    ) -> None:
        await start_sse(send)
        if self.endpoint is not None:
            await send(
                {
                    "type": "http.response.body",
                    "body": sse(self.endpoint, event="endpoint"),
                    "more_body": True,
                }
            )
        else:
            await send(
                {
                    "type": "http.response.body",
                    "body": b": no endpoint for you\n\n",
                    "more_body": True,
                }
            )
        async with anyio.create_task_group() as tg, inbox:

            async def watch() -> None:
                await until_disconnect(receive)
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            async for chunk in inbox:
                if chunk is None:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            tg.cancel_scope.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def legacy_post(self, scope: Scope, body: bytes, send: Send) -> None:
        outbox = self.legacy_streams.get("1")
        if outbox is None or scope["query_string"] != b"sid=1":
            await respond(send, 404, b"unknown session")
            return
        message = json.loads(body)
        await respond(send, 202, b"Accepted")
        if "id" not in message:
            return
        rid, params = message["id"], message.get("params") or {}
        name = params.get("name") if message.get("method") == "tools/call" else None
        if name == "end_stream":
            outbox.send_nowait(None)
            return
        if name == "status":
            return  # never answered on the stream
        result: Any = {
            "content": [
                {"type": "text", "text": f"Echo: {(params.get('arguments') or {}).get('message')}"}
            ]
        }
        if message.get("method") == "initialize":
            result = {
                "protocolVersion": "2024-11-05",
                "capabilities": {},
                "serverInfo": {"name": "fault", "version": "1"},
            }
        outbox.send_nowait(sse({"jsonrpc": "2.0", "id": rid, "result": result}))


async def body_of(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def start_sse(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    content_type = b"application/json" if body.startswith(b"{") else b"text/plain"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
