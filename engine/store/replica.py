"""A replica's durable store (bike, app or backend): the facade callers use.

`ReplicaStore` is `DeviceReplica` (device_replica.py) and `BackendReplica` (backend_replica.py) in one
class, for callers that choose the role at run time (the role's operations refuse the other role). Both
build on `ReplicaCore` (core.py), which wires the store's layers (engine/store/README.md):
- `docstore.DocumentStore`: the ride documents, persisted through the storage port (`port.py`; SQLite in
  `sqlite.py`), the Automerge panic guard, and the per-ride state (`ridestate.Ride`);
- `samplelog.SampleLog`: a device's durable sample log and its folding into the device's document;
- `bookkeeping.SyncBook`: peer heads, sync states, actor bindings and ride owners;
- `retention.Retention`: compaction, eviction and the storage watch.
Not thread-safe: call it from one thread.
"""

from __future__ import annotations

from typing import ClassVar

from engine.ride.schema import Role
from engine.store.backend_replica import BackendReplica
from engine.store.core import ReplicaCore
from engine.store.db import StorageFull, StoreCorrupt, StoreError
from engine.store.device_replica import DeviceReplica
from engine.store.model import (
    RecoveryReport,
    RetentionPolicy,
    RideNotEvictable,
    StorageStatus,
    SyncState,
    SyncStatus,
    UnknownRide,
)
from engine.store.samplelog import DEFAULT_FOLD_INTERVAL_S


class ReplicaStore(DeviceReplica, BackendReplica):
    """One replica of any role on one storage: by default the SQLite file in `data_dir`. By default every
    write commits before the call returns. `start_write_behind()` (the backend) hands commits to a writer
    thread instead (engine/store/writer.py): then await `flushed()` before acknowledging anything."""

    roles: ClassVar[frozenset[Role]] = frozenset(Role)


__all__ = [
    "DEFAULT_FOLD_INTERVAL_S",
    "BackendReplica",
    "DeviceReplica",
    "RecoveryReport",
    "ReplicaCore",
    "ReplicaStore",
    "RetentionPolicy",
    "RideNotEvictable",
    "StorageFull",
    "StorageStatus",
    "StoreCorrupt",
    "StoreError",
    "SyncState",
    "SyncStatus",
    "UnknownRide",
]
