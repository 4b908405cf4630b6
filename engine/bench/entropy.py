"""How much information a ride's samples carry under delta coding: the order-0 empirical entropy of each
delta-coded column, in bytes.

Each column is coded as schema 2 codes it (engine/ride/compact.py): seq and time as steps from the previous
sample, each metric and the RR intervals as changes from the previous present value, contact and marks as
values. The order-0 entropy of a column is what an ideal coder that sees each symbol alone, with the
column's own symbol frequencies known for free, would spend: n * H(empirical distribution). It is not a hard
lower bound (a coder that uses context, or one column to predict another, can do better; the frequency
table itself is not counted), but it is the yardstick for "how close to the data is this encoding" that a
delta-and-varint format can be held to.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from engine.ride.samples import Sample

METRICS = ("hr", "cadence", "power_dw", "resistance")


def order0_bits(symbols: Iterable[object]) -> float:
    """n * H: bits an ideal order-0 coder spends on `symbols` given their empirical frequencies."""
    counts = Counter(symbols)
    n = sum(counts.values())
    return -sum(c * math.log2(c / n) for c in counts.values()) if n else 0.0


def _deltas(values: Iterable[int]) -> list[int]:
    out, previous = [], 0
    for value in values:
        out.append(value - previous)
        previous = value
    return out


def delta_columns(samples: Sequence[Sample]) -> dict[str, list[object]]:
    """The columns of `samples` as schema 2 delta-codes them (before the varint step)."""
    columns: dict[str, list[object]] = {
        "seq": list(_deltas(s.seq for s in samples)),
        "t": list(_deltas(s.t_cs for s in samples)),
        "contact": [s.contact for s in samples],
        "marks": [(s.stale, s.gap) for s in samples],
    }
    for name in METRICS:
        # Presence is a column of its own (the runs of present / absent); deltas skip the absent samples.
        values = [getattr(s, name) for s in samples]
        columns[f"{name}_present"] = [v is not None for v in values]
        columns[name] = list(_deltas(v for v in values if v is not None))
    columns["rr_count"] = [len(s.rr) for s in samples]
    columns["rr"] = list(_deltas(v for s in samples for v in s.rr))
    return columns


def delta_entropy_bytes(samples: Sequence[Sample]) -> dict[str, float]:
    """Order-0 entropy of every delta-coded column of `samples`, in bytes, and their sum (`total`)."""
    out = {name: order0_bits(column) / 8 for name, column in delta_columns(samples).items()}
    out["total"] = sum(out.values())
    # abs(): a constant column's -0.0 reads as 0.
    return {name: round(abs(value), 1) for name, value in out.items()}
