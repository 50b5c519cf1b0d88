"""The server leg of the official MCP conformance suite: funnel-server is the server under test.

The harness plays the client and looks for the "everything server" fixtures by name
(``test_simple_text``, ``test://static-text``, ``test_simple_prompt`` …). funnel serves
them from ``tests/servers/conformance_server.py``, run as its stdio backend with
``"prefix": ""``, in two layouts:

* **transparent**: that backend alone, no core tools: funnel must be invisible.
* **namespaced**: the same backend plus a second, namespaced one (``sdk__echo`` …) and
  the core tools: funnel aggregating, while the fixture names still match exactly.

Over HTTP the app is funnel-server's own (Host/Origin checks, sessions, both eras);
the harness cannot send funnel's bearer token, so a pass-through adds it and changes
nothing else. Each revision runs its own protocol (0.1.16: 2025-11-25, 0.2.0-alpha.12:
2026-07-28), one harness process per scenario, one after the other.

No expected-failures list: a scenario fails here until funnel passes it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.conformance import (
    REVISIONS,
    Revision,
    funnel_http,
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


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def funnel_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """funnel-server over HTTP in one layout, shared by every scenario of the module."""
    config = parse_config(LAYOUTS[request.param], environ={"PATH": "/usr/bin:/bin"})
    with serving_in_thread(funnel_http(config)) as url:
        yield url


@pytest.mark.parametrize(("revision", "scenario"), _cases())
def test_funnel_over_http_passes_the_server_scenario(
    funnel_url: str, revision: Revision, scenario: str, tmp_path: Path
) -> None:
    outcome = run_server(revision, funnel_url, scenario, tmp_path / "results")
    assert outcome.passed, outcome.reason
