"""Readers take each (device, seq) once across a bike's durable document and its live segments
(engine/ride/segments.py): the merged samples, the view, its totals and the series are those of one
document holding the union, whatever overlaps; and hostile index entries never name a bad segment."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.backend.series import ride_series
from engine.ride import policy, schema
from engine.ride.model import Claim, DeviceDoc, RideDocs
from engine.ride.samples import Sample
from engine.ride.schema import DocKind, DocRef, end_key
from engine.ride.segments import covered, merge_segments

RIDE = "ride-seg"
BIKE = "bike-1"
T0 = 1_700_000_000.0
DURABLE = DocRef(RIDE, DocKind.BIKE, BIKE)


def smp(seq: int, hr: int = 140) -> Sample:
    return Sample(seq=seq, t=T0 + seq, hr=hr, contact="detected", cadence=80 + seq % 7, power_dw=2000 + seq)


seq_sets = st.sets(st.integers(0, 200), max_size=80)


@given(durable=seq_sets, parts=st.lists(seq_sets, max_size=4), ended=st.booleans())
def test_overlapping_segments_count_once_in_samples_totals_and_series(
    durable: set[int], parts: list[set[int]], ended: bool
) -> None:
    union = durable.union(*parts)
    claim = Claim(t=T0 + 500, key=end_key(RIDE), last_seq=max(union, default=0), count=len(union))
    docs = [
        DeviceDoc(
            ref=DURABLE,
            samples=tuple(smp(s) for s in sorted(durable)),
            active=Claim(t=T0, key="start"),
            ended=claim if ended else None,
        )
    ]
    for n, part in enumerate(parts):
        # A segment's claims count for nothing: a hostile one here must not end the ride.
        bogus = Claim(t=T0, key="bogus", last_seq=0, count=10**6)
        docs.append(
            DeviceDoc(
                ref=schema.segment_ref(RIDE, BIKE, n),
                samples=tuple(smp(s) for s in sorted(part)),
                ended=bogus,
            )
        )
    merged = RideDocs(RIDE, devices=tuple(docs), owner=BIKE)
    whole = RideDocs(
        RIDE,
        devices=(
            DeviceDoc(
                ref=DURABLE,
                samples=tuple(smp(s) for s in sorted(union)),
                active=Claim(t=T0, key="start"),
                ended=claim if ended else None,
            ),
        ),
        owner=BIKE,
    )
    got, want = policy.resolve(merged), policy.resolve(whole)
    assert got.samples == ({BIKE: len(union)} if docs else {})
    assert got.to_json() == want.to_json()
    assert ride_series(merged) == ride_series(whole)
    (bike,) = merge_segments(merged.devices)
    assert [s.seq for s in bike.samples] == sorted(union)
    assert bike.ended == (claim if ended else None)


def test_the_durable_record_of_a_seq_wins_and_segments_of_another_device_stay_apart() -> None:
    docs = (
        DeviceDoc(ref=DURABLE, samples=(smp(1, hr=100),)),
        DeviceDoc(ref=schema.segment_ref(RIDE, BIKE, 0), samples=(smp(1, hr=180), smp(2, hr=181))),
        DeviceDoc(ref=schema.segment_ref(RIDE, "bike-2", 0), samples=(smp(1, hr=90),)),
        DeviceDoc(ref=DocRef(RIDE, DocKind.APP, "app-1"), samples=(smp(1, hr=95),)),
    )
    out = {(d.ref.kind, d.device): d for d in merge_segments(docs)}
    assert set(out) == {(DocKind.BIKE, BIKE), (DocKind.BIKE, "bike-2"), (DocKind.APP, "app-1")}
    assert [s.hr for s in out[(DocKind.BIKE, BIKE)].samples] == [100, 181]
    # A device with segments and no bike document (not arrived yet) reads as its bike document; a ride
    # with an owner ignores it unless it is the owner's.
    assert [s.hr for s in out[(DocKind.BIKE, "bike-2")].samples] == [90]
    view = policy.resolve(RideDocs(RIDE, devices=docs, owner=BIKE))
    assert view.samples == {BIKE: 2, "app-1": 1}


def test_a_segment_retires_only_when_named_and_covered() -> None:
    assert covered([1, 2], {1, 2, 3}, marked=True)
    assert covered([], set(), marked=True)  # an empty segment (fetched, never written)
    assert not covered([1, 2], {1, 2, 3}, marked=False)  # coverage alone: it may still be written
    assert not covered([1, 4], {1, 2, 3}, marked=True)  # a marker alone: a torn history


entries = st.dictionaries(
    st.sampled_from(["kind", "device", "segment", "x"]),
    st.one_of(
        st.sampled_from(["segment", "bike", "app", "shared", "backend", "bike-1", "bike/1", ""]),
        st.integers(-5, 20_000),
        st.booleans(),
        st.none(),
        st.floats(allow_nan=True),
        st.text(max_size=8),
    ),
)


@given(entry=entries)
def test_hostile_index_entries_never_name_a_bad_segment(entry: dict[str, Any]) -> None:
    ref = schema.parse_doc_ref(RIDE, entry)
    if ref is None or ref.kind is not DocKind.SEGMENT:
        return
    assert isinstance(ref.segment, int) and not isinstance(entry["segment"], bool)
    assert 0 <= ref.segment <= schema.MAX_SEGMENT
    assert schema.ref_from_row(RIDE, ref.kind.value, ref.stored_device) == ref
    assert ref.doc_id == schema.segment_ref(RIDE, ref.device, ref.segment).doc_id != DURABLE.doc_id
