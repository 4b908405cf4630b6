"""The authority policy: a pure function from a ride's decoded documents to its resolved view.

Input is plain data (engine/ride/model.py), never Automerge objects, and every rule below depends only on
the *set* of facts the documents hold, iterated in sorted order. Documents only grow (no key is ever
deleted, single-writer keys are written once), so the result is identical whatever order the replicas
merged in, and the phase can only move forward.

Rules:
1. Phase = the highest phase any document supports, in the order pending → active → ended → finalized:
   finalized if a backend document holds `finalized`; ended if the bike or an app claims `ended` or the
   backend recorded an end event; active if any device claims `active` or holds samples; else pending.
2. Authority: before `finalized`, the owning bike's document is the source of truth for ride metrics;
   from `finalized` on, the backend's official totals are, verbatim. The owning bike is `RideDocs.owner`
   (the backend binds it at the bike's first sync, and lets no other bike create a document in the ride);
   a replica that does not know the owner takes the ride's only bike document. Device ids never decide:
   any other bike document of a ride with an owner is ignored for every rule (listed in `problems`), and
   where several bike documents exist and the owner is unknown, none is authoritative (the ride cannot
   be finalized).
3. Gap filling (heart rate only; the app never supplies power or cadence). An app sample's heart rate is
   used iff (a) it is usable (present, contact detected or unsupported, not stale, no gap flag), (b) its
   time lies within the bike's recorded span [first bike sample, last bike sample], (c) no usable bike
   heart rate lies within ±GAP_MATCH_S (1.0 s) of it, and (d) no app sample already used lies within
   ±FILL_SPACING_S (0.5 s) — apps and samples taken in (device, t, seq) order. So the bike wins wherever
   it held the strap, and a lost strap or a bike-side gap is covered by the app at most once.
4. Totals over the bike's counted samples (rule 8) plus filled heart rate: duration_s = the bike's own
   `ended` claim's duration if it declared one, else its sample span; output_kj = sum of power *
   min(Δt, MAX_DT_S) to the next sample (a gap longer than 5 s adds nothing); energy_kcal = output_kj /
   (4.184 * 0.24), i.e. 24 % gross efficiency; avg/max heart rate over usable and filled values;
   avg/max power; avg cadence.
5. Divergences: every other source (each app from its own samples and claims, the bike after
   finalization) whose duration, output or heart rate differs from the authoritative value by more than a
   tolerance is listed, e.g. "bike 20:00 vs app 18:00". They are shown, never merged.
6. A ride's end counts once per distinct idempotency key across all end claims and end events; devices
   share the key `schema.end_key(ride_id)`, so `end_events_counted` is 1 for an ended ride.
7. Shared fields: for each field, an edit that another edit of that field names as `seen` is superseded.
   Among the rest, the winner is the highest (role rank backend > app > bike, writer time, edit key);
   concurrent losers are reported in `shared_conflicts`. Viewers' edits and invalid values are ignored.
   Once the ride is finalized, title, notes and rating stay editable by the ride's writers (naming or
   rating yesterday's ride is normal); targets, which steer a ride in progress, are frozen. `may_write` and
   `may_edit` say so, and the sync gate and the HTTP API apply them.
8. The ride's end and the samples after it. An end from any replica is the ride's one logical end (rule 6),
   but only the bike knows how its sample clock relates to the others' clocks, so the bike places it: its
   `ended` claim's `t` is the ride's end time on the bike's clock. When the bike stops by itself (duration,
   Ctrl-C) that is the moment it stopped; when it stops because it learned through sync that another
   replica ended the ride (an app's claim, the backend's end event), it is the earliest such end, read on
   the bike's clock (`earliest_other_end`; a bike that was offline learns it only when it reconnects). The
   bike's samples with `t` after its claim's `t` are kept in its document (and still declared in its claim:
   `count` is every sample it recorded, so finalization waits for them too) but excluded from every total
   and from gap filling; the view reports them as `after_end` (device → count) and the end time as `end_t`.
   Until the bike has claimed `ended`, every sample counts: the ride's end on the bike's clock is not
   known yet. The rule reads only the bike's single-writer claim, so every replica applies it alike.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from engine.ride import segments
from engine.ride.model import BackendDoc, DeviceDoc, Edit, RideDocs
from engine.ride.samples import Sample
from engine.ride.schema import SCHEMA_VERSION, DocKind, DocRef, Phase, Role

GAP_MATCH_S = 1.0
FILL_SPACING_S = 0.5
MAX_DT_S = 5.0
EFFICIENCY = 0.24
KCAL_KJ = 4.184
ROLE_RANK = {Role.BACKEND.value: 3, Role.APP.value: 2, Role.BIKE.value: 1}
TOLERANCE = {"duration_s": 1.0, "output_kj": 0.5, "avg_hr": 1.0, "max_hr": 1.0}


@dataclass(frozen=True, slots=True)
class Totals:
    duration_s: float = 0.0
    output_kj: float | None = None
    energy_kcal: float | None = None
    avg_hr: float | None = None
    max_hr: int | None = None
    avg_power_w: float | None = None
    max_power_w: float | None = None
    avg_cadence: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "output_kj": self.output_kj,
            "energy_kcal": self.energy_kcal,
            "avg_hr": self.avg_hr,
            "max_hr": self.max_hr,
            "avg_power_w": self.avg_power_w,
            "max_power_w": self.max_power_w,
            "avg_cadence": self.avg_cadence,
        }


@dataclass(frozen=True, slots=True)
class Divergence:
    metric: str
    authority: str
    authority_value: float
    source: str
    value: float

    @property
    def text(self) -> str:
        fmt = _clock if self.metric == "duration_s" else _num
        return f"{self.authority} {fmt(self.authority_value)} vs {self.source} {fmt(self.value)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "authority": self.authority,
            "authority_value": self.authority_value,
            "source": self.source,
            "value": self.value,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class RideView:
    ride_id: str
    phase: Phase
    authority: str
    samples: dict[str, int]
    totals: dict[str, Any]
    end_events_counted: int
    divergences: tuple[Divergence, ...] = ()
    gap_fill: dict[str, int] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)
    shared_conflicts: tuple[dict[str, Any], ...] = ()
    declared: dict[str, dict[str, int | None]] = field(default_factory=dict)
    missing_samples: dict[str, int] = field(default_factory=dict)
    ready_to_finalize: bool = False
    problems: tuple[str, ...] = ()
    end_t: float | None = None
    after_end: dict[str, int] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        value = self.totals.get("duration_s", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0

    def to_json(self) -> dict[str, Any]:
        """The JSON of `GET /v1/rides/{id}` (docs/architecture.md#interfaces-others-rely-on); sync state is
        added by the serving replica."""
        return {
            "ride_id": self.ride_id,
            "schema": SCHEMA_VERSION,
            "phase": self.phase.label,
            "authority": self.authority,
            "samples": dict(sorted(self.samples.items())),
            "duration_s": self.duration_s,
            "totals": self.totals,
            "end_events_counted": self.end_events_counted,
            "divergences": [d.to_json() for d in self.divergences],
            "gap_fill": dict(sorted(self.gap_fill.items())),
            "shared": self.shared,
            "shared_conflicts": list(self.shared_conflicts),
            "declared": self.declared,
            "missing_samples": self.missing_samples,
            "ready_to_finalize": self.ready_to_finalize,
            "problems": list(self.problems),
            "end_t": self.end_t,
            "after_end": dict(sorted(self.after_end.items())),
        }


# -- the policy ----------------------------------------------------------------------------------------


def resolve(docs: RideDocs) -> RideView:
    docs = segments.merged(docs)  # a bike's live segments are part of its bike document
    bike, ignored = authoritative_bike(docs.devices, docs.owner)
    devices = sorted(
        (d for d in docs.devices if d not in ignored), key=lambda d: (d.ref.kind.value, d.device)
    )
    bikes = [d for d in devices if d.ref.kind is DocKind.BIKE]
    apps = [d for d in devices if d.ref.kind is DocKind.APP]
    backends = sorted(docs.backends, key=lambda b: b.ref.device)
    problems = [f"{d.ref.kind.value}:{d.device}: {p}" for d in devices for p in d.problems]
    problems += [f"backend:{b.ref.device}: {p}" for b in backends for p in b.problems]
    if docs.shared is not None:
        problems += [f"shared: {p}" for p in docs.shared.problems]
    problems += [f"bike:{d.device}: not the ride's bike ({docs.owner} owns it); ignored" for d in ignored]
    if bike is None and len(bikes) > 1:
        problems.append(f"{len(bikes)} bike documents and no known owner: none is authoritative")

    phase = phase_of(devices, backends)
    finalization = next((b.finalized for b in backends if b.finalized is not None), None)

    end_t = bike_end_time(bike)
    counted = counted_samples(bike)
    after_end = (
        {bike.device: len(bike.samples) - len(counted)} if bike is not None and end_t is not None else {}
    )
    bike_totals, fill = compute_totals(counted, [a.samples for a in apps], [a.device for a in apps])
    if bike is not None and bike.ended is not None and bike.ended.duration_s is not None:
        bike_totals = _with_duration(bike_totals, bike.ended.duration_s)

    if phase is Phase.FINALIZED and finalization is not None:
        authority = Role.BACKEND.value
        totals = dict(finalization.totals)
    else:
        authority = Role.BIKE.value
        totals = bike_totals.to_json()

    sources: list[tuple[str, Totals]] = []
    if authority == Role.BACKEND.value and bike is not None:
        sources.append((Role.BIKE.value, bike_totals))
    for app in apps:
        own, _ = compute_totals(app.samples, [], [])
        if app.ended is not None and app.ended.duration_s is not None:
            own = _with_duration(own, app.ended.duration_s)
        label = Role.APP.value if len(apps) == 1 else f"app:{app.device}"
        sources.append((label, own))
    divergences = _divergences(authority, totals, sources)

    declared: dict[str, dict[str, int | None]] = {}
    missing: dict[str, int] = {}
    for dev in devices:
        if dev.ended is None:
            continue
        declared[dev.device] = {"last_seq": dev.ended.last_seq, "count": dev.ended.count}
        gap = _missing(dev)
        if gap:
            missing[dev.device] = gap
    ready = (
        phase is Phase.ENDED
        and bike is not None
        and bike.ended is not None
        and bike.ended.count is not None
        and bike.device not in missing
    )

    end_keys = {d.ended.key for d in devices if d.ended is not None}
    end_keys |= {e.key for b in backends for e in b.end_events}

    shared_values, conflicts = resolve_shared(docs.shared.edits if docs.shared else ())
    return RideView(
        ride_id=docs.ride_id,
        phase=phase,
        authority=authority,
        samples={d.device: len(d.samples) for d in devices},
        totals=totals,
        end_events_counted=len(end_keys),
        divergences=divergences,
        gap_fill=fill,
        shared=shared_values,
        shared_conflicts=conflicts,
        declared=declared,
        missing_samples=missing,
        ready_to_finalize=ready,
        problems=tuple(problems),
        end_t=end_t,
        after_end={d: n for d, n in after_end.items() if n},
    )


def phase_of(devices: Iterable[DeviceDoc], backends: Iterable[BackendDoc]) -> Phase:
    devices, backends = list(devices), list(backends)
    if any(b.finalized is not None for b in backends):
        return Phase.FINALIZED
    if any(d.ended is not None for d in devices) or any(b.end_events for b in backends):
        return Phase.ENDED
    if any(d.active is not None or d.samples or d.batches for d in devices):
        return Phase.ACTIVE
    return Phase.PENDING


def bike_end_time(bike: DeviceDoc | None) -> float | None:
    """Rule 8: the ride's end time on the bike's clock, from the bike's `ended` claim (None before it)."""
    return bike.ended.t if bike is not None and bike.ended is not None else None


def counted_samples(bike: DeviceDoc | None) -> tuple[Sample, ...]:
    """Rule 8: the bike's samples that count, i.e. those not after the end time its claim declares."""
    if bike is None:
        return ()
    end_t = bike_end_time(bike)
    if end_t is None:
        return bike.samples
    return tuple(s for s in bike.samples if s.t <= end_t)


def earliest_other_end(docs: RideDocs, bike_device: str) -> float | None:
    """The earliest end of the ride recorded by anyone but the bike itself (an app's `ended` claim, the
    backend's end events), on the recorder's clock; None if nobody else ended it. The bike reads this when
    it learns of the end through sync and places it on its own clock (rule 8)."""
    times = [d.ended.t for d in docs.devices if d.ended is not None and d.ref.kind is DocKind.APP]
    # An end event the bike itself reported is its own end, not another replica's.
    times += [e.t for b in docs.backends for e in b.end_events if e.device != bike_device]
    return min(times) if times else None


def authoritative_bike(
    devices: Iterable[DeviceDoc], owner: str | None
) -> tuple[DeviceDoc | None, tuple[DeviceDoc, ...]]:
    """Rule 2's bike document (or None), and the bike documents that do not count at all: with a known
    owner, every other bike's. Never chosen by device-id order."""
    bikes = sorted((d for d in devices if d.ref.kind is DocKind.BIKE), key=lambda d: d.device)
    if owner is not None:
        mine = [d for d in bikes if d.device == owner]
        return (mine[0] if mine else None), tuple(d for d in bikes if d.device != owner)
    return (bikes[0] if len(bikes) == 1 else None), ()


# Shared fields that stay editable once the ride is finalized: naming, describing and rating yesterday's
# ride is normal. Targets (target.*) steer a ride in progress; once it is finalized they are history.
EDITABLE_AFTER_FINALIZED = frozenset({"title", "notes", "rating"})


def may_write(ref: DocRef, device: str, role: Role, phase: Phase) -> bool:
    """Whether `device` acting as `role` may change document `ref` in `phase` (for the sync gate): the
    document's kind and device, the phase and the role, nothing else.

    After `finalized` only the backend writes its document, and nobody writes a bike's or app's own
    document (the official totals are frozen); the shared document stays writable, but only for the
    fields `may_edit` allows (the gate checks every key a message adds: engine/store/gate.py).

    Whether the device belongs to the ride at all is not the policy's knowledge: the backend checks it
    before anything reaches the gate (only the ride's owning bike, the apps it admits and the backend may
    write a ride; engine/backend/service.py, `Backend.write_refusal`).
    """
    if role is Role.VIEWER:
        return False
    if ref.kind is DocKind.SHARED:
        return True
    if phase is Phase.FINALIZED and role is not Role.BACKEND:
        return False
    # A segment is its bike's (kind.role is the writer's role: bike for a bike document and its segments).
    return ref.kind.role is role and ref.device == device


def may_edit(field_name: str, role: Role, phase: Phase) -> bool:
    """Whether `role` may write an edit of shared field `field_name` in `phase`: any field before the ride
    is finalized; after it, title, notes and rating (EDITABLE_AFTER_FINALIZED), never targets. The
    backend edits every field in every phase; viewers none."""
    if role is Role.VIEWER:
        return False
    if role is Role.BACKEND or phase is not Phase.FINALIZED:
        return True
    return field_name in EDITABLE_AFTER_FINALIZED


def gap_fill(
    bike: Sequence[Sample], apps: Sequence[tuple[str, Sequence[Sample]]]
) -> list[tuple[str, Sample]]:
    """Rule 3: the app samples (with their device) whose heart rate fills the bike's gaps, in the order
    the rule considers them. The one place the rule lives: totals and the ride page's series use it."""
    if not bike or not apps:
        return []
    bike_hr_times = sorted(s.t for s in bike if s.hr_usable())
    first, last = bike[0].t, bike[-1].t
    candidates = sorted(
        ((s.t, dev, s.seq, s) for dev, samples in apps for s in samples),
        key=lambda c: (c[1], c[0], c[2]),
    )
    used_times: list[float] = []
    out: list[tuple[str, Sample]] = []
    for t, dev, _seq, sample in candidates:
        if not sample.hr_usable() or sample.hr is None or not first <= t <= last:
            continue
        if _near(bike_hr_times, t, GAP_MATCH_S) or any(abs(u - t) <= FILL_SPACING_S for u in used_times):
            continue
        used_times.append(t)
        out.append((dev, sample))
    return out


def compute_totals(
    bike: Sequence[Sample], apps: Sequence[Sequence[Sample]], app_devices: Sequence[str]
) -> tuple[Totals, dict[str, int]]:
    """Totals over `bike` samples, with heart-rate gaps filled from `apps` by rule 3."""
    hr_points = [float(s.hr) for s in bike if s.hr is not None and s.hr_usable()]
    fill: dict[str, int] = {}
    for dev, sample in gap_fill(bike, list(zip(app_devices, apps, strict=True))):
        assert sample.hr is not None
        hr_points.append(float(sample.hr))
        fill[dev] = fill.get(dev, 0) + 1

    output_j = 0.0
    has_power = False
    for cur, nxt in itertools.pairwise(bike):
        if cur.power_dw is not None:
            has_power = True
            output_j += (cur.power_dw / 10) * min(max(nxt.t - cur.t, 0.0), MAX_DT_S)
    powers = [s.power_dw / 10 for s in bike if s.power_dw is not None]
    has_power = has_power or bool(powers)
    cadences = [float(s.cadence) for s in bike if s.cadence is not None]
    output_kj = round(output_j / 1000, 3) if has_power else None
    totals = Totals(
        duration_s=round(bike[-1].t - bike[0].t, 2) if bike else 0.0,
        output_kj=output_kj,
        energy_kcal=None if output_kj is None else round(output_kj / (KCAL_KJ * EFFICIENCY), 1),
        avg_hr=_mean(hr_points),
        max_hr=int(max(hr_points)) if hr_points else None,
        avg_power_w=_mean(powers),
        max_power_w=max(powers) if powers else None,
        avg_cadence=_mean(cadences),
    )
    return totals, fill


def resolve_shared(edits: Iterable[Edit]) -> tuple[dict[str, Any], tuple[dict[str, Any], ...]]:
    """The winning value of each shared field (rule 7) and the concurrent edits that lost."""
    by_field: dict[str, list[Edit]] = {}
    for edit in edits:
        if edit.role in ROLE_RANK:
            by_field.setdefault(edit.field, []).append(edit)
    values: dict[str, Any] = {}
    conflicts: list[dict[str, Any]] = []
    for name in sorted(by_field):
        group = by_field[name]
        superseded = {e.seen for e in group if e.seen is not None}
        live = [e for e in group if e.key not in superseded] or group
        live.sort(key=lambda e: (ROLE_RANK[e.role], e.t, e.key))
        winner = live[-1]
        values[name] = winner.value
        if len(live) > 1:
            conflicts.append(
                {
                    "field": name,
                    "winner": {"value": winner.value, "device": winner.device, "role": winner.role},
                    "losers": [{"value": e.value, "device": e.device, "role": e.role} for e in live[:-1]],
                }
            )
    return values, tuple(conflicts)


def current_edit_key(edits: Iterable[Edit], field_name: str) -> str | None:
    """The key of the edit currently winning `field_name`, for a writer's `seen`."""
    group = [e for e in edits if e.field == field_name and e.role in ROLE_RANK]
    if not group:
        return None
    superseded = {e.seen for e in group if e.seen is not None}
    live = [e for e in group if e.key not in superseded] or group
    return max(live, key=lambda e: (ROLE_RANK[e.role], e.t, e.key)).key


# -- helpers -------------------------------------------------------------------------------------------


def _missing(dev: DeviceDoc) -> int:
    claim = dev.ended
    if claim is None or claim.count is None:
        return 0
    upto = claim.last_seq
    present = sum(1 for s in dev.samples if upto is None or s.seq <= upto)
    return max(claim.count - present, 0)


def _with_duration(totals: Totals, duration_s: float) -> Totals:
    return Totals(
        duration_s=round(duration_s, 2),
        output_kj=totals.output_kj,
        energy_kcal=totals.energy_kcal,
        avg_hr=totals.avg_hr,
        max_hr=totals.max_hr,
        avg_power_w=totals.avg_power_w,
        max_power_w=totals.max_power_w,
        avg_cadence=totals.avg_cadence,
    )


def _divergences(
    authority: str, totals: dict[str, Any], sources: Sequence[tuple[str, Totals]]
) -> tuple[Divergence, ...]:
    found = []
    for source, own in sources:
        values = own.to_json()
        for metric, tolerance in TOLERANCE.items():
            mine, theirs = values.get(metric), totals.get(metric)
            if not _is_num(mine) or not _is_num(theirs):
                continue
            if metric == "duration_s" and mine == 0:
                continue
            if abs(float(mine) - float(theirs)) > tolerance:
                found.append(Divergence(metric, authority, float(theirs), source, float(mine)))
    return tuple(found)


def _near(sorted_times: Sequence[float], t: float, window: float) -> bool:
    i = bisect.bisect_left(sorted_times, t - window)
    return i < len(sorted_times) and sorted_times[i] <= t + window


def _mean(values: Sequence[float]) -> float | None:
    return round(math.fsum(values) / len(values), 1) if values else None


def _is_num(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _clock(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _num(value: float) -> str:
    return f"{value:g}"
