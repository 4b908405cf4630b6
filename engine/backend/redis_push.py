"""The cross-node ride push over Redis pub/sub (Debian's `redis-server`), the `RidePush` (push.py) that
`ridesync serve --push redis://HOST:PORT` uses.

The same machinery as the live lane's relay (engine/live/redis_relay.py): `PubSubLink`
(engine/brokerlink.py), whose publisher and subscriber each hold one `BrokerLink` and reconnect with capped
full-jitter backoff; a silent link is pinged after `ping_after_s` and given up after `dead_after_s`.
`publish` appends to an outbox and wakes the sender, which sends everything pending as one PUBLISH on
`ridesync:rides` (push_codec.py), so a burst of commits costs one message. While the sender is
disconnected, announcements are dropped (push.py says why that loses nothing acknowledged). The receiver
skips its own messages by their prefix, undecoded, and counts and ignores malformed ones. After every
(re)subscription it calls `notify(origin, [])`: the owner catches up on the rides it has open, whose
announcements a broken link may have lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence

from engine.backend.push import Notify, PushStats, new_origin
from engine.backend.push_codec import CHANNEL, PushCodecError, decode_message, encode_messages, own_prefix
from engine.brokerlink import DEFAULT_TIMING, LinkTiming, PubSubLink

log = logging.getLogger(__name__)


class _Rides:
    """The push's outbox: the rides committed since the last send, counted in the push's stats."""

    def __init__(self, origin: str, stats: PushStats) -> None:
        self.items: set[str] = set()
        self._origin = origin
        self._stats = stats

    def take(self) -> set[str] | None:
        rides, self.items = self.items, set()
        return rides or None

    def encode(self, batch: set[str]) -> Sequence[bytes]:
        return encode_messages(self._origin, batch)

    def sent(self, batch: set[str], messages: int) -> None:
        self._stats.messages_published += messages
        self._stats.rides_published += len(batch)

    def lost(self, batch: set[str]) -> None:
        self._stats.dropped += len(batch)


class RedisPush:
    def __init__(
        self,
        url: str,
        *,
        origin: str | None = None,
        max_outbox: int = 100_000,
        timing: LinkTiming = DEFAULT_TIMING,
    ) -> None:
        self.url = url
        self.origin = origin or new_origin()
        self.max_outbox = max_outbox
        self.stats = PushStats()
        self._outbox = _Rides(self.origin, self.stats)
        self.link = PubSubLink(
            url,
            CHANNEL,
            self._outbox,
            name="ride push",
            origin=self.origin,
            own_prefix=own_prefix(self.origin),
            log=log,
            timing=timing,
            on_error=self._on_error,
        )
        self.sending = self.link.sending
        self.subscribed = self.link.subscribed

    def publish(self, rides: Collection[str]) -> None:
        if not rides:
            return
        if not self.sending.is_set() or len(self._outbox.items) >= self.max_outbox:
            self.stats.dropped += len(rides)
            return
        self._outbox.items.update(rides)
        self.link.wake()

    async def ready(self) -> None:
        await self.sending.wait()
        await self.subscribed.wait()

    async def run(self, notify: Notify) -> None:
        def subscribed() -> None:
            self.stats.connects += 1
            # Whatever was announced while this link was down is lost: the owner catches up.
            notify(self.origin, [])

        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.link.publish_forever(self._on_connected), name="push-send")
            tg.create_task(
                self.link.subscribe_forever(lambda data: self._handle(data, notify), subscribed),
                name="push-receive",
            )

    # --- the link's events ---------------------------------------------------------------------------

    def _on_connected(self) -> None:
        self.stats.connects += 1

    def _on_error(self, error: str) -> None:
        self.stats.last_error = error

    def _handle(self, data: object, notify: Notify) -> None:
        try:
            if not isinstance(data, bytes | str):
                raise PushCodecError("unexpected message shape")
            origin, rides = decode_message(data)
        except PushCodecError as exc:
            self.stats.malformed_ignored += 1
            log.debug("ride push ignored a malformed message", extra={"reason": str(exc)})
            return
        if origin == self.origin:
            return
        self.stats.messages_received += 1
        self.stats.rides_received += len(rides)
        try:
            notify(origin, rides)
        except Exception:
            log.exception("handling a ride push failed", extra={"origin": origin})
