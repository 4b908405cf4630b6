"""A ride's time series for the dashboard's ride page (`GET /v1/rides/{id}/series`, contract in
engine/dashboard/README.md): `[seconds since t0, value or null]` per metric, from the resolved view's
sources: the authoritative bike's samples, heart-rate gaps filled from the app by the policy's rule 3.

A null is written wherever there is no usable value, and after a hole of more than `BREAK_S` in the
samples, so a chart breaks its line instead of drawing through the gap or down to 0.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

from engine.ride import policy, segments
from engine.ride.model import RideDocs
from engine.ride.samples import Sample
from engine.ride.schema import DocKind

BREAK_S = 2.5
DEFAULT_MAX_POINTS = 2000
METRICS = ("hr", "pwr", "cad")

Point = tuple[float, float | None]


def filled_hr(bike: Sequence[Sample], apps: Sequence[tuple[str, Sequence[Sample]]]) -> list[Sample]:
    """The app samples whose heart rate the policy uses to fill the bike's gaps (rule 3, from the policy
    itself: `policy.gap_fill`)."""
    return [sample for _, sample in policy.gap_fill(bike, apps)]


def _near(times: Sequence[float], t: float, window: float) -> bool:
    i = bisect.bisect_left(times, t - window)
    return i < len(times) and times[i] <= t + window


def ride_series(docs: RideDocs, max_points: int = DEFAULT_MAX_POINTS) -> dict[str, Any]:
    docs = segments.merged(docs)
    devices = sorted(docs.devices, key=lambda d: d.device)
    authority, _ = policy.authoritative_bike(devices, docs.owner)
    apps = [(d.device, d.samples) for d in devices if d.ref.kind is DocKind.APP]
    bike = list(authority.samples) if authority is not None else []
    fill = filled_hr(bike, apps)
    if not bike:
        # No bike document (yet): the app's own heart rate is all there is.
        source = sorted((s for _, samples in apps for s in samples), key=lambda s: (s.t, s.seq))
        hr = _points([(s.t, _hr(s)) for s in source])
        t0 = source[0].t if source else None
        return _result(docs.ride_id, t0, {"hr": hr, "pwr": [], "cad": []}, max_points)
    t0 = bike[0].t
    hr_raw = sorted([(s.t, _hr(s)) for s in bike] + [(s.t, _hr(s)) for s in fill], key=lambda p: p[0])
    # A bike sample without usable HR at a time the app filled is not a break in the line.
    filled_times = [s.t for s in fill]
    hr_raw = [p for p in hr_raw if p[1] is not None or not _near(filled_times, p[0], policy.GAP_MATCH_S)]
    series = {
        "hr": _points(hr_raw),
        "pwr": _points([(s.t, s.power_w) for s in bike]),
        "cad": _points([(s.t, None if s.cadence is None else float(s.cadence)) for s in bike]),
    }
    return _result(docs.ride_id, t0, series, max_points)


def _hr(sample: Sample) -> float | None:
    return float(sample.hr) if sample.hr is not None and sample.hr_usable() else None


def _points(raw: list[tuple[float, float | None]]) -> list[Point]:
    out: list[Point] = []
    for t, value in raw:
        if out and t - out[-1][0] > BREAK_S and out[-1][1] is not None:
            out.append((out[-1][0] + BREAK_S / 2, None))
        out.append((t, value))
    return out


def _downsample(points: list[Point], t0: float, span: float, max_points: int) -> list[list[float | None]]:
    if len(points) <= max_points:
        return [[round(t - t0, 2), v] for t, v in points]
    width = span / max_points if span > 0 else 1.0
    sums: dict[int, list[float]] = {}
    for t, v in points:
        bucket = min(int((t - t0) / width), max_points - 1)
        acc = sums.setdefault(bucket, [])
        if v is not None:
            acc.append(v)
    out: list[list[float | None]] = []
    for bucket in sorted(sums):
        values = sums[bucket]
        mean = round(math.fsum(values) / len(values), 1) if values else None
        out.append([round(bucket * width, 2), mean])
    return out


def _result(
    ride_id: str, t0: float | None, series: dict[str, list[Point]], max_points: int
) -> dict[str, Any]:
    if t0 is None:
        return {"ride_id": ride_id, "t0": None, "series": {m: [] for m in METRICS}}
    end = max((p[0] for pts in series.values() for p in pts), default=t0)
    return {
        "ride_id": ride_id,
        "t0": t0,
        "series": {m: _downsample(series.get(m, []), t0, end - t0, max_points) for m in METRICS},
    }
