"""Who rides in the demo class: names, devices, heart-rate and power character. Pure data, seeded.

Every rider gets a different heart-rate profile (resting and peak rates, interval timing) and a different
power scale, so the tiles and the leaderboard move like a real room, not like eight copies of one file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = (
    "Ann", "Ben", "Chloe", "Dev", "Elif", "Femi", "Gus", "Hana", "Ivo", "Jade", "Kofi", "Lena",
    "Milo", "Nia", "Omar", "Pia", "Quinn", "Rosa", "Sami", "Tess", "Uma", "Vik", "Wen", "Yara",
)  # fmt: skip
MAX_RIDERS = 24
BIKE_PROTOCOLS = ("peloton", "line")
# `--mix`: every kind of bike in one room, repeating every six riders: Peloton-bus bikes, a DIY cadence
# sensor, and standard BLE bikes of all three profiles (an FTMS trainer, a Cycling Power meter, a Cycling
# Speed and Cadence pod).
MIX = ("peloton", "ble-ftms", "line", "ble-cps", "peloton", "ble-csc")
BLE_PREFIX = "ble-"
# The bikes that measure power: a CSC pod and a DIY reed switch only count revolutions.
WITH_POWER = frozenset({"peloton", "ble-ftms", "ble-cps"})


@dataclass(frozen=True, slots=True)
class RiderSpec:
    index: int
    device: str  # the bike replica's device id (its token's device)
    name: str
    max_hr: int
    # Heart-rate profile points (simulated seconds, bpm): warm-up, intervals, cool-down.
    hr_points: tuple[tuple[float, float], ...]
    # "peloton": a Peloton-bus bike in poll mode (cadence, power, resistance);
    # "line": a DIY reed-switch cadence sensor on the line protocol (cadence only: it has no power meter);
    # "ble-ftms", "ble-cps", "ble-csc" (`--mix` only): a standard BLE bike of that profile.
    bike: str
    power_scale: float  # multiplies the generated ride's power: riders of different strength
    seed: int
    # Seconds of the class already ridden when the demo starts (the bike profile skips them too).
    start_at_s: int = 0

    @property
    def has_power(self) -> bool:
        return self.bike in WITH_POWER

    @property
    def ble_profile(self) -> str | None:
        """ "ftms", "cps" or "csc" for a BLE bike; None for a serial one."""
        return self.bike.removeprefix(BLE_PREFIX) if self.bike.startswith(BLE_PREFIX) else None


def hr_points(rng: random.Random, max_hr: int) -> tuple[tuple[float, float], ...]:
    rest = rng.uniform(58, 78)
    easy = rng.uniform(0.62, 0.70) * max_hr
    work = rng.uniform(0.84, 0.95) * max_hr
    warmup = rng.uniform(120, 300)
    work_s = rng.uniform(60, 150)
    rest_s = rng.uniform(40, 90)
    points: list[tuple[float, float]] = [(0.0, rest), (warmup, easy)]
    t = warmup
    for _ in range(4):
        points += [(t + work_s * 0.3, work), (t + work_s, work + rng.uniform(-4, 4))]
        t += work_s
        points.append((t + rest_s, easy))
        t += rest_s
    points.append((t + 180, rest + 15))
    return tuple((round(pt, 1), round(bpm, 1)) for pt, bpm in points)


def shifted(points: tuple[tuple[float, float], ...], offset: float) -> tuple[tuple[float, float], ...]:
    """The profile as seen from `offset` seconds in: starts at 0 with the rate at the offset."""
    if offset <= 0:
        return points
    later = [(t - offset, bpm) for t, bpm in points if t > offset]
    before = [(t, bpm) for t, bpm in points if t <= offset]
    if not later:
        return ((0.0, before[-1][1]),)
    t0, b0 = before[-1]
    t1, b1 = later[0][0] + offset, later[0][1]
    start = b0 + (b1 - b0) * (offset - t0) / (t1 - t0)
    return ((0.0, round(start, 1)), *later)


def make_roster(n: int, *, seed: int = 2026, start_at_s: int = 0, mix: bool = False) -> list[RiderSpec]:
    """`n` riders; every third one rides a DIY cadence sensor, the others Peloton-bus bikes. With `mix`,
    the bikes follow `MIX` instead (BLE bikes among them)."""
    if not 1 <= n <= MAX_RIDERS:
        raise ValueError(f"the demo takes 1..{MAX_RIDERS} riders, not {n}")
    rng = random.Random(seed)
    riders = []
    for i in range(n):
        max_hr = rng.randrange(172, 198)
        points = hr_points(rng, max_hr)
        riders.append(
            RiderSpec(
                index=i,
                device=f"bike-{i + 1:02d}",
                name=NAMES[i],
                max_hr=max_hr,
                hr_points=shifted(points, start_at_s),
                bike=MIX[i % len(MIX)] if mix else BIKE_PROTOCOLS[1] if i % 3 == 2 else BIKE_PROTOCOLS[0],
                power_scale=round(rng.uniform(0.7, 1.35), 2),
                seed=seed + i,
                start_at_s=start_at_s,
            )
        )
    return riders
