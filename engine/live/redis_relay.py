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

Both sides run on `PubSubLink` (engine/brokerlink.py, shared with the durable lane's ride push), whose
reconnect loops each hold one `BrokerLink`: a single redis-py `Connection`, not a client with a pool, and
one that is never reconnected underneath us. Reconnecting belongs to those loops alone (with our backoff,
our `sending`/`subscribed` state and our counters) because client libraries change their policy between
releases: redis-py 8.2's pool checks an idle connection when it is handed out and silently replaces one
the server closed, so a relay built on `Redis.publish` never saw a broker restart (its publisher stayed
"connected" through it, and `publisher_connects` never moved).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from engine.brokerlink import DEFAULT_TIMING, LinkTiming, PubSubLink
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


Batch = list[tuple[str, Sequence[RelayEvent]]]


class _Batches:
    """The relay's outbox: each class's batches since the last send, counted in the relay's stats."""

    def __init__(self, origin: str, stats: RelayStats) -> None:
        self.items: Batch = []
        self._origin = origin
        self._stats = stats

    def take(self) -> Batch | None:
        batch, self.items = self.items, []
        return batch or None

    def encode(self, batch: Batch) -> Sequence[bytes]:
        return encode_messages(self._origin, batch)

    def sent(self, batch: Batch, messages: int) -> None:
        self._stats.messages_published += messages
        self._stats.batches_published += len(batch)
        self._stats.events_published += sum(len(events) for _c, events in batch)

    def lost(self, batch: Batch) -> None:
        self._stats.batches_dropped += len(batch)


class RedisRelay:
    def __init__(
        self,
        url: str,
        *,
        origin: str | None = None,
        max_outbox: int = 10_000,
        timing: LinkTiming = DEFAULT_TIMING,
    ) -> None:
        self.url = url
        self.origin = origin or "hub-" + secrets.token_hex(6)
        self.max_outbox = max_outbox
        self.stats = RelayStats()
        self._outbox = _Batches(self.origin, self.stats)
        self.link = PubSubLink(
            url,
            CHANNEL,
            self._outbox,
            name="relay",
            origin=self.origin,
            # The subscription hears our own messages too: recognise them without decoding them.
            own_prefix=own_prefix(self.origin),
            log=log,
            timing=timing,
            on_error=self._on_error,
        )
        # Set while the receiver holds its subscription / the sender holds a checked connection.
        self.subscribed = self.link.subscribed
        self.sending = self.link.sending

    # --- the hub's side ------------------------------------------------------------------------------------

    def publish(self, class_id: str, events: Sequence[RelayEvent]) -> None:
        if not events:
            return
        if not self.sending.is_set() or len(self._outbox.items) >= self.max_outbox:
            self.stats.batches_dropped += 1
            return
        self._outbox.items.append((class_id, events))
        self.link.wake()

    async def run(self, deliver: Deliver) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.link.publish_forever(self._on_connected), name="relay-send")
            tg.create_task(
                self.link.subscribe_forever(lambda data: self._handle(data, deliver), self._on_subscribed),
                name="relay-receive",
            )

    # --- the link's events ---------------------------------------------------------------------------------

    def _on_connected(self) -> None:
        self.stats.publisher_connects += 1

    def _on_subscribed(self) -> None:
        self.stats.subscribes += 1

    def _on_error(self, error: str) -> None:
        self.stats.last_error = error

    def _handle(self, data: object, deliver: Deliver) -> None:
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
