"""An open ride keeps its resolved view, not its decoded samples: the view is resolved again only when one
of the ride's documents changed, and no device document's samples stay in memory as Python objects."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.ride import documents
from engine.ride.schema import DocKind, DocRef, Role
from engine.store import ReplicaStore
from tests.support.samples import make_sample

from .test_gate import push

Open = Callable[..., ReplicaStore]
RIDE = "ride-v"


def test_the_view_is_kept_until_a_document_changes_and_samples_are_not(open_replica: Open) -> None:
    bike = open_replica("bike")
    bike.start_ride(RIDE, t=1_700_000_000.0)
    bike.append_samples(RIDE, [make_sample(i) for i in range(30)])
    bike.fold(RIDE)
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    for ref in bike.ride_refs(RIDE):
        assert push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE).accepted
    first = backend.view(RIDE)
    assert first.samples == {"bike-1": 30}
    assert backend.view(RIDE) is first  # nothing changed: not resolved again
    device_docs = [e for e in backend.documents.ride_entries(RIDE) if e.ref.kind is DocKind.BIKE]
    assert device_docs and all(e.cache.decoded is None for e in device_docs)

    bike.append_samples(RIDE, [make_sample(i) for i in range(30, 40)])
    bike.fold(RIDE)
    for ref in bike.ride_refs(RIDE):
        assert push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE).accepted
    second = backend.view(RIDE)
    assert second is not first and second.samples == {"bike-1": 40}
    backend.edit_shared(RIDE, "title", "evening")
    assert backend.view(RIDE).shared["title"] == "evening"
    backend.bind_ride_owner(RIDE, "bike-2")  # the owner changes what counts
    assert backend.view(RIDE).samples == {}


def test_settling_decodes_a_device_document_once_and_keeps_nothing_after(
    open_replica: Open, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend resolves an ended ride's view, makes its own document and finalizes, each changing the
    view's key; inside `decoding_once` the bike's unchanged document is decoded once for all three, and the
    views are the same as without it."""
    bike = open_replica("bike")
    bike.start_ride(RIDE, t=1_700_000_000.0)
    bike.append_samples(RIDE, [make_sample(i) for i in range(30)])
    bike.end_ride(RIDE, t=1_700_000_030.0, duration_s=30.0)
    backends = [open_replica(f"backend{i}", role=Role.BACKEND, device="backend") for i in range(2)]
    for backend in backends:
        for ref in bike.ride_refs(RIDE):
            assert push(bike.doc(ref.doc_id), backend, ref, "bike-1", Role.BIKE).accepted
    decoded: list[DocKind] = []
    real_decode = documents.decode

    def counting(doc: object, ref: DocRef) -> object:
        decoded.append(ref.kind)
        return real_decode(doc, ref)  # type: ignore[arg-type]

    monkeypatch.setattr(documents, "decode", counting)
    plain, memo = backends
    without = (plain.view(RIDE), plain.finalize(RIDE))
    assert decoded.count(DocKind.BIKE) == 3
    decoded.clear()
    with memo.decoding_once():
        within = (memo.view(RIDE), memo.finalize(RIDE))
    assert decoded.count(DocKind.BIKE) == 1
    assert [v.samples for v in within] == [v.samples for v in without] == [{"bike-1": 30}] * 2
    assert [v.totals for v in within] == [v.totals for v in without]
    assert [v.phase for v in within] == [v.phase for v in without]
    assert memo.documents.views._memo is None  # nothing kept past the block
    decoded.clear()
    memo.view(RIDE)  # cached view: no decode at all
    assert decoded == []
