"""Ride samples for benchmarks, as sensors report them at 1 Hz.

Heart rate and cadence drift a beat or a revolution at a time, power is noisy (±15 W) around a target that
changes every minute, resistance steps with it, and each sample carries one RR interval with beat-to-beat
variation. Sizes of delta-coded batches depend on this: `uniform_noise` (every field drawn independently
each second, which no sensor does) is kept beside it so that the difference is visible in the benchmark.
"""

from __future__ import annotations

import random

from engine.ride.samples import Sample

T0 = 1_764_000_000.0


class RideSignal:
    """A deterministic (per seed) ride; `sample(seq)` must be called with seq 0, 1, 2, ..."""

    def __init__(self, seed: object = 0, t0: float = T0) -> None:
        self.rng = random.Random(str(seed))
        self.t0 = t0
        self.hr, self.cadence, self.target, self.resistance = 110, 85, 1800, 40

    def sample(self, seq: int) -> Sample:
        rng = self.rng
        self.hr = min(185, max(90, self.hr + rng.choice((-1, 0, 0, 0, 1))))
        self.cadence = min(110, max(60, self.cadence + rng.randint(-2, 2)))
        if seq % 60 == 0:
            self.target = rng.randint(1200, 2800)
            self.resistance = rng.randint(20, 60)
        return Sample(
            seq=seq,
            t=self.t0 + seq,
            hr=self.hr,
            rr=(61_440 // self.hr + rng.randint(-12, 12),),
            cadence=self.cadence,
            power_dw=max(0, self.target + rng.randint(-150, 150)),
            resistance=self.resistance,
            contact="detected",
        )

    def take(self, count: int) -> list[Sample]:
        """The next `count` samples."""
        start = getattr(self, "_next", 0)
        self._next = start + count
        return [self.sample(seq) for seq in range(start, start + count)]


_BENCH_RIDE: list[Sample] = []
_BENCH_SIGNAL = RideSignal("bench-store")


def bench_store_sample(seq: int) -> Sample:
    """Sample `seq` of `ridesync bench store`'s realistic 1 Hz ride, the same in every call."""
    while len(_BENCH_RIDE) <= seq:
        _BENCH_RIDE.append(_BENCH_SIGNAL.sample(len(_BENCH_RIDE)))
    return _BENCH_RIDE[seq]


def ride(count: int, seed: object = 0) -> list[Sample]:
    return RideSignal(seed).take(count)


def uniform_noise(count: int, seed: object = 0) -> list[Sample]:
    """Every field drawn independently each second (the earlier benchmarks' samples)."""
    rng = random.Random(str(seed))
    return [
        Sample(
            seq=seq,
            t=T0 + seq,
            hr=120 + rng.randint(-15, 30),
            rr=(rng.randint(420, 560),),
            cadence=80 + rng.randint(-8, 12),
            power_dw=1800 + rng.randint(-400, 900),
            resistance=rng.randint(200, 700),
        )
        for seq in range(count)
    ]


def periodic(count: int) -> list[Sample]:
    """The earlier `bench store` samples: every field a short arithmetic cycle. Delta coding plus LZMA2
    finds the cycles, so this flatters schema 2; kept to compare with figures measured on it."""
    return [periodic_sample(seq) for seq in range(count)]


def periodic_sample(seq: int) -> Sample:
    """Sample `seq` of `periodic`."""
    return Sample(
        seq=seq,
        t=T0 + seq,
        hr=120 + (seq * 7) % 50,
        rr=(60 * 1024 // (120 + (seq * 7) % 50),),
        contact="detected",
        cadence=75 + (seq * 3) % 25,
        power_dw=1200 + (seq * 37) % 1500,
        resistance=30 + (seq // 60) % 30,
    )
