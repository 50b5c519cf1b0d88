"""A streamable HTTP front for one stdio MCP server process, for the conformance server leg.

The conformance harness speaks streamable HTTP only; ``funnel-server --stdio`` speaks
MCP on stdin/stdout. This bridge stands where a desktop client's pipe would be: it
starts one ``funnel-server --stdio`` and carries messages between HTTP and the pipe,
adding nothing of its own beyond what HTTP needs.

Theory of operation: every request POSTed gets a fresh id on the pipe (several HTTP
sessions share the one process, and each numbers its requests from 0), and its answer
goes back under the client's id. Until that answer comes, the POST's response is an
open SSE stream: progress notifications naming the request's progress token, and
requests the server sends while the call is in flight (sampling, elicitation, roots),
are written to it. The server's requests keep their own ids, so the client's answer
(POSTed back) goes to the pipe untouched. Other notifications go to every open stream
(the POSTs in flight, and GET streams). A POST whose answer comes before anything else
is answered with plain JSON.

What only an HTTP server can do (the status code of a refused request, ``Host`` and
``Origin`` checks, SSE resumption) is the bridge's answer here, not funnel's: the tests
name those scenarios and the reason.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from anyio.streams.text import TextReceiveStream

__all__ = ["StdioBridge", "stdio_bridge"]

# Plain ASGI, loosely typed: this is test plumbing, not an app.
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(eq=False)
class _Stream:
    """One open HTTP response that server messages may be written to."""

    send: MemoryObjectSendStream[dict[str, Any]]
    progress_token: object = None
    client_id: object = None


@dataclass
class StdioBridge:
    """The bridge over one running process (see the module docs)."""

    process: anyio.abc.Process
    _next_id: int = 0
    _pending: dict[int, _Stream] = field(default_factory=dict)
    _streams: list[_Stream] = field(default_factory=list)
    _write_lock: anyio.Lock = field(default_factory=anyio.Lock)

    async def write(self, message: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        async with self._write_lock:
            await self.process.stdin.send(json.dumps(message).encode() + b"\n")

    async def pump(self) -> None:
        """Read the process's stdout and route every message (until it closes)."""
        assert self.process.stdout is not None
        buffer = ""
        async for chunk in TextReceiveStream(self.process.stdout):
            buffer += chunk
            *lines, buffer = buffer.split("\n")
            for line in lines:
                if line.strip():
                    await self._route(json.loads(line))

    async def _route(self, message: dict[str, Any]) -> None:
        if "method" not in message:  # an answer to a request we forwarded
            stream = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
            if stream is not None:
                await self._deliver(stream, {**message, "id": stream.client_id})
                stream.send.close()
            return
        if "id" in message:  # the server asks the client something
            target = next(reversed(self._pending.values()), None) or next(iter(self._streams), None)
            if target is None:
                await self.write(
                    {
                        "jsonrpc": "2.0",
                        "id": message["id"],
                        "error": {"code": -32603, "message": "no client stream is open"},
                    }
                )
            else:
                await self._deliver(target, message)
            return
        token = (message.get("params") or {}).get("progressToken")
        if message["method"] == "notifications/progress" and token is not None:
            targets = [s for s in self._pending.values() if s.progress_token == token]
        else:
            targets = [*self._pending.values(), *self._streams]
        for target in targets:
            await self._deliver(target, message)

    async def wait_until_listed(self) -> None:
        """Be the process's first client until its backends' tools are listed.

        ``funnel-server --stdio`` answers at once, before its backends are connected; a
        harness run that came too early would judge an empty funnel. This initializes a
        session on the pipe and lists tools until some are there, waiting for
        ``notifications/tools/list_changed`` in between (bound it with ``fail_after``).
        """
        sender, receiver = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        watcher = _Stream(sender)
        self._streams.append(watcher)
        try:
            async with receiver:
                await self._ask(
                    "initialize",
                    {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "stdio-bridge", "version": "1"},
                    },
                )
                await self.write({"jsonrpc": "2.0", "method": "notifications/initialized"})
                while not (await self._ask("tools/list", {})).get("result", {}).get("tools"):
                    async for message in receiver:
                        if message.get("method") == "notifications/tools/list_changed":
                            break
        finally:
            self._streams.remove(watcher)
            sender.close()

    async def _ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        sender, receiver = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        self._next_id += 1
        self._pending[self._next_id] = _Stream(sender, client_id=self._next_id)
        await self.write(
            {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}
        )
        async with receiver:
            async for message in receiver:
                if "method" not in message:
                    return message
        raise RuntimeError(f"no answer to {method}")

    @staticmethod
    async def _deliver(stream: _Stream, message: dict[str, Any]) -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await stream.send.send(message)  # fails only when the HTTP client went away

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        if scope["path"] != "/mcp":
            await _plain(send, 404, b"not found")
        elif method == "POST":
            await self._post(scope, receive, send)
        elif method == "GET":
            await self._get(receive, send)
        elif method == "DELETE":
            # The harness runs one client at a time: its session's GET streams end here.
            self.close_streams()
            await _plain(send, 200, b"")
        else:
            await _plain(send, 405, b"method not allowed")

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        try:
            message = json.loads(body)
        except ValueError:
            await _json(
                send,
                400,
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}},
            )
            return
        if not isinstance(message, dict) or "method" not in message or "id" not in message:
            await self.write(message)  # a notification, or the client's answer
            await _plain(send, 202, b"")
            return
        self._next_id += 1
        pipe_id = self._next_id
        sender, receiver = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        meta = (message.get("params") or {}).get("_meta") or {}
        stream = _Stream(sender, meta.get("progressToken"), message["id"])
        self._pending[pipe_id] = stream
        headers: list[tuple[bytes, bytes]] = []
        if message.get("method") == "initialize":
            headers.append((b"mcp-session-id", uuid.uuid4().hex.encode()))
        await self.write({**message, "id": pipe_id})
        await _answer(send, receiver, headers)

    async def _get(self, receive: Receive, send: Send) -> None:
        sender, receiver = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        stream = _Stream(sender)
        self._streams.append(stream)

        async def until_disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            sender.close()

        try:
            async with receiver, anyio.create_task_group() as tg:
                tg.start_soon(until_disconnected)
                await _sse(send, receiver, [])
                tg.cancel_scope.cancel()
        finally:
            self._streams.remove(stream)
            sender.close()

    def close_streams(self) -> None:
        """End every GET stream."""
        for stream in self._streams:
            stream.send.close()

    def close_all(self) -> None:
        """End every open response (before the HTTP server shuts down)."""
        self.close_streams()
        for stream in self._pending.values():
            stream.send.close()


