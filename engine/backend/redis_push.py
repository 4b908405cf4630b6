"""The cross-node ride push over Redis pub/sub (Debian's `redis-server`), the `RidePush` (push.py) that
`ridesync serve --push redis://HOST:PORT` uses.

The same machinery as the live lane's relay (engine/live/redis_relay.py): one `BrokerLink` per side
(engine/brokerlink.py), each reconnected by its own loop with capped full-jitter backoff; a silent link is
pinged after `ping_after_s` and given up after `dead_after_s`. `publish` appends to an outbox and wakes the
sender, which sends everything pending as one PUBLISH on `ridesync:rides` (push_codec.py), so a burst of
commits costs one message. While the sender is disconnected, announcements are dropped (push.py says why
that loses nothing acknowledged). The receiver skips its own messages by their prefix, undecoded, and
counts and ignores malformed ones. After every (re)subscription it calls `notify(origin, [])`: the owner
catches up on the rides it has open, whose announcements a broken link may have lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection

from engine.backend.push import Notify, PushStats, new_origin
from engine.backend.push_codec import CHANNEL, PushCodecError, decode_message, encode_messages, own_prefix
from engine.backoff import Backoff
from engine.brokerlink import LINK_ERRORS, BrokerLink

log = logging.getLogger(__name__)


class RedisPush:
    def __init__(
        self,
        url: str,
        *,
        origin: str | None = None,
        max_outbox: int = 100_000,
        backoff_base_s: float = 0.1,
        backoff_cap_s: float = 5.0,
        ping_after_s: float = 2.0,
        dead_after_s: float = 6.0,
    ) -> None:
        self.url = url
        self.origin = origin or new_origin()
        self._own_prefix = own_prefix(self.origin)
        self.max_outbox = max_outbox
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.backoff = Backoff.capped(backoff_base_s, backoff_cap_s)
        self.ping_after_s = ping_after_s
        self.dead_after_s = dead_after_s
        self.stats = PushStats()
        self.sending = asyncio.Event()
        self.subscribed = asyncio.Event()
        self._outbox: set[str] = set()
        self._wake = asyncio.Event()

    def publish(self, rides: Collection[str]) -> None:
        if not rides:
            return
        if not self.sending.is_set() or len(self._outbox) >= self.max_outbox:
            self.stats.dropped += len(rides)
            return
        self._outbox.update(rides)
        self._wake.set()

    async def ready(self) -> None:
        await self.sending.wait()
        await self.subscribed.wait()

    async def run(self, notify: Notify) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._send_loop(), name="push-send")
            tg.create_task(self._receive_loop(notify), name="push-receive")

    # --- sending -------------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        attempt = 0
        while True:
            link = BrokerLink(self.url)
            try:
                await link.open()
                await link.command("PING")
                attempt = 0
                self.stats.connects += 1
                self.sending.set()
                log.info("ride push publisher connected", extra={"url": self.url, "origin": self.origin})
                await self._send(link)
            except LINK_ERRORS as exc:
                self.stats.last_error = f"send: {type(exc).__name__}: {exc}"
            finally:
                self.sending.clear()
                self.stats.dropped += len(self._outbox)
                self._outbox.clear()
                await link.close()
            delay = self.backoff.delay(attempt)
            attempt += 1
            log.info(
                "ride push publisher lost the broker",
                extra={"url": self.url, "delay_s": round(delay, 3), "error": self.stats.last_error},
            )
            await asyncio.sleep(delay)

    async def _send(self, link: BrokerLink) -> None:
        while True:
            try:
                async with asyncio.timeout(self.ping_after_s):
                    await self._wake.wait()
            except TimeoutError:
                async with asyncio.timeout(self.dead_after_s):
                    await link.command("PING")
                continue
            self._wake.clear()
            rides, self._outbox = self._outbox, set()
            if not rides:
                continue
            messages = encode_messages(self.origin, rides)
            try:
                for message in messages:
                    await link.command("PUBLISH", CHANNEL, message)
            except BaseException:
                self.stats.dropped += len(rides)
                raise
            self.stats.messages_published += len(messages)
            self.stats.rides_published += len(rides)

    # --- receiving -----------------------------------------------------------------------------------

    async def _receive_loop(self, notify: Notify) -> None:
        attempt = 0
        while True:
            link = BrokerLink(self.url)
            try:
                await link.open()
                await link.command("SUBSCRIBE", CHANNEL)
                attempt = 0
                self.stats.connects += 1
                self.subscribed.set()
                log.info("ride push subscribed", extra={"url": self.url, "origin": self.origin})
                # Whatever was announced while this link was down is lost: the owner catches up.
                notify(self.origin, [])
                await self._receive(link, notify)
            except LINK_ERRORS as exc:
                self.stats.last_error = f"receive: {type(exc).__name__}: {exc}"
            finally:
                self.subscribed.clear()
                await link.close()
            delay = self.backoff.delay(attempt)
            attempt += 1
            log.info(
                "ride push subscriber lost the broker",
                extra={"url": self.url, "delay_s": round(delay, 3), "error": self.stats.last_error},
            )
            await asyncio.sleep(delay)

    async def _receive(self, link: BrokerLink, notify: Notify) -> None:
        heard = time.monotonic()
        while True:
            msg = await link.read(self.ping_after_s)
            now = time.monotonic()
            if msg is None:
                if now - heard > self.dead_after_s:
                    raise TimeoutError(f"broker silent for {self.dead_after_s:g} s")
                await link.send("PING")
                continue
            heard = now
            if isinstance(msg, list) and len(msg) == 3 and msg[0] == b"message":
                self._handle(msg[2], notify)

    def _handle(self, data: object, notify: Notify) -> None:
        if isinstance(data, bytes) and data.startswith(self._own_prefix):
            return
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
