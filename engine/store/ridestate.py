"""The per-ride state a replica keeps in memory: one `Ride` per ride (its open documents, sync status,
views and sample-log state; evicting or releasing a ride is one `del`) and `OpenDoc`, one open document.
`docstore.DocumentStore` holds them."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.crdt import CrdtDoc
from engine.ride.model import BackendDoc, DeviceDoc, SharedDoc
from engine.ride.samples import Sample
from engine.ride.schema import DocRef
from engine.store.model import SyncStatus
from engine.store.viewcache import DocCache, RideViews

UnloggedRow = tuple[str, str, int, bytes]


@dataclass(slots=True)
class OpenDoc:
    ref: DocRef
    doc: CrdtDoc
    persisted: list[bytes]
    records: int = 0
    degraded: bool = False
    cache: DocCache = field(default_factory=DocCache)  # its last decode (viewcache.py)
    acked: dict[str, list[bytes]] = field(default_factory=dict)  # peer -> heads it acknowledged

    def decode(self) -> DeviceDoc | BackendDoc | SharedDoc:
        return self.cache.decode(self.doc, self.ref)


@dataclass(slots=True, eq=False)
class Ride:
    """Everything this replica keeps in memory about one ride."""

    ride_id: str
    docs: dict[str, OpenDoc] = field(default_factory=dict)
    listed: bool = False  # its row in the rides table is written (or queued)
    status: SyncStatus | None = None
    views: RideViews = field(default_factory=RideViews)  # its phase and resolved view (viewcache.py)
    # Sample log (bike and app): None until the ride is started or recovered here.
    seqs: set[int] | None = None  # seqs this device's own (durable) document holds: consolidated
    pending: dict[int, Sample] | None = None  # logged, not yet folded into any document
    # Live segments (a bike with a live link): folded into a segment, not yet into the durable document,
    # and how many each unconsolidated segment holds (docs/architecture.md#live-segments).
    live: dict[int, Sample] = field(default_factory=dict)
    unmarked: dict[int, int] = field(default_factory=dict)
    segment: int | None = None  # the open segment's number
    segment_t: float = 0.0  # the last consolidation, or the start (ride clock)
    backlog: bool = False  # samples were held offline since the last consolidation
    unlogged: list[UnloggedRow] = field(default_factory=list)  # not logged: the disk was full
    last_fold: float | None = None
    top: int | None = None  # highest seq this device recorded, once known
    written: int = 0  # the write-behind sequence number of its last write (0: none queued)

    def forget_documents(self) -> None:
        """Drop what depends on the in-memory documents (they are about to be loaded again)."""
        self.docs = {}
        self.views = RideViews()
        self.seqs = None
        self.pending = None
        self.live = {}
        self.unmarked = {}
        self.segment = None
        self.top = None
