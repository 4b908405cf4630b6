"""Poll mode: act as the head unit of a bike that has no tablet attached.

At the start of each session it does what the head unit does at boot: the startup handshake (`FE 00`,
answered with `F1 FE`), then the bike-id read (`F5 FB`), repeated until the bike answers both (a bike
that has not seen them may stay silent); then it reads the calibration table (`F7 00`..`F7 1E`), then
polls cadence, power and resistance in turn, one request every `interval_s` (100 ms, as the real head
unit does).
A request without a reply within `reply_timeout_s` is retried up to `retries` times; after
`stale_after` unanswered requests in a row the source reports the bike as not answering (STALE) and
keeps polling at the same pace, so it notices, without a busy loop, when the bike answers again.

Calibration replies do not say which entry they are, so a reply that arrives late could be taken for
the next entry's. After a timeout during calibration the source therefore waits one more interval and
throws away anything that straggles in before asking again; and a table that does not increase
strictly is rejected by the decoder and read again later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from adapters.serial.calibration_store import CalibrationKeeper
from adapters.serial.link import RECONNECT_BASE_S, RECONNECT_CAP_S, PortLost, QueueItem, SerialLink
from adapters.serial.peloton import (
    CALIBRATION_ENTRIES,
    POLL_CYCLE,
    BusDecoder,
    CalibrationCollector,
    Command,
    PelotonFramer,
    ReplyFrame,
    encode_calibration_request,
    encode_request,
)
from adapters.serial.peloton.wire import REQUEST_STARTUP
from adapters.serial.peloton_listen import PELOTON_BAUD
from adapters.serial.peloton_readings import reading_fields
from adapters.serial.port_source import PortSource, next_chunk
from engine.bike_kinds import PELOTON
from engine.readings import Kind, SourceItem, SourceState

_CALIBRATION = int(Command.CALIBRATION)
# The head unit's boot handshake, as PeloMon's emulators send it: (request, reply command expected).
HANDSHAKE = (
    (encode_request(0x00, head=REQUEST_STARTUP), int(Command.STARTUP)),
    (encode_request(Command.BIKE_ID), int(Command.BIKE_ID)),
)


class PelotonPollSource(PortSource):
    # What the live lane's hello says this rider rides (engine/bike_kinds.py).
    bike_kind = PELOTON

    def __init__(
        self,
        path: str,
        *,
        source_id: str,
        baudrate: int = PELOTON_BAUD,
        interval_s: float = 0.1,
        reply_timeout_s: float = 0.08,
        retries: int = 2,
        stale_after: int = 3,
        recalibrate_s: float = 30.0,
        backoff_base_s: float = RECONNECT_BASE_S,
        backoff_cap_s: float = RECONNECT_CAP_S,
        calibration: CalibrationKeeper | None = None,
    ) -> None:
        super().__init__(
            [path],
            source_id=source_id,
            baudrate=baudrate,
            backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s,
        )
        if reply_timeout_s > interval_s:
            raise ValueError("reply_timeout_s must not exceed interval_s")
        self.interval_s = interval_s
        self.reply_timeout_s = reply_timeout_s
        self.retries = retries
        self.stale_after = stale_after
        self.recalibrate_s = recalibrate_s
        self.calibration = calibration if calibration is not None else CalibrationKeeper()
        self.decoder = BusDecoder(self.calibration.table)
        self.poll_counters = {
            "handshakes": 0,
            "requests": 0,
            "replies": 0,
            "timeouts": 0,
            "retries": 0,
            "requests_failed": 0,
            "late_replies": 0,
            "stale_reports": 0,
            "calibrations": 0,
        }
        self._misses = 0
        self._framer = PelotonFramer()
        self._next_slot = 0.0

    def summary(self) -> dict[str, int]:
        return {
            **self._framer.counters.as_dict(),
            **self.decoder.counters.as_dict(),
            **self.poll_counters,
            **self.counters,
        }

    async def session(
        self, links: list[SerialLink], queue: asyncio.Queue[QueueItem]
    ) -> AsyncGenerator[SourceItem, None]:
        link = links[0]
        loop = asyncio.get_running_loop()
        self._framer.flush()  # a partial frame from the last connection will never complete
        self._next_slot = loop.time()
        self._misses = 0
        # Read the table at every (re)connect, as a head unit does at boot: the bike on the cable may not
        # be the one that was there before. The old table stays in use until a new one is complete.
        calibrate_now = True
        last_calibration = -float("inf")
        i = attempt = 0
        booted = False
        while True:
            if not booted:
                async with contextlib.aclosing(self._handshake(link, queue)) as handshake:
                    async for item in handshake:
                        if item is None:
                            booted = True
                        else:
                            yield item
                continue
            no_table = self.decoder.calibration is None
            if calibrate_now or (no_table and loop.time() - last_calibration >= self.recalibrate_s):
                calibrate_now = False
                last_calibration = loop.time()
                async with contextlib.aclosing(self._calibrate(link, queue)) as calibration:
                    async for item in calibration:
                        yield item
            command = POLL_CYCLE[i]
            was_stale = self._misses >= self.stale_after
            items, answered = await self._exchange(link, queue, encode_request(command), int(command))
            for item in items:
                yield item
            if answered:
                i, attempt = (i + 1) % len(POLL_CYCLE), 0
                if was_stale and self.decoder.calibration is None:
                    calibrate_now = True  # the bike is back: read its table right away
                continue
            attempt += 1
            if attempt > self.retries:
                self.poll_counters["requests_failed"] += 1
                i, attempt = (i + 1) % len(POLL_CYCLE), 0
            else:
                self.poll_counters["retries"] += 1

    async def _handshake(
        self, link: SerialLink, queue: asyncio.Queue[QueueItem]
    ) -> AsyncGenerator[SourceItem | None, None]:
        """One try at the boot handshake; yields None last if the bike answered both steps."""
        self.poll_counters["handshakes"] += 1
        for request, expect in HANDSHAKE:
            items, answered = await self._exchange(link, queue, request, expect)
            for item in items:
                yield item
            if not answered:
                return
        yield None

    async def _calibrate(
        self, link: SerialLink, queue: asyncio.Queue[QueueItem]
    ) -> AsyncGenerator[SourceItem, None]:
        self.poll_counters["calibrations"] += 1
        collector = CalibrationCollector()
        for index in range(CALIBRATION_ENTRIES):
            for attempt in range(self.retries + 1):
                items, raw = await self._exchange(
                    link, queue, encode_calibration_request(index), _CALIBRATION, calibration=True
                )
                for item in items:
                    yield item
                if raw is not None:
                    collector.add(index, raw)
                    break
                if attempt < self.retries:
                    self.poll_counters["retries"] += 1
                await self._drain_stragglers(queue)
            else:
                self.poll_counters["requests_failed"] += 1
                return  # the bike is not answering: poll without a table, try again later
        try:
            table = collector.table()
        except ValueError:
            return
        if table is not None:
            self.decoder.calibration = table
            self.calibration.seen(table)

    async def _wait_slot(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._next_slot < now - self.interval_s:
            self._next_slot = now  # fell behind (a stall): do not burst to catch up
        await asyncio.sleep(max(0.0, self._next_slot - now))
        self._next_slot += self.interval_s

    async def _exchange(
        self,
        link: SerialLink,
        queue: asyncio.Queue[QueueItem],
        request: bytes,
        expect: int,
        *,
        calibration: bool = False,
    ) -> tuple[list[SourceItem], int | None]:
        """Send one request and wait for its reply. Returns readings decoded meanwhile (late replies to
        earlier requests included) and, if the reply came: for calibration the raw entry, otherwise 1."""
        await self._wait_slot()
        loop = asyncio.get_running_loop()
        link.write(request)
        self.poll_counters["requests"] += 1
        deadline = loop.time() + self.reply_timeout_s
        items: list[SourceItem] = []
        result: int | None = None
        while result is None:
            item = await next_chunk(queue, max(0.0, deadline - loop.time()))
            if item is None:
                break
            if isinstance(item, PortLost):
                raise item
            for ev in self._framer.feed(item.data):
                if not isinstance(ev, ReplyFrame):
                    continue
                if ev.command != expect or result is not None:
                    self.poll_counters["late_replies"] += 1
                    if ev.command == _CALIBRATION:
                        continue  # cannot tell which entry it answers
                elif calibration:
                    payload = ev.payload
                    result = int(payload[::-1]) if payload.isdigit() else None
                    if result is not None:
                        self.poll_counters["replies"] += 1
                    continue
                else:
                    result = 1
                    self.poll_counters["replies"] += 1
                for value in self.decoder.on_frame(ev):
                    fields = reading_fields(value)
                    if fields is not None:
                        kind, v, pct = fields
                        if kind is Kind.RESISTANCE:
                            origin = self.calibration.origin
                            items.append(self.reading(kind, v, item.t, pct=pct, calibration=origin))
                        else:
                            items.append(self.reading(kind, v, item.t))
        if result is not None:
            self._misses = 0
            ev_state = self.state(SourceState.STREAMING)
        else:
            self.poll_counters["timeouts"] += 1
            self._misses += 1
            ev_state = None
            if self._misses >= self.stale_after:
                ev_state = self.state(
                    SourceState.STALE, f"bike not answering: {self._misses} requests without a reply"
                )
                if ev_state is not None:
                    self.poll_counters["stale_reports"] += 1
        if ev_state is not None:
            items.insert(0, ev_state)
        return items, result

    async def _drain_stragglers(self, queue: asyncio.Queue[QueueItem]) -> None:
        """After a calibration timeout: whatever arrives within one interval is a late reply; drop it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.interval_s
        while (remaining := deadline - loop.time()) > 0:
            item = await next_chunk(queue, remaining)
            if item is None:
                break
            if isinstance(item, PortLost):
                raise item
            for ev in self._framer.feed(item.data):
                if isinstance(ev, ReplyFrame):
                    self.poll_counters["late_replies"] += 1
        self._next_slot = max(self._next_slot, loop.time())
