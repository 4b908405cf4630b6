"""Cumulative revolutions synthesised from a rate, as a crank power meter or cadence pod reports them.

Sans-I/O. A bike that only knows its cadence (a Peloton bus, a DIY reed sensor behind a serial line)
must send, on Cycling Power and CSC, what a real crank sensor counts: the cumulative number of whole
revolutions and the event time of the last one (1/1024 s, uint16, wrapping every 64 s). A central
derives cadence from the difference of two measurements, so both must be consistent: revolutions are
integrated over time at the rate that held (piecewise constant between readings), and the event time is
when the last whole revolution happened, not when the measurement is sent. A stopped crank repeats
the same count and event time, which is how a real sensor says "no new revolution".
"""

from __future__ import annotations

import math

from adapters.ble.revolutions import EVENT_TIME_MOD

# The fastest rate that is a rate at all: the bound bike_services.MAX_CADENCE_RPM puts on what a central
# believes. Anything faster (a glitch, a float gone to 1e308) would count absurd revolutions.
MAX_PER_MIN = 250.0


class RevolutionSynth:
    """Revolutions of one crank (or wheel) from a rate in revolutions per minute that changes over time."""

    def __init__(
        self,
        start_s: float,
        *,
        ticks_per_s: int = 1024,
        revs_bits: int = 16,
        max_per_min: float = MAX_PER_MIN,
    ) -> None:
        self.max_per_min = max_per_min
        self.ticks_per_s = ticks_per_s
        self.revs_bits = revs_bits
        self._start_s = start_s
        self._t = start_s
        self.per_min = 0.0
        self.revs = 0.0  # whole and fractional revolutions since start
        self.last_event_s = 0.0  # since start

    def advance(self, now_s: float) -> None:
        """Integrate up to `now_s` at the current rate; time going backwards is ignored."""
        dt = now_s - self._t
        if dt <= 0:
            return
        before = self.revs
        self.revs += self.per_min / 60 * dt
        self._t = now_s
        if self.per_min > 0 and math.floor(self.revs) > math.floor(before):
            # The last whole revolution came this long before now, at the rate that held.
            since_last = (self.revs - math.floor(self.revs)) * 60 / self.per_min
            self.last_event_s = now_s - self._start_s - since_last

    def set_rate(self, now_s: float, per_min: float) -> None:
        """From `now_s` on the crank turns at `per_min`; negative, NaN or above `max_per_min` counts as
        stopped (the model only passes rates it believes)."""
        self.advance(now_s)
        self.per_min = per_min if 0 < per_min <= self.max_per_min else 0.0

    def fields(self, now_s: float) -> tuple[int, int]:
        """(cumulative revolutions, event time of the last one in ticks), both wrapped as on the air."""
        self.advance(now_s)
        revs = math.floor(self.revs) % (1 << self.revs_bits)
        return revs, round(self.last_event_s * self.ticks_per_s) % EVENT_TIME_MOD
