"""Folding by link state: with a live link every `fold_interval_s` as before; offline every
`offline_fold_interval_s`, and the whole backlog as one change as soon as the link is back."""

from __future__ import annotations

from collections.abc import Callable

from engine.ride.schema import DocKind
from engine.store import ReplicaStore
from tests.support.clock import Clock
from tests.support.samples import make_sample

Open = Callable[..., ReplicaStore]
RIDE = "ride-l"


def _own(store: ReplicaStore) -> str:
    return next(r.doc_id for r in store.ride_refs(RIDE) if r.kind is DocKind.BIKE)


def _record(store: ReplicaStore, clock: Clock, seqs: range, *, online: bool, every: int = 1) -> int:
    """One sample per second, maybe_fold after every `every` of them (the bike runner: after each);
    returns the folds made."""
    folds = 0
    for lo in range(seqs.start, seqs.stop, every):
        chunk = range(lo, min(seqs.stop, lo + every))
        clock.t += len(chunk)
        store.append_samples(RIDE, [make_sample(seq, t0=clock.t - chunk[-1]) for seq in chunk])
        folds += 1 if store.maybe_fold(RIDE, online=online) else 0
    return folds


def test_online_folds_every_interval_as_before(open_replica: Open, clock: Clock) -> None:
    bike = open_replica("bike")
    bike.start_ride(RIDE)
    assert _record(bike, clock, range(60), online=True) == 6
    assert bike.pending_samples(RIDE) == 0


def test_offline_folds_rarely_and_the_backlog_folds_in_one_change_at_reconnect(
    open_replica: Open, clock: Clock
) -> None:
    bike = open_replica("bike", offline_fold_interval_s=300)
    bike.start_ride(RIDE)
    own = _own(bike)
    before = len(bike.changes_since(own, []))
    # 30 minutes offline: past max_batch (100) many times over, yet a fold only every 5 minutes.
    assert _record(bike, clock, range(1800), online=False, every=10) == 6
    assert len(bike.changes_since(own, [])) == before + 6
    # 150 more seconds offline: pending, not folded; the first sample with the link back folds them all.
    assert _record(bike, clock, range(1800, 1950), online=False) == 0
    assert bike.pending_samples(RIDE) == 150
    assert _record(bike, clock, range(1950, 1951), online=True) == 1
    assert bike.pending_samples(RIDE) == 0
    assert len(bike.changes_since(own, [])) == before + 7
    view = bike.view(RIDE)
    assert view.samples == {"bike-1": 1951}


def test_a_backlog_folded_at_once_is_one_change_of_several_keys(open_replica: Open, clock: Clock) -> None:
    bike = open_replica("bike", offline_fold_interval_s=1e9)
    bike.start_ride(RIDE)
    own = _own(bike)
    heads = bike.heads(own)
    assert _record(bike, clock, range(8000), online=False, every=100) == 2  # a key's worth (3600) each
    assert bike.pending_samples(RIDE) == 8000 - 7200
    assert bike.fold(RIDE) == 800
    new = bike.changes_since(own, heads)
    assert len(new) == 3
    assert bike.view(RIDE).samples == {"bike-1": 8000}


def test_unfolded_offline_samples_survive_a_crash(open_replica: Open, clock: Clock, tmp_path: object) -> None:
    bike = open_replica("bike")
    bike.start_ride(RIDE)
    _record(bike, clock, range(250), online=False)
    assert bike.pending_samples(RIDE) == 250
    bike.close()  # nothing folded: only the raw log holds them
    again = open_replica("bike")
    assert again.view(RIDE).samples == {"bike-1": 250}
    assert again.recovery.raw_replayed == 250
