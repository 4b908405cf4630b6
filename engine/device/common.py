"""What the bike and app runners share: where a device keeps its replica, and how the ride looks now."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.ride.model import DeviceDoc
from engine.ride.schema import Role
from engine.store import ReplicaStore


def replica_dir(data_root: Path, role: Role, device: str) -> Path:
    """Each device keeps its own store under the data dir, so a bike, an app and `ridesync serve` can
    share one `--data` on a lab laptop without touching each other's files."""
    path = data_root / f"{role.value}-{device}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def own_doc(store: ReplicaStore, ride_id: str) -> DeviceDoc | None:
    return store.ride_docs(ride_id).device_doc(store.device_id, store.role)


def ride_summary(store: ReplicaStore, ride_id: str) -> dict[str, Any]:
    """The device's view of the ride: the resolved view's contract fields plus its sync state."""
    view = store.view(ride_id).to_json()
    status = store.sync_status(ride_id)
    return {
        "ride_id": ride_id,
        "device": store.device_id,
        "role": store.role.value,
        "sync_state": status.state.value,
        "sync_reason": status.reason,
        "phase": view["phase"],
        "authority": view["authority"],
        "samples": view["samples"],
        "duration_s": view["duration_s"],
        "totals": view["totals"],
        "end_events_counted": view["end_events_counted"],
        "shared": view["shared"],
        "missing_samples": view["missing_samples"],
    }
