"""The bike replica: sensors → 1 Hz samples → the durable store → sync in the background.

Lifecycle (`BikeRide.run`), every task in one TaskGroup:
- sensors are opened and pumped into a `SampleBuilder` (and the live publisher, with a class);
- the recorder takes one sample per ride second, appends it (durable on return: it survives kill -9) and
  folds every `fold_interval_s` of ride time while the sync client is connected (every
  `offline_fold_interval_s` while it is not, and the whole backlog at once on the first sample after it
  reconnects), then tells the sync client, which never holds it up;
- at `--duration` (ride seconds), on stop (Ctrl-C/SIGTERM), or as soon as sync brings an end of the ride
  from another replica (an app's `--end`: the backend's end event), the ride ends: the end claim is written
  locally, `POST /v1/rides/{id}/end` is sent with the ride's logical idempotency key (retried), and the
  runner waits, bounded, for the backend to acknowledge everything (and to finalize);
- the claim's `t` is the ride's end on the bike's clock (policy rule 8): the moment the bike stopped, or,
  when another replica ended the ride, that earlier end (`policy.earliest_other_end`, mapped onto the ride
  clock). Samples recorded after it (a bike that was offline when the app ended the ride records on until
  it reconnects) are declared in the claim and kept, but do not count in the totals;
- a restart with the same data dir and ride id resumes: the store replays its raw log and recording goes on
  at the next seq. A ride this bike already ended is refused (`RideAlreadyEnded`): `ridesync sync` pushes
  what the replica holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from engine.backoff import Backoff
from engine.bike_kinds import bike_kind_of
from engine.device.common import own_doc, replica_dir, ride_summary
from engine.device.connection import DeviceSync
from engine.device.defaults import DEFAULT_HEARTBEAT_S
from engine.device.end_event import EndResult, post_ride_end
from engine.device.sampler import RideClock, SampleBuilder
from engine.device.status import SyncEvent, samples_text
from engine.readings import SensorSource, SourceEvent, SourceItem, pump
from engine.ride import policy
from engine.ride.schema import Phase, Role
from engine.store import ReplicaStore
from engine.store.replica import DEFAULT_FOLD_INTERVAL_S
from engine.store.samplelog import DEFAULT_SEGMENT_INTERVAL_S

log = logging.getLogger(__name__)


class RideAlreadyEnded(Exception):
    """`ridesync ride` on a ride this bike has already ended: nothing more is recorded."""


@contextlib.asynccontextmanager
async def _no_sensors() -> AsyncIterator[list[SensorSource]]:
    yield []


@dataclass(slots=True)
class BikeOptions:
    backend: str
    token: str
    device: str
    ride_id: str
    data_root: Path
    class_id: str | None = None
    # The rider's display name and max HR on the class page (override the token's claims when set).
    name: str | None = None
    max_hr: int | None = None
    duration_s: float | None = None  # ride seconds; None = until stopped
    speed: float = 1.0
    fold_interval_s: float = DEFAULT_FOLD_INTERVAL_S
    # Live segments' consolidation interval (ride seconds); None: every online fold goes into the durable
    # bike document (docs/architecture.md#live-segments).
    segment_interval_s: float | None = DEFAULT_SEGMENT_INTERVAL_S
    retry_cap_s: float = 30.0
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    sync_timeout_s: float = 60.0
    on_event: Callable[[dict[str, Any]], None] | None = None
    # End with SyncRefused on a refusal no retry can fix (a bad token, not the ride's owner) instead of
    # retrying it at the backoff cap (engine/device/connection.py): the command line sets it.
    fail_fast: bool = False
    # Opens the sensors; wired in by the composition root (engine/cli/commands/ride.py), since the engine
    # never imports the adapters.
    sensors: Callable[[], AbstractAsyncContextManager[list[SensorSource]]] = _no_sensors


class BikeRide:
    def __init__(self, options: BikeOptions) -> None:
        self.o = options
        self.clock = RideClock(speed=options.speed)
        # The store's clock is the ride clock: folds happen every 10 s of *ride* time, as on a real bike.
        self.store = ReplicaStore(
            replica_dir(options.data_root, Role.BIKE, options.device),
            device_id=options.device,
            role=Role.BIKE,
            fold_interval_s=options.fold_interval_s,
            segment_interval_s=options.segment_interval_s,
            clock=self.clock.now,
        )
        self.builder = SampleBuilder()
        self.sync = DeviceSync(
            self.store,
            options.backend,
            options.token,
            backoff=Backoff(base=min(0.5, options.retry_cap_s), cap=options.retry_cap_s),
            heartbeat_s=options.heartbeat_s,
            on_event=self._sync_event,
            on_remote_change=self._remote_change,
            fail_fast=options.fail_fast,
        )
        self.stop = asyncio.Event()
        # Set when sync brings an end of this ride from another replica (see the module docstring).
        self.remote_end = asyncio.Event()
        self.ended_by: str | None = None  # "duration", "stopped" or "remote"
        self._claimed = False
        self.recorded_this_run = 0
        self.resumed = False
        self.end: EndResult | None = None

    def _emit(self, obj: dict[str, Any]) -> None:
        if self.o.on_event is not None:
            self.o.on_event(obj)

    def _sync_event(self, event: SyncEvent) -> None:
        self._emit(event.to_json())

    def close(self) -> None:
        self.store.close()

    def _remote_change(self, ride_id: str) -> None:
        """Sync changed the ride here: if another replica has ended it, stop recording (the phase is
        cheap to read; it is `ended` before our own claim only through someone else's end)."""
        if ride_id != self.o.ride_id or self._claimed or self.remote_end.is_set():
            return
        if self.store.phase(ride_id) < Phase.ENDED:
            return
        other = policy.earliest_other_end(self.store.ride_docs(ride_id), self.store.device_id)
        if other is None:
            return
        self.remote_end.set()
        self._emit(
            {
                "event": "ride_end_learned",
                "ride_id": ride_id,
                "end_t": other,
                "samples": self.store.next_seq(ride_id),
            }
        )

    def already_ended(self) -> str | None:
        """Why this bike will not record the ride (it ended it already), or None."""
        ride_id = self.o.ride_id
        if ride_id not in self.store.rides():
            return None
        mine = own_doc(self.store, ride_id)
        if mine is None or mine.ended is None:
            return None
        status = self.store.sync_status(ride_id)
        return (
            f"ride {ride_id} already ended on this bike ({samples_text(len(mine.samples))}, phase "
            f"{self.store.phase(ride_id).label}, sync {status.state.value}); it records nothing more. "
            "To push what this bike holds to the backend: ridesync sync --data DIR --backend URL --token T"
        )

    async def run(self) -> dict[str, Any]:
        ride_id = self.o.ride_id
        store = self.store
        refusal = self.already_ended()
        if refusal is not None:
            raise RideAlreadyEnded(refusal)
        first_seq = store.next_seq(ride_id) if ride_id in store.rides() else 0
        store.start_ride(ride_id)
        mine = own_doc(store, ride_id)
        # Ended elsewhere while this bike was down, and learned in an earlier run: record nothing.
        self._remote_change(ride_id)
        if first_seq > 0:
            self.resumed = True
            last_t = max((s.t for s in mine.samples), default=None) if mine is not None else None
            if last_t is not None:
                # Ride time goes on after the last recorded second, never back over it.
                self.clock.rebase(max(time.time(), last_t + 1.0))
        self._emit(
            {
                "event": "ride",
                "ride_id": ride_id,
                "device": store.device_id,
                "resumed": self.resumed,
                "next_seq": first_seq,
                "ended": False,
                "ended_elsewhere": self.remote_end.is_set(),
                "recovery": {
                    "raw_replayed": store.recovery.raw_replayed,
                    "problems": store.recovery.problems,
                },
            }
        )
        self.sync.track(ride_id)
        async with asyncio.TaskGroup() as tg:
            sync_task = tg.create_task(self.sync.run(), name="device sync")
            background = [sync_task]
            if not self.remote_end.is_set():
                async with self.o.sensors() as sources:
                    publisher = None
                    o = self.o
                    if o.class_id is not None:
                        from engine.live.publisher import LivePublisher

                        publisher = LivePublisher(
                            o.backend,
                            o.token,
                            o.class_id,
                            name=o.name,
                            max_hr=o.max_hr,
                            bike=bike_kind_of(sources),
                        )
                        background.append(tg.create_task(publisher.run(), name="live publisher"))
                    pumps = [
                        tg.create_task(self._pump(s, publisher, sources), name=f"sensor {s.source_id}")
                        for s in sources
                    ]
                    try:
                        await self._record(first_seq)
                    finally:
                        for pump in pumps:
                            pump.cancel()
                        await asyncio.gather(*pumps, return_exceptions=True)
            self._end_locally()
            async with aiohttp.ClientSession() as http:
                self.end = await self._post_end(http)
            await self._await_reconciled()
            for task in background:
                task.cancel()
        return self.summary()

    # ---- recording --------------------------------------------------------------------------------------

    async def _pump(self, source: SensorSource, publisher: Any, sources: list[SensorSource]) -> None:
        consumers: list[Callable[[SourceItem], object]] = [self._offer]
        if publisher is not None:

            def live(item: SourceItem) -> None:
                if isinstance(item, SourceEvent):
                    # A BLE bike knows its profile once connected (its `streaming` event): say it live.
                    publisher.announce(bike_kind_of(sources))
                publisher.offer(item)

            consumers.append(live)
        await pump(source, *consumers)

    def _offer(self, item: SourceItem) -> None:
        self.builder.offer(item, time.monotonic())

    async def _record(self, first_seq: int) -> None:
        """One sample per ride second until the duration is reached or the ride is stopped."""
        ride_id = self.o.ride_id
        store = self.store
        seq = first_seq
        start_t = self.clock.now()
        stop_wait = asyncio.ensure_future(self.stop.wait())
        remote_wait = asyncio.ensure_future(self.remote_end.wait())
        self.ended_by = "duration"
        try:
            while self.o.duration_s is None or seq < self.o.duration_s:
                due = start_t + (seq - first_seq)
                delay = self.clock.wall_delay(due)
                if delay > 0:
                    await asyncio.wait(
                        [stop_wait, remote_wait], timeout=delay, return_when=asyncio.FIRST_COMPLETED
                    )
                if self.remote_end.is_set():
                    self.ended_by = "remote"
                    break
                if self.stop.is_set():
                    self.ended_by = "stopped"
                    break
                store.append_sample(ride_id, self.builder.take(seq, due, time.monotonic()))
                self.recorded_this_run += 1
                seq += 1
                # Offline the store folds rarely; the first sample after the link is back folds the backlog.
                online = self.sync.connected.is_set()
                if store.maybe_fold(ride_id, online=online):
                    self.sync.notify(ride_id)
                elif not online:
                    # The sync state's backlog counts samples, folded or not: it keeps growing in the
                    # reports (rate-limited by the tracker) as it did when every fold announced it.
                    self.sync.tracker.refresh(ride_id)
        finally:
            stop_wait.cancel()
            remote_wait.cancel()

    def _end_locally(self) -> None:
        """Claim `ended` with every sample recorded; its `t` is the ride's end on this bike's clock: now,
        or the earlier end another replica made (policy rule 8)."""
        ride_id = self.o.ride_id
        store = self.store
        store.fold(ride_id)
        end_t = self.clock.now()
        other = policy.earliest_other_end(store.ride_docs(ride_id), store.device_id)
        if other is not None:
            self.ended_by = "remote"
            end_t = min(end_t, self.clock.at_wall(other))
        mine = own_doc(store, ride_id)
        counted = [s for s in (mine.samples if mine is not None else ()) if s.t <= end_t]
        span = (max(s.t for s in counted) - min(s.t for s in counted) + 1.0) if counted else 0.0
        self._claimed = True
        store.end_ride(ride_id, t=end_t, duration_s=span)
        self.sync.notify(ride_id)
        self._emit(
            {
                "event": "ride_ended",
                "ride_id": ride_id,
                "samples": store.next_seq(ride_id),
                "ended_by": self.ended_by,
                "end_t": end_t,
                "after_end": store.next_seq(ride_id) - len(counted),
            }
        )

    async def _post_end(self, http: aiohttp.ClientSession) -> EndResult:
        mine = own_doc(self.store, self.o.ride_id)
        claim = mine.ended if mine is not None else None
        body: dict[str, Any] = {"device": self.store.device_id, "role": Role.BIKE.value}
        if claim is not None:
            body.update(
                {
                    "t": claim.t,
                    "last_seq": claim.last_seq,
                    "count": claim.count,
                    "duration_s": claim.duration_s,
                }
            )
        result = await post_ride_end(
            http,
            self.o.backend,
            self.o.token,
            self.o.ride_id,
            body,
            backoff=Backoff(base=min(0.5, self.o.retry_cap_s), cap=self.o.retry_cap_s),
            deadline_s=self.o.sync_timeout_s,
        )
        self._emit({"event": "end_posted", "ride_id": self.o.ride_id, **result.to_json()})
        return result

    async def _await_reconciled(self) -> None:
        ride_id = self.o.ride_id

        def done() -> bool:
            if self.sync.closed_out(ride_id) is not None:
                return self.sync.finished(ride_id)
            # `finished`, not only `reconciled` (the backend holds what the bike holds): the backend also
            # answered every document on the current connection, and its answer brings what the bike lacks.
            return self.sync.finished(ride_id) and self.store.phase(ride_id) is Phase.FINALIZED

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.o.sync_timeout_s):
                await self.sync.wait_for(done)

    def summary(self) -> dict[str, Any]:
        ride_id = self.o.ride_id
        self.sync.tracker.refresh(ride_id, force=True)
        self.sync.tracker.flush()
        out = ride_summary(self.store, ride_id)
        out["samples_recorded"] = self.store.next_seq(ride_id)
        out["recorded_this_run"] = self.recorded_this_run
        out["resumed"] = self.resumed
        out["sync_connects"] = self.sync.connects
        out["sync_last_error"] = self.sync.last_error
        out["end_post"] = self.end.to_json() if self.end is not None else None
        out["ended_by"] = self.ended_by
        view = self.store.view(ride_id)
        out["end_t"] = view.end_t
        out["after_end"] = view.after_end
        return out
