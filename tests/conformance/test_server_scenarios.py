"""The server leg of the official MCP conformance suite: funnel-server is the server under test.

The harness plays the client and looks for the "everything server" fixtures by name
(``test_simple_text``, ``test://static-text``, ``test_simple_prompt`` …). funnel serves
them from ``tests/servers/conformance_server.py``, run as its stdio backend with
``"prefix": ""``, in two layouts:

* **transparent**: that backend alone, no core tools: funnel must be invisible.
* **namespaced**: the same backend plus a second, namespaced one (``sdk__echo`` …) and
  the core tools: funnel aggregating, while the fixture names still match exactly.

Two ways in:

* **http**: funnel-server's own app (Host/Origin checks, sessions, both eras), in both
  layouts. The harness cannot send funnel's bearer token, so a pass-through adds it and
  changes nothing else.
* **stdio**: ``funnel-server --stdio`` behind ``support.stdio_bridge`` (the harness
  speaks HTTP only), transparent layout. The scenarios that judge HTTP itself are the
  bridge's answers there, not funnel's; :data:`BRIDGE_DECIDES` names them and why (over
  HTTP they run against funnel).

Each revision runs its own protocol (0.1.16: 2025-11-25, 0.2.0-alpha.12: 2026-07-28),
one harness process per scenario, one after the other.

No expected-failures list: a scenario fails here until funnel passes it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.conformance import (
    REVISIONS,
    Revision,
    funnel_http,
    funnel_stdio,
    run_server,
    scenarios,
    serving_in_thread,
)
from support.peers import SERVERS

from funnel_proxy import parse_config

FIXTURE = {
    "command": sys.executable,
    "args": [str(SERVERS / "conformance_server.py")],
    "prefix": "",
}
LAYOUTS: dict[str, dict[str, Any]] = {
    "transparent": {"servers": {"everything": FIXTURE}, "exposeCoreTools": []},
    "namespaced": {
        "servers": {
            "everything": FIXTURE,
            "sdk": {"command": sys.executable, "args": [str(SERVERS / "sdk_server.py")]},
        }
    },
}


BRIDGE_DECIDES: dict[str, str] = {
    "dns-rebinding-protection": "the Host/Origin check over stdio is the bridge's",
    "server-sse-polling": "SSE stream closing and resumption over stdio are the bridge's",
    "server-sse-multiple-streams": "SSE streams over stdio are the bridge's",
    "server-stateless": "it judges HTTP status codes (400/404) that over stdio the bridge sets",
    "http-header-validation": "it judges HTTP header checks that over stdio the bridge makes",
    "http-custom-header-server-validation": "it judges Mcp-Param-* header checks and HTTP "
    "400s that over stdio the bridge would make",
}
"""Scenarios that through the stdio bridge measure the bridge, with the reason."""

WAYS = [("http", "transparent"), ("http", "namespaced"), ("stdio", "transparent")]


def _cases() -> list[Any]:
    cases = []
    for revision in REVISIONS:
        names = scenarios(revision, "server")
        if not names:
            cases.append(
                pytest.param(
                    revision,
                    "-",
                    marks=pytest.mark.skip(
                        reason=f"conformance {revision} is not installed (make install)"
                    ),
                    id=f"{revision}-not-installed",
                )
            )
        cases += [pytest.param(revision, name, id=f"{revision}-{name}") for name in names]
    return cases


@pytest.fixture(scope="module", params=WAYS, ids=[f"{t}-{layout}" for t, layout in WAYS])
def funnel_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """funnel-server one way in, shared by every scenario of that way: (transport, URL)."""
    transport, layout = request.param
    data = LAYOUTS[layout]
    if transport == "http":
        manager = funnel_http(parse_config(data, environ={"PATH": os.environ.get("PATH", "")}))
    else:
        manager = funnel_stdio(data, tmp_path_factory.mktemp("stdio"))
    with serving_in_thread(manager) as url:
        yield transport, url


@pytest.mark.parametrize(("revision", "scenario"), _cases())
def test_funnel_passes_the_server_scenario(
    funnel_url: tuple[str, str], revision: Revision, scenario: str, tmp_path: Path
) -> None:
    transport, url = funnel_url
    if transport == "stdio" and scenario in BRIDGE_DECIDES:
        pytest.skip(f"not funnel's answer over stdio: {BRIDGE_DECIDES[scenario]}")
    outcome = run_server(revision, url, scenario, tmp_path / "results")
    assert outcome.passed, outcome.reason
