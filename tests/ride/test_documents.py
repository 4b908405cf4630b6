"""Writers and decoders of the ride documents: round trips, write-once keys, hostile content."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.crdt import CrdtDoc, new_actor_id
from engine.ride import compact, documents, policy, schema
from engine.ride.model import BackendDoc, DeviceDoc, RideDocs, SharedDoc
from engine.ride.samples import Sample
from engine.ride.schema import DocKind, DocRef
from tests.support.samples import make_sample

RIDE = "ride-d"
BIKE = DocRef(RIDE, DocKind.BIKE, "bike-1")


def test_device_document_round_trip_and_write_once_claims() -> None:
    doc = CrdtDoc.new(new_actor_id("bike-1"))
    assert documents.init_doc(doc, BIKE) and not documents.init_doc(doc, BIKE)
    documents.add_samples(doc, [make_sample(i) for i in (2, 0, 1)])
    documents.add_samples(doc, [make_sample(i) for i in (3, 4)])
    assert documents.claim_active(doc, 10.0, "start") and not documents.claim_active(doc, 11.0, "again")
    assert documents.claim_ended(doc, RIDE, 20.0, last_seq=4, count=5, duration_s=19.0)
    assert not documents.claim_ended(doc, RIDE, 21.0, last_seq=9, count=9)
    decoded = documents.decode(doc, BIKE)
    assert isinstance(decoded, DeviceDoc)
    assert [s.seq for s in decoded.samples] == [0, 1, 2, 3, 4]
    assert decoded.samples[0] == make_sample(0).normalized()
    assert decoded.active is not None and decoded.active.t == 10.0
    assert decoded.ended is not None and (decoded.ended.count, decoded.ended.key) == (5, schema.end_key(RIDE))
    assert decoded.problems == () and decoded.batches == 2
    light = documents.decode(doc, BIKE, samples=False)
    assert isinstance(light, DeviceDoc) and light.samples == () and light.batches == 2


def test_overlapping_batches_count_each_seq_once() -> None:
    doc = CrdtDoc.new(new_actor_id("bike-1"))
    documents.add_samples(doc, [make_sample(i) for i in range(0, 5)])
    documents.add_samples(doc, [make_sample(i) for i in range(3, 8)])
    decoded = documents.decode(doc, BIKE)
    assert isinstance(decoded, DeviceDoc) and [s.seq for s in decoded.samples] == list(range(8))


def test_backend_and_shared_documents() -> None:
    ref = DocRef(RIDE, DocKind.BACKEND, "backend")
    doc = CrdtDoc.new(new_actor_id("backend"))
    assert documents.record_end_event(doc, schema.end_key(RIDE), 5.0, "bike-1", "bike")
    assert not documents.record_end_event(doc, schema.end_key(RIDE), 6.0, "app-1", "app")
    assert documents.write_finalization(doc, 7.0, {"duration_s": 3.0}, {"bike-1": 4})
    decoded = documents.decode(doc, ref)
    assert isinstance(decoded, BackendDoc) and len(decoded.end_events) == 1
    assert decoded.finalized is not None and decoded.finalized.samples == {"bike-1": 4}
    shared = CrdtDoc.new(new_actor_id("app-1"))
    documents.index_doc(shared, BIKE)
    k1 = documents.edit_shared(shared, "rating", 4, t=1.0, device="app-1", role="app", seen=None)
    k2 = documents.edit_shared(shared, "rating", 5, t=2.0, device="app-1", role="app", seen=k1)
    assert k1 != k2
    out = documents.decode(shared, schema.shared_ref(RIDE))
    assert isinstance(out, SharedDoc) and out.index == (BIKE,) and [e.value for e in out.edits] == [4, 5]


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
KEYS = st.sampled_from(
    ["claim.active", "claim.ended", "finalized", "end.x", "doc.00", "edit.aa.1", "s0000000000000005"]
) | st.text(min_size=1, max_size=12)
VALUES = (
    st.binary(max_size=24)
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=20)
    | JSONISH.map(json.dumps)  # json.dumps writes Infinity for inf: hostile too
)


def test_out_of_range_integers_are_refused_before_the_binding() -> None:
    doc = CrdtDoc.new(new_actor_id("x"))
    with pytest.raises(ValueError):
        doc.put({"n": 2**63})
    assert doc.keys() == [] and not doc.poisoned


@given(st.dictionaries(KEYS, VALUES, max_size=8))
def test_hostile_document_content_never_raises(items: dict[str, object]) -> None:
    doc = CrdtDoc.new(new_actor_id("evil"))
    doc.put(items)  # type: ignore[arg-type]
    bike = documents.decode(doc, BIKE)
    backend = documents.decode(doc, DocRef(RIDE, DocKind.BACKEND, "backend"))
    shared = documents.decode(doc, schema.shared_ref(RIDE))
    assert isinstance(bike, DeviceDoc) and isinstance(backend, BackendDoc) and isinstance(shared, SharedDoc)
    view = policy.resolve(RideDocs(RIDE, shared=shared, devices=(bike,), backends=(backend,)))
    json.dumps(view.to_json(), allow_nan=False)  # strict JSON, whatever the document held


def test_a_few_bytes_of_schema_2_cannot_make_a_view_unbounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A schema 2 batch of 65,536 bare samples is ~20 bytes, so the document's sample count is capped
    (here lowered, to keep the test small); one problem per key, never one per sample."""
    biggest = [Sample(seq=i, t=float(i)) for i in range(compact.MAX_BATCH_SAMPLES)]
    assert len(compact.encode_batch(biggest)) < 64
    monkeypatch.setattr(documents, "MAX_SAMPLES_PER_DOCUMENT", 1000)
    doc = CrdtDoc.new(new_actor_id("bike-1"))
    documents.init_doc(doc, BIKE)
    for k in range(4):
        bare = [Sample(seq=10_000 + k * 400 + i, t=float(i)) for i in range(400)]
        doc.put({schema.sample_key(bare[0].seq, bare[-1].seq): compact.encode_batch(bare)})
    # A key whose samples lie outside its own range: one problem for it, not one per sample.
    doc.put({schema.sample_key(0, 0): compact.encode_batch([Sample(seq=s, t=0.0) for s in range(1, 500)])})
    decoded = documents.decode(doc, BIKE)
    assert isinstance(decoded, DeviceDoc)
    assert len(decoded.samples) == 1200  # three keys read, the fourth past the cap skipped
    assert sum("skipped" in p for p in decoded.problems) == 1
    assert sum("outside the key's seq range" in p for p in decoded.problems) == 1
    assert len(decoded.problems) == 2
