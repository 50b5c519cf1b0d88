"""Property test: the dispatcher answers any JSON-RPC request exactly once, with a result
or a JSON-RPC error, and no input makes ``McpServerSession.handle`` raise or hang.

The input is arbitrary JSON shaped like MCP: real method names (and nonsense ones) with
params of any type, ``_meta`` of any type, arguments of any type, decoded by the real
codec and handed to a session over a real funnel with one real backend.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnel_proxy import Funnel, McpServerSession, parse_config
from funnel_transports import (
    DecodeError,
    ErrorResponse,
    Message,
    Request,
    Response,
    decode_message,
)

SERVERS = Path(__file__).resolve().parents[3] / "tests" / "servers"

METHODS = [
    "ping",
    "initialize",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
    "no/such/method",
]
# Only the scripted backend's harmless tools: crash and block are faults of their own.
TOOLS = ["srv__echo", "srv__cancelled", "nobody__nothing", "", "discover_tools_by_words"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
metas = st.one_of(
    values,
    st.fixed_dictionaries(
        {},
        optional={
            "progressToken": values,
            "io.modelcontextprotocol/protocolVersion": st.sampled_from(["2026-07-28", "1999"])
            | values,
            "io.modelcontextprotocol/clientCapabilities": values,
        },
    ),
)
params = st.one_of(
    values,
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(TOOLS) | values,
            "arguments": st.fixed_dictionaries({}, optional={"message": values}) | values,
            "_meta": metas,
            "uri": values,
            "cursor": values,
            "level": values,
            "protocolVersion": values,
        },
    ),
)
requests = st.builds(
    lambda method, p, with_params: {
        "jsonrpc": "2.0",
        "id": "prop",
        "method": method,
        **({"params": p} if with_params else {}),
    },
    st.sampled_from(METHODS) | st.text(max_size=10),
    params,
    st.booleans(),
)

# Every code a correct answer may carry: JSON-RPC's, MCP's, and funnel's own range.
KNOWN_CODES = {-32700, -32600, -32601, -32602, -32603, -32002, -32020, -32021, -32022}


@asynccontextmanager
async def running() -> AsyncIterator[Funnel]:
    config = {
        "servers": {
            "srv": {"command": sys.executable, "args": [str(SERVERS / "scripted.py"), "normal"]}
        }
    }
    environ = {"PATH": os.environ["PATH"]}
    async with Funnel(parse_config(config, environ=environ), environ=environ) as funnel:
        yield funnel


def test_any_request_is_answered_exactly_once_with_a_result_or_a_known_error() -> None:
    async def main() -> None:
        async with running() as funnel:
            sent: list[Message] = []

            async def send(message: Message) -> None:
                sent.append(message)

            session = McpServerSession(funnel, send, version="test")

            @settings(
                max_examples=150,
                database=None,
                derandomize=True,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(requests)
            def check(request: dict[str, Any]) -> None:
                data = msgspec.json.encode(request)
                try:
                    message: Message | DecodeError = decode_message(data)  # type: ignore[assignment]
                except DecodeError as exc:
                    message = exc
                assert not isinstance(message, list)
                sent.clear()
                anyio.from_thread.run(_handle, session, message)
                replies = [
                    m for m in sent if isinstance(m, Response | ErrorResponse) and m.id == "prop"
                ]
                if isinstance(message, Request | DecodeError):
                    assert len(replies) == 1, (request, sent)
                    reply = replies[0]
                    if isinstance(reply, ErrorResponse):
                        code = reply.error.code
                        assert code in KNOWN_CODES or -32099 <= code <= -32000, (request, reply)

            await anyio.to_thread.run_sync(check)

    anyio.run(main)


async def _handle(session: McpServerSession, message: Message | DecodeError) -> None:
    with anyio.fail_after(10):
        await session.handle(message)
