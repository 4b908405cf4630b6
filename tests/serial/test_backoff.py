"""Reconnect backoff: exponential, full jitter, capped, and never zero (no busy loop on a dead port)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from adapters.serial.link import backoff_delay


@given(st.integers(0, 60), st.floats(0.01, 2.0), st.floats(0.5, 60.0), st.integers(0, 2**32))
def test_delay_is_bounded(attempt: int, base: float, cap: float, seed: int) -> None:
    d = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert base / 4 <= d <= max(base / 4, min(cap, base * 2**attempt))


def test_delays_grow_until_the_cap_and_are_jittered() -> None:
    rng = random.Random(1)
    early = [backoff_delay(0, base=0.2, cap=5.0, rng=rng) for _ in range(200)]
    late = [backoff_delay(10, base=0.2, cap=5.0, rng=rng) for _ in range(200)]
    assert max(early) <= 0.2 < max(late) <= 5.0
    assert len(set(late)) > 100  # full jitter: reconnecting clients do not stampede together
