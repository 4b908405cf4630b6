"""Fixtures for serial integration tests: real pyserial on real ptys, sources run in owned tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.serial.port_source import PortSource
from adapters.serial.sim.pty_port import PtyPort
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


@pytest.fixture
async def collect() -> AsyncIterator[Callable[[PortSource], Collector]]:
    started: list[Collector] = []

    def make(source: PortSource) -> Collector:
        c = Collector(source)
        c.start()
        started.append(c)
        return c

    yield make
    for c in started:
        await c.stop()


@pytest.fixture
def pty_factory(tmp_path: Path) -> Iterator[Callable[[str], PtyPort]]:
    made: list[PtyPort] = []

    def make(name: str = "dev") -> PtyPort:
        port = PtyPort(tmp_path / name)
        port.plug()
        made.append(port)
        return port

    yield make
    for port in made:
        port.close()


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[None]]]:
    """Background tasks (simulators) a test starts; cancelled and awaited at the end."""
    owned: list[asyncio.Task[None]] = []
    yield owned
    for t in owned:
        t.cancel()
    await asyncio.gather(*owned, return_exceptions=True)


async def wait_open(source: PortSource) -> None:
    async with asyncio.timeout(HANG_GUARD_S):
        await source.port_open.wait()
