"""A recorder for any sensor source's stream (the `SensorSource` port of engine/readings.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager

from engine.readings import Kind, Reading, SensorSource, SourceEvent, SourceItem, SourceState

HANG_GUARD_S = 30


class Recorder:
    """Collects a source's items in the background; tests wait on conditions over what arrived."""

    def __init__(self, source: SensorSource) -> None:
        self.source = source
        self.items: list[SourceItem] = []
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        stream = self.source.stream()
        try:
            async for item in stream:
                self.items.append(item)
                self._changed.set()
        finally:
            self._changed.set()
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()

    async def until(self, predicate: Callable[[Recorder], bool]) -> None:
        async with asyncio.timeout(HANG_GUARD_S):
            while not predicate(self):
                if self.task is not None and self.task.done():
                    self.task.result()
                    raise AssertionError(f"stream ended before the condition held; got {self.items!r}")
                self._changed.clear()
                await self._changed.wait()

    @property
    def readings(self) -> list[Reading]:
        return [i for i in self.items if isinstance(i, Reading)]

    def heart_rates(self) -> list[Reading]:
        return [r for r in self.readings if r.kind is Kind.HEART_RATE]

    @property
    def states(self) -> list[SourceEvent]:
        return [i for i in self.items if isinstance(i, SourceEvent)]

    def count_state(self, state: SourceState) -> int:
        return sum(1 for s in self.states if s.state is state)


@asynccontextmanager
async def recording(source: SensorSource) -> AsyncIterator[Recorder]:
    recorder = Recorder(source)
    recorder.task = asyncio.create_task(recorder.run())
    try:
        yield recorder
    finally:
        recorder.task.cancel()
        await asyncio.gather(recorder.task, return_exceptions=True)
