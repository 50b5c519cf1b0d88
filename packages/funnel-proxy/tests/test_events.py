"""The funnel's event stream is bounded, and a subscriber that lags loses no list change."""

from __future__ import annotations

import pytest

from funnel_proxy import Funnel, FunnelEvent, parse_config
from funnel_proxy._funnel import MAX_QUEUED_EVENTS

pytestmark = pytest.mark.anyio


async def test_a_lagging_subscriber_hears_every_list_it_missed_in_one_event() -> None:
    funnel = Funnel(parse_config({"servers": {}}, environ={}))
    async with funnel.events() as events:
        for _ in range(MAX_QUEUED_EVENTS):
            funnel._publish(FunnelEvent(kind="status"))
        # The buffer is full: these are lost, but the lists they name are remembered.
        funnel._publish(FunnelEvent(kind="list_changed", lists=frozenset({"tools"})))
        funnel._publish(FunnelEvent(kind="status"))
        funnel._publish(FunnelEvent(kind="list_changed", lists=frozenset({"prompts"})))
        for _ in range(MAX_QUEUED_EVENTS):
            assert (await events.receive()).kind == "status"
        funnel._publish(FunnelEvent(kind="status"))
        catch_up = await events.receive()
        assert catch_up.kind == "list_changed"
        assert catch_up.lists == {"tools", "prompts"}
        assert (await events.receive()).kind == "status"
