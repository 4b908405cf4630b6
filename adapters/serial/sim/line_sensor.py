"""A simulated DIY cadence sensor: crank events from a ride profile's cadence, sent as line-protocol
records once a second of sensor time (and an identity line at start and every 10 s).

Sensor time runs `speed` times faster than real time. `sent` logs every record that went out intact.
The sensor's UART runs at `baud`; when the reader's end of the pty is set to another speed, what it
reads is what a UART at that speed would make of the bytes (sim/uart.py): garbage, as on a real cable.
"""

from __future__ import annotations

import asyncio
import math

from adapters.serial.line_protocol import SEQ_MOD, U16, CrankRecord, encode_ident, encode_record
from adapters.serial.sim import sensor_clock
from adapters.serial.sim.faults import Faults
from adapters.serial.sim.profile import RideProfile
from adapters.serial.sim.pty_port import PtyPort, Unplugged
from adapters.serial.sim.uart import resample

DEFAULT_BAUD = 115200


class LineSensor:
    """`clock_start_ms`: the firmware's time since boot when the ride starts (e.g. just before the
    70-minute mark, to check a receiver across it without waiting); `tick_math`: how the firmware turns
    that time into ticks (sim/sensor_clock.py; default exact, as the reference sketch does). With
    neither, ticks start at `start_ticks`."""

    def __init__(
        self,
        port: PtyPort,
        *,
        profile: RideProfile,
        speed: float = 1.0,
        device_id: str = "sim-reed",
        faults: Faults | None = None,
        clock_start_ms: float = 0.0,
        tick_math: sensor_clock.TickMath = sensor_clock.TickMath.EXACT,
        record_interval_s: float = 1.0,
        start_ticks: int = 0,
        start_revs: int = 0,
        baud: int = DEFAULT_BAUD,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.port = port
        self.profile = profile
        self.speed = speed
        self.device_id = device_id
        self.faults = faults if faults is not None else Faults()
        self.clock_start_ms = clock_start_ms
        self.tick_math = sensor_clock.TickMath(tick_math)
        self.record_interval_s = record_interval_s
        self.start_ticks = start_ticks
        self.start_revs = start_revs
        self.baud = baud
        self.sent: list[CrankRecord] = []
        self.lines_written = 0
        self.lines_garbled = 0  # sent while the reader's baud rate differed
        self.done = asyncio.Event()

    def records(self) -> list[tuple[float, CrankRecord]]:
        """Every record of the ride, with the ride time it is sent at (pure: no I/O)."""
        out: list[tuple[float, CrankRecord]] = []
        revs = 0.0
        event_s = 0.0
        t = 0.0
        n = 0
        step = self.record_interval_s
        while t <= self.profile.duration_s:
            rate = self.profile.at(t).cadence / 60  # revolutions per second during this step
            if n > 0 and rate > 0:
                before = revs
                revs += rate * step
                if math.floor(revs) > math.floor(before):
                    # time of the last whole revolution within the step
                    event_s = t - step + (math.floor(revs) - before) / rate
            ticks = self.start_ticks + self._ticks(t)
            event_ticks = self.start_ticks + self._ticks(event_s)
            rec = CrankRecord(
                n % SEQ_MOD, (self.start_revs + math.floor(revs)) % U16, event_ticks % U16, ticks % U16
            )
            out.append((t, rec))
            n += 1
            t = n * step
        return out

    def _ticks(self, ride_s: float) -> int:
        return sensor_clock.sensor_ticks(self.clock_start_ms / 1000 + ride_s, self.tick_math)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await self._send(encode_ident(self.device_id), None)
            next_ident = 10.0
            for ride_s, rec in self.records():
                await asyncio.sleep(max(0.0, start + ride_s / self.speed - loop.time()))
                if ride_s >= next_ident:
                    next_ident += 10.0
                    await self._send(encode_ident(self.device_id), None)
                if self.faults.silent:
                    continue
                await self._send(encode_record(rec.seq, rec.revs, rec.event_time, rec.sensor_time), rec)
        finally:
            self.done.set()

    async def _send(self, line: bytes, rec: CrankRecord | None) -> None:
        wire, intact = self.faults.apply(line, header=1, body=(1, len(line) - 1), avoid=b"$\n\r")
        reader = self.port.reader_baud()
        if reader is not None and reader != self.baud:
            wire, intact = resample(wire, self.baud, reader), False
            self.lines_garbled += 1
        try:
            written = await self.port.write(wire)
        except Unplugged:
            return
        self.lines_written += 1
        if intact and written == len(wire) and rec is not None:
            self.sent.append(rec)
