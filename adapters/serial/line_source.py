"""Line mode: a DIY cadence sensor speaking the line protocol (LINE_PROTOCOL.md) on a serial port.

Each crank record goes through the cadence calculator; a cadence reading comes out per record once a
baseline exists (`stopped` and `held` say how it was derived). A sensor that goes quiet for longer than
`stale_after_s` is reported STALE; after more than `rebaseline_after_s` of silence (close to the 64 s
rollover of its clocks) the calculator starts over rather than guess across a wrap.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from adapters.serial.cadence import CrankCadence
from adapters.serial.line_protocol import CrankRecord, Ident, LineError, LineParser
from adapters.serial.link import PortLost, QueueItem, SerialLink
from adapters.serial.port_source import PortSource, next_chunk
from engine.readings import Kind, SourceItem, SourceState

LINE_BAUD = 115200


class LineSource(PortSource):
    def __init__(
        self,
        path: str,
        *,
        source_id: str,
        baudrate: int = LINE_BAUD,
        stop_after_s: float = 3.0,
        stale_after_s: float = 3.0,
        rebaseline_after_s: float = 60.0,
        backoff_base_s: float = 0.2,
        backoff_cap_s: float = 5.0,
    ) -> None:
        super().__init__(
            [path],
            source_id=source_id,
            baudrate=baudrate,
            backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s,
        )
        self.parser = LineParser()
        self.cadence = CrankCadence(stop_after_s=stop_after_s)
        self.device: Ident | None = None
        self._stale_after_s = stale_after_s
        self._rebaseline_after_s = rebaseline_after_s

    def summary(self) -> dict[str, int]:
        return {**self.parser.counters.as_dict(), **self.cadence.counters.as_dict(), **self.counters}

    async def session(
        self, links: list[SerialLink], queue: asyncio.Queue[QueueItem]
    ) -> AsyncGenerator[SourceItem, None]:
        loop = asyncio.get_running_loop()
        self.parser.flush()  # half a line from the last connection is not a line
        self.cadence.reset()  # records from before the reconnect may be from before a sensor reboot
        last_record = loop.time()
        while True:
            item = await next_chunk(queue, self._stale_after_s)
            if isinstance(item, PortLost):
                raise item
            if item is None:
                ev = self.state(SourceState.STALE, f"no record for {self._stale_after_s:g} s")
                if ev is not None:
                    yield ev
                continue
            for line in self.parser.feed(item.data):
                if isinstance(line, LineError):
                    continue
                if isinstance(line, Ident):
                    self.device = line
                    continue
                if not isinstance(line, CrankRecord):
                    continue
                now = loop.time()
                if now - last_record > self._rebaseline_after_s:
                    self.cadence.reset()
                last_record = now
                ev = self.state(SourceState.STREAMING, self.device.device_id if self.device else "")
                if ev is not None:
                    yield ev
                update = self.cadence.on_record(line)
                if update is not None:
                    yield self.reading(
                        Kind.CADENCE,
                        update.rpm,
                        item.t,
                        stopped=update.stopped,
                        held=update.held,
                        revs=line.revs,
                    )
