"""A backend starts with no ride in memory (engine/backend/README.md, "Rides in memory"): reopened over a
storage with finished rides and one in progress, it holds nothing, then serves each ride (view, series,
the ride list, a reconnecting bike's sync) exactly as before the restart, loading it on first use; the
ride in progress finalizes when its bike ends it. A ride left ready to finalize by a server that stopped
before finalizing it is finalized when the restarted backend loads it (a plain read, its bike reconnecting
with nothing new; over PostgreSQL once, whichever nodes load it) or at its next change.

Real SQLite files (or a real PostgreSQL) and the real application on loopback, restarted over the same
data dir."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.ride.policy import RideView
from engine.ride.schema import Role
from engine.server.keys import REGISTRY
from engine.store import ReplicaStore, StoreError
from engine.store.location import StoreLocation
from engine.store.postgres import PostgresStorage
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


async def _left_ready(
    make_server: MakeServer, data: Path, storage: Callable[[], Any] | None = None
) -> RideView:
    """A ride the server left ready to finalize: it stopped after committing the bike's last samples and
    end claim but before its finalization. Returns the ride's view as that server saw it (what its
    finalization would have written). `storage`: the backend's storage, if not the data dir's SQLite."""
    first = await make_server(data=data)
    bike = first.replica(Role.BIKE, "bike-1")
    async with asyncio.timeout(HANG_GUARD):
        await _ride(first, bike, LIVE, range(15))
    await first.close()
    # What the backend committed before it stopped: the bike's whole ride, ended, never finalized.
    bike.append_samples(LIVE, [sample(i) for i in range(15, 30)])
    bike.fold(LIVE)
    bike.end_ride(LIVE, t=T0 + 30, duration_s=30.0)
    extra = {} if storage is None else {"storage": storage()}
    with ReplicaStore(data / "backend", device_id="backend", role=Role.BACKEND, **extra) as stopped:
        for ref in bike.ride_refs(LIVE):
            stopped.ensure_doc(ref)
            stopped.merge_remote(ref.doc_id, bike.doc(ref.doc_id))
        ready = stopped.view(LIVE)
    bike.close()
    assert (ready.phase.label, ready.ready_to_finalize, ready.samples) == ("ended", True, {"bike-1": 30})
    return ready


async def _restarted_with_a_ride_left_ready(make_server: MakeServer, data: Path) -> tuple[RideView, Server]:
    """`_left_ready`, then a new server over the same data dir: the ride's view as left, and that server."""
    ready = await _left_ready(make_server, data)
    return ready, await make_server(data=data)


async def _bike_ends(server: Server) -> None:
    """The bike's end event (POST /end) reaches `server`, committed before this returns."""
    async with asyncio.timeout(HANG_GUARD):
        token = server.token("bike", "bike-1")
        status, body, _ = await server.send("POST", f"/v1/rides/{LIVE}/end", token, {}, key="end-1")
        assert status == 200, body
        await server.backend.store.flushed()


def _finalized_as_ready(view: RideView, ready: RideView) -> None:
    """The official result is what finalizing when the ride became ready would have written."""
    assert view.phase.label == "finalized"
    assert (view.samples, view.totals, view.duration_s) == (ready.samples, ready.totals, ready.duration_s)


