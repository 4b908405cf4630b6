"""An open ride keeps its resolved view, not its decoded samples: the view is resolved again only when one
of the ride's documents changed, and no device document's samples stay in memory as Python objects."""

from __future__ import annotations

from collections.abc import Callable

from engine.ride.schema import DocKind, Role
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
    assert device_docs and all(e.decoded is None for e in device_docs)

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
