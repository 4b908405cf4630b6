"""`ridesync demo --chaos`: three faults during the class, each healed, each recovery observed.

Which rider gets which fault is drawn with `DemoConfig.chaos_seed` (`victims.py`, `--chaos-seed`): the
same seed hits the same riders, another seed other riders.

1. **network**: a rider's durable lane (its bike replica's sync) runs through a `ChaosProxy`
   (`DemoSession.proxy`); it is partitioned, then healed. Recovered: the backend again holds every sample
   the bike had recorded when the network came back (the sync caught up).
2. **strap range**: a strap walks out of range and back. Recovered: the adapter reported the link lost and
   heart-rate readings resumed after the walk back.
3. **USB**: a bike's cable is unplugged and replugged. Recovered: bike readings resumed after the replug.

The issue's fault lasts "two minutes" of class time: at `--speed X` that is 120/X wall seconds, clamped
(`ChaosPlan.for_class`) so every fault and its recovery fit in `--duration`. The final report's
reconciliation still has to show no loss and no double counting; `chaos_report` adds that per fault.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from engine.demo.session import DemoSession, Rider
from engine.demo.victims import chaos_victims

# Class time a fault lasts (the issue: "one rider's network drops for two minutes").
FAULT_CLASS_S = 120.0
# A strap must stay away longer than the adapter's silence limit (2 s) plus the link supervision timeout.
MIN_HOLD_S = 4.0
# Shortest --duration the three faults and their recoveries fit in.
MIN_DURATION_S = 30.0
POLL_S = 0.25

OnChaos = Callable[[dict[str, Any]], None]
# fault -> returns when that fault may heal (after the plan's hold): lets a watcher (a browser test) keep a
# fault in place until it has seen its effect, instead of guessing how long that takes.
HoldUntil = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ChaosPlan:
    start_s: float  # wall seconds after the class starts: the first fault
    stagger_s: float  # between the faults' starts
    hold_s: float  # how long each fault lasts, wall seconds

    @classmethod
    def for_class(cls, duration_s: float | None, speed: float) -> ChaosPlan:
        hold = FAULT_CLASS_S / speed
        if duration_s is None:
            return cls(start_s=10.0, stagger_s=5.0, hold_s=max(MIN_HOLD_S, hold))
        # The last fault heals by 0.5 x duration: the rest is for recovering and catching up.
        return cls(
            start_s=0.1 * duration_s,
            stagger_s=0.05 * duration_s,
            hold_s=max(MIN_HOLD_S, min(hold, 0.3 * duration_s)),
        )


@dataclass(slots=True)
class FaultRecord:
    fault: str  # "network" | "strap_range" | "usb"
    device: str
    injected_at_s: float | None = None
    healed_at_s: float | None = None
    recovered_at_s: float | None = None
    evidence: str = ""

    @property
    def recovered(self) -> bool:
        return self.recovered_at_s is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "device": self.device,
            "injected_at_s": self.injected_at_s,
            "healed_at_s": self.healed_at_s,
            "recovered_at_s": self.recovered_at_s,
            "recovered": self.recovered,
            "evidence": self.evidence,
        }


def _backend_max_seq(session: DemoSession, rider: Rider) -> int:
    seqs = session.backend_seqs(rider)
    return max(seqs) if seqs else -1


async def _until(predicate: Callable[[], bool]) -> None:
    # Polled: the pumps' counters and the stores are plain state with no event to wait on.
    while True:
        if predicate():
            return
        await asyncio.sleep(POLL_S)


class ChaosRun:
    """Runs the plan against a session; `records` say what happened (also while it runs)."""

    def __init__(
        self, session: DemoSession, plan: ChaosPlan, on_event: OnChaos, *, hold_until: HoldUntil | None = None
    ) -> None:
        self.session = session
        self.plan = plan
        self.on_event = on_event
        self.hold_until = hold_until
        self.victims = chaos_victims([r.spec.device for r in session.riders], session.config.chaos_seed)
        if session.proxied_device is not None:  # the rider whose replica really syncs through the proxy
            self.victims["network"] = session.proxied_device
        self.records = [FaultRecord(fault, device) for fault, device in self.victims.items()]
        self._t0 = time.monotonic()

    def plan_event(self) -> dict[str, Any]:
        """What the run will do, printed before the first fault: which rider gets which fault, and when."""
        return {
            "event": "chaos_plan",
            "seed": self.session.config.chaos_seed,
            "victims": dict(self.victims),
            "start_s": self.plan.start_s,
            "stagger_s": self.plan.stagger_s,
            "hold_s": self.plan.hold_s,
        }

    def _now(self) -> float:
        return round(time.monotonic() - self._t0, 2)

    def _mark(self, record: FaultRecord, phase: str) -> None:
        t = self._now()
        if phase == "injected":
            record.injected_at_s = t
        elif phase == "healed":
            record.healed_at_s = t
        else:
            record.recovered_at_s = t
        self.on_event(
            {"event": "chaos", "fault": record.fault, "phase": phase, "device": record.device, "t_s": t}
            | ({"evidence": record.evidence} if phase == "recovered" else {})
        )

    async def run(self) -> None:
        """All three faults, staggered; returns when each has recovered. Cancelling it heals what is
        still broken (the class must be able to end its rides)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._network(self.records[0], self.plan.start_s))
            tg.create_task(self._strap(self.records[1], self.plan.start_s + self.plan.stagger_s))
            tg.create_task(self._usb(self.records[2], self.plan.start_s + 2 * self.plan.stagger_s))

    async def _hold(self, record: FaultRecord) -> None:
        await asyncio.sleep(self.plan.hold_s)
        if self.hold_until is not None:
            await self.hold_until(record.fault)

    async def _network(self, record: FaultRecord, at: float) -> None:
        proxy = self.session.proxy
        if proxy is None:
            record.evidence = "no durable lane to cut"
            return
        rider = self.session.rider(record.device)
        replica = rider.replica
        assert replica is not None
        await asyncio.sleep(at)
        proxy.partition()
        self._mark(record, "injected")
        try:
            await self._hold(record)
        finally:
            proxy.heal()
        self._mark(record, "healed")
        target = replica.store.next_seq(rider.ride_id) - 1
        await _until(lambda: _backend_max_seq(self.session, rider) >= target)
        record.evidence = (
            f"backend holds the bike's samples up to seq {target} (recorded by the heal); "
            f"sync connects {replica.sync.connects}"
        )
        self._mark(record, "recovered")

    async def _strap(self, record: FaultRecord, at: float) -> None:
        rider = self.session.rider(record.device)
        strap = rider.sensors.strap
        if strap is None:
            record.evidence = "no simulated strap"
            return
        await asyncio.sleep(at)
        lost_before = rider.hr.reconnects
        strap.walk_out_of_range()
        self._mark(record, "injected")
        try:
            await self._hold(record)
            # The adapter must have noticed (a link lost), else the walk did nothing observable.
            await _until(lambda: rider.hr.reconnects > lost_before)
        finally:
            strap.walk_back()
        self._mark(record, "healed")
        read = rider.hr.readings["heart_rate"]
        await _until(lambda: rider.hr.readings["heart_rate"] > read)
        record.evidence = (
            f"link lost {rider.hr.reconnects - lost_before}x; heart-rate readings resumed "
            f"({rider.hr.readings['heart_rate'] - read} since the walk back)"
        )
        self._mark(record, "recovered")

    async def _usb(self, record: FaultRecord, at: float) -> None:
        rider = self.session.rider(record.device)
        cable = rider.sensors.cable
        if cable is None:
            record.evidence = "no simulated cable"
            return
        await asyncio.sleep(at)
        cable.unplug()
        self._mark(record, "injected")
        try:
            await self._hold(record)
        finally:
            cable.replug()
        self._mark(record, "healed")
        read = sum(rider.bike.readings.values())
        await _until(lambda: sum(rider.bike.readings.values()) > read)
        record.evidence = (
            f"bike readings resumed ({sum(rider.bike.readings.values()) - read} since the replug); "
            f"link lost {rider.bike.reconnects}x"
        )
        self._mark(record, "recovered")


def chaos_report(run: ChaosRun, reconciliation: dict[str, Any]) -> dict[str, Any]:
    """The report's `chaos` section: each fault, and whether its ride still reconciled without loss."""
    faults = []
    for record in run.records:
        out = record.to_json()
        rider = run.session.rider(record.device)
        rec = reconciliation.get(rider.ride_id)
        out["ride_reconciled"] = (
            isinstance(rec, dict)
            and rec.get("sync_state") == "reconciled"
            and rec.get("lost") == 0
            and rec.get("duplicated") == 0
            and rec.get("end_events_counted") == 1
        )
        faults.append(out)
    return {
        "plan": {
            "start_s": run.plan.start_s,
            "stagger_s": run.plan.stagger_s,
            "hold_s": run.plan.hold_s,
            "seed": run.session.config.chaos_seed,
        },
        "faults": faults,
        "all_recovered": all(f["recovered"] and f["ride_reconciled"] for f in faults),
    }
