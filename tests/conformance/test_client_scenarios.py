"""The client leg of the official MCP conformance suite: funnel is the client under test.

For each scenario the harness starts a mock MCP server and runs ``client.py URL``, which
configures funnel with that one backend (``"prefix": ""``), starts ``funnel-server
--stdio`` and drives it with the official SDK client (see ``client.py``). Each revision
runs its own protocol (0.1.16: 2025-11-25, 0.2.0-alpha.12: 2026-07-28); the ``auth/*``
scenarios are the OAuth tests' business. One harness process per scenario, one after
the other: the mocks bind ports.

No expected-failures list: a scenario fails here until funnel passes it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from support.conformance import REVISIONS, Revision, run_client, scenarios

CLIENT = Path(__file__).with_name("client.py")


def _cases() -> list[Any]:
    cases = []
    for revision in REVISIONS:
        names = [name for name in scenarios(revision, "client") if not name.startswith("auth/")]
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


@pytest.mark.parametrize(("revision", "scenario"), _cases())
def test_funnel_as_a_client_passes_the_scenario(
    revision: Revision, scenario: str, tmp_path: Path
) -> None:
    outcome = run_client(revision, [sys.executable, str(CLIENT)], scenario, tmp_path / "results")
    assert outcome.passed, outcome.reason
