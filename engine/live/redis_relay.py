"""The relay over Redis pub/sub (Debian's `redis-server`): hub processes share classes through a broker.

`publish()` only appends the batch to an outbox and wakes the sender task, so the hub's tick never awaits
the broker. The sender writes everything pending (a tick's batches, one per class) as one PUBLISH on
`ridesync:live` (relay_codec.py says why one message rather than one per class). The receiver holds one
SUBSCRIBE to it, skips its own messages (by their origin prefix, undecoded) and malformed ones (counted),
and hands every class's batch of the rest to the hub.

Either side that loses the broker reconnects on its own with capped full-jitter backoff; while the sender
is disconnected, batches are dropped, not queued (live values are latest-wins; the next sample replaces
them, and the hubs' periodic rosters repair presence). A silent broker link is noticed by pinging it after
`ping_after_s` of silence and giving up on it after `dead_after_s`; the sender pings an idle link too, so a
broker restart is seen within seconds even when no class is publishing.

Each side talks to the broker over one `BrokerLink` (engine/brokerlink.py, shared with the durable lane's
ride push): a single redis-py `Connection`, not a client with a
pool, and one that is never reconnected underneath us. Reconnecting belongs to this module alone (with our
backoff, our `sending`/`subscribed` state and our counters) because client libraries change their policy
between releases: redis-py 8.2's pool checks an idle connection when it is handed out and silently
replaces one the server closed, so a relay built on `Redis.publish` never saw a broker restart (its
publisher stayed "connected" through it, and `publisher_connects` never moved).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from engine.backoff import Backoff
from engine.brokerlink import LINK_ERRORS as _LINK_ERRORS
from engine.brokerlink import BrokerLink
from engine.live.relay import Deliver, RelayEvent
from engine.live.relay_codec import CHANNEL, RelayCodecError, decode_message, encode_messages, own_prefix

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RelayStats:
    messages_published: int = 0  # PUBLISH commands (one per tick, carrying every class's batch)
    batches_published: int = 0
    events_published: int = 0
    batches_dropped: int = 0  # handed over while the broker was unreachable, or lost with a failed send
    messages_received: int = 0
    batches_received: int = 0
    events_received: int = 0
    malformed_ignored: int = 0
    subscribes: int = 0  # successful (re)subscriptions
    publisher_connects: int = 0
    last_error: str = ""

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}


class RedisRelay:
    def __init__(
        self,
        url: str,
        *,
        origin: str | None = None,
        max_outbox: int = 10_000,
        backoff_base_s: float = 0.1,
        backoff_cap_s: float = 5.0,
        ping_after_s: float = 2.0,
        dead_after_s: float = 6.0,
    ) -> None:
        self.url = url
        self.origin = origin or "hub-" + secrets.token_hex(6)
        # The subscription hears our own messages too: recognise them without decoding them.
        self._own_prefix = own_prefix(self.origin)
        self.max_outbox = max_outbox
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.backoff = Backoff.capped(backoff_base_s, backoff_cap_s)
        self.ping_after_s = ping_after_s
        self.dead_after_s = dead_after_s
        self.stats = RelayStats()
        # Set while the receiver holds its subscription / the sender holds a checked connection.
        self.subscribed = asyncio.Event()
        self.sending = asyncio.Event()
        self._outbox: list[tuple[str, Sequence[RelayEvent]]] = []
        self._wake = asyncio.Event()

    def _link(self) -> BrokerLink:
        return BrokerLink(self.url)

    # --- the hub's side ------------------------------------------------------------------------------------

    def publish(self, class_id: str, events: Sequence[RelayEvent]) -> None:
        if not events:
            return
        if not self.sending.is_set() or len(self._outbox) >= self.max_outbox:
            self.stats.batches_dropped += 1
            return
        self._outbox.append((class_id, events))
        self._wake.set()

    async def run(self, deliver: Deliver) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._send_loop(), name="relay-send")
            tg.create_task(self._receive_loop(deliver), name="relay-receive")

    # --- sending -------------------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        attempt = 0
        while True:
            link = self._link()
            try:
                await link.open()
                await link.command("PING")
                attempt = 0
                self.stats.publisher_connects += 1
                self.sending.set()
                log.info("relay publisher connected", extra={"url": self.url, "origin": self.origin})
                await self._send_batches(link)
            except _LINK_ERRORS as exc:
                self.stats.last_error = f"send: {type(exc).__name__}: {exc}"
            finally:
                self.sending.clear()
                self.stats.batches_dropped += len(self._outbox)
                self._outbox.clear()
                await link.close()
            delay = self.backoff.delay(attempt)
            attempt += 1
            log.warning(
                "relay publisher lost the broker",
                extra={"url": self.url, "delay_s": round(delay, 3), "error": self.stats.last_error},
            )
            await asyncio.sleep(delay)

    async def _send_batches(self, link: BrokerLink) -> None:
        while True:
            try:
                async with asyncio.timeout(self.ping_after_s):
                    await self._wake.wait()
            except TimeoutError:
                # Nothing to publish for a while: make sure the broker is still there (and the same one),
                # so a restart is noticed now rather than at the next class's first sample.
                async with asyncio.timeout(self.dead_after_s):
                    await link.command("PING")
                continue
            self._wake.clear()
            batch, self._outbox = self._outbox, []
            if not batch:
                continue
            messages = encode_messages(self.origin, batch)
            try:
                for message in messages:
                    await link.command("PUBLISH", CHANNEL, message)
            except BaseException:
                self.stats.batches_dropped += len(batch)
                raise
            self.stats.messages_published += len(messages)
            self.stats.batches_published += len(batch)
            self.stats.events_published += sum(len(events) for _c, events in batch)

    # --- receiving -----------------------------------------------------------------------------------------

    async def _receive_loop(self, deliver: Deliver) -> None:
        attempt = 0
        while True:
            link = self._link()
            try:
                await link.open()
                await link.command("SUBSCRIBE", CHANNEL)  # its reply confirms the subscription
                attempt = 0
                self.stats.subscribes += 1
                self.subscribed.set()
                log.info("relay subscribed", extra={"url": self.url, "origin": self.origin})
                await self._receive(link, deliver)
            except _LINK_ERRORS as exc:
                self.stats.last_error = f"receive: {type(exc).__name__}: {exc}"
            finally:
                self.subscribed.clear()
                await link.close()
            delay = self.backoff.delay(attempt)
            attempt += 1
            log.warning(
                "relay subscriber lost the broker",
                extra={"url": self.url, "delay_s": round(delay, 3), "error": self.stats.last_error},
            )
            await asyncio.sleep(delay)

    async def _receive(self, link: BrokerLink, deliver: Deliver) -> None:
        heard = time.monotonic()
        while True:
            msg = await link.read(self.ping_after_s)
            now = time.monotonic()
            if msg is None:
                # Quiet classes are normal; a quiet link is not: ask the broker for a pong.
                if now - heard > self.dead_after_s:
                    raise TimeoutError(f"broker silent for {self.dead_after_s:g} s")
                await link.send("PING")
                continue
            heard = now
            # A subscribed connection carries pushes: [b"message", channel, data]; pongs and
            # (un)subscribe confirmations are only signs of life.
            if isinstance(msg, list) and len(msg) == 3 and msg[0] == b"message":
                self._handle(msg[2], deliver)

    def _handle(self, data: object, deliver: Deliver) -> None:
        if isinstance(data, bytes) and data.startswith(self._own_prefix):
            return
        try:
            if not isinstance(data, bytes | str):
                raise RelayCodecError("unexpected message shape")
            origin, classes = decode_message(data)
        except RelayCodecError as exc:
            self.stats.malformed_ignored += 1
            log.debug("relay ignored a malformed message", extra={"reason": str(exc)})
            return
        if origin == self.origin:
            return
        self.stats.messages_received += 1
        for class_id, events in classes.items():
            self.stats.batches_received += 1
            self.stats.events_received += len(events)
            try:
                deliver(class_id, origin, events)
            except Exception:
                log.exception(
                    "applying a relayed batch failed", extra={"class_id": class_id, "origin": origin}
                )
