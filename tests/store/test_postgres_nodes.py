"""Several backend nodes over one PostgreSQL database: each node is its own `PostgresStorage` (its own
connections), as separate processes would be. What must hold across them: an actor is bound once, a ride
has one owner, a ride is finalized once, a retried end answered by another node replays the same response,
and no node's compaction drops another node's changes. Also: schema versions, and a database that is down
or unreachable (a typed error, never an acknowledgement)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from engine.crdt import CrdtDoc, SyncSession, new_actor_id
from engine.events import idempotency as idem
from engine.events.idempotency_pg import PostgresLedger
from engine.ride.schema import Role
from engine.store import BackendReplica, DeviceReplica, StorageTx, StoreError
from engine.store.postgres import LATEST, PostgresStorage, SchemaTooNew, StorageUnavailable
from engine.store.postgres.compactor import compact_doc
from engine.testing.postgres import PostgresCluster
from tests.support.samples import make_sample

Node = Callable[[], BackendReplica]


@pytest.fixture
def node(pg_url: str, tmp_path: Path) -> Iterator[Node]:
    """Opens one more backend node over the test's database."""
    opened: list[BackendReplica] = []

    def open_() -> BackendReplica:
        replica = BackendReplica(
            tmp_path / f"node{len(opened)}",
            device_id="backend",
            role=Role.BACKEND,
            storage=PostgresStorage(pg_url),
        )
        replica.start_write_behind()
        opened.append(replica)
        return replica

    yield open_
    for replica in opened:
        replica.close()


def ride_to_backend(bike: DeviceReplica, backend: BackendReplica, ride: str) -> None:
    """The bike syncs every document of the ride into one backend node (through its gate)."""
    for ref in bike.ride_refs(ride):
        backend.ensure_doc(ref)
        gated = backend.gated_sync(ref.doc_id)
        session = SyncSession()
        for _ in range(30):
            msg = bike.generate_sync(ref.doc_id, session)
            if msg is not None:
                assert gated.receive(msg, device="bike-1", role=Role.BIKE).accepted
            reply = gated.generate()
            if reply is not None:
                bike.receive_sync(ref.doc_id, session, reply)
            if msg is None and reply is None:
                break
    backend.flush()


