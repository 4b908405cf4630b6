"""The storage port's conformance suite: every implementation of `engine.store.port.StoragePort` passes
the same tests, as automerge-repo's storage adapters share one suite. A new backend (PostgreSQL) adds one
entry to `IMPLEMENTATIONS` and nothing else. PostgreSQL runs on a throwaway cluster
(tests/support/postgres.py) and skips, naming the Debian package, where the server binaries are missing.

Each implementation is given as a factory `open() -> StoragePort` that reopens the same storage, so the
suite can check what survives a close and reopen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.ride.samples import Sample
from engine.ride.schema import Role
from engine.store import ReplicaStore
from engine.store.memory import MemoryBacking, MemoryStorage
from engine.store.port import OwnerRow, StoragePort, StorageTx
from engine.store.sqlite import SqliteStorage

Opener = Callable[[], StoragePort]
H1, H2, H3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def _sqlite(tmp_path: Path, write_behind: bool) -> Opener:
    def open_() -> StoragePort:
        storage = SqliteStorage(tmp_path / "replica")
        if write_behind:
            storage.start_write_behind(100, None)
        return storage

    return open_


def _memory(tmp_path: Path, write_behind: bool) -> Opener:
    backing = MemoryBacking()
    return lambda: MemoryStorage(backing)


def _postgres(url: str, write_behind: bool) -> Opener:
    from engine.store.postgres import PostgresStorage

    def open_() -> StoragePort:
        storage = PostgresStorage(url)
        if write_behind:
            storage.start_write_behind(100, None)
        return storage

    return open_


IMPLEMENTATIONS: dict[str, Callable[[Path, bool], Opener]] = {"sqlite": _sqlite, "memory": _memory}
NAMES = [*IMPLEMENTATIONS, "postgres"]


@pytest.fixture(
    params=[(name, wb) for name in NAMES for wb in (False, True)],
    ids=lambda p: f"{p[0]}{'-write-behind' if p[1] else ''}",
)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    name, write_behind = request.param
    opened: list[StoragePort] = []
    if name == "postgres":
        make = _postgres(request.getfixturevalue("pg_url"), write_behind)
    else:
        make = IMPLEMENTATIONS[name](tmp_path, write_behind)

    def open_() -> StoragePort:
        storage = make()
        opened.append(storage)
        return storage

    yield open_
    for storage in opened:
        storage.close()


def reopen(storage: StoragePort, opener: Opener) -> StoragePort:
    storage.flush()
    storage.close()
    return opener()


def test_meta_and_rides_survive_a_reopen(opener: Opener) -> None:
    s = opener()
    assert s.meta().get("device_id") is None
    with s.transaction() as tx:
        tx.put_meta("device_id", "bike-1")
    s.write(lambda tx: tx.add_ride("r1", 10.0, "syncing", "not yet synced"))
    s.write(lambda tx: tx.add_ride("r1", 99.0, "failed", "ignored: the row exists"))
    s.write(lambda tx: tx.set_sync_state("r1", "reconciled", "done", 12.0))
    s = reopen(s, opener)
    assert s.meta()["device_id"] == "bike-1"
    row = s.ride("r1")
    assert row is not None and (row.state, row.reason, row.updated) == ("reconciled", "done", 12.0)
    assert [r.ride_id for r in s.rides()] == ["r1"] and s.ride("r2") is None


def test_change_records_come_back_in_order_and_a_snapshot_replaces_them(opener: Opener) -> None:
    s = opener()
    s.write(lambda tx: tx.add_doc("d1", "r1", "bike", "bike-1"))
    s.write(lambda tx: tx.add_doc("d1", "r9", "app", "x"))  # registered once
    s.write(lambda tx: tx.append_change("d1", b"one", [H1]))
    s.write(lambda tx: tx.append_change("d1", b"two", [H2, H1]))
    s.write(lambda tx: tx.append_change("d2", b"other", [H3]))
    s = reopen(s, opener)
    assert s.docs() == [("d1", "r1", "bike", "bike-1")]
    records = list(s.change_records("d1"))
    assert [(r.data, r.heads, r.intact) for r in records] == [(b"one", [H1], True), (b"two", [H1, H2], True)]
    assert records[0].id < records[1].id
    assert s.snapshot("d1") is None
    s.write(lambda tx: tx.put_snapshot("d1", b"snap", [H2]))
    s.write(lambda tx: tx.append_change("d1", b"three", [H3]))
    s = reopen(s, opener)
    snap = s.snapshot("d1")
    assert snap is not None and (snap.data, snap.heads, snap.intact) == (b"snap", [H2], True)
    assert [r.data for r in s.change_records("d1")] == [b"three"]
    assert [r.data for r in s.change_records("d2")] == [b"other"]


def test_the_sample_log_keeps_the_first_row_and_marks_and_prunes_folded(opener: Opener) -> None:
    s = opener()
    with s.transaction() as tx:
        tx.log_samples([("r1", "bike-1", 0, b"a"), ("r1", "bike-1", 1, b"b"), ("r2", "bike-1", 0, b"c")])
    with s.transaction() as tx:
        tx.log_samples([("r1", "bike-1", 1, b"changed"), ("r1", "bike-1", 2, b"d")])
    s.write(lambda tx: tx.mark_folded("r1", "bike-1", [0, 1]))
    s = reopen(s, opener)
    rows = list(s.raw_samples("r1"))
    assert [(r.device, r.seq, r.data, r.intact, r.folded) for r in rows] == [
        ("bike-1", 0, b"a", True, True),
        ("bike-1", 1, b"b", True, True),
        ("bike-1", 2, b"d", True, False),
    ]
    assert s.sample_rides() == {"r1", "r2"}
    assert s.max_seq("r1", "bike-1") == 2 and s.max_seq("r1", "app-1") is None
    s.write(lambda tx: tx.prune_folded("r1"))
    s.flush()  # with write-behind, reads see what is committed
    assert [r.seq for r in s.raw_samples("r1")] == [2]


def test_ride_ids_page_in_code_point_order(opener: Opener) -> None:
    """`ride_ids` pages by ride id in Python's (code-point) order, whatever the database's collation: a
    listing pages with it and merges it with the rides a replica holds in memory."""
    ids = ["ride-b", "Ride-Z", "ride.a", "ride-a", "r:1", "r_1", "R1", "ride-a0", "9-x", "a"]
    s = opener()
    for ride_id in ids:

        def add(tx: StorageTx, r: str = ride_id) -> None:
            tx.add_ride(r, 1.0, "syncing", "")

        s.write(add)
    s.flush()
    order = sorted(ids)
    assert s.ride_ids(None, 100) == order
    assert s.ride_ids(None, 3) == order[:3]
    pages, after = [], None
    while page := s.ride_ids(after, 3):
        pages.append(page)
        after = page[-1]
    assert [r for page in pages for r in page] == order and [len(p) for p in pages] == [3, 3, 3, 1]
    assert s.ride_ids("ride-a", 2) == ["ride-a0", "ride-b"]
    assert s.ride_ids("ride-az", 10) == ["ride-b", "ride.a"]  # after need not be a stored ride
    assert s.ride_ids("zzz", 10) == []


def test_bookkeeping_tables(opener: Opener) -> None:
    s = opener()
    s.write(lambda tx: tx.set_peer_heads("d1", "backend", [H2, H1], 1.0))
    s.write(lambda tx: tx.set_peer_heads("d1", "backend", [H3], 2.0))
    s.write(lambda tx: tx.bind_actor(b"actor-1", "bike-1", "bike", 1.0))
    s.write(lambda tx: tx.bind_actor(b"actor-1", "app-1", "app", 2.0))  # the first binding stays
    s.write(lambda tx: tx.add_ride_owner(OwnerRow("r1", "bike-1", None, None, 1.0)))
    s.write(lambda tx: tx.add_ride_owner(OwnerRow("r1", "bike-2", "x", "y", 2.0)))  # the first owner stays
    s.write(lambda tx: tx.update_ride_owner("r1", "alice", "spin"))
    s = reopen(s, opener)
    assert s.peer_heads("d1", "backend") == [H3] and s.peer_heads("d1", "other") is None
    assert s.actor(b"actor-1") == ("bike-1", "bike") and s.actor(b"nobody") is None
    assert s.class_owners("spin") == [OwnerRow("r1", "bike-1", "alice", "spin", 1.0)]
    assert s.class_owners("other") == []
    assert s.ride_owner("r1") == OwnerRow("r1", "bike-1", "alice", "spin", 1.0) and s.ride_owner("r2") is None


def test_deleting_a_ride_keeps_actors_and_owners(opener: Opener) -> None:
    s = opener()

    def fill(tx: StorageTx) -> None:
        tx.add_ride("r1", 1.0, "reconciled", "")
        tx.add_doc("d1", "r1", "bike", "bike-1")
        tx.append_change("d1", b"one", [H1])
        tx.put_snapshot("d1", b"snap", [H1])
        tx.set_peer_heads("d1", "backend", [H1], 1.0)
        tx.log_samples([("r1", "bike-1", 0, b"a")])
        tx.bind_actor(b"actor-1", "bike-1", "bike", 1.0)
        tx.add_ride_owner(OwnerRow("r1", "bike-1", None, None, 1.0))

    s.write(fill)
    s.write(lambda tx: tx.delete_ride("r1", ["d1"]))
    s = reopen(s, opener)
    assert s.rides() == [] and s.docs() == [] and s.snapshot("d1") is None
    assert list(s.change_records("d1")) == []
    assert list(s.raw_samples("r1")) == [] and s.peer_heads("d1", "backend") is None
    assert s.actor(b"actor-1") == ("bike-1", "bike") and s.ride_owner("r1") is not None


def test_deleting_a_document_keeps_its_ride_its_other_documents_and_the_sample_log(opener: Opener) -> None:
    s = opener()

    def fill(tx: StorageTx) -> None:
        tx.add_ride("r1", 1.0, "syncing", "")
        tx.add_doc("d1", "r1", "bike", "bike-1")
        tx.add_doc("d2", "r1", "segment", "bike-1/0")
        for doc_id in ("d1", "d2"):
            tx.append_change(doc_id, b"one-" + doc_id.encode(), [H1])
            tx.put_snapshot(doc_id, b"snap-" + doc_id.encode(), [H1])
            tx.append_change(doc_id, b"two-" + doc_id.encode(), [H2])
            tx.set_peer_heads(doc_id, "backend", [H2], 1.0)
        tx.log_samples([("r1", "bike-1", 0, b"a")])

    s.write(fill)
    s.write(lambda tx: tx.delete_doc("d2"))
    s.write(lambda tx: tx.delete_doc("d-never-stored"))  # nothing to delete: no error
    s = reopen(s, opener)
    assert s.docs() == [("d1", "r1", "bike", "bike-1")] and s.docs("r1") == s.docs()
    assert s.snapshot("d2") is None and list(s.change_records("d2")) == []
    assert s.peer_heads("d2", "backend") is None
    snap = s.snapshot("d1")
    assert snap is not None and snap.data == b"snap-d1"
    assert [r.data for r in s.change_records("d1")] == [b"two-d1"]
    assert s.peer_heads("d1", "backend") == [H2]
    assert [r.ride_id for r in s.rides()] == ["r1"] and [r.seq for r in s.raw_samples("r1")] == [0]
    # A deleted document can be registered again (a new segment under the same id is never made, but the
    # port must not remember the deletion).
    s.write(lambda tx: tx.add_doc("d2", "r1", "segment", "bike-1/0"))
    s = reopen(s, opener)
    assert [row[0] for row in s.docs("r1")] == ["d1", "d2"] and list(s.change_records("d2")) == []


def test_a_failed_transaction_writes_nothing(opener: Opener) -> None:
    s = opener()
    with pytest.raises(RuntimeError), s.transaction() as tx:
        tx.add_ride("r1", 1.0, "syncing", "")
        raise RuntimeError("boom")
    assert s.ride("r1") is None


def test_flushed_returns_once_writes_are_readable(opener: Opener) -> None:
    s = opener()
    for i in range(50):

        def add(tx: StorageTx, i: int = i) -> None:
            tx.add_ride(f"r{i}", float(i), "syncing", "")

        s.write(add)

    async def wait() -> None:
        await s.flushed()

    asyncio.run(wait())
    assert len(s.rides()) == 50
    used, free = s.usage()
    assert used >= 0 and free > 0


def test_a_replica_records_folds_and_reopens_on_it(opener: Opener, tmp_path: Path) -> None:
    """The layers above need nothing but the port: a bike's ride survives a reopen on any implementation."""

    def replica() -> ReplicaStore:
        return ReplicaStore(tmp_path / "replica", device_id="bike-1", role=Role.BIKE, storage=opener())

    bike = replica()
    bike.start_ride("r1")
    bike.append_samples("r1", [Sample(seq=i, t=1000.0 + i, hr=120 + i % 10) for i in range(30)])
    bike.fold("r1")
    bike.append_samples(
        "r1", [Sample(seq=i, t=1000.0 + i, hr=130) for i in range(30, 35)]
    )  # logged, not folded
    bike.flush()
    bike.close()
    again = replica()
    assert again.recovery.problems == [] and again.recovery.raw_replayed == 5
    assert again.view("r1").samples == {"bike-1": 35}
    assert again.next_seq("r1") == 35
    again.close()


