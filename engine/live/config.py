"""Tunables of the class hub. Defaults: docs/architecture.md#the-live-lane and engine/live/README.md."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class HubConfig:
    # A value whose sensor timestamp is older than this is marked "stale" (never shown as live).
    stale_after_s: float = 3.0
    # Leaderboard deltas go out on this fixed tick; per-class overrides in `leaderboard_s_by_class`.
    leaderboard_s: float = 3.0
    leaderboard_s_by_class: dict[str, float] = field(default_factory=dict)
    # Adaptive flush delay (how long a class's first change waits for more to share its frames): as short
    # as `min_tick_s` when there is CPU to spare, stretched so that the hub process uses about `cpu_budget`
    # of one core but for that never beyond `budget_tick_cap_s`; beyond that only to stay under
    # `cpu_limit`, never longer than `max_tick_s`. Re-evaluated every `control_s` (flush_control.py).
    # 1 ms, not 0: the controller steps the delay by ratios, and a class's changes from one event-loop turn
    # still share a frame.
    min_tick_s: float = 0.001
    max_tick_s: float = 0.5
    cpu_budget: float = 0.45
    budget_tick_cap_s: float = 0.1
    cpu_limit: float = 0.85
    control_s: float = 0.1
    # A peer whose unsent bytes exceed this is "not keeping up": it is skipped (its cursor stays) and
    # later receives one catch-up frame with only the newest values.
    peer_buffer_limit: int = 64 * 1024
    # A connection (any mode) found with more than this unsent is closed with 4408 without waiting for the
    # stall limit.
    # Live frames stop at `peer_buffer_limit` and control frames never pass it, so only a frame larger
    # than the difference could get here.
    peer_buffer_max: int = 256 * 1024
    # Kernel send buffer per subscriber socket: bounds the bytes in flight that a stalled peer would read
    # as a backlog once it resumes.
    peer_sndbuf: int = 32 * 1024
    # A connection (any mode) that stays not-keeping-up (more than `peer_buffer_limit` unsent, or bytes
    # queued for it in the kernel and none of them read) this long is disconnected with close code 4408.
    stall_limit_s: float = 10.0
    # How often values are checked for staleness.
    sweep_s: float = 0.25
    # Largest inbound message from a publisher.
    max_msg_bytes: int = 64 * 1024
    # A connection silent this long is pinged, and dropped if it stays silent for half as long again.
    heartbeat_s: float = 20.0
    # Bytes asked of the socket per read (asyncio's default of 256 KiB is slow to allocate, see hub.py).
    read_chunk: int = 16 * 1024
    # Multi-process fan-out: hubs given the same Redis URL share their classes (engine/live/redis_relay.py).
    relay_url: str | None = None
    # Each hub re-announces the riders connected to it this often, which repairs joins and leaves lost to
    # a broker outage; another hub's riders are dropped when nothing was heard from it for `relay_expire_s`.
    relay_roster_s: float = 5.0
    relay_expire_s: float = 15.0
    # Events this hub accepted wait at most this long before going to the other hubs, all classes in one
    # message: short next to the fan-out tick, long enough to put many samples in each PUBLISH.
    relay_flush_s: float = 0.01

    def leaderboard_interval(self, class_id: str) -> float:
        return self.leaderboard_s_by_class.get(class_id, self.leaderboard_s)
