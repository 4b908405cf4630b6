"""The durable local store of a replica: ride documents, the raw sample log and sync bookkeeping, in
layers over one storage port (engine/store/README.md)."""

from engine.store.backend_replica import BackendReplica
from engine.store.db import StorageFull, StoreCorrupt, StoreError
from engine.store.device_replica import DeviceReplica
from engine.store.gate import Backlog, GatedSync, GateResult, shared_content_problem
from engine.store.model import (
    RecoveryReport,
    RetentionPolicy,
    RideNotEvictable,
    RideOwner,
    StorageStatus,
    SyncState,
    SyncStatus,
    UnknownRide,
)
from engine.store.port import StoragePort, StorageTx
from engine.store.replica import ReplicaStore
from engine.store.writer import StoreWriter, WriterFailed

__all__ = [
    "BackendReplica",
    "Backlog",
    "DeviceReplica",
    "GateResult",
    "GatedSync",
    "RecoveryReport",
    "ReplicaStore",
    "RetentionPolicy",
    "RideNotEvictable",
    "RideOwner",
    "StorageFull",
    "StoragePort",
    "StorageStatus",
    "StorageTx",
    "StoreCorrupt",
    "StoreError",
    "StoreWriter",
    "SyncState",
    "SyncStatus",
    "UnknownRide",
    "WriterFailed",
    "shared_content_problem",
]
