"""Small shared helpers for benchmarks: repeat a callable and report the best-of-N rate."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_rate(fn: Callable[[], int], repeats: int = 5) -> tuple[float, float]:
    """Run `fn` (which returns how many units it processed) `repeats` times.

    Returns (units per second of the fastest run, seconds of the fastest run). The fastest run is the
    least disturbed by other load on a shared 2-core machine.
    """
    best_s = float("inf")
    units = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        units = fn()
        best_s = min(best_s, time.perf_counter() - t0)
    return units / best_s, best_s
