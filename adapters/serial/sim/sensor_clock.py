"""The simulated DIY sensor's clock: milliseconds since the firmware booted, turned into the line
protocol's 1/1024 s ticks the way a firmware does it.

A lab cannot wait 70 minutes for every check, so the simulator can boot its clock anywhere
(`LineSensor(clock_start_ms=...)`), e.g. just before the two places where Arduino tick math goes wrong:

* `MILLIS_OVERFLOW_MS` (69 min 54.3 s): `millis() * 1024 / 1000` in uint32 overflows here, the times
  jump and a receiver sees something that looks like a sensor reboot;
* `MICROS_WRAP_MS` (71 min 34.97 s): `micros()` itself wraps; a firmware that keeps a 64-bit
  microsecond count across it (the reference sketch does) carries on without a step.

`TickMath` picks how the simulated firmware converts: `EXACT` (what a correct firmware sends, the
default), or one of the two shortcuts, so tests can show that a check really catches them:
`MILLIS_OVERFLOW` (the uint32 overflow above: one record spans the jump and its cadence comes out near
zero) and `MICROS_SHIFT` (`micros() >> 10`: 1.024 ms ticks taken for 1/1024 s ones, so every interval
looks 4.6 % shorter than it was and cadence comes out 4.9 % high).

Pure arithmetic, no I/O.
"""

from __future__ import annotations

import enum
import math

U16 = 1 << 16
U32 = 1 << 32
TICKS_PER_S = 1024

MILLIS_OVERFLOW_MS = U32 // TICKS_PER_S  # 4_194_304 ms: millis() * 1024 no longer fits in uint32
MICROS_WRAP_MS = U32 / 1000  # 4_294_967.296 ms: micros() wraps


class TickMath(enum.StrEnum):
    EXACT = "exact"
    MILLIS_OVERFLOW = "millis_overflow"
    MICROS_SHIFT = "micros_shift"


def sensor_ticks(boot_s: float, tick_math: TickMath = TickMath.EXACT) -> int:
    """The 16-bit tick count a firmware sends `boot_s` seconds after it booted."""
    if boot_s < 0 or not math.isfinite(boot_s):
        raise ValueError(f"sensor clock must be a finite time since boot, not {boot_s} s")
    if tick_math is TickMath.EXACT:
        return round(boot_s * TICKS_PER_S) % U16
    if tick_math is TickMath.MILLIS_OVERFLOW:
        millis = int(boot_s * 1000) % U32
        return ((millis * TICKS_PER_S) % U32 // 1000) % U16
    micros = int(boot_s * 1_000_000) % U32
    return (micros >> 10) % U16


def clock_label(ms: float) -> str:
    """`69:54.304` (minutes:seconds since boot), for reports."""
    minutes, seconds = divmod(ms / 1000, 60)
    return f"{int(minutes)}:{seconds:06.3f}"
