"""Reading and writing a ride's documents (schema in engine/ride/schema.py) through engine.crdt.

Writers produce exactly one Automerge change per call. Decoders turn a document into the plain data of
engine/ride/model.py and never trust its content: malformed values are skipped and listed in `problems`,
so one hostile key cannot hide the rest of a document.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeGuard

from engine.crdt import CrdtDoc, Scalar
from engine.ride import schema
from engine.ride.batches import DEFAULT_BATCH_SCHEMA, decode_batch, encode_batch
from engine.ride.model import BackendDoc, Claim, DeviceDoc, Edit, EndEvent, Finalization, SharedDoc
from engine.ride.samples import Sample, SampleDecodeError
from engine.ride.schema import DocKind, DocRef

AnyDoc = DeviceDoc | BackendDoc | SharedDoc
# One key holds at most an hour at 1 Hz: a backlog folded at reconnect is still one change, and no single
# value grows past what one sync message comfortably carries (~10 KB in schema 2, ~40 KB in schema 1).
MAX_SAMPLES_PER_KEY = 3600
# 48 hours at 1 Hz per device document: far beyond a ride, and at ~290 bytes per decoded sample a bound
# on what one hostile document can make a view allocate.
MAX_SAMPLES_PER_DOCUMENT = 48 * 3600


# -- writers -------------------------------------------------------------------------------------------


# Each writer comes in two forms: `x_values(doc, ...)` returns the keys still to write (empty when they are
# already there), so a caller can put several in one change: every change costs ~100 bytes of metadata on
# the wire, whatever it carries; `x(doc, ...)` writes them as a change of their own.


def write_once(doc: CrdtDoc, *parts: dict[str, Scalar]) -> bool:
    """Put the union of `parts` as one change (nothing if all are empty); True if anything was written."""
    values: dict[str, Scalar] = {}
    for part in parts:
        values.update(part)
    if values:
        doc.put(values)
    return bool(values)


def header_values(doc: CrdtDoc, ref: DocRef) -> dict[str, Scalar]:
    if doc.get("schema") is not None:
        return {}
    header: dict[str, Scalar] = {
        "schema": schema.SCHEMA_VERSION,
        "kind": ref.kind.value,
        "ride_id": ref.ride_id,
    }
    if ref.kind is not DocKind.SHARED:
        header["device"] = ref.device
        header["role"] = ref.role
    return header


def init_doc(doc: CrdtDoc, ref: DocRef) -> bool:
    """Write the header keys once (True if this call wrote them). Identical on every replica, so concurrent
    initialisation of the shared document by several devices is harmless."""
    return write_once(doc, header_values(doc, ref))


def add_samples(
    doc: CrdtDoc,
    samples: Sequence[Sample],
    *,
    batch_schema: int = DEFAULT_BATCH_SCHEMA,
    max_per_key: int = MAX_SAMPLES_PER_KEY,
    extra: dict[str, Scalar] | None = None,
) -> list[str]:
    """Write a batch (no duplicate seqs) as one change: one blob per `max_per_key` samples, each under a
    key naming its seq range, plus the `extra` keys (a header, a claim). Returns the sample keys."""
    if not samples:
        raise ValueError("empty batch")
    if max_per_key < 1:
        raise ValueError("max_per_key must be positive")
    ordered = sorted(samples, key=lambda s: s.seq)
    if any(a.seq == b.seq for a, b in itertools.pairwise(ordered)):
        raise ValueError("duplicate seq in batch")
    values: dict[str, Scalar] = {}
    for lo in range(0, len(ordered), max_per_key):
        part = ordered[lo : lo + max_per_key]
        values[schema.sample_key(part[0].seq, part[-1].seq)] = encode_batch(part, batch_schema)
    keys = list(values)
    doc.put({**(extra or {}), **values})
    return keys


def segment_markers(doc: CrdtDoc) -> set[int]:
    """The live segments a bike's durable document names consolidated (its `segment.<n>` keys)."""
    out = set()
    for key in doc.keys_with_prefix(schema.SEGMENT_PREFIX):
        match = schema.SEGMENT_KEY.fullmatch(key)
        if match is not None:
            out.add(int(match.group(1)))
    return out


