"""A device whose late changes reach the backend only after it finalized the ride: the real backend on
loopback refuses them, and the device settles on `failed` (closed out) with a reason instead of offering
them again for ever, while still receiving the official result, and, when none of its refused changes are
in the shared document, the title, notes and rating edits made later. Also: the end POST retries the backend's
409 "same request still in progress" answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.backoff import Backoff
from engine.device.connection import DeviceSync
from engine.device.end_event import EndResult, post_ride_end
from engine.ride.samples import Sample
from engine.ride.schema import Phase, Role, shared_ref
from engine.store import ReplicaStore, SyncState
from tests.support.backend_server import Server
from tests.support.device_sync import running

RIDE = "ride-late"
T0 = 1_795_000_000.0
HANG_GUARD_S = 60


def device_sync(server: Server, store: ReplicaStore, role: str) -> DeviceSync:
    token = server.token(role, store.device_id, rider="alice")  # the app writes the bike's ride
    return DeviceSync(store, server.url, token, backoff=Backoff(base=0.05, cap=0.2), heartbeat_s=2.0)


async def test_late_offline_edit_after_finalization_closes_out_the_ride(
    server: Server, tmp_path: Path
) -> None:
    backend = server.backend.store
    bike = ReplicaStore(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    app = ReplicaStore(tmp_path / "app", device_id="app-1", role=Role.APP)
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [Sample(seq=i, t=T0 + i, hr=120 + i) for i in range(20)])
    bike.fold(RIDE)
    app.ensure_doc(shared_ref(RIDE))
    async with asyncio.timeout(HANG_GUARD_S):
        # Both replicas sync the ride mid-way; then the app goes offline.
        bike_sync = device_sync(server, bike, "bike")
        bike_sync.track(RIDE)
        async with running(bike_sync):
            await bike_sync.wait_for(lambda: bike_sync.finished(RIDE))
            app_sync = device_sync(server, app, "app")
            app_sync.track(RIDE)
            async with running(app_sync):
                await app_sync.wait_for(lambda: app_sync.finished(RIDE))
            # Offline, the app edits a target (frozen once the ride is finalized: title, notes and rating
            # would still be taken); meanwhile the bike ends and the backend finalizes.
            app.edit_shared(RIDE, "target.power_w", 275)
            bike.end_ride(RIDE, t=T0 + 20, duration_s=20.0)
            bike_sync.notify(RIDE)
            await bike_sync.wait_for(
                lambda: bike_sync.reconciled(RIDE) and bike.phase(RIDE) is Phase.FINALIZED
            )
        final = backend.ride_json(RIDE)
        final_heads = {ref.doc_id: backend.heads(ref.doc_id) for ref in backend.ride_refs(RIDE)}
        assert final["phase"] == "finalized"

        # The app comes back: refused, closed out, and it still receives the official result.
        app_sync = device_sync(server, app, "app")
        app_sync.track(RIDE)
        async with running(app_sync):
            await app_sync.wait_for(lambda: app_sync.closed_out(RIDE) is not None and app_sync.finished(RIDE))
            assert app.phase(RIDE) is Phase.FINALIZED
            assert app_sync.connected.is_set()  # settled on a connection that is not being refused
            state, reason = app_sync.tracker.compute(RIDE)
            assert state is SyncState.FAILED
            assert "finalized this ride before it received changes made on this device" in reason
            # A further local change does not start the refusal loop again: the shared doc stays out.
            app.edit_shared(RIDE, "target.cadence", 90)
            app_sync.notify(RIDE)
            connects = app_sync.connects
            await app_sync.wait_for(lambda: app_sync.finished(RIDE))
            assert app_sync.connects == connects
    app_sync.tracker.flush()
    assert app.sync_status(RIDE).state is SyncState.FAILED
    assert app.view(RIDE).totals == final["totals"]
    after = backend.ride_json(RIDE)
    assert after["shared"] == final["shared"] and "target.power_w" not in json.dumps(after["shared"])
    assert {ref.doc_id: backend.heads(ref.doc_id) for ref in backend.ride_refs(RIDE)} == final_heads
    bike.close()
    app.close()


async def test_closed_out_bike_still_receives_shared_edits(server: Server, tmp_path: Path) -> None:
    """A bike whose late samples the finalized ride refuses is closed out, yet it has nothing unacknowledged
    in the shared document: a title set on the backend afterwards must still reach it, and it is only
    finished once it holds what the backend holds of that document."""
    bike = ReplicaStore(tmp_path / "bike", device_id="bike-1", role=Role.BIKE)
    app = ReplicaStore(tmp_path / "app", device_id="app-1", role=Role.APP)
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [Sample(seq=i, t=T0 + i, hr=120 + i) for i in range(20)])
    bike.end_ride(RIDE, t=T0 + 20, duration_s=20.0)
    app.ensure_doc(shared_ref(RIDE))
    async with asyncio.timeout(HANG_GUARD_S):
        bike_sync = device_sync(server, bike, "bike")
        bike_sync.track(RIDE)
        async with running(bike_sync):
            await bike_sync.wait_for(
                lambda: bike_sync.reconciled(RIDE) and bike.phase(RIDE) is Phase.FINALIZED
            )
        # Offline, the bike records on past its own end; the finalized ride refuses those samples.
        bike.append_samples(RIDE, [Sample(seq=i, t=T0 + i, hr=120) for i in range(20, 25)])
        bike.fold(RIDE)
        bike_sync = device_sync(server, bike, "bike")
        bike_sync.track(RIDE)
        async with running(bike_sync):
            await bike_sync.wait_for(
                lambda: bike_sync.closed_out(RIDE) is not None and bike_sync.finished(RIDE)
            )
            connects = bike_sync.connects
            # Title, notes and rating stay editable after finalization: the app sets a title now.
            app_sync = device_sync(server, app, "app")
            app_sync.track(RIDE)
            async with running(app_sync):
                await app_sync.wait_for(lambda: app_sync.finished(RIDE))
                app.edit_shared(RIDE, "title", "Hill climb")
                app_sync.notify(RIDE)
                await app_sync.wait_for(lambda: app_sync.finished(RIDE) and app_sync.reconciled(RIDE))
            assert server.backend.store.ride_json(RIDE)["shared"] == {"title": "Hill climb"}
            # The backend pushes the edit to the closed-out bike on the connection it already has (the
            # timeout only bounds a failure: a bike that left out the shared document never gets it).
            async with asyncio.timeout(20):
                await bike_sync.wait_for(lambda: bike.view(RIDE).shared == {"title": "Hill climb"})
            await bike_sync.wait_for(lambda: bike_sync.finished(RIDE))
            assert bike_sync.closed_out(RIDE) is not None
            assert bike_sync.connects == connects  # the late samples were not offered again
    assert bike.view(RIDE).totals == server.backend.store.ride_json(RIDE)["totals"]
    assert server.backend.store.ride_json(RIDE)["samples"] == {"bike-1": 20}
    bike.close()
    app.close()


Handler = Callable[[web.Request], Awaitable[web.Response]]


async def post_end_to(handler: Handler) -> EndResult:
    """`post_ride_end` against a real aiohttp server on loopback answering with `handler`."""
    app = web.Application()
    app.router.add_post("/v1/rides/{ride}/end", handler)
    ts = TestServer(app, host="127.0.0.1", port=0)
    await ts.start_server()
    try:
        async with asyncio.timeout(HANG_GUARD_S), aiohttp.ClientSession() as http:
            return await post_ride_end(
                http,
                str(ts.make_url("")).rstrip("/"),
                "token",
                RIDE,
                {"device": "app-1"},
                backoff=Backoff(base=0.01, cap=0.05),
            )
    finally:
        await ts.close()


async def test_end_post_retries_while_the_same_request_is_in_progress() -> None:
    answers = [409, 409, 200]
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Idempotency-Key"))
        if answers[min(len(seen) - 1, len(answers) - 1)] == 409:
            return web.json_response(
                {"error": "idempotency", "detail": "still being processed"},
                status=409,
                headers={"Retry-After": "0"},
            )
        return web.json_response({"ride_id": RIDE, "ended": True})

    result = await post_end_to(handler)
    assert result.ok and result.status == 200 and result.attempts == 3
    assert len(set(seen)) == 1  # every retry is the same request


async def test_end_post_does_not_retry_other_conflicts() -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({"error": "ride_finalized", "detail": "read-only"}, status=409)

    result = await post_end_to(handler)
    assert not result.ok and result.status == 409 and calls == 1
