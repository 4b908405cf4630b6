"""Opening heart-rate sources from one spec string, for the CLI and the demo.

    async with open_hr_sources("sim:3", speed=10) as sources:
        sim = sources.simulation            # None for real straps
        sim.straps[0].walk_out_of_range()   # simulation handles, see adapters/ble/sim
        async for item in sources[0].stream(): ...

Specs:
    sim           one simulated strap
    sim:N         N simulated straps on one virtual radio (one simulated adapter)
    ADDRESS       a real strap by address (AA:BB:CC:DD:EE:FF, or a CoreBluetooth UUID), default backend
    NAME          a real strap by advertised name, default backend
    A,B,...       several real straps (addresses or names), sharing the default adapter's slots

`HrSources` is a plain list of `SensorSource`s with one extra attribute, `simulation`: the running
`Simulation` (virtual radio, straps and their controls) or None. Inside the context the simulated straps
play their heart-rate profile (`profile`, default a generated class) at `speed`; leaving the context
stops playback and tears the radio down. The sources themselves are the same `BleHeartRateSource` code
for both, with bleak's backend classes injected: there is no simulated branch in the source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

from adapters.ble.budget import DEFAULT_SLOTS, ConnectionBudget, adapter_budget
from adapters.ble.connect import HARDWARE_CONNECT_TIMEOUT_S
from adapters.ble.source import BleHeartRateSource, StrapSettings
from engine.readings import SensorSource

if TYPE_CHECKING:
    from adapters.ble.sim import HrProfile, Simulation

log = logging.getLogger(__name__)

MAX_SIM_STRAPS = 64
# The simulated radio answers in milliseconds; a real adapter needs >= 10 s (see connect.py).
SIM_CONNECT_TIMEOUT_S = 2.0
SIM_SCAN_TIMEOUT_S = 3.0

_SIM = re.compile(r"sim(?::(\d+))?")


class HrSpecError(ValueError):
    """A --hr spec that names nothing we can open."""


class HrSources(list[SensorSource]):
    """The opened sources, plus the simulation behind them when the spec was `sim`/`sim:N`."""

    simulation: Simulation | None = None


def parse_spec(spec: str) -> tuple[str, int] | tuple[str, list[str]]:
    """("sim", N) or ("straps", [selector, ...])."""
    spec = spec.strip()
    if not spec:
        raise HrSpecError("empty --hr spec: use sim, sim:N, a strap address or a strap name")
    if m := _SIM.fullmatch(spec):
        n = int(m.group(1) or 1)
        if not 1 <= n <= MAX_SIM_STRAPS:
            raise HrSpecError(f"sim:N needs 1 <= N <= {MAX_SIM_STRAPS}, got {n}")
        return ("sim", n)
    if spec.startswith("sim:"):
        raise HrSpecError(f"bad simulator spec {spec!r}: use sim or sim:N with N a number")
    selectors = [part.strip() for part in spec.split(",")]
    if not all(selectors) or len(set(selectors)) != len(selectors):
        raise HrSpecError(f"bad strap list {spec!r}: empty or repeated entries")
    return ("straps", selectors)


@contextlib.asynccontextmanager
async def open_hr_sources(
    spec: str,
    *,
    speed: float = 1.0,
    settings: StrapSettings | None = None,
    slots: int = DEFAULT_SLOTS,
    profile: HrProfile | None = None,
    supervision_timeout_s: float | None = None,
    play: bool = True,
) -> AsyncIterator[HrSources]:
    """Open the heart-rate sources `spec` names; see the module docstring.

    `settings` tune the sources (timeouts, staleness, backoff); for `sim` the connect and scan
    timeouts default to the simulator's short ones. `profile` is an `HrProfile` for the simulated
    straps (default: a generated warm-up/intervals/cool-down). `play=False` leaves the straps silent
    so a caller drives them with `notify`/`notify_raw` only. `slots` is the adapter's connection budget.
    """
    kind, arg = parse_spec(spec)
    if kind == "straps":
        assert isinstance(arg, list)
        if settings is not None and settings.connect_timeout_s < HARDWARE_CONNECT_TIMEOUT_S:
            log.warning(
                "connect timeout below what real adapters need",
                extra={
                    "connect_timeout_s": settings.connect_timeout_s,
                    "recommended_s": HARDWARE_CONNECT_TIMEOUT_S,
                },
            )
        budget = adapter_budget("default", slots)
        budget.check(len(arg), ", ".join(arg))
        yield HrSources(BleHeartRateSource(selector, budget=budget, settings=settings) for selector in arg)
        return

    assert isinstance(arg, int)
    from adapters.ble.sim import Simulation, class_profile
    from adapters.ble.sim.profile import validate_speed
    from adapters.ble.sim.simulation import DEFAULT_SUPERVISION_TIMEOUT_S

    validate_speed(speed)
    budget = ConnectionBudget("sim", slots)
    budget.check(arg, f"{arg} simulated straps")
    base = settings or StrapSettings()
    if settings is None:
        base = replace(base, connect_timeout_s=SIM_CONNECT_TIMEOUT_S, scan_timeout_s=SIM_SCAN_TIMEOUT_S)
    sim = await Simulation.start(supervision_timeout_s=supervision_timeout_s or DEFAULT_SUPERVISION_TIMEOUT_S)
    try:
        straps = [await sim.add_strap() for _ in range(arg)]
        sources = HrSources(
            BleHeartRateSource(
                strap.address,
                budget=budget,
                settings=base,
                scanner_backend=sim.scanner_backend,
                client_backend=sim.client_backend,
            )
            for strap in straps
        )
        sources.simulation = sim
        async with asyncio.TaskGroup() as tg:
            players = (
                [
                    tg.create_task(s.play(profile or class_profile(), speed), name=f"sim {s.name}")
                    for s in straps
                ]
                if play
                else []
            )
            try:
                yield sources
            finally:
                for task in players:
                    task.cancel()
    finally:
        await sim.close()
