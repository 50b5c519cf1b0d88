"""The README's examples work: the Python client snippet runs, the /ws messages decode."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import msgspec
import pytest

from funnel_server._ws import ClientMessage, ServerMessage
from funnel_server.testing import Served

pytestmark = pytest.mark.anyio

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
Serve = Callable[..., AbstractAsyncContextManager[Served]]


async def test_the_python_client_example_runs(serve: Serve) -> None:
    [code] = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    async with serve() as served:
        code = code.replace("http://127.0.0.1:3456", served.base)
        namespace: dict[str, Any] = {}
        exec(  # noqa: S102 - running our own README's example is the point
            "async def example(token):\n" + textwrap.indent(code, "    "), namespace
        )
        output = StringIO()
        with redirect_stdout(output):
            await namespace["example"](served.token)
    assert "text='42'" in output.getvalue()


def test_the_ws_messages_in_the_tables_are_valid() -> None:
    section = README.split("## `/ws` protocol", 1)[1].split("## Dashboard", 1)[0]
    examples = [m for m in re.findall(r"`(\{.*?\})`", section) if "…" not in m]
    client = [
        m
        for m in examples
        if any(
            f'"type":"{kind}"' in m
            for kind in ("subscribe", "execute", "cancel", "elicitation.respond")
        )
    ]
    server = [m for m in examples if m not in client]
    assert len(client) == 4 and len(server) >= 6
    for message in client:
        msgspec.json.decode(message, type=ClientMessage)
    for message in server:
        msgspec.json.decode(message, type=ServerMessage)
