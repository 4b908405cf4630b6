"""The durable local store of a replica: ride documents, the raw sample log and sync bookkeeping."""

from engine.store.db import StoreCorrupt, StoreError
from engine.store.gate import Backlog, GatedSync, GateResult, shared_content_problem
from engine.store.replica import (
    RecoveryReport,
    ReplicaStore,
    RetentionPolicy,
    RideNotEvictable,
    RideOwner,
    StorageFull,
    StorageStatus,
    SyncState,
    SyncStatus,
    UnknownRide,
)
from engine.store.writer import StoreWriter, WriterFailed

__all__ = [
    "Backlog",
    "GateResult",
    "GatedSync",
    "RecoveryReport",
    "ReplicaStore",
    "RetentionPolicy",
    "RideNotEvictable",
    "RideOwner",
    "StorageFull",
    "StorageStatus",
    "StoreCorrupt",
    "StoreError",
    "StoreWriter",
    "SyncState",
    "SyncStatus",
    "UnknownRide",
    "WriterFailed",
    "shared_content_problem",
]
