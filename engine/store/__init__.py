"""The durable local store of a replica: ride documents, the raw sample log and sync bookkeeping."""

from engine.store.db import StoreCorrupt, StoreError
from engine.store.replica import (
    GateResult,
    RecoveryReport,
    ReplicaStore,
    RetentionPolicy,
    RideNotEvictable,
    StorageFull,
    StorageStatus,
    SyncState,
    SyncStatus,
    UnknownRide,
)

__all__ = [
    "GateResult",
    "RecoveryReport",
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
