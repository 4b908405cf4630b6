"""Two backend nodes (two real applications on loopback) over one PostgreSQL database, with the same
signing keys: a device may reach either. A ride started on one node is known to the other; a retried
`POST /v1/rides/{id}/end` answered by the other node replays the first answer; the app's end through the
other node is the same logical event; another bike cannot take the ride through the other node; the
ride is finalized once."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp
import psycopg
import pytest

from engine.ride.schema import Role
from engine.store.location import StoreLocation
from engine.testing.postgres import PostgresCluster
from tests.backend.conftest import HANG_GUARD, T0, MakeServer, Server, sample

RIDE = "ride-nodes"


async def _two_nodes(make_server: MakeServer, tmp_path: Path, url: str) -> tuple[Server, Server]:
    store = StoreLocation("postgresql", url=url)
    a = await make_server(data=tmp_path / "a", store=store)
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "token-keys.json", tmp_path / "b" / "token-keys.json")
    b = await make_server(data=tmp_path / "b", store=store)
    return a, b


async def test_an_end_retried_on_another_node_replays_and_the_ride_is_finalized_once(
    make_server: MakeServer, tmp_path: Path, pg_url: str
) -> None:
    a, b = await _two_nodes(make_server, tmp_path, pg_url)
    bike_token, app_token = a.token("bike", "bike-1"), a.token("app", "app-1", rides=[RIDE])
    path = f"/v1/rides/{RIDE}/end"
    bike = a.replica(Role.BIKE, "bike-1")
    async with asyncio.timeout(HANG_GUARD):
        bike.start_ride(RIDE, t=T0)
        bike.append_samples(RIDE, [sample(i) for i in range(5)])
        bike.fold(RIDE)
        async with a.client(bike_token, bike, RIDE) as bc:
            await bc.open_ride()
            await a.backend.wait_for(lambda: a.holds_all_of(bike, RIDE))
        first = await a.send("POST", path, bike_token, {"t": T0 + 60}, key="k-1")
        retry = await b.send("POST", path, bike_token, {"t": T0 + 60}, key="k-1")  # its answer was lost
        app_end = await b.send("POST", path, app_token, {}, key="app-key")
    assert first[0] == 200 and first[2]["Idempotent-Replayed"] == "false"
    assert (retry[0], retry[1], retry[2]["Idempotent-Replayed"]) == (200, first[1], "true")
    assert app_end[0] == 200 and app_end[1]["reported_by"] == "bike-1"  # the one logical end event
    # The bike's own end claim (declaring its 5 samples) reaches node b: b finalizes, and only b.
    bike.end_ride(RIDE, t=T0 + 60)
    async with asyncio.timeout(HANG_GUARD):
        async with b.client(bike_token, bike, RIDE) as bc:
            await bc.open_ride()
            await b.backend.wait_for(lambda: b.backend.store.phase(RIDE).label == "finalized")
    view = b.backend.store.view(RIDE)
    assert view.end_events_counted == 1 and view.samples == {"bike-1": 5}
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT ride_id FROM finalizations").fetchall() == [(RIDE,)]
    bike.close()


async def test_another_bike_cannot_take_a_ride_through_another_node(
    make_server: MakeServer, tmp_path: Path, pg_url: str
) -> None:
    a, b = await _two_nodes(make_server, tmp_path, pg_url)
    bike = a.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    async with asyncio.timeout(HANG_GUARD):
        async with a.client(a.token("bike", "bike-1"), bike, RIDE) as bc:
            await bc.open_ride()
            await a.backend.wait_for(lambda: a.holds_all_of(bike, RIDE))
        other = b.replica(Role.BIKE, "bike-2")
        other.start_ride(RIDE, t=T0)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with b.client(b.token("bike", "bike-2"), other, RIDE):
                pass
    assert refused.value.status == 403
    owner = b.backend.store.ride_owner(RIDE)
    assert owner is not None and owner.device == "bike-1"
    bike.close()
    other.close()


async def test_while_postgresql_is_away_nothing_is_acknowledged_and_retries_succeed_after(
    make_server: MakeServer, tmp_path: Path, pg_url: str, pg_cluster: PostgresCluster
) -> None:
    """The database refuses connections and drops the node's (a restart, a failover): an end is answered
    503 (clients retry it as they retry an unreachable backend), never 200; once the database is back
    the same retry is executed once and answered 200."""
    a, _ = await _two_nodes(make_server, tmp_path, pg_url)
    bike_token = a.token("bike", "bike-1")
    bike = a.replica(Role.BIKE, "bike-1")
    name = pg_url.rsplit("/", 1)[1]
    path = f"/v1/rides/{RIDE}/end"
    async with asyncio.timeout(HANG_GUARD):
        bike.start_ride(RIDE, t=T0)
        async with a.client(bike_token, bike, RIDE) as bc:
            await bc.open_ride()
            await a.backend.wait_for(lambda: a.holds_all_of(bike, RIDE))
        with psycopg.connect(pg_cluster.admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname=%s", (name,))
            away = await a.send("POST", path, bike_token, {"t": T0 + 60}, key="k-1")
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        back = await a.send("POST", path, bike_token, {"t": T0 + 60}, key="k-1")
    assert away[0] == 503, away
    assert back[0] == 200 and back[2]["Idempotent-Replayed"] == "false"
    assert a.backend.store.view(RIDE).end_events_counted == 1
    bike.close()
