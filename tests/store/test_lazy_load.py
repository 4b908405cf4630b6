"""The backend's replica loads each ride at its first use, not at open (engine/store/README.md, "Loading");
a bike's loads every ride at open. Real SQLite files, reopened; damage is written into the file."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.ride.schema import Role
from engine.store import ReplicaStore, RetentionPolicy, StoreCorrupt, SyncState
from engine.store import db as store_db
from engine.store.db import DB_NAME
from tests.support.clock import Clock
from tests.support.samples import make_sample

Open = Callable[..., ReplicaStore]
RIDES = ["ride-1", "ride-2", "ride-3"]


def _sql(path: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(path / DB_NAME) as conn:
        return conn.execute(query, args).fetchall()


def _stored(open_replica: Open, *, end: bool = True) -> tuple[ReplicaStore, ReplicaStore]:
    """A bike's rides merged into a backend replica (as its sync would), ended and finalized if `end`;
    the bike closed, the backend flushed (close it to reopen)."""
    bike = open_replica()
    backend = open_replica("backend", role=Role.BACKEND, device="backend")
    for n, ride_id in enumerate(RIDES):
        bike.start_ride(ride_id)
        bike.append_samples(ride_id, [make_sample(i) for i in range(10 + n)])
        bike.fold(ride_id)
        if end:
            bike.end_ride(ride_id)
        for ref in bike.ride_refs(ride_id):
            backend.ensure_doc(ref)
            backend.merge_remote(ref.doc_id, bike.doc(ref.doc_id))
        if end:
            backend.finalize(ride_id)
            backend.set_sync_state(ride_id, SyncState.RECONCILED, "finalized")
    bike.close()
    backend.flush()
    return bike, backend


def test_a_reopened_backend_holds_no_ride_and_reads_each_identical_at_first_use(open_replica: Open) -> None:
    _, backend = _stored(open_replica)
    before = {ride_id: backend.ride_json(ride_id) for ride_id in RIDES}
    backend.close()
    again = open_replica("backend", role=Role.BACKEND, device="backend")
    assert again.loaded_rides() == [] and again.documents.docs == {}
    assert again.recovery.docs_loaded == 0 and again.recovery.problems == []
    assert again.rides() == RIDES  # listed from the storage, none loaded
    assert again.loaded_rides() == []
    loads: list[str] = []
    again.watch_loads(loads.append)
    assert again.view("ride-2").samples == {"bike-1": 11}  # a whole-ride read loads the ride
    assert again.loaded_rides() == ["ride-2"] and loads == ["ride-2"]
    assert {ride_id: again.ride_json(ride_id) for ride_id in RIDES} == before
    assert sorted(loads) == sorted(RIDES)  # each loaded once
    assert again.has_ride("ride-1") and not again.has_ride("ride-unknown")
    assert not again.is_loaded("ride-unknown")


def test_a_bike_still_loads_every_ride_at_open(open_replica: Open) -> None:
    _stored(open_replica, end=False)[1].close()
    again = open_replica()
    assert sorted(again.documents.rides) == RIDES
    assert again.recovery.docs_loaded == len(RIDES) * 2  # each ride's shared and bike documents
    assert again.next_seq("ride-3") == 12  # its sample log recovered at open


def test_damage_in_one_ride_is_reported_when_that_ride_loads(
    open_replica: Open, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _stored(open_replica)[1].close()
    bike_doc = _sql(tmp_path / "backend", "SELECT doc_id FROM docs WHERE ride_id='ride-2' AND kind='bike'")
    rows = _sql(tmp_path / "backend", "SELECT id FROM changes WHERE doc_id=? ORDER BY id", bike_doc[0][0])
    with sqlite3.connect(tmp_path / "backend" / DB_NAME) as conn:
        conn.execute("UPDATE changes SET data=x'00' WHERE id=?", (rows[0][0],))
    with caplog.at_level(logging.ERROR, logger="engine.store.model"):
        again = open_replica("backend", role=Role.BACKEND, device="backend")
        assert again.recovery.problems == [] and caplog.records == []  # nothing of the ride read yet
        assert again.view("ride-1").samples == {"bike-1": 10}
        assert again.recovery.problems == []
        damaged = again.view("ride-2")
    assert damaged.samples["bike-1"] < 11  # its bike's history came back incomplete
    assert any(f"change record {rows[0][0]} is corrupt" in p for p in again.recovery.problems)
    assert again.recovery.records_skipped == 1
    logged = [r for r in caplog.records if r.getMessage() == "store recovery problem"]
    assert logged and all(r.levelno == logging.ERROR for r in logged)
    assert [r.__dict__["problem"] for r in logged] == again.recovery.problems


def test_a_ride_missing_from_the_rides_table_is_restored_at_open_without_loading(
    open_replica: Open, tmp_path: Path
) -> None:
    _stored(open_replica)[1].close()
    with sqlite3.connect(tmp_path / "backend" / DB_NAME) as conn:
        conn.execute("DELETE FROM rides WHERE ride_id='ride-3'")
    again = open_replica("backend", role=Role.BACKEND, device="backend")
    assert again.recovery.problems == ["ride ride-3: missing from the rides table; restored as syncing"]
    assert again.loaded_rides() == [] and again.rides() == RIDES
    assert again.view("ride-3").samples == {"bike-1": 12}
    assert again.sync_status("ride-3").state is SyncState.SYNCING


def test_retention_covers_the_rides_not_in_memory(open_replica: Open, clock: Clock) -> None:
    _stored(open_replica)[1].close()
    again = open_replica("backend", role=Role.BACKEND, device="backend")
    assert again.loaded_rides() == []
    clock.t += 10**9
    assert again.apply_retention(RetentionPolicy(keep_finalized_s=0))["evicted"] == RIDES
    assert again.rides() == [] and again.loaded_rides() == []
    assert again.documents.docs == {}
    assert _sql(again.data_dir, "SELECT COUNT(*) FROM docs") == [(0,)]


def test_a_reload_after_a_panic_brings_back_only_the_rides_that_were_in_memory(open_replica: Open) -> None:
    _, backend = _stored(open_replica)
    before = backend.ride_json("ride-2")
    backend.close()
    again = open_replica("backend", role=Role.BACKEND, device="backend")
    assert again.view("ride-2").samples == {"bike-1": 11}
    actor = again.actor
    again.reload()  # what the panic guard calls
    assert again.actor != actor
    assert again.loaded_rides() == ["ride-2"]
    assert sorted(e.ref.ride_id for e in again.documents.docs.values()) == ["ride-2", "ride-2", "ride-2"]
    assert again.ride_json("ride-2") == before


def test_a_page_sqlite_cannot_read_at_a_lazy_load_is_store_corrupt_and_nothing_stays(
    open_replica: Open, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big file is not `quick_check`ed at open: a damaged page is met when a ride's documents load."""
    _stored(open_replica)[1].close()
    path = tmp_path / "backend" / DB_NAME
    doc_ids = [row[0] for row in _sql(tmp_path / "backend", "SELECT doc_id FROM docs WHERE ride_id='ride-2'")]
    blobs = [
        row[0]
        for d in doc_ids
        for row in _sql(tmp_path / "backend", "SELECT data FROM changes WHERE doc_id=?", d)
    ]
    page_size = int(str(_sql(tmp_path / "backend", "PRAGMA page_size")[0][0]))
    raw = bytearray(path.read_bytes())
    blob = max((b for b in blobs if isinstance(b, bytes)), key=len)
    assert len(blob) > 64
    at = raw.find(blob[:64])
    assert at > 0
    page = at // page_size * page_size
    raw[page : page + page_size] = b"\xa5" * page_size  # the page's header too: SQLite cannot parse it
    path.write_bytes(bytes(raw))
    monkeypatch.setattr(store_db, "QUICK_CHECK_MAX_BYTES", 0)  # as for a file over 64 MiB
    again = open_replica("backend", role=Role.BACKEND, device="backend")
    assert again.loaded_rides() == []
    with pytest.raises(StoreCorrupt, match="ride ride-2: the store cannot be read"):
        again.view("ride-2")
    assert not again.is_loaded("ride-2")
    assert not any(e.ref.ride_id == "ride-2" for e in again.documents.docs.values())


def test_rides_after_pages_what_rides_lists_without_reading_every_row(open_replica: Open) -> None:
    """A page of rides (`GET /v1/rides`) merges the rides in memory with the storage's page of ids."""
    _, backend = _stored(open_replica)
    backend.close()
    again = open_replica("backend", role=Role.BACKEND, device="backend")
    assert again.has_ride("ride-2")  # one ride in memory, the others only stored
    again.start_ride("ride-0")  # and one new since the open
    everything = again.rides()
    assert everything == ["ride-0", *RIDES]
    for after in (None, "ride-0", "ride-1", "ride-15", "ride-2", "ride-3", "zzz"):
        for n in range(1, 6):
            expected = [r for r in everything if after is None or r > after][:n]
            assert again.rides_after(after, n) == expected, (after, n)
    assert sorted(again.loaded_rides()) == ["ride-0", "ride-2"]  # paging loaded nothing
