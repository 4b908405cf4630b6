"""Write-behind (engine/store/writer.py): commits on a writer thread, in groups, in order; readers on the
owner's thread see their own writes at once; `flushed()` means committed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.crdt import SyncSession
from engine.ride.schema import Role, own_ref, shared_ref
from engine.store import ReplicaStore, StoreWriter, SyncState, WriterFailed, bookkeeping
from engine.store import db as store_db
from engine.store.sqlite import SqliteStorage
from tests.support.samples import make_sample

Open = Callable[..., ReplicaStore]
RIDE = "ride-wb"


def committed_changes(data_dir: Path) -> int:
    """Change records a fresh connection sees: what is committed, not what is queued."""
    conn = sqlite3.connect(data_dir / store_db.DB_NAME)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM changes").fetchone()[0])
    finally:
        conn.close()


def insert_meta(key: str, value: str) -> Callable[[sqlite3.Cursor], object]:
    return lambda cur: cur.execute("INSERT INTO meta VALUES(?, ?)", (key, value))


def test_the_owner_reads_its_writes_before_they_are_committed(open_replica: Open, tmp_path: Path) -> None:
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    backend.start_write_behind()
    writer = backend.writer
    assert writer is not None
    gate = threading.Event()
    writer.submit(lambda cur: gate.wait(30))  # holds the writer: nothing after it commits yet
    try:
        backend.record_end_event(RIDE, "end:ride-wb", "bike-1", "bike", t=5.0)
        backend.set_sync_state(RIDE, SyncState.SYNCING, "ended; waiting")
        assert backend.bind_actor(b"\x01" * 16, "bike-1", Role.BIKE)
        assert not backend.bind_actor(b"\x01" * 16, "app-1", Role.APP)
        assert backend.actor_owner(b"\x01" * 16) == ("bike-1", Role.BIKE)
        assert backend.rides() == [RIDE] and backend.has_ride(RIDE)
        assert backend.sync_status(RIDE).reason == "ended; waiting"
        assert backend.view(RIDE).end_events_counted == 1
        assert writer.pending > 1
        assert committed_changes(tmp_path / "backend") == 0
    finally:
        gate.set()
    backend.flush()
    assert writer.pending == 0
    assert committed_changes(tmp_path / "backend") > 0
    heads = {ref.doc_id: backend.heads(ref.doc_id) for ref in backend.ride_refs(RIDE)}
    backend.close()
    again = open_replica("backend", role=Role.BACKEND, device="backend")
    assert again.recovery.problems == []
    assert {ref.doc_id: again.heads(ref.doc_id) for ref in again.ride_refs(RIDE)} == heads
    assert again.actor_owner(b"\x01" * 16) == ("bike-1", Role.BIKE)
    assert again.sync_status(RIDE).reason == "ended; waiting"
    assert again.view(RIDE).end_events_counted == 1


def test_bindings_in_memory_are_bounded_and_the_storage_answers_the_rest(
    open_replica: Open, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that has served many rides keeps a bounded number of actor bindings and ride owners in
    memory; every other one is answered by the storage, also while its write is still queued."""
    monkeypatch.setattr(bookkeeping, "CACHED_BINDINGS", 16)
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    backend.start_write_behind()
    writer, storage = backend.writer, backend.storage
    assert writer is not None and isinstance(storage, SqliteStorage)
    rides = [f"ride-{i:03d}" for i in range(100)]
    actors = [i.to_bytes(16, "big") for i in range(100)]
    gate = threading.Event()
    writer.submit(lambda cur: gate.wait(30))  # holds the writer: the claims below stay queued
    try:
        for i, ride in enumerate(rides):
            assert backend.bind_actor(actors[i], f"bike-{i}", Role.BIKE)
            backend.bind_ride_owner(ride, f"bike-{i}")
            backend.complete_ride_owner(ride, rider=f"rider-{i}", class_id="spin" if i % 2 else None)
        assert storage.claims_in_flight() == 200  # every claim (a completion replaces its owner's)
        for i, ride in enumerate(rides):
            assert backend.actor_owner(actors[i]) == (f"bike-{i}", Role.BIKE)
            owner = backend.ride_owner(ride)
            assert owner is not None and (owner.device, owner.rider) == (f"bike-{i}", f"rider-{i}")
            assert not backend.bind_actor(actors[i], "stranger", Role.BIKE)
            assert backend.bind_ride_owner(ride, "stranger").device == f"bike-{i}"
    finally:
        gate.set()
    backend.flush()
    assert storage.claims_in_flight() == 0
    assert len(backend.book._actors) <= 16 and len(backend.book._owners) <= 16
    assert [o.ride_id for o in backend.class_owners("spin")] == rides[1::2]
    assert all(backend.actor_owner(a) == (f"bike-{i}", Role.BIKE) for i, a in enumerate(actors))


