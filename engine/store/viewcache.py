"""The view cache: a ride's resolved view and phase, and the decodes they are made from, kept in memory
only while nothing they were made from changed.

Why it exists: a gate asks a ride's phase on every sync message and the ride API resolves its view on
every read, and decoding a ride's documents for that each time would cost a decode per message. What it
keeps is chosen for memory: an open ride keeps its resolved view (`RideViews.view`) and phase, and the
last decode of its shared and backend documents (`DocCache`), never its device documents' decoded
samples, which cost ~290 bytes each as Python objects (4 MB for a 4-hour ride, 100x its Automerge
document). `ViewCache.decoding_once()` lets the views resolved while settling a ride (ended, backend
document made, finalized) share one decode of each unchanged device document, dropped after the block.

Every cached value carries the heads (and the ride owner) it was made at and is used only while they
match, so nothing here is ever invalidated by hand; dropping a `DocCache` or `RideViews` forgets it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from engine.crdt import CrdtDoc
from engine.ride import documents, policy
from engine.ride.model import BackendDoc, DeviceDoc, RideDocs, SharedDoc
from engine.ride.schema import DocKind, DocRef, Phase
from engine.ride.segments import merge_segments

Decoded = DeviceDoc | BackendDoc | SharedDoc
_BIKE_KINDS = (DocKind.BIKE, DocKind.SEGMENT)
# Device documents decoded within one `ViewCache.decoding_once()` block, by (doc id, heads).
DecodeMemo = dict[tuple[str, tuple[bytes, ...]], DeviceDoc]


@dataclass(slots=True)
class DocCache:
    """One document's cache. `decoded`: the last full decode of a shared or backend document and the heads
    it was made at. A device document's decode is not kept (its samples: see the module docstring); the
    ride's resolved view is kept instead (`RideViews.view`)."""

    decoded: tuple[tuple[bytes, ...], Decoded] | None = None

    def decode(self, doc: CrdtDoc, ref: DocRef, memo: DecodeMemo | None = None) -> Decoded:
        heads = tuple(doc.heads())
        if self.decoded is not None and self.decoded[0] == heads:
            return self.decoded[1]
        key = (ref.doc_id, heads)
        if memo is not None and key in memo:
            return memo[key]
        decoded = documents.decode(doc, ref)
        if not isinstance(decoded, DeviceDoc):
            self.decoded = (heads, decoded)
        elif memo is not None:
            memo[key] = decoded
        return decoded


@dataclass(slots=True)
class RideViews:
    """One ride's cache: its phase and resolved view, each with what it was made from."""

    phase: tuple[tuple[tuple[str, tuple[bytes, ...]], ...], Phase] | None = None
    # The resolved view and what it was resolved from: (owner, every document's heads).
    view: tuple[tuple[object, ...], policy.RideView] | None = None


class CachedDoc(Protocol):
    """What the cache needs of an open document (`ridestate.OpenDoc`)."""

    @property
    def ref(self) -> DocRef: ...
    @property
    def doc(self) -> CrdtDoc: ...
    @property
    def cache(self) -> DocCache: ...


class ViewCache:
    """Resolves views and phases from a ride's open documents, through their caches. `guard` is the
    document store's Automerge panic guard."""

    def __init__(self, guard: Callable[[], AbstractContextManager[None]]) -> None:
        self._guard = guard
        self._memo: DecodeMemo | None = None

    @contextmanager
    def decoding_once(self) -> Iterator[None]:
        """Within the block, a device document is decoded at most once per heads. Settling a ride resolves
        its view up to three times (the end, the backend's own document made, its finalization written)
        while the device documents stay as they were; their samples are not kept past the block (why:
        `DocCache`)."""
        if self._memo is not None:
            yield
            return
        self._memo = {}
        try:
            yield
        finally:
            self._memo = None

    def ride_docs(self, ride_id: str, entries: Sequence[CachedDoc], owner: str | None) -> RideDocs:
        shared = None
        devices = []
        backends = []
        for entry in sorted(entries, key=lambda e: e.ref.doc_id):
            decoded = entry.cache.decode(entry.doc, entry.ref, self._memo)
            if isinstance(decoded, SharedDoc):
                shared = decoded
            elif isinstance(decoded, BackendDoc):
                backends.append(decoded)
            else:
                devices.append(decoded)
        # A bike's live segments count as part of its bike document, each (device, seq) once.
        return RideDocs(
            ride_id=ride_id,
            shared=shared,
            devices=merge_segments(devices),
            backends=tuple(backends),
            owner=owner,
        )

    def view(
        self, ride_id: str, entries: Sequence[CachedDoc], views: RideViews | None, owner: str | None
    ) -> policy.RideView:
        """The resolved view, kept until one of the ride's documents (or its owner) changes."""
        with self._guard():
            key = (owner, *((e.ref.doc_id, tuple(e.doc.heads())) for e in entries))
        if views is not None and views.view is not None and views.view[0] == key:
            return views.view[1]
        view = policy.resolve(self.ride_docs(ride_id, entries, owner))
        if views is not None:
            views.view = (key, view)
        return view

    def phase(self, entries: Sequence[CachedDoc], views: RideViews | None, owner: str | None) -> Phase:
        """The ride's phase from claims and finalization only (no sample decoding): cheap per message, and
        cached until one of the ride's device or backend documents changes (a gate asks on every message).
        Another bike's document never counts in a ride with an `owner` (policy rule 2)."""
        counted = [
            e
            for e in entries
            if e.ref.kind is not DocKind.SHARED
            and (owner is None or e.ref.kind not in _BIKE_KINDS or e.ref.device == owner)
        ]
        with self._guard():
            key = tuple((e.ref.doc_id, tuple(e.doc.heads())) for e in counted)
        if views is not None and views.phase is not None and views.phase[0] == key:
            return views.phase[1]
        devices = []
        backends = []
        for entry in counted:
            decoded = documents.decode(entry.doc, entry.ref, samples=False)
            if isinstance(decoded, DeviceDoc):
                devices.append(decoded)
            elif isinstance(decoded, BackendDoc):
                backends.append(decoded)
        phase = policy.phase_of(devices, backends)
        if views is not None:
            views.phase = (key, phase)
        return phase
