"""Security of the sync endpoint: authentication on the upgrade, ride scope, the actor gate, the shared
document's content check, and hostile frames closing only their own connection."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from engine.campaign.sync_client import SERVER_PEER, SyncClient
from engine.crdt import CrdtDoc
from engine.ride import schema
from engine.ride.schema import Role, own_ref, shared_ref
from engine.store import ReplicaStore
from engine.sync import wire
from engine.sync.docid import document_id_from_bytes
from engine.sync.effects import CLOSE_POLICY_VIOLATION, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG
from tests.support.backend_server import HANG_GUARD, MakeServer, Server
from tests.support.samples import sample

RIDE = "ride-sec"


async def _bike_synced(server: Server, ride: str = RIDE) -> ReplicaStore:
    """A bike that rode `ride` and synced it to the backend."""
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(ride, t=1.0)
    bike.append_samples(ride, [sample(i) for i in range(10)])
    bike.fold(ride)
    async with server.client(server.token("bike", "bike-1"), bike, ride) as bc:
        await bc.open_ride()
        backend = server.backend
        await backend.wait_for(lambda: server.holds_all_of(bike, ride))
    return bike


async def _upgrade_status(
    server: Server, params: dict[str, str], headers: dict[str, str] | None = None
) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with server.http.ws_connect(server.url + "/v1/sync", params=params, headers=headers or {}):
            pass
    return info.value.status


async def test_upgrade_without_a_valid_token_is_refused(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD):
        assert await _upgrade_status(server, {"ride": RIDE}) == 401
        assert await _upgrade_status(server, {"ride": RIDE, "token": "rs1.nope.x.y"}) == 401
        expired = server.ring.issue("bike", "bike-1", ttl_s=60, now=time.time() - 3600)
        assert await _upgrade_status(server, {"ride": RIDE, "token": expired}) == 401
        other_key = server.ring.issue("bike", "bike-1")[:-4] + "AAAA"
        assert await _upgrade_status(server, {"ride": RIDE}, {"Authorization": f"Bearer {other_key}"}) == 401
        scoped = server.token("bike", "bike-1", rides=["another-ride"])
        assert await _upgrade_status(server, {"ride": RIDE, "token": scoped}) == 403
        assert await _upgrade_status(server, {"ride": "bad/ride", "token": scoped}) == 400
    assert not server.backend.store.rides(), "a refused upgrade created nothing"
    status, body, _ = await server.get(f"/v1/rides/{RIDE}", None)
    assert (status, body["error"]) == (401, "token_missing")


async def test_a_token_for_another_ride_cannot_see_this_rides_documents(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD):
        await _bike_synced(server)
        snoop = server.replica(Role.APP, "app-9")
        token = server.token("app", "app-9", rides=["ride-other"])
        async with SyncClient(server.url, token, snoop, "ride-other") as client:
            refs = server.backend.store.ride_refs(RIDE)
            assert len(refs) == 2  # shared + bike-1's
            for ref in refs:
                await client.open(ref)
            await client.wait_for(lambda: len(client.unavailable) == len(refs))
        status, body, _ = await server.get(f"/v1/rides/{RIDE}", token)
    assert client.unavailable == {r.doc_id for r in server.backend.store.ride_refs(RIDE)}
    assert snoop.view(RIDE).samples.get("bike-1", 0) == 0  # it created empty local copies, no more
    assert (status, body["error"]) == (403, "token_wrong_scope")


async def test_writing_under_another_devices_actor_is_rejected_and_changes_nothing(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD):
        bike = await _bike_synced(server)
        store = server.backend.store
        shared = shared_ref(RIDE)
        before = store.heads(shared.doc_id)
        # The ride's app forges a change under bike-1's actor id (which the backend bound to bike-1 on first
        # use). (A stranger's bike could not even connect: tests/backend/test_ownership.py.)
        forged = CrdtDoc.load(bike.doc(shared.doc_id).save(), bike.actor)
        edit = {
            "field": "title",
            "value": "hijacked",
            "t": 1.0,
            "device": "bike-1",
            "role": "bike",
            "seen": None,
        }
        forged.put({f"edit.{bike.actor.hex()}.99": schema.dumps(edit)})
        thief = server.replica(Role.APP, "app-1")
        async with SyncClient(server.url, server.token("app", "app-1", rides=[RIDE]), thief, RIDE) as client:
            await client.open_raw(shared, forged)
            await client.closed.wait()
        assert client.close_code == CLOSE_POLICY_VIOLATION
        assert any("belongs to bike bike-1" in e for e in client.errors), client.errors
        assert store.heads(shared.doc_id) == before
        assert "title" not in store.view(RIDE).shared
        # The server keeps serving the rightful device.
        bike.edit_shared(RIDE, "title", "mine")
        async with server.client(server.token("bike", "bike-1"), bike, RIDE) as bc:
            await bc.open_ride()
            await server.backend.wait_for(lambda: store.view(RIDE).shared.get("title") == "mine")
    assert 'ridesync_sync_gate_rejects_total{reason="actor"} 1.0' in await _metrics(server)


async def test_writing_another_devices_document_is_rejected(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD):
        bike = await _bike_synced(server)
        bike_ref = own_ref(RIDE, "bike-1", Role.BIKE)
        assert bike_ref is not None
        before = server.backend.store.heads(bike_ref.doc_id)
        # An app writes into the bike's document with its own fresh actor.
        doc = CrdtDoc.load(bike.doc(bike_ref.doc_id).save(), bytes(range(16)))
        doc.put({"claim.ended": schema.dumps({"t": 5.0, "key": "x", "count": 3, "last_seq": 2})})
        app = server.replica(Role.APP, "app-1")
        async with SyncClient(server.url, server.token("app", "app-1", rides=[RIDE]), app, RIDE) as client:
            await client.open_raw(bike_ref, doc)
            await client.closed.wait()
    assert client.close_code == CLOSE_POLICY_VIOLATION
    assert any("may not write bike document" in e for e in client.errors), client.errors
    assert server.backend.store.heads(bike_ref.doc_id) == before
    assert server.backend.store.view(RIDE).phase.label == "active"


async def test_an_edit_claiming_another_role_is_rejected(server: Server) -> None:
    """The policy ranks shared edits by the role they claim; an app may not claim to be the backend."""
    async with asyncio.timeout(HANG_GUARD):
        await _bike_synced(server)
        app = server.replica(Role.APP, "app-1")
        app.start_ride(RIDE, t=2.0)
        shared = shared_ref(RIDE)
        async with server.client(server.token("app", "app-1", rides=[RIDE]), app, RIDE) as client:
            await client.open_ride()
            await client.wait_for(lambda: app.view(RIDE).samples.get("bike-1") == 10)
            doc = app.doc(shared.doc_id)
            edit = {"field": "title", "value": "forged", "t": 9.0, "device": "backend", "role": "backend"}
            doc.put({f"edit.{app.actor.hex()}.1": schema.dumps({**edit, "seen": None})})
            await client.push()
            await client.closed.wait()
    assert client.close_code == CLOSE_POLICY_VIOLATION
    assert any("claims 'backend' 'backend'" in e for e in client.errors), client.errors
    assert "title" not in server.backend.store.view(RIDE).shared
    assert 'ridesync_sync_gate_rejects_total{reason="content"} 1.0' in await _metrics(server)


async def test_a_viewer_reads_but_cannot_write(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD):
        await _bike_synced(server)
        viewer = server.replica(Role.APP, "viewer-1")  # a replica to receive into; the token is a viewer's
        token = server.token("viewer", "viewer-1", rides=[RIDE])
        async with SyncClient(server.url, token, viewer, RIDE) as client:
            for ref in server.backend.store.ride_refs(RIDE):
                await client.open(ref)
            await client.wait_for(lambda: viewer.view(RIDE).samples.get("bike-1") == 10)
            viewer.edit_shared(RIDE, "title", "viewer was here")
            await client.push()
            await client.closed.wait()
    assert client.close_code == CLOSE_POLICY_VIOLATION
    assert any("viewer viewer-1 may not write" in e for e in client.errors), client.errors
    assert "title" not in server.backend.store.view(RIDE).shared


@pytest.mark.parametrize(
    ("frame", "code", "text"),
    [
        (b"\xff\xfe garbage", CLOSE_PROTOCOL_ERROR, "invalid message"),
        (b"\xa1\x64type\x04", CLOSE_PROTOCOL_ERROR, "invalid message"),
    ],
)
async def test_garbage_cbor_closes_only_that_connection(
    server: Server, frame: bytes, code: int, text: str
) -> None:
    async with asyncio.timeout(HANG_GUARD):
        bike = await _bike_synced(server)
        async with server.client(server.token("bike", "bike-1"), bike, RIDE) as good:
            await good.open_ride()
            other = server.replica(Role.APP, "app-1")
            async with SyncClient(server.url, server.token("app", "app-1", rides=[RIDE]), other, RIDE) as bad:
                await bad.send_raw(frame)
                await bad.closed.wait()
            assert bad.close_code == code
            assert any(text in e for e in bad.errors), bad.errors
            # The other connection still syncs.
            bike.append_samples(RIDE, [sample(i) for i in range(10, 15)])
            bike.fold(RIDE)
            await good.push()
            await server.backend.wait_for(lambda: server.backend.store.view(RIDE).samples.get("bike-1") == 15)
            assert not good.closed.is_set()


async def test_garbage_sync_data_is_rejected_and_changes_nothing(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD):
        await _bike_synced(server)
        shared = shared_ref(RIDE)
        before = server.backend.store.heads(shared.doc_id)
        app = server.replica(Role.APP, "app-1")
        async with SyncClient(server.url, server.token("app", "app-1", rides=[RIDE]), app, RIDE) as client:
            doc_id = document_id_from_bytes(shared.raw_id)
            await client.send(wire.Sync(client.peer_id, SERVER_PEER, doc_id, b"\x42not a sync message"))
            await client.closed.wait()
    assert client.close_code == CLOSE_POLICY_VIOLATION
    assert any("garbage sync data" in e for e in client.errors), client.errors
    assert server.backend.store.heads(shared.doc_id) == before


async def test_an_oversized_frame_closes_only_that_connection(make_server: MakeServer) -> None:
    server = await make_server(max_message_bytes=64 * 1024)
    async with asyncio.timeout(HANG_GUARD):
        bike = await _bike_synced(server)
        async with server.client(server.token("bike", "bike-1"), bike, RIDE) as good:
            await good.open_ride()
            app = server.replica(Role.APP, "app-1")
            async with SyncClient(server.url, server.token("app", "app-1", rides=[RIDE]), app, RIDE) as big:
                await big.send_raw(b"\x00" * (100 * 1024))
                await big.closed.wait()
            assert big.close_code == CLOSE_TOO_BIG
            bike.edit_shared(RIDE, "title", "still here")
            await good.push()
            await server.backend.wait_for(
                lambda: server.backend.store.view(RIDE).shared.get("title") == "still here"
            )


async def test_a_text_frame_and_a_spoofed_sender_are_refused(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD):
        await _bike_synced(server)
        app = server.replica(Role.APP, "app-1")
        async with SyncClient(server.url, server.token("app", "app-1", rides=[RIDE]), app, RIDE) as client:
            assert client.ws is not None
            await client.ws.send_str(json.dumps({"type": "sync"}))
            await client.closed.wait()
        assert client.close_code == CLOSE_PROTOCOL_ERROR
        async with SyncClient(server.url, server.token("app", "app-1", rides=[RIDE]), app, RIDE) as client:
            doc_id = document_id_from_bytes(shared_ref(RIDE).raw_id)
            await client.send(wire.Sync("someone-else", SERVER_PEER, doc_id, b"\x42x"))
            await client.closed.wait()
        assert client.close_code == CLOSE_PROTOCOL_ERROR
        assert any("is not the joined peer" in e for e in client.errors), client.errors


async def _metrics(server: Server) -> str:
    async with server.http.get(server.url + "/metrics") as resp:
        return await resp.text()
