"""Per-class fan-out planning: which peer gets which frame on this tick. Pure; the hub does the writes.

Each peer holds a cursor: the class version it has been sent. On a tick, the riders changed since the
previous tick are encoded once into a shared, pre-framed frame that goes to every peer that kept up
(cursor == previous tick). A peer that could not take frames (its socket is backed up) is skipped and
keeps its cursor; when it can take frames again it gets one catch-up frame built from the same slots —
only the newest value of every rider that changed since its cursor, never a backlog. A peer that stays
unable past the stall limit is returned as a kick.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.live.config import HubConfig
from engine.live.leaderboard import Leaderboard
from engine.live.slots import ClassSlots, RiderSlot
from engine.live.wire import server_text_frame


@dataclass(eq=False, slots=True)
class Peer:
    peer_id: int
    device: str
    role: str
    cursor: int = 0
    lb_seq: int = 0
    behind_since: float | None = None
    link: Any = None  # the I/O side's handle (the hub's connection object)


@dataclass(slots=True)
class Plan:
    sends: list[tuple[Peer, bytes]] = field(default_factory=list)
    kicks: list[Peer] = field(default_factory=list)
    shared: list[RiderSlot] = field(default_factory=list)
    deliveries: int = 0  # rider records across all sends
    skipped: int = 0  # peers passed over because they were not keeping up


def delta_text(class_id: str, version: int, now: float, riders: list[RiderSlot]) -> str:
    body = ",".join(r.fragment() for r in riders)
    return (
        f'{{"type":"delta","class":{json.dumps(class_id)},"v":{version},"ts":{now:.3f},"riders":{{{body}}}}}'
    )


def encode_delta(class_id: str, version: int, now: float, riders: list[RiderSlot]) -> bytes:
    return server_text_frame(delta_text(class_id, version, now, riders).encode())


Writable = Callable[[Peer], bool]


class ClassFanout:
    def __init__(self, class_id: str, config: HubConfig) -> None:
        self.class_id = class_id
        self.config = config
        self.slots = ClassSlots(class_id, config.stale_after_s)
        self.leaderboard = Leaderboard(class_id)
        self.peers: dict[int, Peer] = {}
        self.behind: set[int] = set()
        self.tick_version = 0

    def add_peer(self, peer: Peer) -> None:
        self.peers[peer.peer_id] = peer

    def remove_peer(self, peer: Peer) -> None:
        self.peers.pop(peer.peer_id, None)
        self.behind.discard(peer.peer_id)

    def plan_tick(self, now: float, writable: Writable) -> Plan:
        slots = self.slots
        plan = Plan()
        version = slots.version
        if version > self.tick_version:
            plan.shared = slots.changed_since(self.tick_version)
        shared_wire: bytes | None = None
        stall = self.config.stall_limit_s
        for peer in self.peers.values():
            if peer.cursor >= version:
                continue
            if not writable(peer):
                plan.skipped += 1
                if peer.behind_since is None:
                    peer.behind_since = now
                    self.behind.add(peer.peer_id)
                elif now - peer.behind_since > stall:
                    plan.kicks.append(peer)
                continue
            if peer.behind_since is not None:
                peer.behind_since = None
                self.behind.discard(peer.peer_id)
            if peer.cursor == self.tick_version and plan.shared:
                if shared_wire is None:
                    shared_wire = encode_delta(self.class_id, version, now, plan.shared)
                plan.sends.append((peer, shared_wire))
                plan.deliveries += len(plan.shared)
            else:
                riders = slots.changed_since(peer.cursor)
                if riders:
                    plan.sends.append((peer, encode_delta(self.class_id, version, now, riders)))
                    plan.deliveries += len(riders)
            peer.cursor = version
            if peer.lb_seq == 0 and self.leaderboard.seq > 0:
                plan.sends.append((peer, server_text_frame(self.leaderboard.full_frame)))
                peer.lb_seq = self.leaderboard.seq
        self.tick_version = version
        slots.mark_sent()
        return plan

    def plan_leaderboard(self, now: float, writable: Writable) -> Plan:
        plan = Plan()
        lb = self.leaderboard
        delta = lb.tick(self.slots.riders.values(), now)
        delta_wire = None if delta is None else server_text_frame(delta)
        full_wire: bytes | None = None
        for peer in self.peers.values():
            if peer.lb_seq == lb.seq or not writable(peer):
                continue
            if delta_wire is not None and peer.lb_seq == lb.seq - 1 and peer.lb_seq > 0:
                plan.sends.append((peer, delta_wire))
            else:
                if full_wire is None:
                    full_wire = server_text_frame(lb.full_frame)
                plan.sends.append((peer, full_wire))
            peer.lb_seq = lb.seq
        return plan
