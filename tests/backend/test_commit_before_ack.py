"""The backend sends no sync reply before the changes it reflects are committed (write-behind store:
engine/store/writer.py). The writer thread is held; the bike's first document is merged in memory, and
the connection must then wait for the commit instead of answering."""

from __future__ import annotations

import asyncio
import threading

from engine.ride.schema import Role
from engine.sync import wire
from tests.support.backend_server import HANG_GUARD, Server
from tests.support.samples import T0, sample

RIDE = "ride-ack"


async def test_no_sync_reply_before_the_commit(server: Server) -> None:
    store = server.backend.store
    writer = store.writer
    assert writer is not None
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(RIDE, [sample(i) for i in range(10)])
    bike.fold(RIDE)
    syncs: list[int] = []  # the writer's committed seq when each sync reply reached the client
    targets: list[int] = []  # what was queued when the connection started waiting for a commit
    hold = threading.Event()
    waiting, replied = asyncio.Event(), asyncio.Event()
    async with asyncio.timeout(HANG_GUARD):
        async with server.client(server.token("bike", "bike-1"), bike, RIDE) as client:
            handle = client._handle

            async def spy(message: wire.Message) -> None:
                if isinstance(message, wire.Sync):
                    syncs.append(writer.committed)
                    replied.set()
                await handle(message)

            flushed = store.flushed

            async def spy_flushed() -> None:
                targets.append(writer.queued)
                waiting.set()
                await flushed()

            client._handle = spy  # type: ignore[method-assign]
            store.flushed = spy_flushed  # type: ignore[method-assign]
            writer.submit(lambda cur: hold.wait(HANG_GUARD))
            try:
                await client.open_ride()
                # Either the connection waits for the commit (right) or a sync reply arrives (wrong).
                either = [asyncio.ensure_future(e.wait()) for e in (waiting, replied)]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                for future in either:
                    future.cancel()
                assert not replied.is_set(), "a sync reply went out before the commit"
                assert server.backend.store.rides() == [RIDE]  # merged in memory meanwhile
            finally:
                hold.set()
            await server.backend.wait_for(lambda: server.holds_all_of(bike, RIDE))
            await client.wait_for(replied.is_set)
    assert syncs[0] >= targets[0]
    assert store.view(RIDE).samples == {"bike-1": 10}
