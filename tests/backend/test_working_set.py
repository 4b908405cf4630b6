"""The backend's bounded working set (engine/backend/workingset.py): an idle ride leaves memory, not the
storage, and reads back identical at its next use; a ride a connection holds or with anything not yet
committed stays; a device that reconnects to a released ride syncs with no loss and no duplicate; over
PostgreSQL, a node that released a ride sees another node's later writes when it reads it back.

Real SQLite files (and a real PostgreSQL where named), the real application on loopback; the working
set's clock is a settable one, moved past `unload_idle_s` instead of sleeping."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from typing import Any

from engine.backend.push import LocalPushBus
from engine.ride import documents
from engine.ride.schema import Role, shared_ref
from engine.server.keys import REGISTRY
from engine.store import ReplicaStore
from engine.store.location import StoreLocation
from tests.support.backend_server import HANG_GUARD, MakeServer, Server
from tests.support.clock import Clock
from tests.support.samples import T0, sample

RIDE = "ride-ws"
IDLE_S = 30.0


def _clock(server: Server) -> Clock:
    clock = Clock(0.0)
    server.backend.working.clock = clock
    return clock


def _metric(server: Server, name: str) -> float:
    value = server.test_server.app[REGISTRY].get_sample_value(name)
    return 0.0 if value is None else value


async def _ride(server: Server, bike: ReplicaStore, seqs: range, *, end: bool = False) -> None:
    """The bike records `seqs` (and ends, if asked) and syncs them over one connection."""
    if not bike.has_ride(RIDE):
        bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in seqs])
    bike.fold(RIDE)
    if end:
        bike.end_ride(RIDE, t=T0 + seqs.stop, duration_s=float(seqs.stop))
    store = server.backend.store
    async with server.client(server.token("bike", "bike-1"), bike, RIDE) as bc:
        await bc.open_ride()
        await server.backend.wait_for(lambda: server.holds_all_of(bike, RIDE))
        if end:
            await server.backend.wait_for(lambda: store.phase(RIDE).label == "finalized")
            await bc.wait_for(lambda: bike.view(RIDE).phase.label == "finalized")
    await store.flushed()


async def _settled(server: Server) -> None:
    """Wait until the server has seen the connection go (its handler runs remove_peer after the close)."""
    await server.backend.wait_for(lambda: not server.backend.peers)


async def test_a_finalized_idle_ride_is_released_and_reads_back_identical(make_server: MakeServer) -> None:
    server = await make_server(unload_idle_s=IDLE_S)
    clock = _clock(server)
    backend, store = server.backend, server.backend.store
    viewer = server.token("viewer", "v", rides=[RIDE])
    async with asyncio.timeout(HANG_GUARD):
        await _ride(server, server.replica(Role.BIKE, "bike-1"), range(30), end=True)
        await _settled(server)
        status, before, _ = await server.get(f"/v1/rides/{RIDE}", viewer)
        assert status == 200 and before["phase"] == "finalized" and before["samples"] == {"bike-1": 30}
        series_before = (await server.get(f"/v1/rides/{RIDE}/series", viewer))[1]
        clock.t += IDLE_S - 1
        assert await backend.release_idle() == []  # used by the GETs just now: not idle yet
        clock.t += IDLE_S
        assert await backend.release_idle() == [RIDE]
    assert not store.is_loaded(RIDE)
    assert not any(e.ref.ride_id == RIDE for e in store.documents.docs.values())
    assert _metric(server, "ridesync_rides_in_memory") == 0
    assert _metric(server, "ridesync_ride_releases_total") == 1
    assert RIDE in store.rides()  # still stored, and listed
    async with asyncio.timeout(HANG_GUARD):
        status, after, _ = await server.get(f"/v1/rides/{RIDE}", viewer)
        series_after = (await server.get(f"/v1/rides/{RIDE}/series", viewer))[1]
    assert status == 200
    assert after == before  # view, samples, totals, phase and sync state
    assert series_after == series_before  # every sample, decoded again from the stored documents
    assert store.is_loaded(RIDE)
    assert _metric(server, "ridesync_ride_loads_total") == 1
    assert _metric(server, "ridesync_rides_in_memory") == 1


async def test_the_ride_list_does_not_load_released_rides_for_good(make_server: MakeServer) -> None:
    server = await make_server(unload_idle_s=IDLE_S)
    clock = _clock(server)
    async with asyncio.timeout(HANG_GUARD):
        await _ride(server, server.replica(Role.BIKE, "bike-1"), range(5), end=True)
        await _settled(server)
        clock.t += 2 * IDLE_S
        assert await server.backend.release_idle() == [RIDE]
        status, body, _ = await server.get("/v1/rides", server.token("viewer", "v", rides=[RIDE]))
    assert status == 200
    assert [(r["ride_id"], r["phase"], r["sync_state"]) for r in body["rides"]] == [
        (RIDE, "finalized", "reconciled")
    ]
    assert not server.backend.store.is_loaded(RIDE)


async def test_a_ride_held_by_a_connection_or_with_uncommitted_writes_stays(make_server: MakeServer) -> None:
    server = await make_server(unload_idle_s=IDLE_S)
    clock = _clock(server)
    backend, store = server.backend, server.backend.store
    bike = server.replica(Role.BIKE, "bike-1")
    async with asyncio.timeout(HANG_GUARD):
        await _ride(server, bike, range(10))
        await _settled(server)
        # An open connection that named the ride, even one that never syncs a document, holds it.
        async with server.client(server.token("bike", "bike-1"), bike, RIDE):
            await backend.wait_for(lambda: len(backend.peers) == 1)
            clock.t += 10 * IDLE_S
            assert await backend.release_idle() == []
            assert store.is_loaded(RIDE)
        await _settled(server)
    # Gone idle, but a write about the ride waits in the write-behind queue (the writer is held up by
    # a job ahead of it): not released until it is committed.
    writer = store.writer
    assert writer is not None
    gate = threading.Event()
    store.storage.write(lambda tx: gate.wait(HANG_GUARD))
    store.set_sync_state(RIDE, store.sync_status(RIDE).state, "still syncing")
    assert writer.pending >= 2
    clock.t += 10 * IDLE_S
    assert store.release_ride(RIDE) is False
    assert store.documents.unpersisted(RIDE) == "writes not yet committed"
    gate.set()
    # A change made in memory and not persisted keeps it too, even with the queue committed.
    shared_id = shared_ref(RIDE).doc_id
    async with asyncio.timeout(HANG_GUARD):
        await store.flushed()
    with store.documents.guard():
        documents.edit_shared(
            store.doc(shared_id), "title", "unsaved", t=T0, device="backend", role="backend", seen=None
        )
    assert store.documents.unpersisted(RIDE) is not None
    assert await backend.release_idle() == []
    store.persist(shared_id)
    clock.t += 10 * IDLE_S
    assert await backend.release_idle() == [RIDE]


async def test_a_device_that_reconnects_to_a_released_ride_syncs_without_loss_or_duplicates(
    make_server: MakeServer,
) -> None:
    server = await make_server(unload_idle_s=IDLE_S)
    clock = _clock(server)
    backend, store = server.backend, server.backend.store
    bike = server.replica(Role.BIKE, "bike-1")
    async with asyncio.timeout(HANG_GUARD):
        await _ride(server, bike, range(20))
        await _settled(server)
        clock.t += 2 * IDLE_S
        assert await backend.release_idle() == [RIDE]
        # The bike rode on offline, reconnects, syncs the rest and ends; the backend finalizes.
        await _ride(server, bike, range(20, 45), end=True)
    bike_doc = store.ride_docs(RIDE).device_doc("bike-1", Role.BIKE)
    assert bike_doc is not None
    assert [s.seq for s in bike_doc.samples] == list(range(45))
    view = store.view(RIDE)
    assert view.samples == {"bike-1": 45} and view.phase.label == "finalized"
    assert bike.view(RIDE).phase.label == "finalized"
    assert _metric(server, "ridesync_ride_loads_total") == 1


async def test_postgres_a_node_that_released_a_ride_reads_back_another_nodes_writes(
    make_server: MakeServer, tmp_path: Path, pg_url: str
) -> None:
    bus = LocalPushBus()
    location = StoreLocation("postgresql", url=pg_url)
    a = await make_server(data=tmp_path / "a", store=location, push=bus.member("a"), unload_idle_s=IDLE_S)
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "token-keys.json", tmp_path / "b" / "token-keys.json")
    b = await make_server(data=tmp_path / "b", store=location, push=bus.member("b"), unload_idle_s=IDLE_S)
    clock_b = _clock(b)
    bike = a.replica(Role.BIKE, "bike-1")
    viewer = a.token("viewer", "v", rides=[RIDE])

    async def view_on_b() -> dict[str, Any]:
        status, body, _ = await b.get(f"/v1/rides/{RIDE}", viewer)
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async with asyncio.timeout(HANG_GUARD):
        await _ride(a, bike, range(10))
        assert (await view_on_b())["samples"] == {"bike-1": 10}  # node b loads it from the database
        clock_b.t += 2 * IDLE_S
        assert await b.backend.release_idle() == [RIDE]
        # Node a takes more samples and the end, and finalizes, while node b holds nothing of the ride.
        await _ride(a, bike, range(10, 25), end=True)
        body = await view_on_b()
    assert body["samples"] == {"bike-1": 25}
    assert (body["phase"], body["sync"]["state"]) == ("finalized", "reconciled")
    assert _metric(b, "ridesync_ride_loads_total") == 2
    assert _metric(b, "ridesync_rides_finalized_total") == 0  # a finalized it; b only read it back


async def test_the_working_set_keeps_nothing_for_rides_not_in_memory(make_server: MakeServer) -> None:
    """A connection that named a ride nobody started (an app waiting for its bike) leaves no trace in the
    working set once it is gone, so its tables stay as small as the rides in memory."""
    server = await make_server(unload_idle_s=IDLE_S)
    backend = server.backend
    app = server.replica(Role.APP, "app-1")
    token = server.token("app", "app-1", rides=["ride-unstarted"])
    async with asyncio.timeout(HANG_GUARD):
        async with server.client(token, app, "ride-unstarted"):
            await backend.wait_for(lambda: len(backend.peers) == 1)
        await _settled(server)
        assert await backend.release_idle() == []
    assert not backend.store.is_loaded("ride-unstarted")
    assert backend.working._used == {} and not backend.working._held
