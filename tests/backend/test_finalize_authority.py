"""Finalization (when every declared sample is here) and authority (bike during the ride, backend after)."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.ride import documents
from engine.ride.schema import Role, own_ref
from engine.store import ReplicaStore
from engine.sync.effects import CLOSE_POLICY_VIOLATION
from tests.support.backend_server import HANG_GUARD, Server
from tests.support.samples import T0, sample

RIDE = "ride-auth"


def _stable(view: dict[str, Any]) -> dict[str, Any]:
    """The view without the sync state's timestamp."""
    return {**view, "sync": {**view["sync"], "updated": None}}


async def _ride_and_sync(server: Server, bike: ReplicaStore, n: int) -> None:
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(n)])
    bike.fold(RIDE)
    async with server.client(server.token("bike", "bike-1"), bike, RIDE) as bc:
        await bc.open_ride()
        await server.backend.wait_for(lambda: server.holds_all_of(bike, RIDE))


async def test_finalizes_only_once_every_declared_sample_arrived(server: Server) -> None:
    store = server.backend.store
    bike = server.replica(Role.BIKE, "bike-1")
    async with asyncio.timeout(HANG_GUARD):
        await _ride_and_sync(server, bike, 10)
        # The bike declares 20 samples at the end while the backend holds only 10 of them.
        own = own_ref(RIDE, "bike-1", Role.BIKE)
        assert own is not None
        documents.claim_ended(bike.doc(own.doc_id), RIDE, T0 + 20, last_seq=19, count=20, duration_s=1200.0)
        bike.persist(own.doc_id)
        async with server.client(server.token("bike", "bike-1"), bike, RIDE) as bc:
            await bc.open_ride()
            await server.backend.wait_for(lambda: store.phase(RIDE).label == "ended")
            status, body, _ = await server.get(f"/v1/rides/{RIDE}", server.token("viewer", "v", rides=[RIDE]))
            assert status == 200
            assert body["phase"] == "ended"
            assert body["missing_samples"] == {"bike-1": 10}
            assert (body["sync_state"], body["sync_reason"]) == (
                "syncing",
                "ended; waiting for samples: 10 from bike-1",
            )
            # The rest arrives: the backend finalizes by itself and pushes the finalization back.
            bike.append_samples(RIDE, [sample(i) for i in range(10, 20)])
            bike.fold(RIDE)
            await bc.push()
            await server.backend.wait_for(lambda: store.phase(RIDE).label == "finalized")
            await bc.wait_for(lambda: bike.view(RIDE).phase.label == "finalized")
    view = store.view(RIDE)
    assert view.authority == "backend"
    assert view.samples == {"bike-1": 20}
    assert view.totals["duration_s"] == 1200.0
    assert store.sync_status(RIDE).state.value == "reconciled"
    assert bike.view(RIDE).totals == view.totals


