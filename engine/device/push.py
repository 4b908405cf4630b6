"""`ridesync sync`: push what a bike or app replica holds to the backend, without sensors.

It opens the device's replica in its data dir (the one `ridesync ride` or `ridesync app` wrote), syncs its
rides (all of them, or those named) over the device sync client, and waits, bounded, until each is
settled: the backend holds every change (`reconciled`), a ride this bike ended is also finalized, or a
ride the backend finalized without some of this device's changes is closed out. It records nothing, claims
nothing and posts no end: a ride that is not ended stays as it is. The result is each ride's sync state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.backoff import Backoff
from engine.device.common import own_doc, ride_summary
from engine.device.connection import DeviceSync
from engine.device.defaults import DEFAULT_HEARTBEAT_S
from engine.device.status import SyncEvent
from engine.ride.schema import Phase, Role
from engine.store import ReplicaStore
from engine.store.db import DB_NAME

log = logging.getLogger(__name__)

MAX_RIDES_PER_CONNECTION = 32  # the backend's limit on `?ride=` per sync connection


class NoReplica(Exception):
    """The data dir holds no replica of this device, or not the rides asked for."""


@dataclass(slots=True)
class PushOptions:
    backend: str
    token: str
    device: str
    role: Role
    data_root: Path
    rides: list[str] = field(default_factory=list)  # empty: every ride the replica holds
    retry_cap_s: float = 30.0
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    sync_timeout_s: float = 60.0
    on_event: Callable[[dict[str, Any]], None] | None = None


def replica_path(data_root: Path, role: Role, device: str) -> Path:
    return data_root / f"{role.value}-{device}"


async def push_replica(options: PushOptions) -> dict[str, Any]:
    path = replica_path(options.data_root, options.role, options.device)
    if not (path / DB_NAME).exists():
        who = f"{options.role.value} {options.device}"
        raise NoReplica(f"no replica of {who} in {options.data_root} (looked for {path})")
    store = ReplicaStore(path, device_id=options.device, role=options.role)
    try:
        held = store.rides()
        unknown = [r for r in options.rides if r not in held]
        if unknown:
            raise NoReplica(
                f"the {options.role.value} replica of {options.device} in {options.data_root} holds no ride "
                f"{', '.join(unknown)} (it holds: {', '.join(held) or 'none'})"
            )
        rides = options.rides or held
        results: dict[str, dict[str, Any]] = {}
        for i in range(0, len(rides), MAX_RIDES_PER_CONNECTION):
            chunk = rides[i : i + MAX_RIDES_PER_CONNECTION]
            results.update(await _push(store, chunk, options))
        out = [results[r] for r in rides]
        return {
            "device": options.device,
            "role": options.role.value,
            "data": str(path),
            "ok": all(r["sync_state"] == "reconciled" for r in out),
            "rides": out,
        }
    finally:
        store.close()


async def _push(store: ReplicaStore, rides: list[str], options: PushOptions) -> dict[str, dict[str, Any]]:
    def on_event(event: SyncEvent) -> None:
        if options.on_event is not None:
            options.on_event(event.to_json())

    sync = DeviceSync(
        store,
        options.backend,
        options.token,
        backoff=Backoff(base=min(0.5, options.retry_cap_s), cap=options.retry_cap_s),
        heartbeat_s=options.heartbeat_s,
        on_event=on_event,
    )
    for ride_id in rides:
        sync.track(ride_id)

    def settled(ride_id: str) -> bool:
        if not sync.finished(ride_id):
            return False
        if sync.closed_out(ride_id) is not None:
            return True
        mine = own_doc(store, ride_id)
        # A ride this bike ended: the backend finalizes it once it holds the claim and every sample.
        if store.role is Role.BIKE and mine is not None and mine.ended is not None:
            return store.phase(ride_id) is Phase.FINALIZED
        return True

    task = asyncio.create_task(sync.run(), name="device sync")
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(options.sync_timeout_s):
                await sync.wait_for(lambda: all(settled(r) for r in rides))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    out = {}
    for ride_id in rides:
        sync.tracker.refresh(ride_id, force=True)
        summary = ride_summary(store, ride_id)
        summary["unacked_samples"] = sync.tracker.unacked_samples(ride_id)
        summary["settled"] = settled(ride_id)
        out[ride_id] = summary
    sync.tracker.flush()
    summary_errors = sync.last_error
    if summary_errors:
        for ride in out.values():
            ride["sync_last_error"] = summary_errors
    return out
