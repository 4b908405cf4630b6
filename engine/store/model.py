"""The store's value types and errors, shared by its layers and its callers."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

from engine.store.db import StoreError

log = logging.getLogger(__name__)


class SyncState(enum.StrEnum):
    SYNCING = "syncing"
    FAILED = "failed"
    RECONCILED = "reconciled"


class RideNotEvictable(StoreError):
    """Eviction refused: the ride is not finalized and reconciled, or has unfolded samples."""


class UnknownRide(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class SyncStatus:
    ride_id: str
    state: SyncState
    reason: str
    updated: float

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.value, "reason": self.reason, "updated": self.updated}


@dataclass(frozen=True, slots=True)
class StorageStatus:
    db_bytes: int
    free_bytes: int
    min_free_bytes: int
    unlogged_samples: int = 0

    @property
    def low(self) -> bool:
        return self.free_bytes < self.min_free_bytes or self.unlogged_samples > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "db_bytes": self.db_bytes,
            "free_bytes": self.free_bytes,
            "low": self.low,
            "unlogged_samples": self.unlogged_samples,
        }


MAX_PROBLEMS = 1000


@dataclass(slots=True)
class RecoveryReport:
    """What opening the store found. `problems` lists every skipped record, in words."""

    docs_loaded: int = 0
    records_skipped: int = 0
    raw_replayed: int = 0
    raw_skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        # The backend loads rides for as long as it runs (and a damaged one again after each release):
        # every problem is logged, the first MAX_PROBLEMS kept, so the report cannot grow without bound.
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        log.error("store recovery problem", extra={"problem": text})


@dataclass(frozen=True, slots=True)
class RideOwner:
    """Who owns a ride (kept by the backend; engine/backend/README.md, "Ride owners"): the bike whose first
    sync started it, the rider its token named (an app with a token for the same rider may write the ride
    too) and the class the ride is in. The binding is trust on first use, like an actor's; `rider` and
    `class_id` are filled in once, by the owner, and never change afterwards."""

    ride_id: str
    device: str
    rider: str | None = None
    class_id: str | None = None
    bound: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "rider": self.rider, "class": self.class_id, "bound": self.bound}


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Finalized, reconciled rides are compacted at once and evicted `keep_finalized_s` after their
    last update. Unsynced rides are never evicted, whatever the disk says."""

    keep_finalized_s: float = 7 * 24 * 3600.0
