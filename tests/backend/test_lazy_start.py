"""A backend starts with no ride in memory (engine/backend/README.md, "Rides in memory"): reopened over a
storage with finished rides and one in progress, it holds nothing, then serves each ride (view, series,
the ride list, a reconnecting bike's sync) exactly as before the restart, loading it on first use; the
ride in progress finalizes when its bike ends it. A ride left ready to finalize by a server that stopped
before finalizing it is finalized at its next change after the restart, as before rides were lazy.

Real SQLite files and the real application on loopback, restarted over the same data dir."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engine.ride.schema import Role
from engine.server.keys import REGISTRY
from engine.store import ReplicaStore
from tests.support.backend_server import HANG_GUARD, MakeServer, Server
from tests.support.samples import T0, sample

FINISHED = {"ride-a": "bike-a", "ride-b": "bike-b", "ride-c": "bike-c"}
LIVE, LIVE_BIKE = "ride-live", "bike-live"


def _metric(server: Server, name: str) -> float:
    value = server.test_server.app[REGISTRY].get_sample_value(name)
    return 0.0 if value is None else value


async def _ride(server: Server, bike: ReplicaStore, ride_id: str, seqs: range, *, end: bool = False) -> None:
    """The bike records `seqs` and syncs them; if asked, it then ends the ride and syncs the end (apart,
    so the shared document's index of the bike's document is never behind the end it would finalize)."""
    if not bike.has_ride(ride_id):
        bike.start_ride(ride_id, t=T0)
    bike.append_samples(ride_id, [sample(i) for i in seqs])
    bike.fold(ride_id)
    await _sync(server, bike, ride_id)
    if end:
        bike.end_ride(ride_id, t=T0 + seqs.stop, duration_s=float(seqs.stop))
        await _sync(server, bike, ride_id, finalized=True)


async def _sync(server: Server, bike: ReplicaStore, ride_id: str, *, finalized: bool = False) -> None:
    store = server.backend.store
    async with server.client(server.token("bike", bike.device_id), bike, ride_id) as bc:
        await bc.open_ride()
        await server.backend.wait_for(lambda: server.holds_all_of(bike, ride_id))
        if finalized:
            await server.backend.wait_for(lambda: store.phase(ride_id).label == "finalized")
            await bc.wait_for(lambda: bike.view(ride_id).phase.label == "finalized")
    await server.backend.wait_for(lambda: not server.backend.peers)
    await store.flushed()


async def _served(server: Server, token: str) -> dict[str, Any]:
    """What the server answers about every ride: the list, and each ride's view and series."""
    out: dict[str, Any] = {}
    status, listing, _ = await server.get("/v1/rides", token)
    assert status == 200, listing
    out["list"] = listing
    for ride_id in [*FINISHED, LIVE]:
        status, view, _ = await server.get(f"/v1/rides/{ride_id}", token)
        assert status == 200, view
        status, series, _ = await server.get(f"/v1/rides/{ride_id}/series", token)
        assert status == 200, series
        out[ride_id] = (view, series)
    return out


async def test_a_restarted_backend_holds_no_ride_and_serves_each_on_first_use(
    make_server: MakeServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = await make_server(data=data)
    bikes = {ride_id: first.replica(Role.BIKE, device) for ride_id, device in FINISHED.items()}
    live_bike = first.replica(Role.BIKE, LIVE_BIKE)
    viewer = first.token("viewer", "v", rides=[*FINISHED, LIVE])
    async with asyncio.timeout(HANG_GUARD):
        for ride_id, bike in bikes.items():
            await _ride(first, bike, ride_id, range(12 + len(ride_id)), end=True)
        await _ride(first, live_bike, LIVE, range(20))
        before = await _served(first, viewer)
    assert {r["ride_id"]: r["phase"] for r in before["list"]["rides"]} == {
        **{ride_id: "finalized" for ride_id in FINISHED},
        LIVE: "active",
    }
    await first.close()

    second = await make_server(data=data)
    store = second.backend.store
    assert store.loaded_rides() == []
    assert store.documents.docs == {}
    assert _metric(second, "ridesync_rides_in_memory") == 0
    assert _metric(second, "ridesync_ride_loads_total") == 0
    assert sorted(store.rides()) == sorted([*FINISHED, LIVE])  # stored, and listed without loading
    async with asyncio.timeout(HANG_GUARD):
        after = await _served(second, viewer)
    assert after == before  # the list, every view (phase, samples, totals, sync state) and every series
    # Each ride read twice: for its line in the list (released again right after), then for its view.
    assert _metric(second, "ridesync_ride_loads_total") == 8
    assert sorted(store.loaded_rides()) == sorted([*FINISHED, LIVE])
    assert _metric(second, "ridesync_rides_in_memory") == 4

    # The bike of the ride in progress rode on offline; it reconnects, syncs the rest and ends.
    async with asyncio.timeout(HANG_GUARD):
        await _ride(second, live_bike, LIVE, range(20, 47), end=True)
    bike_doc = store.ride_docs(LIVE).device_doc(LIVE_BIKE, Role.BIKE)
    assert bike_doc is not None
    assert [s.seq for s in bike_doc.samples] == list(range(47))  # no sample lost, none twice
    view = store.view(LIVE)
    assert (view.phase.label, view.samples) == ("finalized", {LIVE_BIKE: 47})
    assert store.sync_status(LIVE).state.value == "reconciled"
    assert _metric(second, "ridesync_rides_finalized_total") == 1


async def test_a_ride_left_ready_to_finalize_is_finalized_at_its_next_change_after_a_restart(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """The server stopped after committing the bike's last samples and end claim but before its
    finalization: the restarted backend finalizes it when the ride next changes (the bike's end event)."""
    data = tmp_path / "data"
    first = await make_server(data=data)
    bike = first.replica(Role.BIKE, "bike-1")
    async with asyncio.timeout(HANG_GUARD):
        await _ride(first, bike, LIVE, range(15))
    await first.close()
    # What the backend committed before it stopped: the bike's whole ride, ended, never finalized.
    bike.append_samples(LIVE, [sample(i) for i in range(15, 30)])
    bike.fold(LIVE)
    bike.end_ride(LIVE, t=T0 + 30, duration_s=30.0)
    with ReplicaStore(data / "backend", device_id="backend", role=Role.BACKEND) as stopped:
        for ref in bike.ride_refs(LIVE):
            stopped.ensure_doc(ref)
            stopped.merge_remote(ref.doc_id, bike.doc(ref.doc_id))
        ready = stopped.view(LIVE)
        assert (ready.phase.label, ready.ready_to_finalize) == ("ended", True)

    second = await make_server(data=data)
    store = second.backend.store
    assert store.loaded_rides() == []
    token = second.token("bike", "bike-1")
    async with asyncio.timeout(HANG_GUARD):
        status, body, _ = await second.send("POST", f"/v1/rides/{LIVE}/end", token, {}, key="end-1")
        assert status == 200, body
        await store.flushed()
    view = store.view(LIVE)
    assert (view.phase.label, view.samples) == ("finalized", {"bike-1": 30})
    assert store.sync_status(LIVE).state.value == "reconciled"
