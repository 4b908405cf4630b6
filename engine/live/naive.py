"""The benchmark's baseline: a naive hub that sends every sample to every peer of the class at once.

No coalescing, no latest-value slots between sends, no slow-peer handling: each accepted sample is
encoded (in the same frame format as the real hub) and awaited onto every peer's WebSocket in turn, the
way a first implementation would. The prototypes measured that awaiting beats one task per send.
"""

from __future__ import annotations

import asyncio
import time

from engine.live.config import HubConfig
from engine.live.fanout import Peer, delta_text
from engine.live.hub import Connection, HubBase
from engine.live.slots import ClassSlots
from engine.live.wire import InboundEvent, SampleIn


class NaiveHub(HubBase):
    def __init__(self, config: HubConfig | None = None) -> None:
        super().__init__(config or HubConfig(impl="naive"))
        self.slots: dict[str, ClassSlots] = {}
        self.peers: dict[str, dict[int, Peer]] = {}

    async def run(self) -> None:
        await asyncio.Event().wait()

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
            conn: Connection = peer.link
            if conn.ws is None:
                continue
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                continue
            self.stats.frames_sent += 1
            self.stats.deliveries += 1
