"""What an export holds: a ride's resolved view plus its samples as rows, in plain data (sans-I/O).

`from_docs` builds it from a ride's decoded documents with the policy's own rules, so an exported file
shows what `GET /v1/rides/{id}` and the ride page show:
- **Rows**: the authoritative bike's samples (policy rule 2), one row each, in time order. Heart rate
  appears only where it is usable (contact detected or unsupported, not stale, no gap); a strap that lost
  contact is an empty cell, never 0. Where the policy fills a heart-rate gap from an app (rule 3), the
  app's value goes into the bike row within `MERGE_S` that has no usable heart rate; an app sample with no
  such row becomes a row of its own (heart rate and RR only). A ride with no bike document yet exports
  the app's own samples (as the ride page does).
- **Laps**: ridesync records no lap markers, so a ride is one lap from its first row to its last.
- **Totals**: the view's totals (the backend's official ones once the ride is finalized).
- **Start**: the first row's time; for a ride without samples, its earliest phase claim or end event, and
  for one without any of those (a `pending` ride), `NO_TIME`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.ride import policy, segments
from engine.ride.model import RideDocs
from engine.ride.samples import Sample
from engine.ride.schema import DocKind

MERGE_S = policy.FILL_SPACING_S
# The start of a ride with no samples and no dated claim: FIT's epoch, the earliest date every format holds.
NO_TIME = 631_065_600.0  # 1989-12-31T00:00:00Z


@dataclass(frozen=True, slots=True)
class Row:
    """One sample. `t` is unix seconds; every metric is None when absent or unusable."""

    t: float
    device: str
    seq: int
    hr: int | None = None
    hr_device: str | None = None
    rr: tuple[int, ...] = ()  # 1/1024 s each, as the strap sends them
    cadence: int | None = None
    power_w: float | None = None
    resistance: int | None = None


@dataclass(frozen=True, slots=True)
class Lap:
    start_t: float
    end_t: float
    first: int  # index of its first row
    count: int  # rows in it


@dataclass(frozen=True, slots=True)
class ExportRide:
    ride_id: str
    phase: str
    authority: str
    start_t: float
    rows: tuple[Row, ...] = ()
    laps: tuple[Lap, ...] = ()
    totals: dict[str, Any] = field(default_factory=dict)
    title: str | None = None
    notes: str | None = None

    @property
    def duration_s(self) -> float:
        value = self.totals.get("duration_s")
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        return self.rows[-1].t - self.rows[0].t if self.rows else 0.0

    def total(self, name: str) -> float | None:
        """A numeric total, or None when the view has none (e.g. no power meter)."""
        value = self.totals.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None


def _usable_hr(sample: Sample) -> int | None:
    return sample.hr if sample.hr is not None and sample.hr_usable() else None


def _row(device: str, sample: Sample, metrics: bool = True) -> Row:
    hr = _usable_hr(sample)
    return Row(
        t=sample.t,
        device=device,
        seq=sample.seq,
        hr=hr,
        hr_device=device if hr is not None else None,
        rr=sample.rr if hr is not None else (),
        cadence=sample.cadence if metrics else None,
        power_w=sample.power_w if metrics else None,
        resistance=sample.resistance if metrics else None,
    )


def rows_for(bike_device: str, bike: Sequence[Sample], fill: Sequence[tuple[str, Sample]]) -> list[Row]:
    """The bike's rows with the policy's gap-fill heart rate merged in (module docstring)."""
    rows = sorted((_row(bike_device, s) for s in bike), key=lambda r: (r.t, r.seq))
    times = [r.t for r in rows]
    extra: list[Row] = []
    for device, sample in fill:
        hr = _usable_hr(sample)
        if hr is None:
            continue
        i = bisect.bisect_left(times, sample.t - MERGE_S)
        target = None
        while i < len(rows) and rows[i].t <= sample.t + MERGE_S:
            if rows[i].hr is None:
                target = i
                break
            i += 1
        if target is None:
            extra.append(_row(device, sample, metrics=False))
            continue
        old = rows[target]
        rows[target] = Row(
            t=old.t,
            device=old.device,
            seq=old.seq,
            hr=hr,
            hr_device=device,
            rr=sample.rr,
            cadence=old.cadence,
            power_w=old.power_w,
            resistance=old.resistance,
        )
    return sorted(rows + extra, key=lambda r: (r.t, r.device, r.seq))


def from_docs(docs: RideDocs) -> ExportRide:
    docs = segments.merged(docs)
    view = policy.resolve(docs)
    devices = sorted(docs.devices, key=lambda d: d.device)
    authority, _ = policy.authoritative_bike(devices, docs.owner)
    apps = [(d.device, d.samples) for d in devices if d.ref.kind is DocKind.APP]
    if authority is not None and authority.samples:
        rows = rows_for(authority.device, authority.samples, policy.gap_fill(authority.samples, apps))
    else:
        rows = sorted(
            (_row(dev, s, metrics=False) for dev, samples in apps for s in samples),
            key=lambda r: (r.t, r.device, r.seq),
        )
    return build(
        docs.ride_id,
        rows,
        totals=view.totals,
        phase=view.phase.label,
        authority=view.authority,
        shared=view.shared,
        fallback_t=_claim_time(docs),
    )


def build(
    ride_id: str,
    rows: Sequence[Row],
    *,
    totals: dict[str, Any] | None = None,
    phase: str = "ended",
    authority: str = "bike",
    shared: dict[str, Any] | None = None,
    fallback_t: float | None = None,
) -> ExportRide:
    """An export from rows already in time order (tests build rides this way too)."""
    rows = tuple(rows)
    start = rows[0].t if rows else (fallback_t if fallback_t is not None else NO_TIME)
    laps = (Lap(start, rows[-1].t, 0, len(rows)),) if rows else (Lap(start, start, 0, 0),)
    shared = shared or {}
    title = shared.get("title")
    notes = shared.get("notes")
    return ExportRide(
        ride_id=ride_id,
        phase=phase,
        authority=authority,
        start_t=start,
        rows=rows,
        laps=laps,
        totals=dict(totals or {}),
        title=title if isinstance(title, str) else None,
        notes=notes if isinstance(notes, str) else None,
    )


def _claim_time(docs: RideDocs) -> float | None:
    times = [c.t for d in docs.devices for c in (d.active, d.ended) if c is not None]
    times += [e.t for b in docs.backends for e in b.end_events]
    times = [t for t in times if math.isfinite(t) and t >= NO_TIME]
    return min(times) if times else None