async def test_app_edit_never_overrides_the_bikes_metrics_and_finalized_is_read_only(server: Server) -> None:
    store = server.backend.store
    bike = server.replica(Role.BIKE, "bike-1")
    app = server.replica(Role.APP, "app-1")
    bike_token, app_token = server.token("bike", "bike-1"), server.token("app", "app-1", rides=[RIDE])
    async with asyncio.timeout(HANG_GUARD):
        await _ride_and_sync(server, bike, 30)
        # Mid-ride the app records its own (shorter, different) ride and ends it with 18:00.
        app.start_ride(RIDE, t=T0)
        app.append_samples(RIDE, [sample(i, hr=90) for i in range(15)])
        app.end_ride(RIDE, t=T0 + 40, duration_s=18 * 60.0)
        app.edit_shared(RIDE, "title", "app title")
        async with server.client(app_token, app, RIDE) as ac:
            await ac.open_ride()
            await server.backend.wait_for(lambda: server.holds_all_of(app, RIDE))
        mid = store.view(RIDE)
        assert mid.authority == "bike"
        assert mid.totals["max_hr"] == max(120 + i % 40 for i in range(30))  # the app's 90 bpm never wins
        status, body, _ = await server.send("PUT", f"/v1/rides/{RIDE}/meta", app_token, {"duration_s": 60})
        assert (status, body["error"]) == (422, "bad_meta")  # metrics are not shared fields
        # The bike ends with 20:00; the divergence is listed, the bike wins, and the backend finalizes.
        bike.end_ride(RIDE, t=T0 + 31, duration_s=20 * 60.0)
        async with server.client(bike_token, bike, RIDE) as bc:
            await bc.open_ride()
            await server.backend.wait_for(lambda: store.phase(RIDE).label == "finalized")
        final = store.ride_json(RIDE)
        heads = {ref.doc_id: store.heads(ref.doc_id) for ref in store.ride_refs(RIDE)}
        assert final["authority"] == "backend"
        assert final["duration_s"] == 1200.0
        assert "backend 20:00 vs app 18:00" in [d["text"] for d in final["divergences"]]

        # After finalize: the bike's new samples, the app's edits (sync and HTTP) are all refused.
        bike.append_samples(RIDE, [sample(i) for i in range(30, 35)])
        bike.fold(RIDE)
        async with server.client(bike_token, bike, RIDE) as bc:
            await bc.open_ride()
            await bc.closed.wait()
        assert bc.close_code == CLOSE_POLICY_VIOLATION
        assert any("in phase finalized" in e for e in bc.errors), bc.errors
        app.edit_shared(RIDE, "target.power_w", 300)  # targets freeze at finalization
        async with server.client(app_token, app, RIDE) as ac:
            await ac.open_ride()
            await ac.closed.wait()
        assert ac.close_code == CLOSE_POLICY_VIOLATION
        assert any("only notes, rating, title stay editable" in e for e in ac.errors), ac.errors
        status, body, _ = await server.send(
            "PUT", f"/v1/rides/{RIDE}/meta", app_token, {"title": "http late", "targets": {"power_w": 300}}
        )
        assert (status, body["error"]) == (409, "ride_finalized")
        assert "target.power_w can no longer change" in body["detail"]
    after = store.ride_json(RIDE)
    assert _stable(after) == _stable(final)
    assert after["sync"]["state"] == "reconciled"
    assert after["samples"] == {"app-1": 15, "bike-1": 30}
    assert after["shared"] == {"title": "app title"}
    assert {ref.doc_id: store.heads(ref.doc_id) for ref in store.ride_refs(RIDE)} == heads


async def test_title_notes_and_rating_stay_editable_after_finalization(server: Server) -> None:
    """Naming or rating yesterday's ride is normal: over HTTP and over sync, after finalization."""
    store = server.backend.store
    bike = server.replica(Role.BIKE, "bike-1")
    app = server.replica(Role.APP, "app-1")
    bike_token, app_token = server.token("bike", "bike-1"), server.token("app", "app-1", rides=[RIDE])
    async with asyncio.timeout(HANG_GUARD):
        await _ride_and_sync(server, bike, 30)
        bike.end_ride(RIDE, t=T0 + 31, duration_s=30.0)
        async with server.client(bike_token, bike, RIDE) as bc:
            await bc.open_ride()
            await server.backend.wait_for(lambda: store.phase(RIDE).label == "finalized")
        final = store.ride_json(RIDE)
        status, body, _ = await server.send(
            "PUT", f"/v1/rides/{RIDE}/meta", app_token, {"title": "Hill climb", "rating": 5}
        )
        assert status == 200, body
        assert body["written"] == ["title", "rating"]
        async with server.client(app_token, app, RIDE) as ac:
            await ac.open_ride()
            await server.backend.wait_for(lambda: server.holds_all_of(app, RIDE))
        app.edit_shared(RIDE, "notes", "legs heavy")
        async with server.client(app_token, app, RIDE) as ac:
            await ac.open_ride()
            await server.backend.wait_for(lambda: store.view(RIDE).shared.get("notes") == "legs heavy")
        assert not ac.errors
    after = store.ride_json(RIDE)
    assert after["shared"] == {"title": "Hill climb", "rating": 5, "notes": "legs heavy"}
    official = ("phase", "authority", "samples", "totals", "end_events_counted", "declared", "end_t")
    assert {k: after[k] for k in official} == {k: final[k] for k in official}
    assert after["phase"] == "finalized" and after["sync"]["state"] == "reconciled"