def segment_marker_values(doc: CrdtDoc, counts: dict[int, int]) -> dict[str, Scalar]:
    """`segment.<n>` = samples it held, for each segment `counts` names and the document does not mark."""
    keys = {f"{schema.SEGMENT_PREFIX}{n}": count for n, count in sorted(counts.items())}
    return {k: v for k, v in keys.items() if doc.get(k) is None}


def seqs_in(doc: CrdtDoc, lo: int, hi: int) -> set[int]:
    """The seqs in [lo, hi] the document's sample keys hold, decoding only the keys whose named range
    overlaps it (a retirement check on an hour-long document decodes one key, not the hour)."""
    out: set[int] = set()
    keys = doc.keys()
    for key in keys:
        match = schema.SAMPLE_KEY.fullmatch(key)
        if match is None or int(match.group(2), 16) < lo or int(match.group(1), 16) > hi:
            continue
        value = doc.get(key)
        if not isinstance(value, bytes):
            continue
        try:
            batch = decode_batch(value)
        except SampleDecodeError:
            continue
        first, last = int(match.group(1), 16), int(match.group(2), 16)
        out.update(s.seq for s in batch if first <= s.seq <= last and lo <= s.seq <= hi)
    return out


def _claim_json(t: float, key: str, **extra: Any) -> str:
    body: dict[str, Any] = {"t": _finite(t), "key": key}
    body.update({k: v for k, v in extra.items() if v is not None})
    return schema.dumps(body)


def claim_active_values(doc: CrdtDoc, t: float, key: str) -> dict[str, Scalar]:
    if doc.get(schema.CLAIM_ACTIVE) is not None:
        return {}
    return {schema.CLAIM_ACTIVE: _claim_json(t, key)}


def claim_active(doc: CrdtDoc, t: float, key: str) -> bool:
    """The device's claim that the ride started. Written once; a second call changes nothing."""
    return write_once(doc, claim_active_values(doc, t, key))


def claim_ended_values(
    doc: CrdtDoc, ride_id: str, t: float, *, last_seq: int | None, count: int, duration_s: float | None = None
) -> dict[str, Scalar]:
    if doc.get(schema.CLAIM_ENDED) is not None:
        return {}
    body = _claim_json(t, schema.end_key(ride_id), last_seq=last_seq, count=count, duration_s=duration_s)
    return {schema.CLAIM_ENDED: body}


def claim_ended(
    doc: CrdtDoc, ride_id: str, t: float, *, last_seq: int | None, count: int, duration_s: float | None = None
) -> bool:
    """The device's claim that the ride ended, under the ride's one logical end key. Written once."""
    values = claim_ended_values(doc, ride_id, t, last_seq=last_seq, count=count, duration_s=duration_s)
    return write_once(doc, values)


def record_end_event(doc: CrdtDoc, key: str, t: float, device: str, role: str) -> bool:
    """Backend: an end event received (e.g. over HTTP with an Idempotency-Key). Once per key."""
    name = schema.END_PREFIX + key
    if doc.get(name) is not None:
        return False
    doc.put({name: schema.dumps({"t": _finite(t), "device": device, "role": role})})
    return True


def write_finalization(doc: CrdtDoc, t: float, totals: dict[str, Any], samples: dict[str, int]) -> bool:
    """Backend: the ride's official totals. Written once; finalization is final."""
    if doc.get(schema.FINALIZED) is not None:
        return False
    doc.put({schema.FINALIZED: schema.dumps({"t": _finite(t), "totals": totals, "samples": samples})})
    return True


def index_values(shared: CrdtDoc, ref: DocRef) -> dict[str, Scalar]:
    name = schema.DOC_PREFIX + ref.doc_id
    if shared.get(name) is not None:
        return {}
    entry = {k: v for k, v in ref.to_json().items() if k != "doc_id"}
    return {name: schema.dumps(entry)}


def index_doc(shared: CrdtDoc, ref: DocRef) -> bool:
    return write_once(shared, index_values(shared, ref))