def test_close_commits_everything_queued(open_replica: Open) -> None:
    bike = open_replica()
    bike.start_ride(RIDE)
    bike.append_samples(RIDE, [make_sample(i) for i in range(10)])
    bike.fold(RIDE)
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    backend.start_write_behind()
    ref = own_ref(RIDE, "bike-1", Role.BIKE)
    assert ref is not None
    backend.ensure_doc(ref)
    backend.apply_changes(ref.doc_id, [c.data for c in bike.changes_since(ref.doc_id, [])])
    backend.close()
    again = open_replica("backend", role=Role.BACKEND, device="backend")
    assert again.load_ride(RIDE)  # the backend's replica loads each ride at its first use
    assert again.heads(ref.doc_id) == bike.heads(ref.doc_id)
    assert again.view(RIDE).samples == {"bike-1": 10}


def test_queued_writes_commit_in_one_group(tmp_path: Path) -> None:
    ReplicaStore(tmp_path, device_id="backend", role=Role.BACKEND).close()  # creates the schema
    writer = StoreWriter(tmp_path)
    try:
        gate = threading.Event()
        writer.submit(lambda cur: gate.wait(30))
        for i in range(100):
            writer.submit(insert_meta(f"k{i}", str(i)))
        gate.set()
        writer.flush()
        # The hundred writes queued behind the blocking job commit together (with it, or in the group after
        # it, depending on whether the writer took it alone): at most two fsyncs, not 101.
        assert writer.groups <= 2
        assert (writer.queued, writer.committed) == (101, 101)
    finally:
        writer.close()
    conn = sqlite3.connect(tmp_path / store_db.DB_NAME)
    assert conn.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'k%'").fetchone()[0] == 100
    conn.close()


async def test_flushed_waits_for_the_commit(tmp_path: Path) -> None:
    ReplicaStore(tmp_path, device_id="backend", role=Role.BACKEND).close()
    writer = StoreWriter(tmp_path)
    try:
        gate = threading.Event()
        writer.submit(lambda cur: gate.wait(30))
        writer.submit(lambda cur: cur.execute("INSERT INTO meta VALUES('x', 'y')"))
        waiter = asyncio.ensure_future(writer.flushed())
        await asyncio.sleep(0)
        assert not waiter.done()  # the writer is held: nothing is committed, so nothing may be acked
        gate.set()
        async with asyncio.timeout(30):
            await waiter
        assert writer.committed == writer.queued == 2
        await writer.flushed()  # nothing pending: returns at once
    finally:
        writer.close()


async def test_a_failed_writer_fails_every_waiter_and_every_later_write(tmp_path: Path) -> None:
    ReplicaStore(tmp_path, device_id="backend", role=Role.BACKEND).close()
    writer = StoreWriter(tmp_path)
    try:
        writer.submit(lambda cur: cur.execute("INSERT INTO no_such_table VALUES(1)"))
        with pytest.raises(WriterFailed, match="no_such_table"):
            async with asyncio.timeout(30):
                await writer.flushed()
        with pytest.raises(WriterFailed):
            writer.submit(lambda cur: None)
        with pytest.raises(WriterFailed):
            writer.flush(timeout=30)
    finally:
        writer.close()


def test_gated_sync_with_write_behind_persists_after_flush(open_replica: Open) -> None:
    bike = open_replica()
    bike.start_ride(RIDE)
    bike.edit_shared(RIDE, "title", "morning")
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    backend.start_write_behind()
    ref = shared_ref(RIDE)
    backend.ensure_doc(ref)
    gated = backend.gated_sync(ref.doc_id)
    mine = SyncSession()
    for _ in range(20):
        msg = bike.generate_sync(ref.doc_id, mine)
        if msg is not None:
            assert gated.receive(msg, device="bike-1", role=Role.BIKE).accepted
        reply = gated.generate()
        if reply is not None:
            bike.receive_sync(ref.doc_id, mine, reply)
        if msg is None and reply is None:
            break
    assert backend.heads(ref.doc_id) == bike.heads(ref.doc_id)
    backend.flush()
    backend.close()
    again = open_replica("backend", role=Role.BACKEND, device="backend")
    assert again.load_ride(RIDE)  # the backend's replica loads each ride at its first use
    assert again.heads(ref.doc_id) == bike.heads(ref.doc_id)
    assert again.actor_owner(bike.actor) == ("bike-1", Role.BIKE)
