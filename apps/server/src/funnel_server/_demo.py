"""The built-in demo backend: a small MCP server funnel runs when there is no config.

It exists so that the very first ``funnel-server`` shows working tools. It speaks the
handshake era over stdio and is written on funnel-transports' codec (no SDK).
Run alone with ``python -m funnel_server._demo``.
"""

from __future__ import annotations

import datetime as dt
import io
import sys
import uuid
from typing import Any, cast

from funnel_transports import (
    DecodeError,
    ErrorObject,
    ErrorResponse,
    LineFramer,
    Message,
    Request,
    Response,
    decode_message,
    encode_message,
    from_raw,
    to_raw,
)

_TOOLS: list[dict[str, Any]] = [
    {
        "name": "echo",
        "description": "Repeat a message back.",
        "inputSchema": {
            "type": "object",
            "properties": {"message": {"type": "string"}},
            "required": ["message"],
        },
    },
    {
        "name": "add",
        "description": "Add two numbers.",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
    {
        "name": "current_time",
        "description": "The current date and time in UTC, ISO 8601.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "new_uuid",
        "description": "A fresh random UUID.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "word_count",
        "description": "Count the words, lines and characters of a text.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
]


def _text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}]}


def _call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    try:
        if name == "echo":
            return _text(str(arguments["message"]))
        if name == "add":
            return _text(str(float(arguments["a"]) + float(arguments["b"])).removesuffix(".0"))
        if name == "current_time":
            return _text(dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
        if name == "new_uuid":
            return _text(str(uuid.uuid4()))
        if name == "word_count":
            text = str(arguments["text"])
            return _text(
                f"{len(text.split())} words, {len(text.splitlines())} lines, {len(text)} characters"
            )
    except (KeyError, ValueError, TypeError) as exc:
        return {**_text(f"invalid arguments: {exc}"), "isError": True}
    return {**_text(f"unknown tool: {name}"), "isError": True}


def answer(request: Request) -> Message:
    """The demo server's answer to one request."""
    params = from_raw(request.params, dict[str, Any]) if request.params else {}
    if request.method == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "funnel-demo", "version": "1"},
        }
    elif request.method == "ping":
        result = {}
    elif request.method == "tools/list":
        result = {"tools": _TOOLS}
    elif request.method == "tools/call":
        result = _call(str(params.get("name")), params.get("arguments") or {})
    else:
        return ErrorResponse(
            id=request.id,
            error=ErrorObject(code=-32601, message=f"Method not found: {request.method}"),
        )
    return Response(id=request.id, result=to_raw(result))


def main() -> None:
    """Serve the demo tools on stdin/stdout until stdin ends."""
    framer = LineFramer(1024 * 1024, peer="client")
    out = sys.stdout.buffer
    stdin = cast(io.BufferedReader, sys.stdin.buffer)
    for chunk in iter(lambda: stdin.read1(65536), b""):
        for line in framer.feed(chunk):
            try:
                message = decode_message(line)
            except DecodeError as exc:
                reply: Message = ErrorResponse(
                    id=exc.request_id, error=ErrorObject(code=exc.code, message=str(exc))
                )
            else:
                if not isinstance(message, Request):
                    continue
                reply = answer(message)
            out.write(encode_message(reply) + b"\n")
            out.flush()


if __name__ == "__main__":
    main()
