"""The durable store on real SQLite files: durability, idempotent recovery, corruption, retention, sync."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from automerge.core import ROOT, ScalarType

from engine.crdt import CrdtPanic
from engine.ride.schema import Phase, Role, shared_ref
from engine.store import ReplicaStore, RideNotEvictable, StoreCorrupt, SyncState
from engine.store import db as store_db
from engine.store.db import DB_NAME
from engine.store.sqlite import SqliteStorage
from tests.support.clock import Clock
from tests.support.samples import make_sample

Open = Callable[..., ReplicaStore]
RIDE = "ride-1"


def db_path(store: ReplicaStore) -> Path:
    return store.data_dir / DB_NAME


def sql(store: ReplicaStore, query: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db_path(store))
    try:
        rows = conn.execute(query, args).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def seqs_in_view(store: ReplicaStore) -> int:
    return store.view(RIDE).samples.get(store.device_id, 0)


def test_appended_samples_survive_reopen_unfolded(open_replica: Open) -> None:
    bike = open_replica()
    bike.start_ride(RIDE)
    for i in range(25):
        assert bike.append_sample(RIDE, make_sample(i))
    bike.fold(RIDE)
    for i in range(25, 30):
        bike.append_sample(RIDE, make_sample(i))
    bike.close()
    again = open_replica()
    assert again.recovery.raw_replayed == 5
    assert seqs_in_view(again) == 30
    assert again.next_seq(RIDE) == 30


def test_append_is_idempotent_by_seq_across_restarts(open_replica: Open) -> None:
    bike = open_replica()
    bike.start_ride(RIDE)
    assert bike.append_sample(RIDE, make_sample(0))
    assert not bike.append_sample(RIDE, make_sample(0))
    bike.fold(RIDE)
    assert not bike.append_sample(RIDE, make_sample(0))
    bike.close()
    again = open_replica()
    assert not again.append_sample(RIDE, make_sample(0))
    assert again.recovery.raw_replayed == 0
    assert seqs_in_view(again) == 1


def test_one_fold_is_one_record_and_marks_the_raw_rows(open_replica: Open) -> None:
    bike = open_replica()
    bike.start_ride(RIDE)
    (before,) = sql(bike, "SELECT COUNT(*) FROM changes")[0]
    assert isinstance(before, int)
    bike.append_samples(RIDE, [make_sample(i) for i in range(10)])
    assert bike.fold(RIDE) == 10
    assert sql(bike, "SELECT COUNT(*) FROM changes")[0][0] == before + 1
    assert sql(bike, "SELECT COUNT(*) FROM raw_samples WHERE folded=0") == [(0,)]


def test_maybe_fold_waits_for_interval_or_batch(open_replica: Open, clock: Clock) -> None:
    bike = open_replica(fold_interval_s=10.0, max_batch=50)
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(5)])
    assert bike.maybe_fold(RIDE) == 0
    clock.t += 10
    assert bike.maybe_fold(RIDE) == 5
    bike.append_samples(RIDE, [make_sample(i) for i in range(5, 55)])
    assert bike.maybe_fold(RIDE) == 50


def flip_byte(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x40]) + blob[index + 1 :]


@pytest.mark.parametrize("damage", ["bitflip", "truncate", "empty"])
def test_corrupt_change_record_is_reported_skipped_and_its_samples_restored(
    open_replica: Open, damage: str
) -> None:
    bike = open_replica()
    bike.start_ride(RIDE)
    for batch in range(3):
        bike.append_samples(RIDE, [make_sample(batch * 10 + i) for i in range(10)])
        bike.fold(RIDE)
    bike.close()
    rows = sql(bike, "SELECT id, data FROM changes ORDER BY id")
    rec_id, data = rows[-2]
    assert isinstance(data, bytes)
    bad = {"bitflip": flip_byte(data, len(data) // 2), "truncate": data[:-7], "empty": b""}[damage]
    sql(bike, "UPDATE changes SET data=? WHERE id=?", bad, rec_id)
    again = open_replica()
    assert again.recovery.records_skipped == 1
    assert any(f"change record {rec_id}" in p for p in again.recovery.problems)
    # The raw log still had them: nothing is lost, and nothing was loaded from the damaged record.
    assert seqs_in_view(again) == 30
    assert again.recovery.raw_replayed >= 10


@pytest.mark.parametrize("damage", ["bitflip", "truncate", "empty"])
def test_corrupt_snapshot_is_reported_and_the_raw_log_keeps_the_samples(
    open_replica: Open, damage: str
) -> None:
    bike = open_replica()
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(40)])
    bike.fold(RIDE)
    own = bike.ride_refs(RIDE)
    for ref in own:
        bike.compact(ref.doc_id)
    bike.edit_shared(RIDE, "title", "After the snapshot")
    bike.close()
    doc_id = next(r.doc_id for r in own if r.kind.value == "bike")
    (data,) = sql(bike, "SELECT data FROM snapshots WHERE doc_id=?", doc_id)[0]
    assert isinstance(data, bytes)
    bad = {"bitflip": flip_byte(data, len(data) - 3), "truncate": data[: len(data) // 2], "empty": b""}[
        damage
    ]
    sql(bike, "UPDATE snapshots SET data=? WHERE doc_id=?", bad, doc_id)
    again = open_replica()
    assert any("snapshot" in p for p in again.recovery.problems)
    assert seqs_in_view(again) == 40
    assert again.view(RIDE).shared == {"title": "After the snapshot"}


def test_corrupt_raw_row_is_reported_not_loaded(open_replica: Open) -> None:
    bike = open_replica()
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(3)])
    bike.close()
    sql(bike, "UPDATE raw_samples SET data=? WHERE seq=1", b"\x01\x01")
    again = open_replica()
    assert again.recovery.raw_skipped == 1
    assert seqs_in_view(again) == 2


def test_empty_and_garbage_and_truncated_files_give_clear_errors(tmp_path: Path, open_replica: Open) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / DB_NAME).write_bytes(b"")
    with pytest.raises(StoreCorrupt, match="empty"):
        ReplicaStore(tmp_path / "empty", device_id="b", role=Role.BIKE)
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / DB_NAME).write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreCorrupt, match="not a readable ridesync store"):
        ReplicaStore(tmp_path / "garbage", device_id="b", role=Role.BIKE)
    bike = open_replica("cut")
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(400)])
    bike.fold(RIDE)
    bike.close()
    sqlite3.connect(db_path(bike)).execute("PRAGMA wal_checkpoint(TRUNCATE)").connection.close()
    whole = db_path(bike).read_bytes()
    db_path(bike).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(StoreCorrupt):
        ReplicaStore(bike.data_dir, device_id="cut-1", role=Role.BIKE)
    assert db_path(bike).read_bytes() == whole[: len(whole) // 2]  # left as found, for the operator


def test_truncated_file_is_caught_without_the_open_time_page_scan(
    open_replica: Open, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "QUICK_CHECK_MAX_BYTES", 0)  # as for a big backend store
    bike = open_replica("cut")
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(400)])
    bike.fold(RIDE)
    bike.close()
    sqlite3.connect(db_path(bike)).execute("PRAGMA wal_checkpoint(TRUNCATE)").connection.close()
    whole = db_path(bike).read_bytes()
    db_path(bike).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(StoreCorrupt):
        ReplicaStore(bike.data_dir, device_id="cut-1", role=Role.BIKE)


def test_store_belongs_to_one_device(open_replica: Open, tmp_path: Path) -> None:
    open_replica("bike").close()
    with pytest.raises(Exception, match="belongs to bike bike-1"):
        ReplicaStore(tmp_path / "bike", device_id="app-9", role=Role.APP)


def test_sync_bookkeeping_persists(open_replica: Open) -> None:
    bike = open_replica()
    bike.start_ride(RIDE)
    doc_id = shared_ref(RIDE).doc_id
    assert bike.sync_status(RIDE).state is SyncState.SYNCING
    bike.set_peer_heads(doc_id, "backend", bike.heads(doc_id))
    bike.set_sync_state(RIDE, SyncState.FAILED, "backend unreachable: connection refused")
    bike.close()
    again = open_replica()
    assert again.peer_heads(doc_id, "backend") == again.heads(doc_id)
    status = again.sync_status(RIDE)
    assert (status.state, status.reason) == (SyncState.FAILED, "backend unreachable: connection refused")
    assert not again.acknowledged(RIDE, "backend")  # the bike document was never acknowledged


def ride_to_finalized(bike: ReplicaStore, backend: ReplicaStore) -> None:
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(20)])
    bike.end_ride(RIDE)
    for ref in bike.ride_refs(RIDE):
        backend.ensure_doc(ref)
        backend.merge_remote(ref.doc_id, bike.doc(ref.doc_id))
    backend.finalize(RIDE)
    for ref in backend.ride_refs(RIDE):
        bike.ensure_doc(ref)
        bike.merge_remote(ref.doc_id, backend.doc(ref.doc_id))


def test_unsynced_rides_are_never_evicted(open_replica: Open, clock: Clock) -> None:
    from engine.store import RetentionPolicy

    bike = open_replica()
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    ride_to_finalized(bike, backend)
    assert bike.view(RIDE).phase is Phase.FINALIZED
    with pytest.raises(RideNotEvictable, match="not reconciled"):
        bike.evict(RIDE)
    clock.t += 10**9
    assert bike.apply_retention(RetentionPolicy(keep_finalized_s=0)) == {
        "compacted": [],
        "evicted": [],
        "kept": [RIDE],
    }
    bike.set_sync_state(RIDE, SyncState.RECONCILED)
    assert bike.apply_retention(RetentionPolicy(keep_finalized_s=10**12))["compacted"] == [RIDE]
    assert sql(bike, "SELECT COUNT(*) FROM raw_samples") == [(0,)]
    assert bike.view(RIDE).samples == {"bike-1": 20}
    clock.t += 10**9
    assert bike.apply_retention(RetentionPolicy(keep_finalized_s=0))["evicted"] == [RIDE]
    assert bike.rides() == []


def test_low_storage_is_loud_and_recording_continues(
    open_replica: Open, caplog: pytest.LogCaptureFixture
) -> None:
    bike = open_replica(min_free_bytes=1 << 62)
    bike.start_ride(RIDE)
    with caplog.at_level(logging.ERROR):
        assert bike.append_sample(RIDE, make_sample(0))
    assert bike.storage_status().low
    assert any(r.getMessage() == "storage low; recording continues" for r in caplog.records)
    assert bike.pending_samples(RIDE) == 1


def test_a_panic_reloads_the_replica_from_disk(open_replica: Open) -> None:
    bike = open_replica()
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(5)])
    bike.fold(RIDE)
    doc_id = shared_ref(RIDE).doc_id
    poisoned = bike.doc(doc_id)
    old_actor = bike.actor

    def write_counter() -> None:
        with poisoned._doc.transaction() as tx:
            tx.put(ROOT, "c", ScalarType.Counter, 1)

    with pytest.raises(CrdtPanic), bike.documents.guard():
        poisoned._call(write_counter, mutating=True)
    assert poisoned.poisoned
    assert bike.doc(doc_id) is not poisoned and bike.actor != old_actor
    assert seqs_in_view(bike) == 5


def test_full_disk_keeps_recording_in_memory_and_logs_once_space_returns(
    open_replica: Open, caplog: pytest.LogCaptureFixture
) -> None:
    bike = open_replica()
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(5)])
    bike.fold(RIDE)
    assert isinstance(bike.storage, SqliteStorage)
    conn = bike.storage.conn
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite now answers SQLITE_FULL, as on a full disk
    with caplog.at_level(logging.CRITICAL):
        for i in range(5, 400):
            assert bike.append_sample(RIDE, make_sample(i))
            bike.maybe_fold(RIDE)
    assert bike.storage_status().unlogged_samples > 0 and bike.storage_status().low
    assert any(r.getMessage() == "storage full; samples held in memory only" for r in caplog.records)
    bike.fold(RIDE)
    assert seqs_in_view(bike) == 400  # recording went on
    conn.execute("PRAGMA max_page_count=1073741823")
    assert bike.append_sample(RIDE, make_sample(400))
    assert bike.storage_status().unlogged_samples == 0
    bike.fold(RIDE)
    bike.close()
    again = open_replica()
    assert again.recovery.problems == []
    assert seqs_in_view(again) == 401
