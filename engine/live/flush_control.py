"""The flush-delay controller: from the hub's measured CPU share to the delay a class's changes wait.

Pure and synchronous (the hub's control loop measures and calls `step` every `control_s`). Why the delay
is the knob: a busy class's frames per second, and so the cost of sending them, go as 1 / delay. Why it
must be steady: a class flushes `delay` after its first change since its last flush, and with a few
changes per flush that first change is a large share of all samples, so p99 latency is the delay's own
p99 over time, not its mean. A controller that chases every noisy window's CPU share swings the delay by
±50% and hands the peaks to p99; this one moves fast only when it is far from its target and creeps when
it is near. Two targets:

- the budget: stretch the delay so that the hub uses about `cpu_budget` of a core (short when there is
  CPU to spare, `min_tick_s` when idle), but not beyond `budget_tick_cap_s`: past that, latency matters
  more than saving CPU the core has to spare;
- the limit: stretch it further, up to `max_tick_s`, only to keep the hub under `cpu_limit`, where it
  would otherwise fall behind (what it cannot shed, receiving samples, counts too). This path stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.live.config import HubConfig

# A window's share above this means the hub got no idle time at all: short of CPU.
SATURATED = 0.97
# The share, smoothed with a time constant of ~3 windows. Near the budget what remains of a window's
# deviation is mostly noise (flush bursts, leaderboard ticks, sweeps, a preemption), so the near step
# follows it only with a small gain.
_FAST = 0.3
# "Near" the budget: the fast estimate within these ratios of it.
_NEAR_LOW, _NEAR_HIGH = 0.7, 1.4
# Each step moves the delay by ratio**gain, at most by x step: far from the target, and near it.
_GAIN_FAR, _STEP_FAR = 0.5, 1.5
_GAIN_NEAR, _STEP_NEAR = 0.1, 1.03


@dataclass(slots=True)
class FlushController:
    config: HubConfig
    delay: float = 0.0
    fast: float = -1.0
    soft: float = 0.0

    def __post_init__(self) -> None:
        self.delay = self.soft = self.config.min_tick_s

    def step(self, share: float, behind: bool) -> float:
        """One control window: `share` is the CPU share the hub used in it (process time / wall time);
        `behind` that the event loop woke late twice in a row. Returns the delay to use from now on."""
        cfg = self.config
        self.fast = share if self.fast < 0 else self.fast + _FAST * (share - self.fast)
        ratio = self.fast / cfg.cpu_budget
        if _NEAR_LOW <= ratio <= _NEAR_HIGH:
            soft = _towards(self.soft, ratio, _GAIN_NEAR, _STEP_NEAR, cfg)
        else:
            soft = _towards(self.soft, ratio, _GAIN_FAR, _STEP_FAR, cfg)
        # (Held at the cap, not wound up beyond it: coming back from a burst must not take seconds.)
        self.soft = min(soft, cfg.budget_tick_cap_s)
        delay = self.soft
        # (Behind while busy: a hub well under its budget that wakes late is being preempted, and a longer
        # delay would only add to its latency.)
        saturated = (behind and self.fast > (cfg.cpu_budget + cfg.cpu_limit) / 2) or share >= SATURATED
        if self.fast > cfg.cpu_limit or saturated or self.delay > delay:
            # Over the limit, or coming back from it: steer the delay in use towards the limit. A hub that
            # used all the CPU it got, or whose loop is behind, may need much more than that: back off fast
            # until it no longer does.
            limit_ratio = 2.0 if saturated else self.fast / cfg.cpu_limit
            delay = max(delay, _towards(self.delay, limit_ratio, _GAIN_FAR, _STEP_FAR, cfg))
        self.delay = delay
        return delay


def _towards(delay: float, ratio: float, gain: float, max_step: float, cfg: HubConfig) -> float:
    """One damped step of a delay towards the one that would spend exactly its target (ratio = spent /
    target): ratio**gain, at most x`max_step` or /`max_step`."""
    ratio = max(ratio, 1e-6)
    step: float = min(max_step, max(1 / max_step, ratio**gain))
    return min(cfg.max_tick_s, max(cfg.min_tick_s, delay * step))
