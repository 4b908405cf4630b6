"""Watching a sensor source while a scenario runs: every item it yields, stamped with when it arrived.

    async with Tap(source) as tap:
        mark = tap.now()
        lost = await tap.wait(is_state(SourceState.LOST), timeout_s=30, after=mark)
        ...tap.readings(Kind.HEART_RATE, after=mark)

Times are `time.monotonic()` seconds. A source that ends with an error (no Bluetooth, no permission
on the port) ends the tap: `wait` then returns None at once and `error` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from engine.readings import Kind, Reading, SensorSource, SourceEvent, SourceItem, SourceState


@dataclass(frozen=True, slots=True)
class Seen:
    at: float  # monotonic arrival time
    item: SourceItem


Match = Callable[[SourceItem], bool]


def is_state(*states: SourceState) -> Match:
    return lambda item: isinstance(item, SourceEvent) and item.state in states


def is_reading(kind: Kind | None = None) -> Match:
    return lambda item: isinstance(item, Reading) and (kind is None or item.kind is kind)


class Tap:
    def __init__(self, source: SensorSource) -> None:
        self.source = source
        self.seen: list[Seen] = []
        self.error: BaseException | None = None
        self._new = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.started = time.monotonic()

    @staticmethod
    def now() -> float:
        return time.monotonic()

    async def __aenter__(self) -> Tap:
        self.started = time.monotonic()
        self._task = asyncio.create_task(self._run(), name=f"lab tap {self.source.source_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        stream = self.source.stream()
        try:
            async for item in stream:
                self.seen.append(Seen(time.monotonic(), item))
                self._wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported by the scenario, not raised through it
            self.error = exc
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            self._wake()

    def _wake(self) -> None:
        event, self._new = self._new, asyncio.Event()
        event.set()

    async def wait(self, match: Match, timeout_s: float, *, after: float | None = None) -> Seen | None:
        """The first item matching `match` that arrived after `after` (default: any), waiting up to
        `timeout_s`; None on timeout or when the source has ended."""
        since = self.started if after is None else after
        deadline = time.monotonic() + timeout_s
        index = 0
        while True:
            new = self._new
            while index < len(self.seen):
                seen = self.seen[index]
                index += 1
                if seen.at >= since and match(seen.item):
                    return seen
            if not self.running:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await new.wait()

    def items(self, *, after: float | None = None, before: float | None = None) -> list[Seen]:
        return [
            s for s in self.seen if (after is None or s.at >= after) and (before is None or s.at < before)
        ]

    def readings(
        self, kind: Kind | None = None, *, after: float | None = None, before: float | None = None
    ) -> list[Reading]:
        return [
            s.item
            for s in self.items(after=after, before=before)
            if isinstance(s.item, Reading) and (kind is None or s.item.kind is kind)
        ]

    def states(self, *, after: float | None = None, before: float | None = None) -> list[SourceEvent]:
        return [s.item for s in self.items(after=after, before=before) if isinstance(s.item, SourceEvent)]
