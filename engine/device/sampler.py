"""Readings → one packed Sample per ride second (sans-I/O).

Sensors deliver at their own rates (a strap about 1 Hz, a Peloton bus every 100 ms per metric). The bike
records the ride at 1 Hz: each sample carries the latest value of every metric, RR intervals received
since the previous sample, and flags that tell the truth about the strap: `stale` when the newest heart
rate is older than `stale_after_s`, the contact state as the strap reports it, and `gap` when the strap's
link is down. A metric never seen is None, never 0.

Sample times are ride times (see `RideClock`), so a simulation at `--speed 60` records a 30-minute
ride's timeline in 30 s of wall time. Staleness is judged on the caller's `now` (the wall clock): a
simulated Peloton bus at 19200 baud cannot deliver 60 times faster, and a dead sensor is dead in
seconds of real time whatever the simulation speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.readings import Kind, Reading, SourceEvent, SourceItem, SourceState
from engine.ride.samples import MAX_RR, Sample

DEFAULT_STALE_AFTER_S = 3.0
MAX_RR_PER_SAMPLE = min(16, MAX_RR)
# Sample fields' range (engine/ride/samples.py): clamp broken values rather than lose the sample.
_U16 = 0xFFFF


class RideClock:
    """Ride time: unix time at the start, advancing `speed` times faster than the wall clock."""

    def __init__(
        self, origin: float | None = None, speed: float = 1.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if not speed > 0:
            raise ValueError("speed must be positive")
        self.origin = time.time() if origin is None else origin
        self.speed = speed
        self._monotonic = monotonic
        self._m0 = monotonic()
        self._wall0 = time.time()

    def rebase(self, origin: float) -> None:
        """Ride time now reads `origin` (a resumed ride goes on after its last recorded second)."""
        self.origin = origin
        self._m0 = self._monotonic()
        self._wall0 = time.time()

    def at_wall(self, wall_t: float) -> float:
        """The ride time at unix (wall-clock) time `wall_t`, e.g. another replica's end: the same time at
        --speed 1; in a sped-up simulation, mapped from this run's start."""
        return self.origin + (wall_t - self._wall0) * self.speed

    def now(self) -> float:
        return self.origin + (self._monotonic() - self._m0) * self.speed

    def wall_delay(self, ride_t: float) -> float:
        """Wall seconds until the ride clock reads `ride_t` (0 if it already has)."""
        return max(0.0, (ride_t - self.now()) / self.speed)


@dataclass(slots=True)
class _Latest:
    value: float
    t: float


@dataclass(slots=True)
class SampleBuilder:
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    hr: _Latest | None = None
    contact: str | None = None
    cadence: _Latest | None = None
    power: _Latest | None = None
    resistance: _Latest | None = None
    rr: list[int] = field(default_factory=list)
    hr_link_down: bool = False
    readings: int = 0

    def offer(self, item: SourceItem, now: float) -> None:
        """One reading or state event, received at `now` (the clock `take` is given too)."""
        if isinstance(item, SourceEvent):
            if item.state in (SourceState.LOST, SourceState.BACKING_OFF, SourceState.FAILED):
                if item.source.startswith("ble-hr"):
                    self.hr_link_down = True
            elif item.state is SourceState.STREAMING and item.source.startswith("ble-hr"):
                self.hr_link_down = False
            elif item.state is SourceState.NO_CONTACT:
                self.contact = "not_detected"
            return
        if not isinstance(item, Reading) or (item.value is None and item.kind is not Kind.HEART_RATE):
            return
        self.readings += 1
        match item.kind:
            case Kind.HEART_RATE:
                self.contact = item.contact.value if item.contact is not None else self.contact
                if item.value is not None:
                    self.hr = _Latest(item.value, now)
                    self.hr_link_down = False
                for rr in item.rr_s:
                    if len(self.rr) < MAX_RR_PER_SAMPLE and 0 < rr < 64:
                        self.rr.append(min(_U16, round(rr * 1024)))
            case Kind.CADENCE:
                assert item.value is not None
                self.cadence = _Latest(item.value, now)
            case Kind.POWER:
                assert item.value is not None
                self.power = _Latest(item.value, now)
            case Kind.RESISTANCE:
                assert item.value is not None
                self.resistance = _Latest(item.value, now)
            case _:
                pass

    def take(self, seq: int, ride_t: float, now: float | None = None) -> Sample:
        """The sample for ride second `ride_t`, judged stale or not at `now` (default: `ride_t`, for a
        caller whose clock is the ride clock); RR intervals are consumed."""
        now = ride_t if now is None else now
        hr = None
        stale = False
        if self.hr is not None:
            hr = max(0, min(_U16, round(self.hr.value)))
            stale = now - self.hr.t > self.stale_after_s
        rr, self.rr = tuple(self.rr), []
        return Sample(
            seq=seq,
            t=ride_t,
            hr=hr,
            rr=rr,
            cadence=self._int(self.cadence, now),
            power_dw=self._int(self.power, now, scale=10),
            resistance=self._int(self.resistance, now),
            contact=self.contact if hr is not None else None,
            stale=stale,
            gap=self.hr_link_down and hr is not None,
        )

    def _int(self, latest: _Latest | None, now: float, scale: int = 1) -> int | None:
        # A bike metric older than the staleness limit is unknown now, not its last value.
        if latest is None or now - latest.t > self.stale_after_s:
            return None
        return max(0, min(_U16 * 16, round(latest.value * scale)))
