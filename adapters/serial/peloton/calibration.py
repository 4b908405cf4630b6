"""The bike's resistance calibration: 31 raw readings at 0, 3.33, ..., 100 % resistance.

The bike reports resistance as a raw ADC value; the head unit reads this table at boot (`F7 00`..`F7 1E`)
and maps raw to percent by linear interpolation between neighbouring entries (PeloMon does the same).
Outside the table's range the percent is clamped to 0 or 100: the knob cannot go further than its stops.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.serial.peloton.wire import CALIBRATION_ENTRIES

_STEP = 100.0 / (CALIBRATION_ENTRIES - 1)


@dataclass(frozen=True, slots=True)
class CalibrationTable:
    raw: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.raw) != CALIBRATION_ENTRIES:
            raise ValueError(f"a calibration table has {CALIBRATION_ENTRIES} entries, got {len(self.raw)}")
        if any(b <= a for a, b in zip(self.raw, self.raw[1:], strict=False)):
            raise ValueError("calibration entries must strictly increase")

    def percent(self, raw: int) -> float:
        table = self.raw
        if raw <= table[0]:
            return 0.0
        if raw >= table[-1]:
            return 100.0
        # 31 entries: a linear scan costs less than bisect's call overhead and reads plainly.
        i = 0
        while raw > table[i + 1]:
            i += 1
        lo, hi = table[i], table[i + 1]
        return round(_STEP * (i + (raw - lo) / (hi - lo)), 2)


class CalibrationCollector:
    """Gathers entries as they arrive (any order, repeats overwrite) until all 31 are known."""

    def __init__(self) -> None:
        self._entries: list[int | None] = [None] * CALIBRATION_ENTRIES

    def add(self, index: int, raw: int) -> None:
        self._entries[index] = raw

    @property
    def known(self) -> int:
        return sum(e is not None for e in self._entries)

    def table(self) -> CalibrationTable | None:
        """The table once every entry is known, None before. Raises ValueError if it is not monotonic."""
        entries = self._entries
        if any(e is None for e in entries):
            return None
        return CalibrationTable(tuple(e for e in entries if e is not None))

    def reset(self) -> None:
        self._entries = [None] * CALIBRATION_ENTRIES
