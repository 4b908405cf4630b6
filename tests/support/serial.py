"""Serial test helpers: a collector for a port source's stream, and the short backoff the pty tests use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from adapters.serial.port_source import PortSource
from engine.readings import Reading, SourceEvent, SourceItem, SourceState

HANG_GUARD_S = 30.0
# Backoff short enough that replug tests recover quickly; still never a busy loop (floor base/4).
FAST: dict[str, Any] = {"backoff_base_s": 0.05, "backoff_cap_s": 0.4}


class Collector:
    """Runs a source's stream in a task and records what it yields; tests wait on conditions over it."""

    def __init__(self, source: PortSource) -> None:
        self.source = source
        self.items: list[SourceItem] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @property
    def readings(self) -> list[Reading]:
        return [i for i in self.items if isinstance(i, Reading)]

    @property
    def events(self) -> list[SourceEvent]:
        return [i for i in self.items if isinstance(i, SourceEvent)]

    def states(self) -> list[SourceState]:
        return [e.state for e in self.events]

    async def _run(self) -> None:
        async for item in self.source.stream():
            async with self._changed:
                self.items.append(item)
                self._changed.notify_all()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_for(self, predicate: Callable[[Collector], bool], what: str = "") -> None:
        """Wait until `predicate(self)` holds; the timeout is only a hang guard."""
        try:
            async with asyncio.timeout(HANG_GUARD_S), self._changed:
                await self._changed.wait_for(lambda: predicate(self))
        except TimeoutError:
            states = self.states()
            raise AssertionError(f"timed out waiting for {what or predicate}; states {states}") from None

    async def wait_state(self, state: SourceState, after: int = 0) -> SourceEvent:
        """The first event with `state` at index >= `after` among the events."""
        await self.wait_for(lambda c: state in c.states()[after:], f"state {state}")
        return next(e for e in self.events[after:] if e.state is state)


async def wait_open(source: PortSource) -> None:
    async with asyncio.timeout(HANG_GUARD_S):
        await source.port_open.wait()
