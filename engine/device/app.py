"""The app replica (the tablet): syncs a ride, edits its shared fields, and can end it.

The app opens only a ride that exists: unless its replica already holds the ride, it first asks the backend
(`GET /v1/rides/{id}`, retried while the backend is unreachable, bounded by the sync timeout) and refuses
a ride the backend does not hold (`RideUnavailable`), so a typo in `--ride-id` creates nothing anywhere.

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from engine.backoff import Attempts, Backoff, classify_status
from engine.device.common import replica_dir, ride_summary
from engine.device.connection import DeviceSync
from engine.device.defaults import DEFAULT_HEARTBEAT_S
from engine.device.end_event import EndResult, post_ride_end
from engine.device.retry import classify_exception
from engine.device.status import SyncEvent
from engine.ride import policy, schema
from engine.ride.schema import Phase, Role
from engine.store import ReplicaStore
from engine.urls import http_base

log = logging.getLogger(__name__)


class RideUnavailable(Exception):
    """The app may not open this ride: the backend does not hold it (or refused to say)."""


class EditRefused(Exception):
    """An edit asked for can no longer be made: the ride is finalized and the field is frozen."""


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
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
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

    def _holds_ride(self) -> bool:
        ref = schema.shared_ref(self.o.ride_id)
        return self.store.has_doc(ref.doc_id) and bool(self.store.heads(ref.doc_id))

    async def check_ride_exists(self) -> None:
        """Raise RideUnavailable unless the backend holds the ride (module docstring)."""
        ride_id = self.o.ride_id
        url = f"{http_base(self.o.backend)}/v1/rides/{ride_id}"
        attempts = Attempts(Backoff(base=min(0.5, self.o.retry_cap_s), cap=self.o.retry_cap_s))
        give_up = time.monotonic() + self.o.sync_timeout_s
        async with aiohttp.ClientSession() as http:
            while True:
                now = datetime.now(UTC)
                try:
                    async with (
                        asyncio.timeout(10),
                        http.get(url, headers={"Authorization": f"Bearer {self.o.token}"}) as resp,
                    ):
                        if resp.status == 200:
                            return
                        text = await resp.text()
                        if resp.status == 404:
                            raise RideUnavailable(f"ride {ride_id} does not exist on the backend")
                        decision = classify_status(resp.status, resp.headers.get("Retry-After"), now)
                        if not decision.retry:
                            raise RideUnavailable(
                                f"the backend refused to show ride {ride_id} ({resp.status}): {text[:300]}"
                            )
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    decision = classify_exception(exc, now)
                delay = attempts.next_delay(decision.retry_after)
                if time.monotonic() + delay > give_up:
                    raise RideUnavailable(
                        f"could not check that ride {ride_id} exists on the backend: {decision.reason}"
                    )
                await asyncio.sleep(delay)

    async def run(self) -> dict[str, Any]:
        ride_id = self.o.ride_id
        if not self._holds_ride():
            await self.check_ride_exists()
        # The shared document names the ride's other documents; syncing it brings in the rest.
        self.store.ensure_doc(schema.shared_ref(ride_id))
        self.sync.track(ride_id)
        refusal: str | None = None
        async with asyncio.TaskGroup() as tg:
            sync_task = tg.create_task(self.sync.run(), name="device sync")
            # One fresh exchange of every document is enough to know the ride as the backend holds it; a
            # ride being recorded changes all the time, so waiting for a quiet moment could take long.
            await self._settle("initial sync", fresh_only=True)
            refusal = self._frozen_edits()
            if refusal is None:
                await self._edit_and_end()
            sync_task.cancel()
        if refusal is not None:
            raise EditRefused(refusal)
        return self.summary()

    def _frozen_edits(self) -> str | None:
        """Why some of the edits asked for can no longer be made (the ride is finalized), or None. Checked
        before anything is written: the backend would refuse them for good (policy.may_edit)."""
        phase = self.store.phase(self.o.ride_id)
        frozen = sorted(name for name in self.o.edits if not policy.may_edit(name, Role.APP, phase))
        if not frozen:
            return None
        return (
            f"ride {self.o.ride_id} is finalized: {', '.join(frozen)} can no longer change (only "
            f"{', '.join(sorted(policy.EDITABLE_AFTER_FINALIZED))} can); nothing was written"
        )

    async def _edit_and_end(self) -> None:
        ride_id = self.o.ride_id
        for name, value in self.o.edits.items():
            self.edited.append(self.store.edit_shared(ride_id, name, value))
            self.sync.notify(ride_id)
        if self.o.edits:
            shared = schema.shared_ref(ride_id).doc_id
            await self._settle("edits", lambda: self.sync.tracker.is_acknowledged(shared), fresh_only=True)
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

    async def _settle(
        self, what: str, extra: Callable[[], bool] | None = None, *, fresh_only: bool = False
    ) -> None:
        """Wait, bounded, until the backend acknowledged everything here (and `extra` holds). With
        `fresh_only`, until it acknowledged every document once on this connection (and `extra` holds)."""
        ride_id = self.o.ride_id

        def done() -> bool:
            if self.sync.closed_out(ride_id) is not None:
                # Finalized without this app's late changes: nothing it waits for can happen any more.
                return self.sync.finished(ride_id)
            synced = (
                self.sync.settled_on_this_connection(ride_id) if fresh_only else self.sync.finished(ride_id)
            )
            return synced and (extra is None or extra())

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
