"""Ride profiles: what the bike measures, one sample per second of ride time.

Generated (warm-up, intervals, cool-down) or read from a CSV with columns cadence,power,resistance
(a header row is optional; resistance is the bike's raw value, as on the bus).
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path

from adapters.serial.peloton.synth import DEFAULT_CALIBRATION, BikeSample


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True)
class RideProfile:
    samples: tuple[BikeSample, ...]

    def __post_init__(self) -> None:
        if not self.samples:
            raise ProfileError("a profile needs at least one sample")

    @property
    def duration_s(self) -> int:
        return len(self.samples)

    def at(self, ride_s: float) -> BikeSample:
        """The sample for a moment of ride time; past the end the last one holds."""
        i = min(max(int(ride_s), 0), len(self.samples) - 1)
        return self.samples[i]

    @classmethod
    def generated(cls, duration_s: int = 1800, *, seed: int = 0) -> RideProfile:
        """Warm-up (first 15%), 2-min-on/1-min-off intervals, cool-down (last 15%), with a little noise."""
        if duration_s < 1:
            raise ProfileError("duration must be at least 1 s")
        rng = random.Random(seed)
        warm, cool = int(duration_s * 0.15), int(duration_s * 0.85)
        table = DEFAULT_CALIBRATION
        out = []
        for s in range(duration_s):
            if s < warm:
                effort = 0.3 + 0.4 * s / max(warm, 1)
            elif s >= cool:
                effort = 0.7 - 0.5 * (s - cool) / max(duration_s - cool, 1)
            else:
                effort = 1.0 if (s - warm) % 180 < 120 else 0.5
            cadence = max(0, round(60 + 40 * effort + rng.uniform(-3, 3)))
            power = max(0.0, round(80 + 220 * effort + rng.uniform(-10, 10), 1))
            level = min(30.0, max(0.0, 30 * effort + 2 * math.sin(s / 30)))
            lo = table[int(level)]
            hi = table[min(int(level) + 1, 30)]
            resistance = round(lo + (hi - lo) * (level - int(level)))
            out.append(BikeSample(cadence, power, resistance))
        return cls(tuple(out))

    @classmethod
    def from_csv(cls, path: str | Path) -> RideProfile:
        out = []
        try:
            with open(path, newline="") as f:
                for n, row in enumerate(csv.reader(f), start=1):
                    if not row or row[0].strip().startswith("#"):
                        continue
                    if n == 1 and not row[0].strip().replace(".", "", 1).isdigit():
                        continue  # header
                    if len(row) < 3:
                        raise ProfileError(f"{path}:{n}: expected cadence,power,resistance")
                    try:
                        cadence, power, resistance = int(row[0]), float(row[1]), int(row[2])
                    except ValueError:
                        raise ProfileError(f"{path}:{n}: not numbers: {','.join(row)}") from None
                    if not (0 <= cadence <= 999 and 0 <= power <= 9999.9 and 0 <= resistance <= 9999):
                        raise ProfileError(f"{path}:{n}: out of range for the bus: {','.join(row)}")
                    out.append(BikeSample(cadence, power, resistance))
        except OSError as exc:
            raise ProfileError(f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ProfileError(f"{path}: not a text CSV file") from None
        return cls(tuple(out))