def test_two_nodes_racing_bind_each_actor_to_one_device(pg_url: str) -> None:
    nodes = [PostgresStorage(pg_url), PostgresStorage(pg_url)]
    actors = [bytes([i]) * 16 for i in range(40)]
    won: list[dict[bytes, tuple[str, str]]] = [{}, {}]
    start = threading.Barrier(2)

    def claim(n: int) -> None:
        start.wait()
        for actor in actors:
            won[n][actor] = nodes[n].claim_actor(actor, f"bike-{n}", "bike", float(n))

    threads = [threading.Thread(target=claim, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Both nodes were told the same owner for every actor, and it is the one stored.
    assert won[0] == won[1]
    for actor in actors:
        assert nodes[0].actor(actor) == won[0][actor]
    for storage in nodes:
        storage.close()


def test_an_actor_bound_on_one_node_is_refused_on_another(node: Node) -> None:
    a, b = node(), node()
    actor = b"\x42" * 16
    assert a.bind_actor(actor, "bike-1", Role.BIKE) is True
    assert b.bind_actor(actor, "bike-2", Role.BIKE) is False  # b never saw it in memory: the database says
    assert b.actor_owner(actor) == ("bike-1", Role.BIKE)


def test_a_ride_has_one_owner_across_nodes(node: Node) -> None:
    a, b = node(), node()
    assert a.bind_ride_owner("r1", "bike-1", class_id="c1").device == "bike-1"
    seen = b.ride_owner("r1")  # b loaded its owners before a bound r1: it asks the database
    assert seen is not None and seen.device == "bike-1"
    assert b.ride_owner("r2") is None
    owner = b.bind_ride_owner("r1", "bike-2", class_id="c2")  # b loaded its owners before a bound r1
    assert (owner.device, owner.class_id) == ("bike-1", "c1")


def test_a_ride_is_finalized_once_across_nodes(node: Node, tmp_path: Path) -> None:
    a, b = node(), node()
    bike = DeviceReplica(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    bike.start_ride("r1")
    bike.append_samples("r1", [make_sample(i) for i in range(12)])
    bike.end_ride("r1")
    ride_to_backend(bike, a, "r1")
    ride_to_backend(bike, b, "r1")  # the bike reconnected to the other node
    assert a.view("r1").ready_to_finalize and b.view("r1").ready_to_finalize
    first = a.finalize("r1", t=100.0)
    second = b.finalize("r1", t=200.0)  # b lost the claim: it takes a's finalization
    assert first.phase.label == second.phase.label == "finalized"

    def finalization(replica: BackendReplica) -> object:
        (backend_doc,) = replica.ride_docs("r1").backends
        assert backend_doc.finalized is not None
        return backend_doc.finalized

    assert finalization(b) == finalization(a) and getattr(finalization(a), "t", None) == 100.0
    again = node()  # a node started afterwards loads one finalization, a's
    assert finalization(again) == finalization(a) and again.recovery.problems == []
    with psycopg.connect(again.storage.url) as conn:  # type: ignore[attr-defined]
        rows = conn.execute("SELECT ride_id FROM finalizations").fetchall()
    assert rows == [("r1",)]
    bike.close()


def test_a_retried_end_answered_by_another_node_replays_the_same_response(pg_url: str) -> None:
    a, b = PostgresLedger(pg_url), PostgresLedger(pg_url)
    ran: list[str] = []

    def handler(name: str) -> Callable[[], idem.StoredResponse]:
        def run() -> idem.StoredResponse:
            ran.append(name)
            return idem.StoredResponse(200, f'{{"by": "{name}"}}'.encode(), "application/json")

        return run

    scope, key = idem.ride_end_event("r1")
    first = a.run(scope, key, b"", handler("a"), match_body=False)
    retry = b.run(scope, key, b"", handler("b"), match_body=False)
    assert ran == ["a"] and not first.replayed and retry.replayed
    assert retry.response == first.response
    fp = idem.fingerprint("POST", "/v1/rides/r1/end", b"{}")
    a.run(idem.device_scope("bike-1"), "k1", fp, handler("a"))
    with pytest.raises(idem.IdempotencyConflict):
        b.run(idem.device_scope("bike-1"), "k1", idem.fingerprint("POST", "/x", b"{}"), handler("b"))
    a.close()
    b.close()


def test_two_nodes_racing_one_end_event_run_it_once(pg_url: str) -> None:
    ledgers = [PostgresLedger(pg_url) for _ in range(2)]
    ran: list[int] = []
    results: list[idem.Result] = []
    start = threading.Barrier(2)

    def end(n: int) -> None:
        def handler() -> idem.StoredResponse:
            ran.append(n)
            return idem.StoredResponse(200, str(n).encode(), "text/plain")

        start.wait()
        results.append(ledgers[n].run(*idem.ride_end_event("r9"), b"", handler, match_body=False))

    threads = [threading.Thread(target=end, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ran) == 1 and len(results) == 2
    assert results[0].response == results[1].response
    assert sorted(r.replayed for r in results) == [False, True]
    for ledger in ledgers:
        ledger.close()


def test_one_nodes_compaction_keeps_another_nodes_changes(node: Node, tmp_path: Path) -> None:
    a, b = node(), node()
    bike = DeviceReplica(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    bike.start_ride("r1")
    bike.append_samples("r1", [make_sample(i) for i in range(6)])
    bike.fold("r1")
    ride_to_backend(bike, a, "r1")
    bike.append_samples("r1", [make_sample(i) for i in range(6, 12)])
    bike.fold("r1")
    ride_to_backend(bike, b, "r1")  # b holds all 12 samples; a only the first 6
    doc_id = next(r.doc_id for r in bike.ride_refs("r1") if r.kind.value == "bike")
    a.compact(doc_id)  # a's snapshot lacks b's changes: they must stay in the database
    a.flush()
    b.compact(doc_id)  # and b's compaction must not drop a's snapshot either
    b.flush()
    loaded = node()
    assert loaded.view("r1").samples == {"bike-1": 12}
    # Rows from two writers: the last record's heads are one writer's, and the document holds more. Whole,
    # not "history incomplete".
    assert loaded.recovery.problems == []
    # The background compactor merges everything into one snapshot and deletes only what it holds.
    compact_doc(a.storage.url, doc_id)  # type: ignore[attr-defined]
    fresh = node()
    assert fresh.view("r1").samples == {"bike-1": 12} and fresh.recovery.problems == []
    assert list(fresh.storage.change_records(doc_id)) == []
    bike.close()


def test_a_newer_schema_is_refused_with_a_clear_error(pg_url: str) -> None:
    PostgresStorage(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_version(version, description) VALUES(%s, 'from the future')", (LATEST + 1,)
        )
    with pytest.raises(SchemaTooNew, match=f"version {LATEST + 1}, newer than this ridesync knows"):
        PostgresStorage(pg_url)


def test_migrating_twice_runs_each_step_once(pg_url: str) -> None:
    PostgresStorage(pg_url).close()
    PostgresStorage(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert versions == [(v,) for v in range(1, LATEST + 1)]


def test_an_unreachable_database_is_a_typed_error() -> None:
    with pytest.raises(StorageUnavailable, match="cannot connect to PostgreSQL"):
        PostgresStorage("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_a_database_that_goes_away_acknowledges_nothing(pg_url: str, pg_cluster: PostgresCluster) -> None:
    """The server drops the node's connections (as a restart or failover does): the write in flight is
    an error, not an acknowledgement, and the node recovers once the server answers again."""
    storage = PostgresStorage(pg_url, outage_s=0.5)
    storage.start_write_behind(100, None)
    storage.write(lambda tx: tx.add_ride("r1", 1.0, "syncing", ""))
    storage.flush()
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_cluster.admin_url, autocommit=True) as admin:
        # Refuse new connections and kill the existing ones: the database is "down" for this node.
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname=%s", (name,))
        storage.write(lambda tx: tx.add_ride("r2", 2.0, "syncing", ""))
        with pytest.raises(StoreError, match=r"not committed|writer stopped"):
            storage.flush()  # never returns as if committed
        with pytest.raises(StoreError):
            storage.ride("r1")
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    storage.close()
    again = PostgresStorage(pg_url)
    assert again.ride("r1") is not None and again.ride("r2") is None
    again.close()


def test_a_row_whose_dependencies_are_not_committed_yet_is_never_compacted_away(
    node: Node, pg_url: str, tmp_path: Path
) -> None:
    """Node B commits a change whose dependency node A has not committed yet, then an unrelated change
    lands after it. A node loading now holds the later change but not B's: it must call the document
    incomplete and never compact B's row away."""
    bike = DeviceReplica(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    bike.start_ride("r1")
    bike.append_samples("r1", [make_sample(i) for i in range(6)])
    bike.fold("r1")
    ref = next(r for r in bike.ride_refs("r1") if r.kind.value == "bike")
    base = bike.heads(ref.doc_id)
    bike.append_samples("r1", [make_sample(i) for i in range(6, 12)])
    bike.fold("r1")
    later = bike.changes_since(ref.doc_id, base)  # depend on what `base` holds
    earlier = bike.changes_since(ref.doc_id, [])[: -len(later)]
    raw = PostgresStorage(pg_url)

    def b_first(tx: StorageTx) -> None:
        tx.add_ride("r1", 1.0, "syncing", "")
        tx.add_doc(ref.doc_id, "r1", ref.kind.value, ref.device)
        tx.append_change(ref.doc_id, b"".join(c.data for c in later), bike.heads(ref.doc_id))

    raw.write(b_first)
    # An unrelated, applicable change after it (another actor's, written from the empty document).
    other = CrdtDoc.new(new_actor_id("bike-1"))
    other.put({"note": "x"})
    raw.write(lambda tx: tx.append_change(ref.doc_id, other.changes_since([])[0].data, other.heads()))
    n = node()
    assert n.load_ride("r1")  # a backend loads each ride at its first use, and reports what it skipped
    assert any("history incomplete" in p for p in n.recovery.problems)
    assert n.compact(ref.doc_id) == 0
    n.flush()
    raw.write(lambda tx: tx.append_change(ref.doc_id, b"".join(c.data for c in earlier), base))  # A commits
    assert node().view("r1").samples == {"bike-1": 12}
    raw.close()
    bike.close()


def test_a_damaged_row_is_reported_and_skipped_and_the_compactor_leaves_it(node: Node, pg_url: str) -> None:
    a = node()
    a.start_ride("r1")
    a.edit_shared("r1", "title", "Morning ride")
    a.flush()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        found = conn.execute("SELECT doc_id, max(seq) FROM changes GROUP BY doc_id LIMIT 1").fetchone()
        assert found is not None
        doc_id, seq = found
        conn.execute("UPDATE changes SET data = data || '\\x00'::bytea WHERE seq=%s", (seq,))  # bit rot
        rows = conn.execute("SELECT count(*) FROM changes WHERE doc_id=%s", (doc_id,)).fetchone()
    b = node()
    assert b.recovery.problems == [] and b.load_ride("r1")  # damage is found when the ride is loaded
    assert any(f"doc {doc_id}: change record {seq} is corrupt" in p for p in b.recovery.problems)
    assert compact_doc(pg_url, doc_id) is False
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM changes WHERE doc_id=%s", (doc_id,)).fetchone() == rows


def test_a_late_write_to_a_segment_another_node_retired_is_gone_once_this_node_retires_it_too(
    pg_url: str,
) -> None:
    """Two nodes hold one live segment; one retires it (deletes it) while the other still holds it and
    writes a late change and a snapshot of it. Those rows belong to no document (no load reads them) until
    the late node retires the segment too, as it does once it sees the durable document covering it: then
    nothing of the segment is left, and the other documents' rows are untouched. (Nothing is lost either
    way: a segment is retired only when the durable document holds every sample it holds.)"""
    a, b = PostgresStorage(pg_url), PostgresStorage(pg_url)
    try:
        for s in (a, b):
            s.write(lambda tx: tx.add_doc("seg", "r1", "segment", "bike-1/0"))
            s.write(lambda tx: tx.add_doc("bike", "r1", "bike", "bike-1"))
        a.write(lambda tx: tx.append_change("seg", b"change-1", [b"h" * 32]))
        b.write(lambda tx: tx.append_change("seg", b"change-2", [b"i" * 32]))
        a.write(lambda tx: tx.delete_doc("seg"))

        def late(tx: StorageTx) -> None:
            tx.append_change("seg", b"change-3", [b"j" * 32])
            tx.put_snapshot("seg", b"snapshot", [b"j" * 32])
            tx.append_change("bike", b"bike-change", [b"k" * 32])

        b.write(late)
        assert [row[0] for row in a.docs("r1")] == ["bike"]  # what every load enumerates
        b.write(lambda tx: tx.delete_doc("seg"))
        fresh = PostgresStorage(pg_url)
        try:
            assert [row[0] for row in fresh.docs("r1")] == ["bike"]
            assert list(fresh.change_records("seg")) == [] and fresh.snapshot("seg") is None
            assert [r.data for r in fresh.change_records("bike")] == [b"bike-change"]
            with psycopg.connect(pg_url) as conn:
                for table in ("changes", "snapshots", "peer_heads"):
                    rows = conn.execute(f"SELECT count(*) FROM {table} WHERE doc_id='seg'").fetchone()
                    assert rows == (0,), table
        finally:
            fresh.close()
    finally:
        a.close()
        b.close()
