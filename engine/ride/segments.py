"""Live segments as readers see them (docs/architecture.md#live-segments): pure functions on decoded data.

A bike with a live link folds every 10 s into a short-lived segment document and consolidates what a
segment holds into its durable bike document every few minutes, so for a while the same samples are in
two documents. Readers take each (device, seq) once: `merge_segments` folds every segment of a device into
that device's bike document before the policy, the series or an export sees the ride, durable samples
first (the first record of a seq wins, as within one document: `documents.decode_samples`). A segment's
claims count for nothing: only the durable document claims.

`covered` is the retirement rule: a segment is dead once the same device's durable document holds every
seq it holds and names it consolidated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from engine.ride.model import DeviceDoc, RideDocs
from engine.ride.samples import Sample
from engine.ride.schema import DocKind, DocRef


def merge_segments(devices: Sequence[DeviceDoc]) -> tuple[DeviceDoc, ...]:
    """`devices` with every segment document merged into its device's bike document (one made when the
    ride holds a device's segments but not, or not yet, its bike document). Order otherwise kept."""
    segments: dict[str, list[DeviceDoc]] = {}
    for doc in devices:
        if doc.ref.kind is DocKind.SEGMENT:
            segments.setdefault(doc.device, []).append(doc)
    if not segments:
        return tuple(devices)
    out: list[DeviceDoc] = []
    for doc in devices:
        if doc.ref.kind is DocKind.SEGMENT:
            continue
        if doc.ref.kind is DocKind.BIKE and doc.device in segments:
            out.append(_merged(doc, segments.pop(doc.device)))
        else:
            out.append(doc)
    for device, parts in sorted(segments.items()):
        first = parts[0].ref
        out.append(_merged(DeviceDoc(ref=DocRef(first.ride_id, DocKind.BIKE, device)), parts))
    return tuple(out)


def merged(docs: RideDocs) -> RideDocs:
    """`docs` with its segments merged (`merge_segments`); the same object when it holds none."""
    if not any(d.ref.kind is DocKind.SEGMENT for d in docs.devices):
        return docs
    return replace(docs, devices=merge_segments(docs.devices))


def _merged(durable: DeviceDoc, parts: list[DeviceDoc]) -> DeviceDoc:
    by_seq: dict[int, Sample] = {s.seq: s for s in durable.samples}
    problems = list(durable.problems)
    batches = durable.batches
    for part in sorted(parts, key=lambda p: p.ref.segment):
        for sample in part.samples:
            by_seq.setdefault(sample.seq, sample)
        problems += [f"segment {part.ref.segment}: {p}" for p in part.problems]
        batches += part.batches
    return DeviceDoc(
        ref=durable.ref,
        samples=tuple(by_seq[seq] for seq in sorted(by_seq)),
        active=durable.active,
        ended=durable.ended,
        problems=tuple(problems),
        batches=batches,
    )


def covered(segment_seqs: Iterable[int], durable_seqs: set[int], marked: bool) -> bool:
    """Whether a segment holding `segment_seqs` is retired: its device's durable document names it
    consolidated (`marked`: its `segment.<n>` key) and holds every one of those seqs. Both, so neither a
    marker alone (a torn history) nor coverage alone (a segment still being written) retires it."""
    return marked and all(seq in durable_seqs for seq in segment_seqs)
