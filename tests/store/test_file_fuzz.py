"""Random damage to a real store file: opening gives a typed error or a replica with problems reported,
never an untyped exception, a crash, or silently wrong samples."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.ride.schema import Role
from engine.store import ReplicaStore, StoreError
from engine.store.db import DB_NAME
from tests.support.samples import make_sample

RIDE = "ride-f"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template")
    store = ReplicaStore(root, device_id="bike-1", role=Role.BIKE)
    store.start_ride(RIDE)
    for batch in range(6):
        store.append_samples(RIDE, [make_sample(batch * 10 + i) for i in range(10)])
        store.fold(RIDE)
    for ref in store.ride_refs(RIDE)[:1]:
        store.compact(ref.doc_id)
    store.append_samples(RIDE, [make_sample(60 + i) for i in range(5)])
    store.edit_shared(RIDE, "title", "fuzz")
    store.close()
    conn = sqlite3.connect(root / DB_NAME)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return root


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_byte_damage_is_detected_or_harmless(
    template: Path, tmp_path: Path, data: st.DataObject
) -> None:
    case = Path(tempfile.mkdtemp(dir=tmp_path)) / "store"
    shutil.copytree(template, case)
    path = case / DB_NAME
    blob = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(blob) - 1))
        blob[index] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(blob))
    try:
        store = ReplicaStore(case, device_id="bike-1", role=Role.BIKE)
    except StoreError as exc:
        event(f"refused: {type(exc).__name__}")
        return
    try:
        samples = {s.seq: s for d in store.ride_docs(RIDE).devices for s in d.samples}
        # Whatever survived is exactly what was written: damage never yields a different sample.
        for seq, sample in samples.items():
            assert sample == make_sample(seq).normalized()
        event(f"opened: problems={bool(store.recovery.problems)} samples={len(samples)}")
        if not store.recovery.problems:
            assert sorted(samples) == list(range(65))
    finally:
        store.close()
