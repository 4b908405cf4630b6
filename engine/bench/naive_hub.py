"""The live benchmark's baseline: a naive hub that sends every sample to every peer of the class at once.

No coalescing, no latest-value slots between sends, no slow-peer handling: each accepted sample is
encoded (in the same frame format as the real hub) and awaited onto every peer's WebSocket in turn, and
the sockets are aiohttp's WebSocketResponse, the way a first implementation would be written. The
prototypes measured that awaiting beats one task per send. It plugs into the live lane through the same
port as the real hub (engine.live.port.LiveHub): `live_lane(hub=NaiveHub(config))`.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import WSMsgType, web

from engine.live.config import HubConfig
from engine.live.connection import Connection
from engine.live.fanout import Peer, delta_text
from engine.live.port import Entry, HubBase
from engine.live.slots import ClassSlots
from engine.live.wire import (
    BATCH_PROTOCOL,
    CLOSE_FORBIDDEN,
    InboundEvent,
    SampleIn,
    parse_inbound_batch,
)
from engine.wire_error import WireError


class NaiveConnection(Connection):
    """A connection served by aiohttp's WebSocketResponse, which keeps its own heartbeat."""

    watched = False

    def __init__(self, transport: asyncio.Transport, config: HubConfig, ws: web.WebSocketResponse) -> None:
        super().__init__(transport, config)
        self.ws = ws

    async def close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(2.0):
                await self.ws.close(code=code, message=reason.encode()[:120])
        except (TimeoutError, OSError, RuntimeError):
            pass
        finally:
            # A stalled peer may never read our close frame: do not let it hold the socket open.
            if not self.transport.is_closing():
                self.transport.abort()


class NaiveHub(HubBase):
    impl = "naive"

    def __init__(self, config: HubConfig | None = None) -> None:
        super().__init__(config or HubConfig())
        self.slots: dict[str, ClassSlots] = {}
        self.peers: dict[str, dict[int, Peer]] = {}

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def serve_socket(self, request: web.Request, entry: Entry) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            compress=False,
            max_msg_size=self.config.max_msg_bytes,
            heartbeat=self.config.heartbeat_s,
            protocols=(BATCH_PROTOCOL,),
        )
        try:
            await ws.prepare(request)
        except ConnectionError:
            return ws  # the client vanished during the upgrade; aiohttp finishes quietly
        conn = NaiveConnection(entry.transport, self.config, ws)
        async with entry.register(conn):
            await self._read_messages(conn, entry)
        return ws

    async def _read_messages(self, conn: NaiveConnection, entry: Entry) -> None:
        device = entry.claims.device
        async for msg in conn.ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return
            if not entry.publishing:
                self.stats.reject("subscribe_only")
                await conn.close(CLOSE_FORBIDDEN, "this connection may only subscribe")
                return
            try:
                events = parse_inbound_batch(msg.data, device, time.time())
            except WireError as exc:
                self.stats.malformed_closed += 1
                await conn.close(exc.close_code, str(exc))
                return
            for event in events:
                await self.publish(entry.class_id, event)

    def snapshot(self, class_id: str) -> tuple[dict[str, object], object]:
        return {}, None  # the baseline serves no snapshots

    def stats_details(self) -> dict[str, object]:
        return {}

    def flush_delay(self) -> float | None:
        return None

    def relay_stats(self) -> dict[str, object] | None:
        return None

    def attach(self, class_id: str, conn: Connection, device: str, role: str) -> Peer:
        peer = self._new_peer(conn, device, role)
        self.peers.setdefault(class_id, {})[peer.peer_id] = peer
        return peer

    def detach(self, class_id: str, peer: Peer) -> None:
        self.peers.get(class_id, {}).pop(peer.peer_id, None)

    def rider_join(self, class_id: str, device: str) -> None:
        if self._count_publisher(class_id, device, +1) == 1:
            self.slots.setdefault(class_id, ClassSlots(class_id)).join(device, time.time())

    def rider_leave(self, class_id: str, device: str) -> None:
        if self._count_publisher(class_id, device, -1) == 0 and class_id in self.slots:
            self.slots[class_id].leave(device, time.time())

    async def publish(self, class_id: str, event: InboundEvent) -> None:
        slots = self.slots.setdefault(class_id, ClassSlots(class_id))
        now = time.time()
        if not slots.apply(event, now):
            return
        if isinstance(event, SampleIn):
            self.stats.samples_in += 1
        text = delta_text(class_id, slots.version, now, [slots.riders[event.device]])
        for peer in list(self.peers.get(class_id, {}).values()):
            conn = peer.link
            if not isinstance(conn, NaiveConnection):
                continue
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                continue
            self.stats.frames_sent += 1
            self.stats.deliveries += 1
