"""Per-class fan-out planning: which peer gets which frame on a flush. Pure; the hub does the writes.

Each peer holds a cursor: the class version it has been sent. The peers that kept up (cursor == the
class's last flush) are kept in one list, `current`: on a flush, the riders changed since the previous
flush are encoded once into a shared, pre-framed frame for all of them, with no per-peer planning at all
(the I/O side writes that one bytes object down the list; it is the hot loop of the whole hub). A peer
that could not take the frame (its socket is backed up) is handed back with `missed()`: it keeps the
cursor it had and moves to `behind`. When it can take frames again it gets one catch-up frame built from
the same slots (only the newest value of every rider that changed since its cursor, never a backlog)
and rejoins `current`. A peer that stays unable past the stall limit is returned as a kick.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
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
class Flush:
    """One flush of a class. `wire` goes to every peer in `current`; `sends` are individual frames (catch-up
    and leaderboard snapshots) for peers that were behind. Report the peers of `current` that could not take
    `wire` with `ClassFanout.missed(flush, peers, now)`."""

    base_version: int  # what every peer in `current` had before this flush
    wire: bytes | None = None  # the delta, then the leaderboard delta when one was due: one write
    leaderboard: bool = False  # `wire` carries a leaderboard delta
    current: list[Peer] = field(default_factory=list)
    shared: list[RiderSlot] = field(default_factory=list)
    sends: list[tuple[Peer, bytes]] = field(default_factory=list)
    kicks: list[Peer] = field(default_factory=list)
    catch_up_deliveries: int = 0
    skipped: int = 0  # behind peers passed over because they still could not take a frame


@dataclass(slots=True)
class Plan:
    """A flush (or a leaderboard tick) as plain per-peer sends."""

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
        # Peers whose cursor is `tick_version` (they have everything sent so far), in a plain list: the
        # flush hands this very list to the writer. Every other peer is in `behind`.
        self.current: list[Peer] = []
        self.behind: dict[int, Peer] = {}
        self.tick_version = 0
        # The leaderboard's tick is due: it goes out with the class's next flush, in the same write as the
        # live delta (one syscall per peer instead of two; sending is the hub's main cost).
        self.leaderboard_due = False

    def add_peer(self, peer: Peer) -> None:
        # A new peer is "behind" from version 0: its first frame is a snapshot of every present rider.
        self.peers[peer.peer_id] = peer
        self.behind[peer.peer_id] = peer

    def remove_peer(self, peer: Peer) -> None:
        if self.peers.pop(peer.peer_id, None) is None:
            return
        if self.behind.pop(peer.peer_id, None) is None:
            # Rebuilt rather than edited in place: a flush being written may still hold the old list.
            self.current = [p for p in self.current if p is not peer]

    @property
    def pending(self) -> bool:
        """Changes not yet flushed, a leaderboard due, or peers waiting to catch up."""
        return self.slots.version > self.tick_version or self.leaderboard_due or bool(self.behind)

    def flush(self, now: float, writable: Writable) -> Flush:
        """Encode what changed since the last flush once, for every peer that kept up; catch up (or skip,
        or kick) the peers that were behind. `writable` is asked about behind peers only."""
        slots = self.slots
        version = slots.version
        fl = Flush(self.tick_version, current=self.current)
        if version > self.tick_version:
            fl.shared = slots.changed_since(self.tick_version)
            if fl.shared:
                fl.wire = encode_delta(self.class_id, version, now, fl.shared)
        if self.leaderboard_due:
            self._leaderboard(fl, now)
        if self.behind:
            self._catch_up(fl, version, now, writable)
        self.tick_version = version
        slots.mark_sent()
        return fl

    def _leaderboard(self, fl: Flush, now: float) -> None:
        """Advance the leaderboard and put its delta after the live delta, for every peer that kept up.
        A peer that has not seen the previous leaderboard frame (new, or it missed one) gets the live delta
        and the full table instead, in a write of its own."""
        self.leaderboard_due = False
        lb = self.leaderboard
        delta = lb.tick(self.slots.riders.values(), now)
        if delta is None:
            return
        live = fl.wire or b""
        fl.wire = live + server_text_frame(delta)
        fl.leaderboard = True
        full: list[Peer] = []
        for peer in fl.current:
            if peer.lb_seq != lb.seq - 1 or peer.lb_seq == 0:
                full.append(peer)
            peer.lb_seq = lb.seq
        if full:
            full_wire = live + server_text_frame(lb.full_frame)
            fl.sends += [(peer, full_wire) for peer in full]
            # A new list: the class's own `current` is what this flush was handed, and stays as it is.
            apart = {id(p) for p in full}
            fl.current = [p for p in fl.current if id(p) not in apart]

    def _catch_up(self, fl: Flush, version: int, now: float, writable: Writable) -> None:
        stall = self.config.stall_limit_s
        rejoined: list[Peer] = []
        for peer in list(self.behind.values()):
            if not writable(peer):
                fl.skipped += 1
                if peer.behind_since is None:
                    peer.behind_since = now
                elif now - peer.behind_since > stall:
                    fl.kicks.append(peer)
                continue
            peer.behind_since = None
            if peer.cursor < version:
                riders = self.slots.changed_since(peer.cursor)
                if riders:
                    fl.sends.append((peer, encode_delta(self.class_id, version, now, riders)))
                    fl.catch_up_deliveries += len(riders)
                peer.cursor = version
            if peer.lb_seq != self.leaderboard.seq:
                fl.sends.append((peer, server_text_frame(self.leaderboard.full_frame)))
                peer.lb_seq = self.leaderboard.seq
            del self.behind[peer.peer_id]
            rejoined.append(peer)
        if rejoined:
            # A new list: `fl.current` (the old one) is what gets this flush's shared frame.
            self.current = self.current + rejoined

    def missed(self, fl: Flush, peers: Iterable[Peer], now: float) -> None:
        """Peers of `fl.current` that could not take `fl.wire`: they keep the version they had."""
        gone = {id(p) for p in peers}
        if not gone:
            return
        kept: list[Peer] = []
        for p in self.current:
            if id(p) not in gone:
                kept.append(p)
            elif p.peer_id in self.peers:
                p.cursor = fl.base_version
                if fl.leaderboard:
                    p.lb_seq = 0  # it missed a leaderboard delta too: the full table when it catches up
                if p.behind_since is None:
                    p.behind_since = now
                self.behind[p.peer_id] = p
        self.current = kept

    def plan_tick(self, now: float, writable: Writable) -> Plan:
        """A flush as plain per-peer sends, asking `writable` about every peer (for callers without a
        fast path, and tests); the same state transitions as `flush` + `missed`."""
        fl = self.flush(now, writable)
        plan = Plan(kicks=fl.kicks, shared=fl.shared, skipped=fl.skipped)
        missed: list[Peer] = []
        if fl.wire is not None:
            for peer in fl.current:
                if writable(peer):
                    plan.sends.append((peer, fl.wire))
                    plan.deliveries += len(fl.shared)
                else:
                    missed.append(peer)
                    plan.skipped += 1
        plan.sends += fl.sends
        plan.deliveries += fl.catch_up_deliveries
        self.missed(fl, missed, now)
        return plan
