"""ridesync's public Python API: the names re-exported from `engine` (docs/api.md is the guide).

Everything listed in `__all__` is stable: kept across releases or changed only with a deprecation. Every
other module and name under `engine` and `adapters` is private and may change without notice.

This module wires the adapters in (it is a composition root, like engine/cli), so importing it loads
bleak, bumble and pyserial; `import engine` alone does not (the names load on first use).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from adapters.ble.factory import HrSources, open_hr_sources
from adapters.ble.sim.profile import HrProfile
from adapters.serial.factory import SerialSources, open_serial_sources
from adapters.serial.sim.profile import RideProfile
from engine.auth.tokens import KeyRing
from engine.device.bike import BikeOptions, BikeRide
from engine.device.connection import DeviceSync
from engine.device.end_event import EndResult, post_ride_end
from engine.device.sampler import SampleBuilder
from engine.live.publisher import LivePublisher
from engine.readings import Contact, Kind, Reading, SensorSource, SourceEvent, SourceItem, SourceState
from engine.ride.policy import RideView
from engine.ride.samples import Sample
from engine.ride.schema import Phase, Role
from engine.store import ReplicaStore, SyncState, SyncStatus

__all__ = [
    "BikeOptions",
    "BikeRide",
    "Contact",
    "DeviceSync",
    "EndResult",
    "HrProfile",
    "HrSources",
    "KeyRing",
    "Kind",
    "LivePublisher",
    "Phase",
    "Reading",
    "ReplicaStore",
    "RideProfile",
    "RideView",
    "Role",
    "Sample",
    "SampleBuilder",
    "SensorSource",
    "SerialSources",
    "SourceEvent",
    "SourceItem",
    "SourceState",
    "SyncState",
    "SyncStatus",
    "fetch_class",
    "fetch_ride",
    "open_hr_sources",
    "open_serial_sources",
    "post_ride_end",
]


class BackendRefused(Exception):
    """The backend answered with an HTTP error; `status` and `error` (its JSON `error` code) say why."""

    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(f"HTTP {status} {error}: {detail}" if detail else f"HTTP {status} {error}")
        self.status, self.error, self.detail = status, error, detail


async def _get_json(url: str, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        body: Any = await r.json(content_type=None)
        if r.status >= 400:
            body = body if isinstance(body, dict) else {}
            raise BackendRefused(r.status, str(body.get("error", "")), str(body.get("detail", "")))
        if not isinstance(body, dict):
            raise BackendRefused(r.status, "not_json_object")
        return body


async def fetch_ride(backend: str, token: str, ride_id: str) -> dict[str, Any]:
    """The backend's resolved view of a ride (`GET /v1/rides/{id}`), as JSON: phase, authority,
    samples per device, totals, `end_events_counted`, shared fields. `BackendRefused` on 4xx/5xx."""
    return await _get_json(f"{backend.rstrip('/')}/v1/rides/{ride_id}", token)


async def fetch_class(backend: str, token: str, class_id: str) -> dict[str, Any]:
    """A class as a fresh live subscriber first sees it (`GET /live/v1/classes/{class}`)."""
    return await _get_json(f"{backend.rstrip('/')}/live/v1/classes/{class_id}", token)


__all__ += ["BackendRefused"]
