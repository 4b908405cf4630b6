"""Ride samples for tests: one shape of a plausible 1 Hz sample, at a fixed start time per suite."""

from __future__ import annotations

from typing import Any

from engine.ride.samples import Sample

# The backend tests' rides start here (2026-11-18); the store tests' at STORE_T0 (2023-11-14). Both are
# fixed so that retention and token-expiry arithmetic in a test reads the same on every run.
T0 = 1_795_000_000.0
STORE_T0 = 1_700_000_000.0


def sample(seq: int, t0: float = T0, **kw: Any) -> Sample:
    fields: dict[str, Any] = {
        "hr": 120 + seq % 40,
        "contact": "detected",
        "cadence": 80 + seq % 15,
        "power_dw": 1500 + (seq * 37) % 900,
        "resistance": 30 + seq % 20,
    }
    fields.update(kw)
    return Sample(seq=seq, t=t0 + seq, **fields)


def make_sample(seq: int, t0: float = STORE_T0, **kw: Any) -> Sample:
    return sample(seq, t0, **kw)
