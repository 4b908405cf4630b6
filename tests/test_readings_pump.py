"""`engine.readings.pump`: every item of a source to every consumer, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator

from engine.readings import Kind, Reading, SourceEvent, SourceItem, SourceState, pump


class _Source:
    def __init__(self, items: list[SourceItem]) -> None:
        self.items = items

    @property
    def source_id(self) -> str:
        return "fake"

    async def stream(self) -> AsyncIterator[SourceItem]:
        for item in self.items:
            yield item


async def test_pump_hands_every_item_to_every_consumer_in_order() -> None:
    items: list[SourceItem] = [
        SourceEvent(0.0, "fake", SourceState.STREAMING),
        Reading(1.0, "fake", 1, Kind.HEART_RATE, 72.0),
        Reading(2.0, "fake", 2, Kind.HEART_RATE, None),
    ]
    first: list[SourceItem] = []
    second: list[SourceItem] = []
    await pump(_Source(items), first.append, second.append)
    assert first == items and second == items
