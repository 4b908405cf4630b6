"""Runs in a separate process: one contender in a race for the same idempotency key."""

from __future__ import annotations

import os
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

from engine.events.idempotency import Ledger, StoredResponse, fingerprint


@dataclass(frozen=True)
class Race:
    db: str
    log: str
    body: bytes
    match_body: bool


def contend(
    race: Race, barrier: Barrier, waiter_seen: Event, results: Queue[tuple[int, bytes, bool]]
) -> None:
    ledger = Ledger(race.db)

    def handler() -> StoredResponse:
        # Hold the claim until the other process has observed it in progress, so the test proves the
        # concurrent path (one executes while the other waits) instead of hoping for it.
        if not waiter_seen.wait(30):
            raise RuntimeError("the other contender never waited")
        with Path(race.log).open("a") as f:
            f.write(f"{os.getpid()}\n")
        return StoredResponse(200, f"ended by {os.getpid()}".encode(), "text/plain")

    barrier.wait(30)
    result = ledger.run(
        "event:ride.end",
        "ride-1",
        fingerprint(race.body),
        handler,
        match_body=race.match_body,
        on_wait=waiter_seen.set,
    )
    ledger.close()
    results.put((result.response.status, result.response.body, result.replayed))
