"""The flush-delay controller against a model of the hub: CPU share = fixed cost + sending cost, where the
sending cost goes as 1 / (gap + delay) (a class flushes `delay` after its first change, and the first
change comes `gap` after the previous flush). Deterministic: seeded noise, no clocks."""

from __future__ import annotations

import random
from collections.abc import Callable

from engine.live.config import HubConfig
from engine.live.flush_control import FlushController

CFG = HubConfig()


def plant(fixed: float, sending_at_50ms: float, gap: float = 0.02) -> Callable[[float], float]:
    """A hub whose sending costs `sending_at_50ms` of a core when its classes flush every 50 ms."""
    return lambda delay: fixed + sending_at_50ms * 0.05 / (gap + delay)


def drive(
    ctl: FlushController, share_of: Callable[[float], float], windows: int, noise: float, rng: random.Random
) -> tuple[list[float], list[float]]:
    delays, shares = [], []
    for _ in range(windows):
        share = share_of(ctl.delay) * max(0.2, rng.gauss(1.0, noise))
        shares.append(share)
        delays.append(ctl.step(min(share, 1.0), behind=False))
    return delays, shares


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


def test_settles_on_the_budget() -> None:
    ctl = FlushController(CFG)
    delays, shares = drive(ctl, plant(0.08, 0.37), 600, 0.0, random.Random(1))
    tail = shares[-100:]
    assert abs(sum(tail) / len(tail) - CFG.cpu_budget) < 0.01
    # The model spends exactly the budget at 30 ms.
    assert abs(delays[-1] - 0.030) < 0.002


def test_the_delay_holds_steady_under_noisy_windows() -> None:
    """A window's CPU share is noisy (flush bursts, leaderboards, sweeps); since p99 latency follows the
    delay's peaks, the delay must not follow that noise. ±15% per window moves it by less than ±15%."""
    ctl = FlushController(CFG)
    rng = random.Random(7)
    drive(ctl, plant(0.08, 0.37), 100, 0.15, rng)  # settle
    delays, shares = drive(ctl, plant(0.08, 0.37), 2000, 0.15, rng)
    assert pct(delays, 0.99) / pct(delays, 0.5) < 1.15
    assert pct(delays, 0.5) / pct(delays, 0.01) < 1.15
    assert abs(sum(shares) / len(shares) - CFG.cpu_budget) < 0.03


def test_idle_hub_flushes_at_the_shortest_delay() -> None:
    ctl = FlushController(CFG)
    delays, _ = drive(ctl, plant(0.01, 0.02), 100, 0.1, random.Random(2))
    assert delays[-1] == CFG.min_tick_s


def test_a_jump_in_load_is_followed_quickly() -> None:
    """Far from the budget the controller takes large steps: twice the riders arriving at once are
    absorbed in a couple of seconds, not in the near mode's creep."""
    ctl = FlushController(CFG)
    rng = random.Random(3)
    drive(ctl, plant(0.08, 0.37), 300, 0.05, rng)
    _, shares = drive(ctl, plant(0.16, 0.74), 30, 0.05, rng)  # twice the load
    assert abs(sum(shares[-5:]) / 5 - CFG.cpu_budget) / CFG.cpu_budget < 0.2


def test_the_budget_never_stretches_past_its_cap() -> None:
    """More load than the budget can hold at `budget_tick_cap_s`: the delay stops at the cap while the hub
    stays under its limit (latency matters more than CPU the core has to spare)."""
    ctl = FlushController(CFG)
    delays, shares = drive(ctl, plant(0.5, 0.2), 400, 0.05, random.Random(4))
    assert max(delays) <= CFG.budget_tick_cap_s + 1e-9
    assert delays[-1] == CFG.budget_tick_cap_s
    assert max(shares[-100:]) < CFG.cpu_limit


def test_saturation_backs_off_past_the_cap_and_comes_back() -> None:
    ctl = FlushController(CFG)
    rng = random.Random(5)
    drive(ctl, plant(0.08, 0.37), 200, 0.05, rng)
    # A hub that gets no idle time at all, whatever the delay: back off fast, up to `max_tick_s`.
    for _ in range(20):
        ctl.step(1.0, behind=False)
    assert ctl.delay > CFG.budget_tick_cap_s
    assert ctl.delay <= CFG.max_tick_s
    # Load gone again: back under the cap within a few seconds.
    delays, _ = drive(ctl, plant(0.08, 0.37), 40, 0.05, rng)
    assert delays[-1] <= CFG.budget_tick_cap_s


def test_a_loop_behind_while_busy_backs_off_but_not_when_idle() -> None:
    busy = FlushController(CFG)
    idle = FlushController(CFG)
    for _ in range(30):
        busy.step(0.8, behind=True)
        idle.step(0.05, behind=True)
    assert busy.delay > CFG.budget_tick_cap_s
    # Preempted, not busy: a longer delay would only add to its latency.
    assert idle.delay == CFG.min_tick_s
