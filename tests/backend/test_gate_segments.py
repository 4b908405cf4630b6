"""The gate's rules for live segments (docs/architecture.md#live-segments), on the real backend over
loopback: only the ride's owning bike creates segments, with numbers in its window; past 4 live segments
its next is refused with the reason; a retired segment is never created again; the existing rules (actor
binding, permission from the bytes before staging) apply to segments unchanged."""

from __future__ import annotations

import asyncio

from engine.campaign.sync_client import SyncClient
from engine.crdt import CrdtDoc, new_actor_id
from engine.ride import documents
from engine.ride.schema import DocKind, DocRef, Role, segment_ref, shared_ref
from engine.store import ReplicaStore
from engine.store.segments import MAX_LIVE_SEGMENTS
from engine.sync.effects import CLOSE_POLICY_VIOLATION
from tests.support.backend_server import HANG_GUARD, Server
from tests.support.clock import Clock
from tests.support.samples import sample

RIDE = "ride-seg"
BIKE = "bike-1"


def segment_doc(ref: DocRef, seqs: range, actor: bytes | None = None) -> CrdtDoc:
    """A segment as the bike writes it: the header and one batch, in one change."""
    doc = CrdtDoc.new(actor or new_actor_id(ref.device))
    documents.add_samples(doc, [sample(s) for s in seqs], extra=documents.header_values(doc, ref))
    return doc


async def _started(server: Server) -> None:
    """The bike owns the ride and the backend holds its shared and bike documents."""
    bike = server.replica(Role.BIKE, BIKE)
    bike.start_ride(RIDE, t=1.0)
    async with server.client(server.token("bike", BIKE), bike, RIDE) as bc:
        await bc.open_ride()
        await server.backend.wait_for(lambda: server.holds_all_of(bike, RIDE))
    bike.close()


async def test_the_owning_bike_creates_its_segments_and_the_view_counts_them_once(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD):
        await _started(server)
        store = server.backend.store
        bike = server.replica(Role.BIKE, "bike-1b")  # a scratch store: the segments are sent raw
        async with SyncClient(server.url, server.token("bike", BIKE), bike, RIDE) as client:
            for n, seqs in ((0, range(0, 10)), (1, range(5, 20))):  # overlapping on purpose
                await client.open_raw(
                    segment_ref(RIDE, BIKE, n), segment_doc(segment_ref(RIDE, BIKE, n), seqs)
                )
            await server.backend.wait_for(lambda: store.view(RIDE).samples == {BIKE: 20})
        assert client.errors == [] and client.unavailable == set()
        assert {r.segment for r in store.ride_refs(RIDE) if r.kind is DocKind.SEGMENT} == {0, 1}


async def test_a_segment_outside_the_owners_window_or_of_another_device_is_unavailable(
    server: Server,
) -> None:
    async with asyncio.timeout(HANG_GUARD):
        await _started(server)
        store = server.backend.store
        far = segment_ref(RIDE, BIKE, 2 * MAX_LIVE_SEGMENTS)  # past the window after segment -1
        apps = segment_ref(RIDE, "app-1", 0)  # an app has no segments
        bike = server.replica(Role.BIKE, "bike-1b")
        async with SyncClient(server.url, server.token("bike", BIKE), bike, RIDE) as client:
            await client.open_raw(far, segment_doc(far, range(3)))
            await client.wait_for(lambda: far.doc_id in client.unavailable)
        app = server.replica(Role.APP, "app-1")
        async with SyncClient(server.url, server.token("app", "app-1", rides=[RIDE]), app, RIDE) as client:
            await client.open_raw(apps, segment_doc(apps, range(3)))
            await client.wait_for(lambda: apps.doc_id in client.unavailable)
        assert not store.has_doc(far.doc_id) and not store.has_doc(apps.doc_id)
        assert store.view(RIDE).samples == {BIKE: 0}


async def test_an_app_may_not_write_the_bikes_segment(server: Server) -> None:
    async with asyncio.timeout(HANG_GUARD):
        await _started(server)
        store = server.backend.store
        ref = segment_ref(RIDE, BIKE, 0)
        bike = server.replica(Role.BIKE, "bike-1b")
        async with SyncClient(server.url, server.token("bike", BIKE), bike, RIDE) as client:
            await client.open_raw(ref, segment_doc(ref, range(10)))
            await server.backend.wait_for(lambda: store.view(RIDE).samples == {BIKE: 10})
        before = store.heads(ref.doc_id)
        forged = CrdtDoc.load(store.doc(ref.doc_id).save(), bytes(range(16)))
        documents.add_samples(forged, [sample(s) for s in range(10, 20)])
        app = server.replica(Role.APP, "app-1")
        async with SyncClient(server.url, server.token("app", "app-1", rides=[RIDE]), app, RIDE) as client:
            await client.open_raw(ref, forged)
            await client.closed.wait()
    assert client.close_code == CLOSE_POLICY_VIOLATION
    assert any("may not write segment document" in e for e in client.errors), client.errors
    assert store.heads(ref.doc_id) == before


