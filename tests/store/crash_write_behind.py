"""Child process for test_crash_write_behind.py: a backend store in write-behind mode, written by several
"connections" at once, each printing a write only after `await store.flushed()` (its acknowledgement).

Every printed `<connection> <n>` is a promise: key `k<n>` of that connection's document survives a
SIGKILL at any point (mid-group-commit, mid-compaction).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from engine.ride.schema import Role, shared_ref
from engine.store import ReplicaStore

CONNECTIONS = 4


def ride(i: int) -> str:
    return f"ride-wb-{i}"


async def main() -> None:
    store = ReplicaStore(Path(sys.argv[1]), device_id="backend", role=Role.BACKEND, compact_every=7)
    store.start_write_behind()

    async def connection(i: int) -> None:
        ref = shared_ref(ride(i))
        doc = store.ensure_doc(ref)
        n = len(doc.items("k"))
        while True:
            doc.put({f"k{n}": n})
            store.persist(ref.doc_id)
            await store.flushed()
            print(i, n, flush=True)
            n += 1
            await asyncio.sleep(0)  # let the other connections queue theirs: groups of several

    print("ready", flush=True)
    async with asyncio.TaskGroup() as tg:
        for i in range(CONNECTIONS):
            tg.create_task(connection(i))


if __name__ == "__main__":
    asyncio.run(main())