def test_claims_keep_the_first_binding_and_say_who_holds_it(opener: Opener) -> None:
    s = opener()
    assert s.claim_actor(b"actor-1", "bike-1", "bike", 1.0) == ("bike-1", "bike")
    assert s.claim_actor(b"actor-1", "app-1", "app", 2.0) == ("bike-1", "bike")
    first = OwnerRow("r1", "bike-1", "alice", None, 1.0)
    assert s.claim_ride_owner(first) == first
    assert s.claim_ride_owner(OwnerRow("r1", "bike-2", None, None, 2.0)) == first
    s = reopen(s, opener)
    assert s.claim_actor(b"actor-1", "app-1", "app", 3.0) == ("bike-1", "bike")
    assert s.claim_ride_owner(OwnerRow("r1", "bike-2", None, None, 3.0)).device == "bike-1"


def test_claims_and_owner_completions_read_back_before_and_after_their_commit(opener: Opener) -> None:
    """With write-behind, a claim is answered by the storage before its write is committed, and after it
    (when the storage no longer keeps it aside): the same answers at every point, also for a class."""
    s = opener()
    s.claim_actor(b"actor-1", "bike-1", "bike", 1.0)
    s.claim_ride_owner(OwnerRow("r1", "bike-1", None, None, 1.0))
    s.claim_ride_owner(OwnerRow("r2", "bike-2", None, "spin", 1.0))
    s.complete_ride_owner(OwnerRow("r1", "bike-1", "alice", "spin", 1.0))
    s.complete_ride_owner(OwnerRow("r2", "bike-2", "bob", "spin", 1.0))
    expected = [OwnerRow("r1", "bike-1", "alice", "spin", 1.0), OwnerRow("r2", "bike-2", "bob", "spin", 1.0)]
    for _ in ("queued", "committed"):
        assert s.actor(b"actor-1") == ("bike-1", "bike")
        assert s.ride_owner("r1") == expected[0]
        assert s.class_owners("spin") == expected and s.class_owners("other") == []
        s.flush()
    s = reopen(s, opener)
    assert s.class_owners("spin") == expected and s.ride_owner("r2") == expected[1]


def test_finalization_is_claimed_once_and_outlives_the_ride(opener: Opener) -> None:
    s = opener()
    with s.transaction() as tx:
        assert tx.claim_finalization("r1", "node-a", 1.0) is True
    with s.transaction() as tx:
        assert tx.claim_finalization("r1", "node-b", 2.0) is False
        assert tx.claim_finalization("r2", "node-b", 2.0) is True
    with s.transaction() as tx:
        tx.delete_ride("r1", [])
    s = reopen(s, opener)
    with s.transaction() as tx:
        assert tx.claim_finalization("r1", "node-c", 3.0) is False
    with pytest.raises(RuntimeError), s.transaction() as tx:
        assert tx.claim_finalization("r3", "node-c", 3.0) is True
        raise RuntimeError("rolled back: the claim goes with it")
    with s.transaction() as tx:
        assert tx.claim_finalization("r3", "node-d", 4.0) is True
