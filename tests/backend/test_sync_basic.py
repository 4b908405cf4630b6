"""A bike and an app sync a ride with the real backend over loopback."""

from __future__ import annotations

import asyncio

from engine.ride.schema import DocKind, Role, own_ref, shared_ref
from tests.support.backend_server import HANG_GUARD, Server
from tests.support.samples import sample


async def test_bike_ride_reaches_the_backend_and_the_app_sees_it(server: Server) -> None:
    ride = "ride-basic"
    bike = server.replica(Role.BIKE, "bike-1")
    app = server.replica(Role.APP, "app-1")
    bike.start_ride(ride, t=1.0)
    bike.append_samples(ride, [sample(i) for i in range(30)])
    bike.fold(ride)
    bike.edit_shared(ride, "title", "Morning ride")
    async with asyncio.timeout(HANG_GUARD):
        async with server.client(server.token("bike", "bike-1", rider="alice"), bike, ride) as bc:
            await bc.open_ride()
            backend = server.backend
            await backend.wait_for(lambda: backend.store.view(ride).samples.get("bike-1") == 30)
            app.start_ride(ride, t=2.0)
            async with server.client(server.token("app", "app-1", rider="alice"), app, ride) as ac:
                await ac.open_ride()
                bike_doc = own_ref(ride, "bike-1", Role.BIKE)
                assert bike_doc is not None
                await ac.wait_for(lambda: app.view(ride).samples.get("bike-1") == 30)
                await ac.wait_for(lambda: app.view(ride).shared.get("title") == "Morning ride")
                # The app's edit reaches the bike through the backend.
                app.edit_shared(ride, "notes", "legs felt good")
                await ac.push()
                await bc.wait_for(lambda: bike.view(ride).shared.get("notes") == "legs felt good")
    view = backend.store.view(ride)
    assert view.phase.label == "active"
    assert view.shared == {"title": "Morning ride", "notes": "legs felt good"}
    assert backend.store.heads(shared_ref(ride).doc_id) == bike.heads(shared_ref(ride).doc_id)
    assert {r.kind for r in backend.store.ride_refs(ride)} == {DocKind.SHARED, DocKind.BIKE, DocKind.APP}
