"""Two backend nodes over one storage, linked by the ride push (engine/backend/push.py): a change one node
accepts reaches the ride's connections on the other, an app ends on the node its bike is not on, and the
ride is finalized once with one end event.

The nodes share one data dir (its SQLite store and idempotency ledger; SQLite's WAL lets two processes'
connections write one file) and run over the in-process bus and over a real redis-server. What this
checks is the push and the merge from storage; the multi-node guarantees of the database itself (actor
binding, the ledger and finalization as conditional writes across machines) are PostgreSQL's
(docs/scaling.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from engine.backend.push import LocalPushBus, RidePush
from engine.backend.redis_push import RedisPush
from engine.brokerlink import LinkTiming
from engine.ride.schema import Role
from engine.server.keys import REGISTRY
from engine.store import StoreError
from tests.support.backend_server import HANG_GUARD, MakeServer, Server
from tests.support.redis import RedisProcess, redis_server  # noqa: F401  (the fixture)
from tests.support.samples import T0, sample

RIDE = "ride-two-nodes"


@pytest.fixture(params=["local", "redis"])
def pushes(request: pytest.FixtureRequest) -> Iterator[tuple[RidePush, RidePush]]:
    if request.param == "local":
        bus = LocalPushBus()
        yield bus.member("node-a"), bus.member("node-b")
    else:
        redis: RedisProcess = request.getfixturevalue("redis_server")
        yield RedisPush(redis.url, origin="node-a"), RedisPush(redis.url, origin="node-b")


def _finalized(server: Server) -> float:
    value = server.test_server.app[REGISTRY].get_sample_value("ridesync_rides_finalized_total")
    return 0.0 if value is None else value


async def test_a_change_on_one_node_reaches_the_rides_connections_on_the_other(
    make_server: MakeServer, tmp_path: Path, pushes: tuple[RidePush, RidePush]
) -> None:
    shared = tmp_path / "shared-data"
    a = await make_server(data=shared, push=pushes[0])
    b = await make_server(data=shared, push=pushes[1])
    bike = a.replica(Role.BIKE, "bike-1")
    app = a.replica(Role.APP, "app-1")
    bike_token = a.token("bike", "bike-1", rider="alice")
    app_token = a.token("app", "app-1", rider="alice")
    async with asyncio.timeout(HANG_GUARD):
        await pushes[0].ready()
        await pushes[1].ready()
        bike.start_ride(RIDE, t=T0)
        bike.append_samples(RIDE, [sample(i) for i in range(10)])
        bike.fold(RIDE)
        async with a.client(bike_token, bike, RIDE) as bc:
            await bc.open_ride()
            await a.backend.wait_for(lambda: a.holds_all_of(bike, RIDE))
            await a.backend.store.flushed()
            app.start_ride(RIDE, t=T0 + 1)
            # The app connects to node B, which has never seen the ride: it loads it from the storage.
            async with b.client(app_token, app, RIDE) as ac:
                await ac.open_ride()
                await ac.wait_for(lambda: app.view(RIDE).samples.get("bike-1") == 10)
                # Pushed, not polled: node A accepts new samples; node B's connection gets them.
                bike.append_samples(RIDE, [sample(i) for i in range(10, 25)])
                bike.fold(RIDE)
                await bc.push()
                await ac.wait_for(lambda: app.view(RIDE).samples.get("bike-1") == 25)
                # And the other way: the app's edit on B reaches the bike on A.
                app.edit_shared(RIDE, "notes", "windy")
                await ac.push()
                await bc.wait_for(lambda: bike.view(RIDE).shared.get("notes") == "windy")
                # The app ends the ride on B; the bike claims its end on A: finalized once, one end event.
                status, body, _ = await b.send("POST", f"/v1/rides/{RIDE}/end", app_token, {}, key="end-1")
                assert status == 200, body
                bike.end_ride(RIDE, t=T0 + 30, duration_s=30.0)
                await bc.push()
                await bc.wait_for(lambda: bike.view(RIDE).phase.label == "finalized")
                await ac.wait_for(lambda: app.view(RIDE).phase.label == "finalized")
                # The app retries its end on A: the same answer, from the shared ledger.
                again, body2, headers = await a.send(
                    "POST", f"/v1/rides/{RIDE}/end", app_token, {}, key="end-1"
                )
                assert (again, body2, headers["Idempotent-Replayed"]) == (200, body, "true")
        assert not bc.errors and not ac.errors
    for node in (a, b):
        store = node.backend.store
        await node.backend.wait_for(lambda: store.phase(RIDE).label == "finalized")  # noqa: B023
        view = store.view(RIDE)
        assert view.samples["bike-1"] == 25
        assert view.end_events_counted == 1
    assert _finalized(a) + _finalized(b) == 1
    assert pushes[0].stats.rides_published >= 1 and pushes[1].stats.rides_published >= 1


async def test_changes_made_while_the_broker_was_down_reach_the_other_node_after(
    make_server: MakeServer,
    tmp_path: Path,
    redis_server: RedisProcess,  # noqa: F811
) -> None:
    """Announcements are dropped while Redis is down; once node B resubscribes it catches up on the
    rides it has connections on, without waiting for their next change."""
    shared = tmp_path / "shared-data"
    pa = RedisPush(redis_server.url, origin="node-a", timing=LinkTiming(backoff_cap_s=0.3))
    pb = RedisPush(redis_server.url, origin="node-b", timing=LinkTiming(backoff_cap_s=0.3))
    a = await make_server(data=shared, push=pa)
    b = await make_server(data=shared, push=pb)
    bike = a.replica(Role.BIKE, "bike-1")
    app = a.replica(Role.APP, "app-1")
    async with asyncio.timeout(HANG_GUARD):
        await pa.ready()
        await pb.ready()
        bike.start_ride(RIDE, t=T0)
        bike.append_samples(RIDE, [sample(i) for i in range(5)])
        bike.fold(RIDE)
        async with a.client(a.token("bike", "bike-1", rider="alice"), bike, RIDE) as bc:
            await bc.open_ride()
            await a.backend.wait_for(lambda: a.holds_all_of(bike, RIDE))
            await a.backend.store.flushed()
            app.start_ride(RIDE, t=T0 + 1)
            async with b.client(a.token("app", "app-1", rider="alice"), app, RIDE) as ac:
                await ac.open_ride()
                await ac.wait_for(lambda: app.view(RIDE).samples.get("bike-1") == 5)
                redis_server.stop()
                bike.append_samples(RIDE, [sample(i) for i in range(5, 12)])
                bike.fold(RIDE)
                await bc.push()
                await a.backend.wait_for(lambda: a.holds_all_of(bike, RIDE))
                await a.backend.store.flushed()
                assert app.view(RIDE).samples.get("bike-1") == 5  # nothing crossed while Redis was down
                redis_server.start()
                await ac.wait_for(lambda: app.view(RIDE).samples.get("bike-1") == 12)
    assert pa.stats.dropped >= 1  # node A's announcement of the change was lost with the broker


async def test_a_sync_upgrade_while_the_shared_store_is_away_is_503(
    make_server: MakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that cannot read what other nodes committed serves nothing and acknowledges nothing: the
    device is told to retry (503), as for an unreachable backend."""
    node = await make_server(data=tmp_path / "shared-data", push=LocalPushBus().member("node-a"))

    def away(ride_id: str) -> list[str]:
        raise StoreError("cannot connect to PostgreSQL: connection refused")

    monkeypatch.setattr(node.backend.store, "refresh_ride", away)
    bike = node.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with node.client(node.token("bike", "bike-1"), bike, RIDE):
            pass
    assert refused.value.status == 503
    assert node.backend.store.ride_owner(RIDE) is None  # nothing was bound