async def test_a_ride_left_ready_to_finalize_is_finalized_at_its_next_change_after_a_restart(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """The restarted backend finalizes it when the ride next changes (the bike's end event)."""
    ready, second = await _restarted_with_a_ride_left_ready(make_server, tmp_path / "data")
    store = second.backend.store
    assert store.loaded_rides() == []
    await _bike_ends(second)
    _finalized_as_ready(store.view(LIVE), ready)
    assert store.sync_status(LIVE).state.value == "reconciled"


async def test_a_ride_left_ready_to_finalize_is_finalized_by_a_plain_read_after_a_restart(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """Nothing need ever change the ride again: loading it (here for a viewer's GET) finalizes it, and
    the answer already shows the finalization."""
    ready, second = await _restarted_with_a_ride_left_ready(make_server, tmp_path / "data")
    store = second.backend.store
    viewer = second.token("viewer", "v", rides=[LIVE])
    async with asyncio.timeout(HANG_GUARD):
        status, body, _ = await second.get(f"/v1/rides/{LIVE}", viewer)
        assert status == 200, body
        assert (body["phase"], body["sync_state"]) == ("finalized", "reconciled")
        assert (body["samples"], body["totals"]) == ({"bike-1": 30}, json.loads(json.dumps(ready.totals)))
        _finalized_as_ready(store.view(LIVE), ready)
        status, again, _ = await second.get(f"/v1/rides/{LIVE}", viewer)
    assert (status, again) == (200, body)
    assert _metric(second, "ridesync_rides_finalized_total") == 1
    assert _metric(second, "ridesync_ride_loads_total") == 1
    await second.close()  # what the server committed: it holds after another restart
    with ReplicaStore(tmp_path / "data" / "backend", device_id="backend", role=Role.BACKEND) as reopened:
        _finalized_as_ready(reopened.view(LIVE), ready)


async def test_a_ride_left_ready_to_finalize_is_finalized_when_its_bike_reconnects_with_nothing_new(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """The bike's sync upgrade loads the ride, which finalizes it; the bike then gets the finalization."""
    ready, second = await _restarted_with_a_ride_left_ready(make_server, tmp_path / "data")
    store = second.backend.store
    bike = second.replica(Role.BIKE, "bike-1")  # reopened: it holds the whole ride, all of it synced
    assert bike.view(LIVE).phase.label == "ended"
    async with asyncio.timeout(HANG_GUARD):
        await _sync(second, bike, LIVE, finalized=True)
    _finalized_as_ready(store.view(LIVE), ready)
    _finalized_as_ready(bike.view(LIVE), ready)
    assert store.sync_status(LIVE).state.value == "reconciled"
    assert _metric(second, "ridesync_rides_finalized_total") == 1
    bike.close()


async def test_a_finalization_that_fails_at_the_load_is_logged_once_and_the_read_is_answered(
    make_server: MakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The storage refuses the finalization (as PostgreSQL away does): the read still gets the ride as
    stored, one WARNING says why, the next read does not try again (the ride stays loaded), and the
    ride's next change finalizes it."""
    ready, second = await _restarted_with_a_ride_left_ready(make_server, tmp_path / "data")
    store = second.backend.store
    finalize = store.finalize_here

    def refused(ride_id: str, t: float | None = None) -> tuple[RideView, bool]:
        raise StoreError("the storage refused the write")

    monkeypatch.setattr(store, "finalize_here", refused)
    caplog.set_level(logging.INFO)
    viewer = second.token("viewer", "v", rides=[LIVE])
    async with asyncio.timeout(HANG_GUARD):
        for _ in range(2):
            status, body, _ = await second.get(f"/v1/rides/{LIVE}", viewer)
            assert status == 200, body
            assert (body["phase"], body["sync_state"]) == ("ended", "syncing")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("engine.")]
    assert [(r.getMessage(), r.exc_info) for r in warnings] == [
        ("ride left ready to finalize not finalized at its load", None)
    ]
    assert _metric(second, "ridesync_rides_finalized_total") == 0
    monkeypatch.setattr(store, "finalize_here", finalize)
    await _bike_ends(second)
    _finalized_as_ready(store.view(LIVE), ready)


async def test_postgres_two_nodes_loading_a_ride_left_ready_finalize_it_once(
    make_server: MakeServer, tmp_path: Path, pg_url: str
) -> None:
    """Both nodes hold the ride, ready, before either finalizes it (node b read it in by a path that
    hands it over at the next load, as a sync message's `ensure_doc` does); a read on each then
    finalizes it, and the database's finalization claim lets only the first node write it: the other
    takes the winner's finalization."""
    location = StoreLocation("postgresql", url=pg_url)
    ready = await _left_ready(
        lambda **kw: make_server(**kw, store=location), tmp_path / "a", lambda: PostgresStorage(pg_url)
    )
    a = await make_server(data=tmp_path / "a", store=location)
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "token-keys.json", tmp_path / "b" / "token-keys.json")
    b = await make_server(data=tmp_path / "b", store=location)
    viewer = a.token("viewer", "v", rides=[LIVE])
    assert b.backend.store.load_ride(LIVE) and b.backend.store.phase(LIVE).label == "ended"
    async with asyncio.timeout(HANG_GUARD):
        answers = [await node.get(f"/v1/rides/{LIVE}", viewer) for node in (a, b, a, b)]
    for status, body, _ in answers:
        assert status == 200, body
        assert (body["phase"], body["sync_state"], body["samples"]) == (
            "finalized",
            "reconciled",
            {"bike-1": 30},
        )
    for node in (a, b):
        _finalized_as_ready(node.backend.store.view(LIVE), ready)
    # Only the writer counts it (and logs "ride finalized"); b's read was answered with a's totals.
    assert [_metric(node, "ridesync_rides_finalized_total") for node in (a, b)] == [1, 0]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT ride_id FROM finalizations").fetchall() == [(LIVE,)]
