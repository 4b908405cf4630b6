"""The app replica (the tablet): syncs a ride, edits its shared fields, and can end it.

The app writes only the shared document (edits) and ends the ride with `POST /v1/rides/{id}/end` under the
ride's logical idempotency key, the one the bike uses too, so the ride counts one end however many
devices report it. It writes no claim into a document of its own: a claim racing the backend's
finalization would be refused by the gate (the ride is read-only once finalized), and the backend records
the end event in its document, which every replica then sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from engine.device.common import replica_dir, ride_summary
from engine.device.connection import DeviceSync
from engine.device.end_event import EndResult, post_ride_end
from engine.device.status import SyncEvent
from engine.ride import schema
from engine.ride.schema import Phase, Role
from engine.store import ReplicaStore
from engine.sync.backoff import Backoff

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AppOptions:
    backend: str
    token: str
    device: str
    ride_id: str
    data_root: Path
    end: bool = False
    edits: dict[str, Any] = field(default_factory=dict)
    retry_cap_s: float = 30.0
    heartbeat_s: float = 2.0
    sync_timeout_s: float = 60.0
    wait_phase: Phase | None = None
    on_event: Callable[[dict[str, Any]], None] | None = None
    # End with SyncRefused on a refusal no retry can fix (a bad token, not the ride's owner) instead of
    # retrying it at the backoff cap (engine/device/connection.py): the command line sets it.
    fail_fast: bool = False


class AppSession:
    def __init__(self, options: AppOptions) -> None:
        self.o = options
        self.store = ReplicaStore(
            replica_dir(options.data_root, Role.APP, options.device), device_id=options.device, role=Role.APP
        )
        self.sync = DeviceSync(
            self.store,
            options.backend,
            options.token,
            backoff=Backoff(base=min(0.5, options.retry_cap_s), cap=options.retry_cap_s),
            heartbeat_s=options.heartbeat_s,
            on_event=self._sync_event,
            fail_fast=options.fail_fast,
        )
        self.end: EndResult | None = None
        self.edited: list[str] = []
        self.timed_out: list[str] = []

    def _sync_event(self, event: SyncEvent) -> None:
        if self.o.on_event is not None:
            self.o.on_event(event.to_json())

    def close(self) -> None:
        self.store.close()

    async def run(self) -> dict[str, Any]:
        ride_id = self.o.ride_id
        # The shared document names the ride's other documents; syncing it brings in the rest.
        self.store.ensure_doc(schema.shared_ref(ride_id))
        self.sync.track(ride_id)
        async with asyncio.TaskGroup() as tg:
            sync_task = tg.create_task(self.sync.run(), name="device sync")
            await self._settle("initial sync")
            for name, value in self.o.edits.items():
                self.edited.append(self.store.edit_shared(ride_id, name, value))
                self.sync.notify(ride_id)
            if self.o.edits:
                await self._settle("edits")
            if self.o.end:
                async with aiohttp.ClientSession() as http:
                    self.end = await post_ride_end(
                        http,
                        self.o.backend,
                        self.o.token,
                        ride_id,
                        {"device": self.store.device_id, "role": Role.APP.value},
                        backoff=Backoff(base=min(0.5, self.o.retry_cap_s), cap=self.o.retry_cap_s),
                        deadline_s=self.o.sync_timeout_s,
                    )
                if self.o.on_event is not None:
                    self.o.on_event({"event": "end_posted", "ride_id": ride_id, **self.end.to_json()})
            wanted = self.o.wait_phase or (Phase.ENDED if self.o.end else None)
            if wanted is not None:
                await self._settle(f"phase {wanted.label}", lambda: self.store.phase(ride_id) >= wanted)
            else:
                await self._settle("final sync")
            sync_task.cancel()
        return self.summary()

    async def _settle(self, what: str, extra: Callable[[], bool] | None = None) -> None:
        """Wait, bounded, until the backend acknowledged everything here (and `extra` holds)."""
        ride_id = self.o.ride_id

        def done() -> bool:
            if self.sync.closed_out(ride_id) is not None:
                # Finalized without this app's late changes: nothing it waits for can happen any more.
                return self.sync.finished(ride_id)
            return self.sync.finished(ride_id) and (extra is None or extra())

        try:
            async with asyncio.timeout(self.o.sync_timeout_s):
                await self.sync.wait_for(done)
        except TimeoutError:
            self.timed_out.append(what)
            log.warning("app sync timed out", extra={"ride_id": ride_id, "waiting_for": what})

    def summary(self) -> dict[str, Any]:
        ride_id = self.o.ride_id
        self.sync.tracker.refresh(ride_id, force=True)
        self.sync.tracker.flush()
        out = ride_summary(self.store, ride_id)
        out["edits"] = self.edited
        out["end_post"] = self.end.to_json() if self.end is not None else None
        out["sync_connects"] = self.sync.connects
        out["sync_last_error"] = self.sync.last_error
        out["timed_out"] = self.timed_out
        return out


async def run_app(options: AppOptions) -> dict[str, Any]:
    app = AppSession(options)
    try:
        return await app.run()
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            return {**app.summary(), "aborted": True}
        raise
    finally:
        app.close()
