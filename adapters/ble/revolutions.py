"""Cumulative revolution data (wheel and crank) and the rate derived from it, sans-I/O.

CSC and Cycling Power sensors do not send a cadence or a speed: they send a cumulative revolution count
and the sensor time of the last revolution event. The rate over two notifications is (revolutions between
them) / (event time between them), so a lost notification only widens the averaging window.

`RevolutionRate` turns successive `RevolutionData` into revolutions per minute:

* both counters wrap (revolutions at 2^16 or 2^32, event time at 2^16 ticks): differences are taken
  modulo the field size, which is exact while less than one wrap passes between two notifications. More
  host time than one event-time wrap (64 s at 1/1024 s, 32 s at 1/2048 s) since the previous
  notification makes the difference ambiguous, so the baseline restarts;
* a repeated event time means no revolution since: the last rate is held, but never above what one
  revolution in the time since the last new revolution allows (60 / seconds), so a crank that stops
  shows a cadence falling towards 0, then 0 after `stop_after_s`. The first revolution after a stop
  spans the whole pause and would report a crawl, so it only restarts the baseline;
* a counter that goes backwards (a sensor reboot, a battery swap) looks, modulo the field size, like a
  huge jump: any rate above `max_per_min` restarts the baseline instead of being reported, as does an
  event time that moves without a revolution or a revolution without the event time moving.

Host time (`at_s`, e.g. `time.monotonic()` at arrival) is passed in by the caller, never read here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

EVENT_TIME_MOD = 1 << 16


@dataclass(frozen=True, slots=True)
class RevolutionData:
    """Cumulative revolutions and the sensor time of the last revolution event, in 1/`ticks_per_s` s.

    `revs_bits` is the counter's width: 32 for wheel revolutions, 16 for crank revolutions.
    """

    revs: int
    event_time_raw: int
    ticks_per_s: int
    revs_bits: int

    @property
    def event_time_s(self) -> float:
        return self.event_time_raw / self.ticks_per_s

    def require_ticks(self, ticks_per_s: int) -> None:
        """For encoders: a field's event time has one unit, and a value in another would be misread."""
        if self.ticks_per_s != ticks_per_s:
            raise ValueError(f"this event time is in 1/{ticks_per_s} s, not 1/{self.ticks_per_s} s")


@dataclass(frozen=True, slots=True)
class RateUpdate:
    """`per_min`: revolutions per minute. `held`: no new revolution, the last rate (bounded by the time
    since the last revolution) still stands. `stopped`: no revolution for stop_after_s, rate 0."""

    per_min: float
    new_revs: int
    held: bool = False
    stopped: bool = False


@dataclass(slots=True)
class RateCounters:
    samples: int = 0
    restarts: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class RevolutionRate:
    """Revolutions per minute from successive cumulative revolution data of one sensor."""

    def __init__(self, *, max_per_min: float, stop_after_s: float = 3.0) -> None:
        if not max_per_min > 0 or not stop_after_s > 0:
            raise ValueError("max_per_min and stop_after_s must be > 0")
        self._max = max_per_min
        self._stop_after_s = stop_after_s
        self._prev: RevolutionData | None = None
        self._prev_at = 0.0
        self._last_rev_at = 0.0  # host time of the notification that brought the last new revolution
        self._rate: float | None = None
        self._stopped = False
        self.counters = RateCounters()

    def reset(self) -> None:
        """Forget the baseline (a new connection, or a sensor known to have restarted)."""
        self._prev = None
        self._rate = None
        self._stopped = False

    def update(self, data: RevolutionData, at_s: float) -> RateUpdate | None:
        """The rate after this notification, or None while it is not known yet."""
        self.counters.samples += 1
        prev, prev_at = self._prev, self._prev_at
        self._prev, self._prev_at = data, at_s
        if prev is None or prev.ticks_per_s != data.ticks_per_s or prev.revs_bits != data.revs_bits:
            self._baseline(at_s)
            return None
        if at_s - prev_at >= EVENT_TIME_MOD / data.ticks_per_s:
            return self._restart(at_s)
        d_revs = (data.revs - prev.revs) % (1 << data.revs_bits)
        d_ticks = (data.event_time_raw - prev.event_time_raw) % EVENT_TIME_MOD
        if d_revs == 0 and d_ticks == 0:
            return self._no_new_revolution(at_s)
        if d_revs == 0 or d_ticks == 0:
            return self._restart(at_s)
        rate = d_revs * 60 * data.ticks_per_s / d_ticks
        if rate > self._max:
            return self._restart(at_s)
        self._last_rev_at = at_s
        if self._stopped:
            self._stopped = False
            self._rate = None
            return None
        self._rate = rate
        return RateUpdate(round(rate, 1), d_revs)

    def _no_new_revolution(self, at_s: float) -> RateUpdate | None:
        since = at_s - self._last_rev_at
        if self._stopped or since >= self._stop_after_s:
            self._stopped = True
            self._rate = 0.0
            return RateUpdate(0.0, 0, stopped=True)
        if self._rate is None:
            return None
        bound = 60 / since if since > 0 else self._rate
        return RateUpdate(round(min(self._rate, bound), 1), 0, held=True)

    def _baseline(self, at_s: float) -> None:
        self._rate = None
        self._stopped = False
        self._last_rev_at = at_s

    def _restart(self, at_s: float) -> RateUpdate | None:
        """Start over from the current notification; always None, the rate is unknown again."""
        self.counters.restarts += 1
        self._baseline(at_s)
        return None


def wheel_speed_kmh(wheel_per_min: float, circumference_m: float) -> float:
    """Road speed from wheel revolutions per minute and the wheel's circumference."""
    return wheel_per_min * circumference_m * 60 / 1000
