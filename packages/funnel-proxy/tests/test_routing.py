"""The rule that picks which client answers a backend's request (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from msgspec import Raw

from funnel_proxy._routing import InFlight, choose, client_supports, log_level_passes
from funnel_transports import Notification

ELICIT: dict[str, Any] = {"elicitation": {}}


class FakeClient:
    def __init__(self, name: str, capabilities: Mapping[str, Any], active: float = 0.0) -> None:
        self.name = name
        self.capabilities = capabilities
        self.last_active = active
        self.calls: list[InFlight] = []

    def call(self, server: str) -> InFlight:
        call = InFlight(server, f"{self.name}-{len(self.calls)}")
        self.calls.append(call)
        return call

    def in_flight(self, server: str) -> Iterable[InFlight]:
        return [call for call in self.calls if call.server == server]

    # The rule only chooses; it never asks or delivers: a call here would be a bug.
    async def ask(self, method: str, params: Raw | None, call: InFlight | None) -> Raw:
        raise AssertionError("choose() must not ask the client")

    def deliver(
        self, message: Notification, *, level: str | None = None, server: str | None = None
    ) -> None:
        raise AssertionError("choose() must not deliver to the client")


def test_concurrent_calls_are_asked_in_the_order_they_arrived() -> None:
    ada, grace = FakeClient("ada", ELICIT), FakeClient("grace", ELICIT)
    first, second = ada.call("s"), grace.call("s")
    chosen = choose([grace, ada], "s", "elicitation/create", {})
    assert chosen == (ada, first)
    first.asking()
    assert choose([grace, ada], "s", "elicitation/create", {}) == (grace, second)


def test_a_call_that_was_answered_and_asks_again_is_the_one_chosen() -> None:
    ada, grace = FakeClient("ada", ELICIT), FakeClient("grace", ELICIT)
    first, second = ada.call("s"), grace.call("s")
    for call in (first, second):
        call.asking()
    second.answered_now()
    assert choose([ada, grace], "s", "elicitation/create", {}) == (grace, second)


def test_only_clients_with_the_capability_and_calls_to_that_backend_count() -> None:
    plain = FakeClient("plain", {}, active=9.0)
    able = FakeClient("able", ELICIT, active=1.0)
    plain.call("s")
    other = able.call("other-server")
    assert choose([plain, able], "s", "elicitation/create", {}) == (able, None)
    assert other.asks == 0
    assert choose([plain], "s", "elicitation/create", {}) is None


def test_without_calls_in_flight_the_last_active_capable_client_answers() -> None:
    old, recent = FakeClient("old", {"roots": {}}, 1.0), FakeClient("recent", {"roots": {}}, 5.0)
    assert choose([old, recent], "s", "roots/list", {}) == (recent, None)


@pytest.mark.parametrize(
    ("capabilities", "params", "expected"),
    [
        ({"elicitation": {}}, {}, True),
        ({"elicitation": {}}, {"mode": "url"}, False),
        ({"elicitation": {"url": {}}}, {"mode": "url"}, True),
        ({"elicitation": {"url": {}}}, {"mode": "form"}, False),
        ({"sampling": {}}, {}, False),
    ],
)
def test_elicitation_modes_need_their_own_capability(
    capabilities: dict[str, Any], params: dict[str, Any], expected: bool
) -> None:
    assert client_supports(capabilities, "elicitation/create", params) is expected


def test_log_levels_pass_at_or_above_the_clients_minimum() -> None:
    assert log_level_passes("error", "warning")
    assert not log_level_passes("info", "warning")
    assert log_level_passes("info", None)
