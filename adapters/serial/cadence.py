"""Cadence from cumulative crank records (the line protocol's `C` lines), as a sans-I/O state machine.

Because each record carries cumulative revolutions and the time of the last crank event, the cadence
over any two records is (revolutions between them) / (event time between them): a lost line only
widens the averaging window, it never corrupts the value. All arithmetic is modulo 65536, so rollover
of either counter is invisible as long as less than one wrap (64 s of sensor time, 65535 revolutions)
passes between two received records; the adapter calls `reset()` after a longer silence.

"Stopped" is judged in sensor time, so a capture decodes the same as a live port: revolutions have not
changed for `stop_after_s` of sensor time (sensor_time - event_time, accumulated across records).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from adapters.serial.line_protocol import SEQ_MOD, TICKS_PER_S, U16, CrankRecord


@dataclass(frozen=True, slots=True)
class CadenceUpdate:
    """rpm over the revolutions since the previous record. `held`: no new revolution yet, the last
    cadence still stands (within the stop timeout). `stopped`: no revolution for stop_after_s, rpm 0."""

    rpm: float
    new_revs: int
    stopped: bool = False
    held: bool = False


@dataclass(slots=True)
class CadenceCounters:
    records: int = 0
    duplicates: int = 0
    lines_lost: int = 0
    resyncs: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class CrankCadence:
    def __init__(self, stop_after_s: float = 3.0, max_rpm: float = 250.0) -> None:
        self._stop_ticks = round(stop_after_s * TICKS_PER_S)
        self._max_rpm = max_rpm
        self._prev: CrankRecord | None = None
        self._rpm: float | None = None
        self._since_event = 0  # sensor ticks since the last crank event
        self._stopped = False
        self.counters = CadenceCounters()

    def reset(self) -> None:
        """Forget the baseline (after a reboot of the sensor or a silence longer than one rollover)."""
        self._prev = None
        self._rpm = None
        self._stopped = False

    def on_record(self, rec: CrankRecord) -> CadenceUpdate | None:
        c = self.counters
        prev = self._prev
        if prev is not None and rec.seq == prev.seq:
            c.duplicates += 1
            return None
        c.records += 1
        self._prev = rec
        if prev is None:
            self._since_event = (rec.sensor_time - rec.event_time) % U16
            return None
        c.lines_lost += (rec.seq - prev.seq) % SEQ_MOD - 1
        d_revs = (rec.revs - prev.revs) % U16
        d_event = (rec.event_time - prev.event_time) % U16
        if d_revs == 0:
            if d_event != 0:
                self._resync()  # event time moved without a revolution: not the same sensor run
                return None
            self._since_event += (rec.sensor_time - prev.sensor_time) % U16
            if self._stopped or self._since_event >= self._stop_ticks:
                self._stopped = True
                self._rpm = 0.0
                return CadenceUpdate(0.0, 0, stopped=True)
            if self._rpm is None:
                return None
            return CadenceUpdate(self._rpm, 0, held=True)
        if d_event == 0:
            self._resync()
            return None
        rpm = d_revs * 60 * TICKS_PER_S / d_event
        if rpm > self._max_rpm:
            # A sensor reboot (counters back near zero) looks like a huge jump: start over from here.
            self._resync()
            return None
        self._since_event = (rec.sensor_time - rec.event_time) % U16
        if self._stopped:
            # The first revolution after a stop spans the whole pause; averaging over it would report a
            # crawl. Wait for the next revolution for a true cadence.
            self._stopped = False
            self._rpm = None
            return None
        self._rpm = round(rpm, 1)
        return CadenceUpdate(self._rpm, d_revs)

    def _resync(self) -> None:
        self.counters.resyncs += 1
        prev = self._prev
        self.reset()
        self._prev = prev
        if prev is not None:
            self._since_event = (prev.sensor_time - prev.event_time) % U16
