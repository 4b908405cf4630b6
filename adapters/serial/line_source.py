"""Line mode: a DIY cadence sensor speaking the line protocol (LINE_PROTOCOL.md) on a serial port.

Each crank record goes through the cadence calculator; a cadence reading comes out per record once a
baseline exists (`stopped` and `held` say how it was derived). A sensor that goes quiet for longer than
`stale_after_s` is reported STALE; after more than `rebaseline_after_s` of silence (close to the 64 s
rollover of its clocks) the calculator starts over rather than guess across a wrap.

A reader at the wrong baud rate gets bytes, but never a good line. When a session has had no good line
and either `BAD_BURST` bad ones or bytes for `stale_after_s` since the first, the source says so once,
as a STALE state naming the baud rate: "N bad lines and no good one at 115200 baud: check --baud".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from adapters.serial.cadence import CrankCadence
from adapters.serial.line_protocol import CrankRecord, Ident, LineError, LineParser
from adapters.serial.link import RECONNECT_BASE_S, RECONNECT_CAP_S, PortLost, QueueItem, SerialLink
from adapters.serial.port_source import PortSource, next_chunk
from engine.bike_kinds import LINE
from engine.readings import Kind, SourceItem, SourceState

LINE_BAUD = 115200
BAD_BURST = 5  # bad lines in a row, with no good one yet, that look like a baud-rate mismatch


class LineSource(PortSource):
    # What the live lane's hello says this rider rides (engine/bike_kinds.py).
    bike_kind = LINE

    def __init__(
        self,
        path: str,
        *,
        source_id: str,
        baudrate: int = LINE_BAUD,
        stop_after_s: float = 3.0,
        stale_after_s: float = 3.0,
        rebaseline_after_s: float = 60.0,
        backoff_base_s: float = RECONNECT_BASE_S,
        backoff_cap_s: float = RECONNECT_CAP_S,
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
        first_byte: float | None = None
        good = bad = nbytes = 0
        mismatch_told = False
        while True:
            item = await next_chunk(queue, self._stale_after_s)
            if isinstance(item, PortLost):
                raise item
            if item is None:
                ev = self.state(SourceState.STALE, f"no record for {self._stale_after_s:g} s")
                if ev is not None:
                    yield ev
                continue
            nbytes += len(item.data)
            if first_byte is None:
                first_byte = loop.time()
            lines = self.parser.feed(item.data)
            bad += sum(isinstance(line, LineError) for line in lines)
            good += len(lines) - sum(isinstance(line, LineError) for line in lines)
            if (
                not good
                and not mismatch_told
                and (bad >= BAD_BURST or loop.time() - first_byte >= self._stale_after_s)
            ):
                mismatch_told = True
                ev = self.state(
                    SourceState.STALE,
                    f"{bad} bad lines and no good one at {self.baudrate} baud: check --baud",
                    bad_lines=bad,
                    bytes=nbytes,
                    baud=self.baudrate,
                )
                if ev is not None:
                    yield ev
            for line in lines:
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
