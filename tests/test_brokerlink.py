"""The shared pub/sub reconnect loops (engine/brokerlink.py `PubSubLink`) on a real redis-server on
loopback, through a minimal outbox: what the relay and the ride push each rely on, tested once here."""

from __future__ import annotations

import asyncio
import logging

import pytest

from engine.brokerlink import LinkTiming, PubSubLink
from tests.support.live import HANG_GUARD_S, until
from tests.support.redis import RedisProcess, redis_server  # noqa: F401  (the fixture)

LOGGER = "tests.brokerlink"


class Messages:
    """An outbox whose items are already the wire messages."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.sent_batches: list[tuple[list[bytes], int]] = []
        self.lost_batches: list[list[bytes]] = []

    def take(self) -> list[bytes] | None:
        batch, self.items = self.items, []
        return batch or None

    def encode(self, batch: list[bytes]) -> list[bytes]:
        return batch

    def sent(self, batch: list[bytes], messages: int) -> None:
        self.sent_batches.append((batch, messages))

    def lost(self, batch: list[bytes]) -> None:
        self.lost_batches.append(batch)


async def test_both_loops_survive_a_broker_restart_dropping_what_was_pending(
    redis_server: RedisProcess,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    outbox = Messages()
    errors: list[str] = []
    heard: list[object] = []
    connects: list[bool] = []  # True: the publisher connected, False: the subscriber subscribed
    link = PubSubLink(
        redis_server.url,
        "tests:brokerlink",
        outbox,
        name="test link",
        origin="me",
        own_prefix=b"me ",
        log=logging.getLogger(LOGGER),
        timing=LinkTiming(backoff_base_s=0.01, backoff_cap_s=0.05, ping_after_s=0.1, dead_after_s=1.0),
        on_error=errors.append,
    )
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(link.publish_forever(lambda: connects.append(True))),
            tg.create_task(link.subscribe_forever(heard.append, lambda: connects.append(False))),
        ]
        async with asyncio.timeout(HANG_GUARD_S):
            await link.sending.wait()
            await link.subscribed.wait()

        # Our own messages come back through the subscription and are skipped undecoded.
        outbox.items += [b"me 1", b"other 1"]
        link.wake()
        await until(lambda: heard == [b"other 1"])
        assert outbox.sent_batches == [([b"me 1", b"other 1"], 2)]

        # Pending but never woken for: only the link breaking can end its wait, and it is then dropped.
        outbox.items.append(b"other 2")
        await asyncio.to_thread(redis_server.restart)
        await until(lambda: connects.count(True) >= 2 and connects.count(False) >= 2)
        assert outbox.lost_batches == [[b"other 2"]] and outbox.items == []
        assert any(e.startswith("send: ") for e in errors)
        assert any(e.startswith("receive: ") for e in errors)

        # Reconnected for real: a new message goes out and is heard.
        async with asyncio.timeout(HANG_GUARD_S):
            await link.sending.wait()
            await link.subscribed.wait()
        outbox.items.append(b"other 3")
        link.wake()
        await until(lambda: heard[-1:] == [b"other 3"])
        for task in tasks:
            task.cancel()

    ours = [r for r in caplog.records if r.name == LOGGER]
    lost = {r.getMessage() for r in ours if "lost the broker" in r.getMessage()}
    assert lost == {"test link publisher lost the broker", "test link subscriber lost the broker"}
    connected = {r.getMessage() for r in ours if "lost" not in r.getMessage()}
    assert connected == {"test link publisher connected", "test link subscribed"}
    # An expected network event: INFO lines, never a warning or a traceback.
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in ours)