async def _answer(
    send: Send,
    receiver: MemoryObjectReceiveStream[dict[str, Any]],
    headers: list[tuple[bytes, bytes]],
) -> None:
    async with receiver:
        first = await receiver.receive()
        if "method" not in first:  # the answer came first: plain JSON
            await _json(send, 200, first, headers)
            return
        await _sse(send, receiver, headers, first)


async def _sse(
    send: Send,
    receiver: MemoryObjectReceiveStream[dict[str, Any]],
    headers: list[tuple[bytes, bytes]],
    first: dict[str, Any] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
                *headers,
            ],
        }
    )
    pending: Sequence[dict[str, Any]] = [first] if first is not None else []
    try:
        for message in pending:
            await send({"type": "http.response.body", "body": _event(message), "more_body": True})
        async for message in receiver:
            await send({"type": "http.response.body", "body": _event(message), "more_body": True})
    finally:
        with anyio.CancelScope(shield=True):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _event(message: Mapping[str, Any]) -> bytes:
    return b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"


async def _json(
    send: Send, status: int, body: object, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def stdio_bridge(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: str
) -> AsyncIterator[StdioBridge]:
    """Start ``argv`` (a stdio MCP server) and yield the bridge over it; stop it after."""
    process = await anyio.open_process(list(argv), env=dict(env), cwd=cwd, stderr=None)
    try:
        async with anyio.create_task_group() as tg:
            bridge = StdioBridge(process)
            tg.start_soon(bridge.pump)
            try:
                yield bridge
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with anyio.move_on_after(10) as waited:
                await process.wait()
            if waited.cancelled_caught:
                process.kill()
                await process.wait()
