"""Heart-rate profiles for the simulated strap: a time series of target bpm, from a CSV or generated.

Pure and clock-free: `bpm_at(t)` interpolates the profile at simulated time t (seconds from the start),
and `rr_raw_for(bpm, beat)` gives plausible RR intervals in 1/1024 s. The strap decides how fast
simulated time runs (`--speed`).

CSV format: a header line `t_s,bpm` (extra columns ignored), then one row per point, times ascending.
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SAMPLE_PROFILES = Path(__file__).parent / "profiles"


class ProfileError(ValueError):
    """A heart-rate profile file or definition that cannot be played."""


@dataclass(frozen=True, slots=True)
class HrProfile:
    """Points (t_s, bpm), t strictly ascending from 0; linear between points, held after the last."""

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.points:
            raise ProfileError("a profile needs at least one point")
        last = -math.inf
        for t, bpm in self.points:
            if not (math.isfinite(t) and math.isfinite(bpm)):
                raise ProfileError(f"non-finite point ({t}, {bpm})")
            if t <= last:
                raise ProfileError(f"times must be strictly ascending (t={t} after t={last})")
            if not 20 <= bpm <= 300:
                raise ProfileError(f"{bpm} bpm at t={t} is outside 20..300")
            last = t

    @property
    def duration_s(self) -> float:
        return self.points[-1][0]

    def bpm_at(self, t: float) -> float:
        times = [p[0] for p in self.points]
        i = bisect_right(times, t)
        if i == 0:
            return self.points[0][1]
        if i == len(self.points):
            return self.points[-1][1]
        (t0, b0), (t1, b1) = self.points[i - 1], self.points[i]
        return b0 + (b1 - b0) * (t - t0) / (t1 - t0)

    @classmethod
    def from_csv(cls, path: str | Path) -> HrProfile:
        try:
            with open(path, newline="", encoding="utf-8") as f:
                return cls.from_rows(csv.DictReader(f), str(path))
        except OSError as exc:
            raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from exc

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, str]], origin: str = "<rows>") -> HrProfile:
        points: list[tuple[float, float]] = []
        for n, row in enumerate(rows, start=2):
            try:
                points.append((float(row["t_s"]), float(row["bpm"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise ProfileError(f"{origin}:{n}: expected numeric t_s,bpm columns ({exc})") from None
        return cls(tuple(points))


def class_profile(
    *,
    warmup_s: float = 300,
    intervals: int = 4,
    work_s: float = 120,
    rest_s: float = 60,
    cooldown_s: float = 180,
    rest_bpm: float = 70,
    work_bpm: float = 165,
    easy_bpm: float = 120,
) -> HrProfile:
    """A generated class: warm-up ramp, `intervals` work/rest blocks, cool-down."""
    if min(warmup_s, work_s, rest_s, cooldown_s) <= 0 or intervals < 0:
        raise ProfileError("phase durations must be positive and intervals non-negative")
    points: list[tuple[float, float]] = [(0.0, rest_bpm), (warmup_s, easy_bpm)]
    t = warmup_s
    for _ in range(intervals):
        points += [(t + work_s * 0.3, work_bpm), (t + work_s, work_bpm)]
        t += work_s
        points += [(t + rest_s, easy_bpm)]
        t += rest_s
    points.append((t + cooldown_s, rest_bpm + 15))
    return HrProfile(tuple(points))


def rr_raw_for(bpm: float, beat: int, variability: float = 0.03) -> int:
    """One RR interval (1/1024 s) for `bpm`, with a deterministic breathing-like wobble per beat."""
    period_s = 60.0 / bpm
    wobble = 1.0 + variability * math.sin(beat * 0.9)
    return max(1, min(0xFFFF, round(period_s * wobble * 1024)))


def beats_between(t0: float, t1: float, bpm: float) -> int:
    """How many beats fall in simulated time [t0, t1) at `bpm` (at least 0)."""
    return max(0, math.floor(t1 * bpm / 60.0) - math.floor(t0 * bpm / 60.0))


def validate_speed(speed: float) -> float:
    if not (math.isfinite(speed) and speed > 0):
        raise ProfileError(f"speed must be a positive number, got {speed}")
    return speed
