"""The bike replica's live publisher: each reading goes to the class hub the moment the sensor delivers it.

`offer()` never blocks and never queues: it overwrites the pending slot of that metric (latest wins), and
the sender task writes whatever is pending when the socket can take it. While disconnected, offers are
dropped (the durable lane keeps every sample; the live lane only ever shows the present). The connection
is re-established with exponential backoff and full jitter, capped, honouring Retry-After on 429/503.
The publisher has no tie to the CRDT commit cycle: nothing here waits on it or is waited on by it.

Lifecycle: `run()` owns its tasks in a TaskGroup and returns only by cancellation (clean: the socket is
closed on the way out). `pump(source)` feeds a SensorSource into `offer()`; run both in the caller's group.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from engine.backoff import Backoff
from engine.live.wire import BATCH_PROTOCOL, MAX_BATCH, METRIC_KEYS, reading_message, state_message
from engine.readings import Kind, Reading, SensorSource, SourceItem, pump
from engine.urls import ws_url

log = logging.getLogger(__name__)
# The pending slot of a hello sent mid-connection; metric slots are keyed by reading kinds, never this.
HELLO_SLOT = "hello"


def class_ws_url(base: str, class_id: str, mode: str = "pub") -> str:
    """`http://host:port` (or ws://) to the hub's class WebSocket URL (engine/urls.py)."""
    return ws_url(base, f"/live/v1/classes/{class_id}/ws", f"mode={mode}")


@dataclass(slots=True)
class PublisherStats:
    offered: int = 0
    sent: int = 0
    messages: int = 0  # WebSocket messages carrying `sent` readings (several per message when batched)
    superseded: int = 0  # replaced in the slot before it could be sent
    dropped_offline: int = 0
    connects: int = 0
    failures: int = 0
    last_error: str = ""


class LivePublisher:
    def __init__(
        self,
        base_url: str,
        token: str,
        class_id: str,
        *,
        name: str | None = None,
        max_hr: int | None = None,
        bike: str | None = None,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        heartbeat_s: float = 5.0,
    ) -> None:
        self.url = class_ws_url(base_url, class_id)
        self.token = token
        self.class_id = class_id
        self.name = name
        self.max_hr = max_hr
        self.bike = bike
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.backoff = Backoff.capped(backoff_base_s, backoff_cap_s)
        self.heartbeat_s = heartbeat_s
        self.stats = PublisherStats()
        self.state = "connecting"
        self.connected = asyncio.Event()
        self._pending: dict[str, str] = {}
        self._wake = asyncio.Event()
        # Which metrics each source has delivered, so a source's link event marks exactly those.
        self._kinds: dict[str, set[Kind]] = {}

    # --- the sensor side: never blocks ---------------------------------------------------------------------

    def offer(self, item: SourceItem) -> None:
        self.stats.offered += 1
        msgs: list[tuple[str, str | None]]
        if isinstance(item, Reading):
            if item.kind.value not in METRIC_KEYS:
                return  # battery, body location: not live-lane metrics
            self._kinds.setdefault(item.source, set()).add(item.kind)
            msgs = [(item.kind.value, reading_message(item))]
        else:
            # A state shares the metric's slot: a newer sample supersedes "no contact" and vice versa.
            msgs = [
                (kind.value, state_message(item, kind)) for kind in sorted(self._kinds.get(item.source, ()))
            ]
        for key, msg in msgs:
            if msg is None:
                continue
            if not self.connected.is_set():
                self.stats.dropped_offline += 1
                continue
            if key in self._pending:
                self.stats.superseded += 1
            self._pending[key] = msg
            self._wake.set()

    def announce(self, bike: str | None) -> None:
        """The rider's kind of bike (engine/bike_kinds.py), once the sources know it: a BLE bike learns its
        profile only on connecting. A change goes out as a fresh hello (the hub takes one at any time);
        every later connection's hello carries it anyway. None (not known) and no change send nothing."""
        if bike is None or bike == self.bike:
            return
        self.bike = bike
        if self.connected.is_set():
            self._pending[HELLO_SLOT] = json.dumps(self._hello(), separators=(",", ":"))
            self._wake.set()

    def _hello(self) -> dict[str, Any]:
        hello: dict[str, Any] = {"type": "hello"}
        if self.name is not None:
            hello["name"] = self.name
        if self.max_hr is not None:
            hello["max_hr"] = self.max_hr
        if self.bike is not None:
            hello["bike"] = self.bike
        return hello

    async def pump(self, source: SensorSource) -> None:
        """Offer every item of `source` as it arrives, until the source ends or the task is cancelled."""
        await pump(source, self.offer)

    # --- the network side ------------------------------------------------------------------------------

    async def run(self) -> None:
        attempt = 0
        async with aiohttp.ClientSession() as session:
            while True:
                retry_after: float | None = None
                try:
                    self.state = "connecting"
                    async with session.ws_connect(
                        self.url,
                        headers={"Authorization": f"Bearer {self.token}"},
                        heartbeat=self.heartbeat_s,
                        autoping=True,
                        compress=0,
                        protocols=(BATCH_PROTOCOL,),
                    ) as ws:
                        attempt = 0
                        self.stats.connects += 1
                        await self._session(ws)
                    self.stats.last_error = f"closed by hub: {ws.close_code}"
                except aiohttp.WSServerHandshakeError as exc:
                    self.stats.last_error = f"handshake refused: HTTP {exc.status}"
                    if exc.status in (429, 503) and exc.headers is not None:
                        retry_after = _retry_after(exc.headers.get("Retry-After"))
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                finally:
                    self._offline()
                self.stats.failures += 1
                self.state = "backing_off"
                delay = self.backoff.delay(attempt)
                if retry_after is not None:
                    delay = max(delay, min(retry_after, self.backoff_cap_s * 4))
                attempt += 1
                log.info(
                    "live publisher reconnecting",
                    extra={"url": self.url, "delay_s": round(delay, 3), "error": self.stats.last_error},
                )
                await asyncio.sleep(delay)

    def _offline(self) -> None:
        self.connected.clear()
        self.stats.dropped_offline += len(self._pending)
        self._pending.clear()

    async def _session(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_json(self._hello())
        self.state = "connected"
        self.connected.set()
        async with asyncio.TaskGroup() as tg:
            sender = tg.create_task(self._send_loop(ws))
            # The reader's only job is to notice the close (and answer pings); the hub sends us nothing else
            # in "pub" mode. When it returns, the sender goes too.
            async for _ in ws:
                pass
            sender.cancel()

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        # A hub that selected the batch protocol takes every pending reading in one message (one message's
        # overhead on both ends instead of one per metric); an older hub gets one object per message.
        batch = MAX_BATCH if ws.protocol == BATCH_PROTOCOL else 1
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                keys = list(self._pending)[:batch]
                msgs = [self._pending.pop(k) for k in keys]
                payload = msgs[0] if len(msgs) == 1 else "[" + ",".join(msgs) + "]"
                try:
                    await ws.send_str(payload)
                except (ConnectionError, RuntimeError, aiohttp.ClientError):
                    # The reader sees the same dead link and ends the session; reconnecting is run()'s job.
                    await ws.close()
                    return
                self.stats.sent += len(msgs)
                self.stats.messages += 1


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
