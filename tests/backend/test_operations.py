"""Operations: heartbeat, permessage-deflate, metrics, sync state, persistence across a restart, and the
dashboard's class-scoped viewers."""

from __future__ import annotations

import asyncio

import aiohttp

from engine.campaign.sync_client import SyncClient
from engine.dashboard.directory import RIDES
from engine.dashboard.routes import setup_dashboard
from engine.ride.schema import Role, shared_ref
from engine.server.keys import DATA_DIR
from engine.sync import wire
from engine.sync.docid import document_id_from_bytes
from tests.support.backend_server import HANG_GUARD, MakeServer, Server
from tests.support.samples import T0, sample

RIDE = "ride-ops"


async def test_heartbeat_closes_a_peer_that_stops_answering(make_server: MakeServer) -> None:
    server = await make_server(heartbeat_s=0.2)
    token = server.token("bike", "bike-1")
    async with asyncio.timeout(HANG_GUARD):
        # A client that never answers pings: a dead link, as far as the server can tell.
        async with server.http.ws_connect(
            server.url + "/v1/sync", params={"token": token, "ride": RIDE}, autoping=False
        ) as ws:
            await ws.send_bytes(wire.encode(wire.Join("silent")))
            kinds = []
            async for msg in ws:
                kinds.append(msg.type)
            assert aiohttp.WSMsgType.PING in kinds
        assert ws.closed
        await server.backend.wait_for(lambda: not server.backend.peers)


async def test_a_peer_that_never_joins_is_closed(make_server: MakeServer) -> None:
    server = await make_server(join_timeout_s=0.2)
    token = server.token("bike", "bike-1")
    async with asyncio.timeout(HANG_GUARD):
        async with server.http.ws_connect(server.url + "/v1/sync", params={"token": token}) as ws:
            msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1008
        await server.backend.wait_for(lambda: not server.backend.peers)


async def test_permessage_deflate_is_negotiated(server: Server) -> None:
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    async with (
        asyncio.timeout(HANG_GUARD),
        server.client(server.token("bike", "bike-1"), bike, RIDE) as client,
    ):
        assert client.ws is not None
        assert client.ws.compress == 15  # the server accepted the client's permessage-deflate offer


async def test_metrics_and_sync_state(server: Server) -> None:
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(5)])
    bike.fold(RIDE)
    token = server.token("bike", "bike-1")
    async with asyncio.timeout(HANG_GUARD):
        async with server.client(token, bike, RIDE) as client:
            await client.open_ride()
            await server.backend.wait_for(lambda: server.backend.store.view(RIDE).samples.get("bike-1") == 5)
            text = await _metrics(server)
            assert "ridesync_sync_connections 1.0" in text
            assert "ridesync_sync_open_rides 1.0" in text
            _, body, _ = await server.get(f"/v1/rides/{RIDE}", token)
            assert (body["sync_state"], body["sync_reason"]) == ("syncing", "ride active")
            assert body["connected_devices"] == 1
        # The ride's own bike sends something the gate refuses: the ride shows `failed`, with the reason.
        async with SyncClient(server.url, token, bike, RIDE) as bad:
            await bad.send(wire.Sync(bad.peer_id, "ridesync-backend", _shared_id(), b"\x42junk"))
            await bad.closed.wait()
        _, body, _ = await server.get(f"/v1/rides/{RIDE}", token)
        assert body["sync_state"] == "failed"
        assert body["sync_reason"].startswith("bike bike-1: garbage sync data")
        await server.backend.wait_for(lambda: not server.backend.peers)
        text = await _metrics(server)
    assert "ridesync_sync_connections 0.0" in text
    assert "ridesync_sync_open_rides 0.0" in text
    assert 'ridesync_sync_gate_rejects_total{reason="garbage"} 1.0' in text
    assert 'ridesync_sync_bytes_total{direction="in"}' in text
    assert 'ridesync_sync_closes_total{code="1008"} 1.0' in text
    count = [line for line in text.splitlines() if line.startswith("ridesync_sync_message_seconds_count")]
    assert count and float(count[0].split()[-1]) >= 1


async def test_rides_and_events_survive_a_restart(make_server: MakeServer) -> None:
    first = await make_server()
    data = first.test_server.app[DATA_DIR]
    bike = first.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(8)])
    bike.fold(RIDE)
    token = first.token("bike", "bike-1")
    async with asyncio.timeout(HANG_GUARD):
        async with first.client(token, bike, RIDE) as client:
            await client.open_ride()
            await first.backend.wait_for(lambda: first.backend.store.view(RIDE).samples.get("bike-1") == 8)
        ended = await first.send("POST", f"/v1/rides/{RIDE}/end", token, {}, key="end-1")
        await first.close()
        second = await make_server(data=data)
        again = await second.send("POST", f"/v1/rides/{RIDE}/end", token, {}, key="end-1")
        status, body, _ = await second.get(f"/v1/rides/{RIDE}", token)
    assert again[:2] == ended[:2]
    assert again[2]["Idempotent-Replayed"] == "true"
    assert status == 200
    assert body["samples"] == {"bike-1": 8}
    assert body["end_events_counted"] == 1


async def test_a_class_viewer_reads_the_rides_its_class_rides(make_server: MakeServer) -> None:
    server = await make_server(extra_setup=(setup_dashboard,))
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    viewer = server.token("viewer", "dash-1", classes=["spin-6am"])
    stranger = server.token("viewer", "dash-2", classes=["other-class"])
    async with asyncio.timeout(HANG_GUARD):
        async with server.client(server.token("bike", "bike-1", classes=["spin-6am"]), bike, RIDE) as client:
            await client.open_ride()
            await server.backend.wait_for(lambda: server.backend.has_ride(RIDE))
        entry = server.test_server.app[RIDES].ride(RIDE)
        assert entry is not None and (entry.class_id, entry.device) == ("spin-6am", "bike-1")
        ok = await server.get(f"/v1/rides/{RIDE}", viewer)
        refused = await server.get(f"/v1/rides/{RIDE}", stranger)
        listed = await server.get("/v1/rides", stranger)
    assert ok[0] == 200 and ok[1]["ride_id"] == RIDE
    assert (refused[0], refused[1]["error"]) == (403, "token_wrong_scope")
    assert listed[1]["rides"] == []


def _shared_id() -> str:
    return document_id_from_bytes(shared_ref(RIDE).raw_id)


async def _metrics(server: Server) -> str:
    async with server.http.get(server.url + "/metrics") as resp:
        return await resp.text()


async def test_an_http_end_is_pushed_to_connected_devices(server: Server) -> None:
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(5)])
    bike.fold(RIDE)
    async with (
        asyncio.timeout(HANG_GUARD),
        server.client(server.token("bike", "bike-1"), bike, RIDE) as client,
    ):
        await client.open_ride()
        await server.backend.wait_for(lambda: server.backend.has_ride(RIDE))
        status, _, _ = await server.send(
            "POST", f"/v1/rides/{RIDE}/end", server.token("app", "app-1", rides=[RIDE]), {}, key="e"
        )
        assert status == 200
        # The bike learns of the app's end from the backend's document, pushed over its open connection.
        await client.wait_for(lambda: bike.view(RIDE).phase.label == "ended")
    assert bike.view(RIDE).end_events_counted == 1
