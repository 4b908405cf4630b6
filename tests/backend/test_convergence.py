"""Many short bike-then-app exchanges with the real endpoint all converge.

Regression guard for the gate's staging copy (engine/store/gate.py): with a fork per message, Automerge's
queue of changes waiting for a dependency was thrown away and some exchanges looped forever (this test
failed 3 runs in 4 with a per-message fork). It cannot catch that on every run, but fails loudly (the hang
guard) whenever it does."""

from __future__ import annotations

import asyncio

import pytest

from engine.ride.schema import Role
from tests.support.backend_server import Server
from tests.support.samples import T0, sample

pytestmark = pytest.mark.slow
ROUNDS = 100


async def _exchange(server: Server, i: int) -> None:
    ride, bike_id, app_id = f"ride-conv-{i}", f"bike-{i}", f"app-{i}"
    bike = server.replica(Role.BIKE, bike_id)
    app = server.replica(Role.APP, app_id)
    bike.start_ride(ride, t=T0)
    bike.append_samples(ride, [sample(j) for j in range(30)])
    bike.fold(ride)
    bike.edit_shared(ride, "title", f"bike {i}")
    async with server.client(server.token("bike", bike_id, rider=f"rider-{i}"), bike, ride) as bc:
        await bc.open_ride()
        await server.backend.wait_for(lambda: server.holds_all_of(bike, ride))
    app.start_ride(ride, t=T0)
    app.append_samples(ride, [sample(j, hr=90) for j in range(15)])
    app.end_ride(ride, t=T0 + 40, duration_s=1080.0)
    app.edit_shared(ride, "title", f"app {i}")
    async with server.client(server.token("app", app_id, rider=f"rider-{i}"), app, ride) as ac:
        await ac.open_ride()
        await server.backend.wait_for(lambda: server.holds_all_of(app, ride))
        await ac.wait_for(lambda: app.view(ride).samples.get(bike_id) == 30)
    bike.close()
    app.close()


async def test_bike_then_app_exchanges_always_converge(server: Server) -> None:
    for i in range(ROUNDS):
        async with asyncio.timeout(30):  # a hang guard per exchange; each takes well under a second
            await _exchange(server, i)
    assert len(server.backend.store.rides()) == ROUNDS
