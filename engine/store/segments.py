"""Live segments in a replica's store (docs/architecture.md#live-segments): which a ride holds, which are
retired, and dropping them from memory and storage. Every role uses it: the bike for its own segments
(once the backend acknowledged the durable document that covers them), the backend and apps for every
segment they hold (as soon as they see it covered).

Retirement is re-derived from the documents every time, never from a flag kept beside them: a segment is
dead when its device's durable bike document names it consolidated (`segment.<n>`) *and* holds every seq
the segment holds (`engine.ride.segments.covered`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from engine.crdt import CrdtDoc
from engine.ride import documents, schema
from engine.ride.model import DeviceDoc
from engine.ride.schema import DocKind, DocRef
from engine.ride.segments import covered
from engine.store.docstore import DocumentStore
from engine.store.ridestate import OpenDoc

log = logging.getLogger(__name__)

# Un-retired segments one device may hold in a ride: the open one, and a few whose consolidation has not
# been acknowledged yet. A bike past it folds into its durable document (as without segments); the
# backend refuses a device's new segment past it.
MAX_LIVE_SEGMENTS = 4


class Segments:
    def __init__(self, docs: DocumentStore) -> None:
        self.docs = docs

    def held(self, ride_id: str, device: str | None = None) -> list[OpenDoc]:
        """The segment documents of the ride held here (of `device` only, if given), by number."""
        entries = [
            e
            for e in self.docs.ride_entries(ride_id)
            if e.ref.kind is DocKind.SEGMENT and (device is None or e.ref.device == device)
        ]
        return sorted(entries, key=lambda e: (e.ref.device, e.ref.segment))

    def durable(self, ride_id: str, device: str) -> OpenDoc | None:
        return self.docs.docs.get(DocRef(ride_id, DocKind.BIKE, device).doc_id)

    def markers(self, ride_id: str, device: str) -> set[int]:
        """The segments of `device` its durable document (held here) names consolidated."""
        durable = self.durable(ride_id, device)
        if durable is None:
            return set()
        with self.docs.guard():
            return documents.segment_markers(durable.doc)

    def is_retired(self, ref: DocRef) -> bool:
        """Whether the durable document held here names segment `ref` consolidated (for a segment this
        replica does not hold: nothing to fetch, nothing to accept)."""
        return self.docs.retired_segment(ref)

    def retirable(self, ride_id: str) -> list[DocRef]:
        """The segments held here that are dead (module docstring)."""
        out = []
        markers: dict[str, set[int]] = {}
        for entry in self.held(ride_id):
            device = entry.ref.device
            if device not in markers:
                markers[device] = self.markers(ride_id, device)
            if entry.ref.segment not in markers[device]:
                continue  # the common case, decoding nothing: a segment still being written
            durable = self.durable(ride_id, device)
            assert durable is not None  # it names the segment
            decoded = entry.decode()
            seqs = [s.seq for s in decoded.samples] if isinstance(decoded, DeviceDoc) else []
            with self.docs.guard():
                held = documents.seqs_in(durable.doc, min(seqs), max(seqs)) if seqs else set()
            if covered(seqs, held, marked=True):
                out.append(entry.ref)
        return out

    def live(self, ride_id: str, device: str) -> list[DocRef]:
        """`device`'s segments held here and not retired."""
        dead = {r.doc_id for r in self.retirable(ride_id)}
        return [e.ref for e in self.held(ride_id, device) if e.ref.doc_id not in dead]

    def next_number(self, ride_id: str, device: str) -> int:
        """The number after every segment of `device` this replica knows of: held, named consolidated, or
        listed in the shared index."""
        known = {e.ref.segment for e in self.held(ride_id, device)} | self.markers(ride_id, device)
        known |= {
            r.segment
            for r in self.docs.ride_refs(ride_id)
            if r.kind is DocKind.SEGMENT and r.device == device
        }
        return max(known, default=-1) + 1

    def window(self, ride_id: str, device: str) -> list[DocRef]:
        """The segments `device` may create next as the backend sees it: the numbers after the last one
        its durable document names consolidated (segments are consolidated in order), as many as a device
        may hold live, with room for a durable document that lags behind its segments by as many."""
        base = max(self.markers(ride_id, device), default=-1) + 1
        top = min(base + 2 * MAX_LIVE_SEGMENTS, schema.MAX_SEGMENT + 1)
        return [schema.segment_ref(ride_id, device, n) for n in range(base, top)]

    def _acknowledged(self, durable: OpenDoc, ref: DocRef, heads: Sequence[bytes]) -> bool:
        """Whether the durable document as of `heads` (what the backend acknowledged) already covers
        segment `ref`. Usually `heads` are the document's own (nothing since): no rebuild. Otherwise (the
        bike wrote more since, say a consolidation at its restart) the document at `heads` is rebuilt
        from the changes they cover and checked; heads this replica does not know cover nothing."""
        with self.docs.guard():
            newer = {c.hash for c in durable.doc.changes_since(list(heads))}
            if not newer:
                return True
            past = CrdtDoc.new(self.docs.actor)
            past.apply_changes([c.data for c in durable.doc.changes_since([]) if c.hash not in newer])
            entry = self.docs.docs[ref.doc_id]
            decoded = entry.decode()
            seqs = [s.seq for s in decoded.samples] if isinstance(decoded, DeviceDoc) else []
            marked = ref.segment in documents.segment_markers(past)
            held = documents.seqs_in(past, min(seqs), max(seqs)) if seqs and marked else set()
        return covered(seqs, held, marked)

    def drop(self, ref: DocRef) -> None:
        """Forget segment `ref` here: from memory and, in the same order as every write, from storage."""
        assert ref.kind is DocKind.SEGMENT
        self.docs.forget_doc(ref.doc_id)
        doc_id = ref.doc_id
        self.docs.write(ref.ride_id, lambda tx: tx.delete_doc(doc_id))
        log.debug("live segment retired", extra={"ride_id": ref.ride_id, "doc_id": doc_id})

    def retire(
        self, ride_id: str, own_device: str, acked: Mapping[str, Sequence[bytes]] | None = None
    ) -> list[DocRef]:
        """Drop every dead segment held here. Another device's as soon as it is dead (the backend, apps);
        this replica's own (`own_device`'s: a bike's) only once `acked` (doc id -> heads the backend
        acknowledged) shows the backend holds the whole durable document that covers them: until then
        the segment may be what the backend still lacks."""
        dead = []
        for ref in self.retirable(ride_id):
            if ref.device == own_device:
                durable = self.durable(ride_id, own_device)
                heads = None if acked is None or durable is None else acked.get(durable.ref.doc_id)
                if heads is None or durable is None or not self._acknowledged(durable, ref, heads):
                    continue
            dead.append(ref)
        for ref in dead:
            self.drop(ref)
        return dead