def edit_shared(
    shared: CrdtDoc, field: str, value: Any, *, t: float, device: str, role: str, seen: str | None
) -> str:
    """One edit of a shared field, under a key unique to this writer (its actor id and a counter)."""
    if field not in schema.SHARED_FIELDS:
        raise ValueError(f"unknown shared field {field!r}")
    if not _valid_field_value(field, value):
        raise ValueError(f"invalid value for {field}: {value!r}")
    prefix = f"{schema.EDIT_PREFIX}{shared.actor.hex()}."
    tails = [k[len(prefix) :] for k in shared.keys_with_prefix(prefix)]
    used = [int(tail) for tail in tails if tail.isdigit()]
    key = f"{prefix}{max(used, default=0) + 1}"
    body = {"field": field, "value": value, "t": _finite(t), "device": device, "role": role, "seen": seen}
    shared.put({key: schema.dumps(body)})
    return key


def _finite(t: float) -> float:
    if not isinstance(t, int | float) or not math.isfinite(t):
        raise ValueError(f"time must be a finite number, not {t!r}")
    return float(t)


def _valid_field_value(field: str, value: Any) -> bool:
    expected = schema.SHARED_FIELDS.get(field)
    if expected is None or isinstance(value, bool) or not isinstance(value, expected):
        return False
    if isinstance(value, str):
        return len(value) <= schema.MAX_TEXT
    if isinstance(value, float) and not math.isfinite(value):
        return False
    number = float(value)  # type: ignore[arg-type]  # isinstance-checked against SHARED_FIELDS
    if field in ("rating", "target.hr_zone"):
        return 1 <= number <= 5
    return 0 <= number <= 100_000


# -- decoders ------------------------------------------------------------------------------------------


def decode(doc: CrdtDoc, ref: DocRef, *, samples: bool = True) -> AnyDoc:
    """The document as plain data. With samples=False, sample blobs are counted, not decoded: enough for
    the phase (a sync gate needs it per message, and decoding an hour of samples costs ~30 ms)."""
    if ref.kind is DocKind.SHARED:
        return decode_shared(ref.ride_id, doc.items())
    keys = doc.keys()
    if ref.kind is DocKind.BACKEND:
        return decode_backend(ref, {k: doc.get(k) for k in keys if not schema.SAMPLE_KEY.fullmatch(k)})
    if samples:
        return decode_device(ref, doc.items())
    light = {k: doc.get(k) for k in keys if not schema.SAMPLE_KEY.fullmatch(k)}
    decoded = decode_device(ref, light)
    return replace(decoded, batches=sum(1 for k in keys if schema.SAMPLE_KEY.fullmatch(k)))


def decode_samples(items: dict[str, Scalar], problems: list[str]) -> tuple[Sample, ...]:
    """Every sample in sample keys, deduplicated by seq (the first key in sorted order wins, so every
    replica keeps the same record even from a hostile document). At most MAX_SAMPLES_PER_DOCUMENT: a
    schema 2 batch of tens of thousands of samples can be a few bytes, so the count, not the document's
    size, bounds what a view holds; keys past it are skipped and listed in `problems`."""
    by_seq: dict[int, Sample] = {}
    for key in sorted(items):
        match = schema.SAMPLE_KEY.fullmatch(key)
        if match is None:
            continue
        if len(by_seq) >= MAX_SAMPLES_PER_DOCUMENT:
            problems.append(f"{key}: skipped, the document already holds {MAX_SAMPLES_PER_DOCUMENT} samples")
            continue
        first, last = int(match.group(1), 16), int(match.group(2), 16)
        value = items[key]
        if not isinstance(value, bytes):
            problems.append(f"{key}: not a sample blob")
            continue
        try:
            batch = decode_batch(value)
        except SampleDecodeError as exc:
            problems.append(f"{key}: {exc}")
            continue
        outside = 0
        for sample in batch:
            if not first <= sample.seq <= last:
                outside += 1
                continue
            by_seq.setdefault(sample.seq, sample)
        if outside:
            problems.append(f"{key}: {outside} samples outside the key's seq range")
    return tuple(by_seq[seq] for seq in sorted(by_seq))


