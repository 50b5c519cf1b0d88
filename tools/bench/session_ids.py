"""Micro-benchmark: what sealed session ids (issue 15) cost a handshake-era ``/mcp`` request.

Usage (from the repository root)::

    uv run --locked python tools/bench/session_ids.py
    uv run --locked python tools/bench/session_ids.py --requests 2000 --rounds 5

Three figures, in one process, rounds interleaved so machine noise lands on every column:

- sealing a ticket (``initialize``) and opening one (a replica's first sight of a
  session), alone, in microseconds, and the id's length;
- a ``ping`` POST driven through ``McpHttpEndpoint`` as an ASGI app (no sockets, no
  framework: only the endpoint's own work) with random ids (one process), with sealed ids
  for a session the replica holds (every request after the first on a replica), and with
  sealed ids for a session it does not hold (its local copy dropped before each request,
  so each one opens the id and rebuilds the session: the worst case, a round robin over
  more replicas than requests).

With ``--redis`` (a throwaway ``redis-server`` on 127.0.0.1 and the ``redis`` client,
both there with funnel-server's ``--shared-state``), the alternative design's price too:
state kept in the store under a random id costs a replica that does not hold the session
one ``GET`` round trip (measured here, sealed value and all) where a sealed id costs one
open.

Nothing is asserted: figures are printed. The funnel has no backends (``ping`` is
answered by the endpoint's session), so the figures are the endpoint's overhead alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio

from funnel_proxy import Funnel, McpHttpEndpoint, parse_config
from funnel_proxy._session_ticket import SessionTicket, open_ticket, seal_ticket
from funnel_tokenstore import StateKeys

_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {}},
        "clientInfo": {"name": "claude-code", "version": "2.1.0"},
    },
}


def _micro(keys: StateKeys, count: int) -> dict[str, float]:
    params: dict[str, Any] = _INIT["params"]  # type: ignore[assignment]
    ticket = SessionTicket(
        number=os.urandom(16),
        protocol_version=params["protocolVersion"],
        client_info=params["clientInfo"],
        capabilities=params["capabilities"],
        expires=time.time() + 86400,
    )
    started = time.perf_counter()
    for _ in range(count):
        session_id = seal_ticket(ticket, keys)
    sealed = (time.perf_counter() - started) / count
    now = time.time()
    started = time.perf_counter()
    for _ in range(count):
        open_ticket(session_id, keys, now=now)
    opened = (time.perf_counter() - started) / count
    return {"seal_us": sealed * 1e6, "open_us": opened * 1e6, "id_chars": len(session_id)}


async def _post(endpoint: McpHttpEndpoint, body: bytes, session_id: str | None) -> tuple[int, str]:
    headers = [
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
    ]
    if session_id is not None:
        headers += [
            (b"mcp-session-id", session_id.encode()),
            (b"mcp-protocol-version", b"2025-11-25"),
        ]
    sent = False
    status = 0
    answered = ""
    done = anyio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, answered
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message["headers"]:
                if name == b"mcp-session-id":
                    answered = value.decode()
        elif not message.get("more_body", False):
            done.set()

    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers}
    await endpoint(scope, receive, send)
    return status, answered


async def _requests(
    endpoint: McpHttpEndpoint, count: int, before: Callable[[], None] = lambda: None
) -> float:
    _, session_id = await _post(endpoint, json.dumps(_INIT).encode(), None)
    ping = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"}).encode()
    started = time.perf_counter()
    for _ in range(count):
        before()
        status, _ = await _post(endpoint, ping, session_id)
        if status != 200:
            raise SystemExit(f"ping answered {status}")
    elapsed = time.perf_counter() - started
    endpoint.close_all()
    return elapsed / count * 1e6


async def _redis_get(count: int) -> float:
    """Microseconds per ``GET`` of a 200-byte sealed record from a loopback redis-server."""
    import redis.asyncio

    from funnel_tokenstore.testing import redis_server

    with redis_server() as url:
        client = redis.asyncio.Redis.from_url(url)
        try:
            await client.set("bench:session", os.urandom(200))
            started = time.perf_counter()
            for _ in range(count):
                await client.get("bench:session")
            return (time.perf_counter() - started) / count * 1e6
        finally:
            await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", action="store_true", help="also time a store GET")
    args = parser.parse_args()
    keys = StateKeys([os.urandom(32)]).derive("mcp-sessions")
    environ = {"PATH": os.environ.get("PATH", "")}
    config = parse_config({"servers": {}}, environ=environ)
    columns: dict[str, list[float]] = {"random": [], "sealed, held": [], "sealed, rebuilt": []}
    micro: list[dict[str, float]] = []
    async with Funnel(config, environ=environ) as funnel:
        plain = McpHttpEndpoint(funnel, version="bench")
        sealed = McpHttpEndpoint(funnel, version="bench", state_keys=keys)
        for _ in range(args.rounds):
            micro.append(_micro(keys, args.requests * 10))
            columns["random"].append(await _requests(plain, args.requests))
            columns["sealed, held"].append(await _requests(sealed, args.requests))
            columns["sealed, rebuilt"].append(
                await _requests(sealed, args.requests, before=sealed.close_all)
            )
    print(f"session ids, {args.rounds} rounds (median):")
    print(
        f"  seal a ticket (initialize):  {statistics.median(m['seal_us'] for m in micro):7.1f} µs"
    )
    print(
        f"  open a ticket (first sight): {statistics.median(m['open_us'] for m in micro):7.1f} µs"
    )
    print(f"  id length:                   {int(micro[0]['id_chars']):7d} chars")
    print(f"ping POST through McpHttpEndpoint (ASGI, no sockets), {args.requests} per round:")
    base = statistics.median(columns["random"])
    for name, values in columns.items():
        value = statistics.median(values)
        print(f"  {name:<16} {value:7.1f} µs/request  ({value - base:+6.1f} µs vs random ids)")
    if args.redis:
        get = await _redis_get(args.requests * 2)
        print(f"state in the store instead: one GET from redis-server on loopback {get:7.1f} µs")


if __name__ == "__main__":
    anyio.run(main)
