"""The routes ask any LiveHub for its snapshot and stats; both hubs answer through the protocol."""

from __future__ import annotations

import pytest

from engine.live.hub import Hub, LiveHub
from engine.live.naive import NaiveHub


@pytest.mark.parametrize("make", [Hub, NaiveHub], ids=["coalescing", "naive"])
def test_a_fresh_hub_answers_the_routes_questions(make: type[Hub] | type[NaiveHub]) -> None:
    hub: LiveHub = make()
    assert hub.snapshot("spin-6am") == ({}, None)
    assert hub.relay_stats() is None
    details = hub.stats_details()
    if isinstance(hub, Hub):
        assert details == {"classes": 0, "tick_interval_s": round(hub.config.min_tick_s, 4)}
        assert hub.flush_delay() == hub.config.min_tick_s
    else:
        assert details == {}
        assert hub.flush_delay() is None
