"""`bench store`'s live-segment figures are measured on rides the bike's own sample log really made:
every layout, on both rides, holds every sample once after the end, and segments really cut the durable
document's changes (engine/bench/store_segments.py)."""

from __future__ import annotations

import pytest

from engine.bench.store_segments import CASES, DEVICE, RIDE, RIDES, live_hour
from engine.ride import documents
from engine.ride.model import DeviceDoc
from engine.ride.schema import DocKind, DocRef

SAMPLES = 659  # 11 minutes: two consolidations and a live segment part-way through the third interval


@pytest.mark.parametrize("ride", sorted(RIDES))
def test_every_layout_ends_with_every_sample_once_and_segments_cut_the_changes(ride: str) -> None:
    durable = DocRef(RIDE, DocKind.BIKE, DEVICE)
    changes = {}
    for label, (batch_schema, interval) in CASES.items():
        hour = live_hour(SAMPLES, interval, batch_schema, ride)
        docs, ended = hour.docs, hour.ended
        decoded = documents.decode(ended, durable)
        assert isinstance(decoded, DeviceDoc)
        assert [s.seq for s in decoded.samples] == list(range(SAMPLES + 1)), label
        assert decoded.samples == tuple(RIDES[ride](seq).normalized() for seq in range(SAMPLES + 1))
        segments = [ref for ref in docs if ref.kind is DocKind.SEGMENT]
        # Without segments nothing else is kept; with them, the one live segment at its largest.
        assert len(segments) == (0 if interval is None else 1), label
        changes[label] = len(docs[durable].changes_since([]))
    assert changes["schema1_10s"] == changes["durable_10s"] >= SAMPLES // 10
    assert changes["segments_5min"] <= 3
