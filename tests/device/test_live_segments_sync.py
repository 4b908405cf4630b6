"""Live segments over the real sync client and the real backend on loopback
(docs/architecture.md#live-segments): a bike with a live link folds into segments, the backend retires
each once it holds the consolidation, the bike drops its own once the backend acknowledged it, an app
drops the ones it sees covered; nobody's sync state turns `failed` once connected, and the ride ends
reconciled and finalized with every sample counted once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.backoff import Backoff
from engine.device.connection import DeviceSync
from engine.device.status import SyncEvent
from engine.ride.schema import DocKind, Phase, Role, shared_ref
from engine.store import ReplicaStore, SyncState
from tests.support.backend_server import Server
from tests.support.clock import Clock
from tests.support.device_sync import running
from tests.support.samples import sample

RIDE = "ride-live-sync"
T0 = 1_795_000_000.0
HANG_GUARD_S = 60


def held_segments(store: ReplicaStore) -> list[int]:
    return sorted(
        r.segment for r in store.ride_refs(RIDE) if r.kind is DocKind.SEGMENT and store.has_doc(r.doc_id)
    )


async def test_segments_are_synced_retired_and_dropped_everywhere(server: Server, tmp_path: Path) -> None:
    backend = server.backend.store
    clock = Clock(T0)
    bike = ReplicaStore(
        tmp_path / "bike", device_id="bike-1", role=Role.BIKE, clock=clock, segment_interval_s=30.0
    )
    app = ReplicaStore(tmp_path / "app", device_id="app-1", role=Role.APP)
    events: list[SyncEvent] = []

    def device(store: ReplicaStore, role: str) -> DeviceSync:
        token = server.token(role, store.device_id, rider="alice")
        return DeviceSync(
            store,
            server.url,
            token,
            backoff=Backoff(base=0.05, cap=0.2),
            heartbeat_s=2.0,
            on_event=events.append,
        )

    bike.start_ride(RIDE, t=T0)
    app.ensure_doc(shared_ref(RIDE))
    bike_sync, app_sync = device(bike, "bike"), device(app, "app")
    bike_sync.track(RIDE)
    app_sync.track(RIDE)
    seen_live = {"backend": set[int](), "app": set[int]()}
    async with asyncio.timeout(HANG_GUARD_S), running(bike_sync), running(app_sync):
        await bike_sync.wait_for(bike_sync.connected.is_set)
        await app_sync.wait_for(app_sync.connected.is_set)
        connected = len(events)  # before: "not connected yet", the state of every start
        for seq in range(200):  # 200 s of riding: folds every 10 s, consolidations every 30 s
            clock.t = T0 + seq + 1
            bike.append_sample(RIDE, sample(seq, T0))
            if bike.maybe_fold(RIDE, online=bike_sync.connected.is_set()):
                bike_sync.notify(RIDE)
                # The backend follows within the fold: what the bike folded is there before it goes on.
                folded = seq + 1 - bike.pending_samples(RIDE)

                def arrived(n: int = folded) -> bool:
                    return backend.view(RIDE).samples.get("bike-1") == n

                await server.backend.wait_for(arrived)
                # The sync state counts a sample acknowledged once the backend holds it, in a segment too.
                await bike_sync.wait_for(
                    lambda: bike_sync.tracker.unacked_samples(RIDE) <= bike.pending_samples(RIDE)
                )
                seen_live["backend"].update(held_segments(backend))
                seen_live["app"].update(held_segments(app))
        bike.end_ride(RIDE, t=T0 + 200, duration_s=200.0)
        bike_sync.notify(RIDE)
        await bike_sync.wait_for(lambda: bike_sync.finished(RIDE) and bike.phase(RIDE) is Phase.FINALIZED)
        await bike_sync.wait_for(lambda: held_segments(bike) == [])
        await app_sync.wait_for(lambda: app.phase(RIDE) is Phase.FINALIZED and held_segments(app) == [])
        await app_sync.wait_for(lambda: app_sync.finished(RIDE))
    view = backend.view(RIDE)
    assert view.phase is Phase.FINALIZED and view.samples == {"bike-1": 200}
    assert view.totals["duration_s"] == 200.0 and view.missing_samples == {}
    assert held_segments(backend) == []
    await backend.flushed()
    assert not [row for row in backend.storage.docs(RIDE) if row[2] == DocKind.SEGMENT.value]
    # Segments really were used, and seen by the backend while live.
    assert len(seen_live["backend"]) >= 4, seen_live
    assert app.view(RIDE).to_json()["totals"] == view.to_json()["totals"]
    assert [e for e in events[connected:] if e.state is SyncState.FAILED] == []
    bike.close()
    app.close()


def test_a_restarted_bike_drops_the_segments_its_stored_acknowledgement_covers(tmp_path: Path) -> None:
    from engine.device import live_segments
    from engine.ride.schema import DocRef

    clock = Clock(T0)

    def open_bike() -> ReplicaStore:
        return ReplicaStore(
            tmp_path / "bike", device_id="bike-1", role=Role.BIKE, clock=clock, segment_interval_s=30.0
        )

    bike = open_bike()
    bike.start_ride(RIDE, t=T0)
    for seq in range(35):  # segment 0 consolidated at 30 s
        clock.t = T0 + seq + 1
        bike.append_sample(RIDE, sample(seq, T0))
        bike.maybe_fold(RIDE, online=True)
    durable = DocRef(RIDE, DocKind.BIKE, "bike-1")
    acked = bike.heads(durable.doc_id)
    bike.close()
    bike = open_bike()
    assert held_segments(bike) == [0]
    assert live_segments.at_start(bike, RIDE, "backend") == []  # nothing acknowledged: kept
    bike.set_peer_heads(durable.doc_id, "backend", acked)  # as the tracker stores an acknowledgement
    assert [r.segment for r in live_segments.at_start(bike, RIDE, "backend")] == [0]
    assert held_segments(bike) == []
    assert bike.view(RIDE).samples == {"bike-1": 35}
    bike.close()