async def test_past_the_live_segments_a_device_may_hold_the_next_is_refused_with_the_reason(
    server: Server,
) -> None:
    async with asyncio.timeout(HANG_GUARD):
        await _started(server)
        store = server.backend.store
        bike = server.replica(Role.BIKE, "bike-1b")
        refs = [segment_ref(RIDE, BIKE, n) for n in range(MAX_LIVE_SEGMENTS + 1)]
        async with SyncClient(server.url, server.token("bike", BIKE), bike, RIDE) as client:
            for n, ref in enumerate(refs[:-1]):
                await client.open_raw(ref, segment_doc(ref, range(10 * n, 10 * n + 10)))
            await server.backend.wait_for(lambda: store.view(RIDE).samples == {BIKE: 10 * MAX_LIVE_SEGMENTS})
            await client.open_raw(refs[-1], segment_doc(refs[-1], range(100, 110)))
            await client.closed.wait()
    assert client.close_code == CLOSE_POLICY_VIOLATION
    assert any("segment_limit" in e and f"at most {MAX_LIVE_SEGMENTS}" in e for e in client.errors), (
        client.errors
    )
    assert not store.has_doc(refs[-1].doc_id)
    await store.flushed()
    assert refs[-1].doc_id not in {row[0] for row in store.storage.docs(RIDE)}
    assert store.view(RIDE).samples == {BIKE: 10 * MAX_LIVE_SEGMENTS}


async def test_a_retired_segment_is_unavailable_and_never_created_again(server: Server) -> None:
    t0 = 1_700_000_000.0
    clock = Clock(t0)
    bike = ReplicaStore(
        server.tmp / "bike", device_id=BIKE, role=Role.BIKE, clock=clock, segment_interval_s=60.0
    )
    bike.start_ride(RIDE, t=t0)
    ref = segment_ref(RIDE, BIKE, 0)
    store = server.backend.store

    def ride(seqs: range) -> None:
        for seq in seqs:
            clock.t = t0 + seq + 1
            bike.append_sample(RIDE, sample(seq, t0))
            bike.maybe_fold(RIDE, online=True)

    async with asyncio.timeout(HANG_GUARD):
        ride(range(55))  # five folds into segment 0
        async with server.client(server.token("bike", BIKE), bike, RIDE) as bc:
            await bc.open_ride()
            await server.backend.wait_for(lambda: store.view(RIDE).samples == {BIKE: 50})
            assert store.has_doc(ref.doc_id)
            ride(range(55, 61))  # consolidated into the bike document at 60 s
            await bc.push()
            await server.backend.wait_for(lambda: not store.has_doc(ref.doc_id))
        await store.flushed()
        assert ref.doc_id not in {row[0] for row in store.storage.docs(RIDE)}
        assert store.view(RIDE).samples == {BIKE: 60}
        # Offered again (a bike that had not dropped it yet reconnects): unavailable, nothing created.
        seg = CrdtDoc.load(bike.doc(ref.doc_id).save(), new_actor_id(BIKE))
        scratch = server.replica(Role.BIKE, "scratch")
        async with SyncClient(server.url, server.token("bike", BIKE), scratch, RIDE) as c:
            await c.open_raw(ref, seg)
            await c.wait_for(lambda: ref.doc_id in c.unavailable)
        assert not store.has_doc(ref.doc_id) and c.errors == []
        assert store.view(RIDE).samples == {BIKE: 60}
        async with server.http.get(server.url + "/metrics") as resp:
            assert "ridesync_live_segments_retired_total 1.0" in await resp.text()
    bike.close()


async def test_only_the_bike_lists_its_segments_in_the_index(server: Server) -> None:
    """Every replica fetches the segments the shared index lists, so an app may not list the bike's (a
    hostile one could list thousands for everyone to fetch)."""
    async with asyncio.timeout(HANG_GUARD):
        await _started(server)
        store = server.backend.store
        shared = shared_ref(RIDE)
        before = store.heads(shared.doc_id)
        forged = CrdtDoc.load(store.doc(shared.doc_id).save(), new_actor_id("app-1"))
        forged.put(documents.index_values(forged, segment_ref(RIDE, BIKE, 3)))
        app = server.replica(Role.APP, "app-1")
        async with SyncClient(server.url, server.token("app", "app-1", rides=[RIDE]), app, RIDE) as client:
            await client.open_raw(shared, forged)
            await client.closed.wait()
    assert client.close_code == CLOSE_POLICY_VIOLATION
    assert any("only that bike may" in e for e in client.errors), client.errors
    assert store.heads(shared.doc_id) == before
