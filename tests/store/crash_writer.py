"""Child process for test_crash.py: records samples as fast as it can until it is killed.

It prints each seq only after `append_sample` returned (the sample is committed), so every printed seq
is a promise the store must keep after a SIGKILL at any point: mid-append, mid-fold, mid-compaction.
"""

from __future__ import annotations

import sys
from pathlib import Path

from engine.ride.schema import Role
from engine.store import ReplicaStore
from tests.support.samples import make_sample

RIDE = "crash-ride"


def main() -> None:
    store = ReplicaStore(
        Path(sys.argv[1]),
        device_id="bike-crash",
        role=Role.BIKE,
        fold_interval_s=0.02,
        max_batch=15,
        compact_every=6,
    )
    store.start_ride(RIDE)
    print("ready", flush=True)
    while True:
        seq = store.next_seq(RIDE)
        store.append_sample(RIDE, make_sample(seq))
        print(seq, flush=True)
        store.maybe_fold(RIDE)


if __name__ == "__main__":
    main()