def _claim(items: dict[str, Scalar], key: str, problems: list[str]) -> Claim | None:
    if key not in items:
        return None
    obj = schema.loads_object(items[key])
    if obj is None:
        problems.append(f"{key}: not a JSON object")
        return None
    t, name = obj.get("t"), obj.get("key")
    last_seq, count, duration = obj.get("last_seq"), obj.get("count"), obj.get("duration_s")
    if not _number(t) or not isinstance(name, str):
        problems.append(f"{key}: missing t or key")
        return None
    return Claim(
        t=float(t),
        key=name,
        last_seq=last_seq if _int(last_seq) else None,
        count=count if _int(count) else None,
        duration_s=float(duration) if _number(duration) else None,
    )


def decode_device(ref: DocRef, items: dict[str, Scalar]) -> DeviceDoc:
    problems: list[str] = []
    samples = decode_samples(items, problems)
    active = _claim(items, schema.CLAIM_ACTIVE, problems)
    ended = _claim(items, schema.CLAIM_ENDED, problems)
    batches = sum(1 for k in items if schema.SAMPLE_KEY.fullmatch(k))
    return DeviceDoc(
        ref=ref, samples=samples, active=active, ended=ended, problems=tuple(problems), batches=batches
    )


def decode_backend(ref: DocRef, items: dict[str, Scalar]) -> BackendDoc:
    problems: list[str] = []
    events = []
    for key in sorted(items):
        if not key.startswith(schema.END_PREFIX):
            continue
        obj = schema.loads_object(items[key])
        if obj is None or not _number(obj.get("t")):
            problems.append(f"{key}: malformed end event")
            continue
        events.append(
            EndEvent(
                key=key[len(schema.END_PREFIX) :],
                t=float(obj["t"]),
                device=str(obj.get("device", "")),
                role=str(obj.get("role", "")),
            )
        )
    finalized = None
    if schema.FINALIZED in items:
        obj = schema.loads_object(items[schema.FINALIZED])
        totals = obj.get("totals") if obj else None
        counts = obj.get("samples") if obj else None
        if obj is None or not _number(obj.get("t")) or not isinstance(totals, dict):
            problems.append("finalized: malformed")
        else:
            clean_counts = {str(k): v for k, v in (counts or {}).items() if _int(v)}
            # Only finite numbers (or null) pass: the totals are served verbatim as JSON.
            clean_totals = {str(k): v for k, v in totals.items() if v is None or _number(v)}
            finalized = Finalization(t=float(obj["t"]), totals=clean_totals, samples=clean_counts)
    return BackendDoc(ref=ref, end_events=tuple(events), finalized=finalized, problems=tuple(problems))


def decode_shared(ride_id: str, items: dict[str, Scalar]) -> SharedDoc:
    problems: list[str] = []
    edits: list[Edit] = []
    index: list[DocRef] = []
    for key in sorted(items):
        if key.startswith(schema.DOC_PREFIX):
            obj = schema.loads_object(items[key])
            ref = schema.parse_doc_ref(ride_id, obj) if obj is not None else None
            if ref is None or ref.doc_id != key[len(schema.DOC_PREFIX) :]:
                problems.append(f"{key}: malformed index entry")
                continue
            index.append(ref)
        elif key.startswith(schema.EDIT_PREFIX):
            obj = schema.loads_object(items[key])
            edit = _edit(key, obj)
            if edit is None:
                problems.append(f"{key}: malformed edit")
                continue
            edits.append(edit)
    return SharedDoc(ride_id=ride_id, edits=tuple(edits), index=tuple(index), problems=tuple(problems))


def _edit(key: str, obj: dict[str, Any] | None) -> Edit | None:
    if obj is None:
        return None
    field, value, t, seen = obj.get("field"), obj.get("value"), obj.get("t"), obj.get("seen")
    if not isinstance(field, str) or not _valid_field_value(field, value) or not _number(t):
        return None
    if seen is not None and not isinstance(seen, str):
        return None
    return Edit(
        key=key,
        field=field,
        value=value,
        t=float(t),
        device=str(obj.get("device", "")),
        role=str(obj.get("role", "")),
        seen=seen,
    )


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
