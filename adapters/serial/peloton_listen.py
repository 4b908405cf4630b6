"""Listen mode: decode a running bike's bus (head unit and bike both talking) without sending a byte.

A lab taps the bus with one port (both lines wired to one RX, or a capture of both) or two (one per
line). Each port gets its own framer, since bytes of two lines must never be mixed inside a frame; the
frames of both go to one decoder in arrival order, so each calibration reply meets the request before it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence

from adapters.serial.calibration_store import CalibrationKeeper
from adapters.serial.link import RECONNECT_BASE_S, RECONNECT_CAP_S, PortLost, QueueItem, SerialLink
from adapters.serial.peloton import (
    BusDecoder,
    CalibrationComplete,
    FramerEvent,
    PelotonFramer,
    ReplyFrame,
    RequestFrame,
)
from adapters.serial.peloton_readings import reading_fields
from adapters.serial.port_source import PortSource, next_chunk
from engine.bike_kinds import PELOTON
from engine.readings import Kind, SourceItem, SourceState

PELOTON_BAUD = 19200


class PelotonListenSource(PortSource):
    # What the live lane's hello says this rider rides (engine/bike_kinds.py).
    bike_kind = PELOTON

    def __init__(
        self,
        paths: Sequence[str],
        *,
        source_id: str,
        baudrate: int = PELOTON_BAUD,
        idle_flush_s: float = 0.25,
        stale_after_s: float = 2.0,
        backoff_base_s: float = RECONNECT_BASE_S,
        backoff_cap_s: float = RECONNECT_CAP_S,
        calibration: CalibrationKeeper | None = None,
    ) -> None:
        super().__init__(
            paths,
            source_id=source_id,
            baudrate=baudrate,
            backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s,
        )
        self._idle_flush_s = idle_flush_s
        self._stale_after_s = stale_after_s
        self.framers = [PelotonFramer() for _ in self.paths]
        # One decoder for the whole life of the source: a calibration table read at boot stays valid
        # across a replugged tap, because the bike did not change. It starts from a stored or given table
        # (a tap rarely hears the boot-time read); one seen on the bus replaces it and is stored.
        self.calibration = calibration if calibration is not None else CalibrationKeeper()
        self.decoder = BusDecoder(self.calibration.table)

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = dict(self.decoder.counters.as_dict())
        for framer in self.framers:
            for key, value in framer.counters.as_dict().items():
                out[key] = out.get(key, 0) + value
        out.update(self.counters)
        return out

    async def session(
        self, links: list[SerialLink], queue: asyncio.Queue[QueueItem]
    ) -> AsyncGenerator[SourceItem, None]:
        loop = asyncio.get_running_loop()
        last_frame = loop.time()
        pending = [False] * len(self.framers)  # a framer holds a partial frame to flush on silence
        for framer in self.framers:
            # A partial frame from the last connection will never complete.
            for out in self._decode(framer.flush(), time.time()):
                yield out
        while True:
            item = await next_chunk(queue, self._idle_flush_s)
            if isinstance(item, PortLost):
                raise item
            if item is None:
                for i, framer in enumerate(self.framers):
                    if pending[i]:
                        pending[i] = False
                        for out in self._decode(framer.flush(), time.time()):
                            yield out
                if loop.time() - last_frame >= self._stale_after_s:
                    ev = self.state(SourceState.STALE, "no frames on the bus")
                    if ev is not None:
                        yield ev
                continue
            framer = self.framers[item.port]
            got_frame = False
            for out in self._decode(framer.feed(item.data), item.t):
                got_frame = True
                yield out
            pending[item.port] = framer.buffered > 0
            if got_frame:
                last_frame = loop.time()

    def _decode(self, events: list[FramerEvent], t: float) -> list[SourceItem]:
        out: list[SourceItem] = []
        for ev in events:
            if not isinstance(ev, RequestFrame | ReplyFrame):
                continue
            ev_state = self.state(SourceState.STREAMING)
            if ev_state is not None:
                out.append(ev_state)
            for value in self.decoder.on_frame(ev):
                if isinstance(value, CalibrationComplete):
                    self.calibration.seen(value.table)
                    continue
                fields = reading_fields(value)
                if fields is not None:
                    kind, v, pct = fields
                    if kind is Kind.RESISTANCE:
                        out.append(self.reading(kind, v, t, pct=pct, calibration=self.calibration.origin))
                    else:
                        out.append(self.reading(kind, v, t))
        return out
