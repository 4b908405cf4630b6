"""Opening BLE bike sources from one spec string (`--bike`), for the CLI and the demo.

    async with open_bike_sources("sim:3", speed=10) as bikes:
        bikes.simulation.bikes[0].walk_out_of_range()
        async for item in bikes[0].stream(): ...

Specs:
    sim           one simulated BLE bike (an FTMS trainer)
    sim:N         N simulated BLE bikes, the three kinds in turn: FTMS trainer, CPS power meter, CSC
                  cadence/speed pod, FTMS, ... (`kinds=` overrides, e.g. all "ftms")
    ADDRESS       a real bike, trainer, power meter or cadence sensor by address
    NAME          the same by advertised name
    A,B,...       several

Bikes share their adapter with the straps: the same connection budget (`adapter_budget` per real
adapter; one `BleAdapter` per simulated one) and the same single discovery per adapter. Given the
`simulation` the straps run on (`HrSources.simulation`), simulated bikes join that virtual radio and
adapter; otherwise a radio is started for them. Simulated bikes ride the serial simulator's ride
profiles (`profiles[i]`, default a generated ride per bike) at `speed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from adapters.ble.adapter import BleAdapter, assign
from adapters.ble.bike_source import BleBikeSource
from adapters.ble.budget import DEFAULT_SLOTS, adapter_budget
from adapters.ble.factory import AdapterBudgetError, HrSpecError
from adapters.ble.link_source import StrapSettings
from adapters.ble.timeouts import SIM_CONNECT_TIMEOUT_S, SIM_SCAN_TIMEOUT_S
from engine.readings import SensorSource

if TYPE_CHECKING:
    from adapters.ble.sim import Simulation
    from adapters.serial.sim.profile import RideProfile

MAX_SIM_BIKES = 24
# sim:N cycles through these, so three simulated bikes are one of each kind.
SIM_KIND_CYCLE = ("ftms", "cps", "csc")
# Long enough that a simulated ride never loops within an hour at --speed 3.
SIM_RIDE_S = 3 * 3600

_SIM = re.compile(r"sim(?::(\d+))?")


class BikeSpecError(HrSpecError):
    """A --bike spec that names nothing we can open."""


class BikeSources(list[SensorSource]):
    """The opened bike sources, plus the simulation behind them when the spec was `sim`/`sim:N`."""

    simulation: Simulation | None = None


def parse_bike_spec(spec: str) -> int | list[str]:
    """The number of simulated bikes for `sim`/`sim:N`, else the selectors of real ones."""
    spec = spec.strip()
    if m := _SIM.fullmatch(spec):
        n = int(m.group(1) or 1)
        if not 1 <= n <= MAX_SIM_BIKES:
            raise BikeSpecError(f"--bike sim:N needs 1 <= N <= {MAX_SIM_BIKES}, got {n}")
        return n
    if not spec or spec.startswith("sim:"):
        raise BikeSpecError(f"bad --bike spec {spec!r}: use sim, sim:N, a bike's address or its name")
    selectors = [part.strip() for part in spec.split(",")]
    if not all(selectors) or len(set(selectors)) != len(selectors):
        raise BikeSpecError(f"bad bike list {spec!r}: empty or repeated entries")
    return selectors


def sim_kinds(n: int) -> list[str]:
    return [SIM_KIND_CYCLE[i % len(SIM_KIND_CYCLE)] for i in range(n)]


@contextlib.asynccontextmanager
async def open_bike_sources(
    spec: str,
    *,
    speed: float = 1.0,
    settings: StrapSettings | None = None,
    slots: int = DEFAULT_SLOTS,
    adapters: Sequence[str] | None = None,
    simulation: Simulation | None = None,
    kinds: Sequence[str] | None = None,
    profiles: Sequence[RideProfile] | None = None,
    play: bool = True,
) -> AsyncIterator[BikeSources]:
    """Open the BLE bike sources `spec` names; see the module docstring."""
    parsed = parse_bike_spec(spec)
    if isinstance(parsed, list):
        names = list(adapters or ["default"])
        real = [
            BleAdapter(name, adapter_budget(name, slots), bluez_adapter=None if name == "default" else name)
            for name in names
        ]
        placed = assign(len(parsed), real)
        if placed is None:
            raise AdapterBudgetError(
                f"{len(parsed)} bikes do not fit the free connection slots of {', '.join(names)} "
                f"({slots} each, shared with the straps): add an adapter with --adapter"
            )
        yield BikeSources(
            BleBikeSource(selector, adapter=adapter, settings=settings)
            for selector, adapter in zip(parsed, placed, strict=True)
        )
        return

    n = parsed
    from adapters.ble.sim import Simulation
    from adapters.ble.sim.profile import validate_speed
    from adapters.serial.sim.profile import RideProfile

    validate_speed(speed)
    if adapters and list(adapters) != ["default"]:
        raise BikeSpecError("--adapter names real adapters; simulated bikes share the simulated one")
    kinds = list(kinds) if kinds is not None else sim_kinds(n)
    if len(kinds) != n or (profiles is not None and len(profiles) != n):
        raise ValueError(f"{n} simulated bikes need {n} kinds and profiles")
    base = settings or replace(
        StrapSettings(), connect_timeout_s=SIM_CONNECT_TIMEOUT_S, scan_timeout_s=SIM_SCAN_TIMEOUT_S
    )
    async with contextlib.AsyncExitStack() as stack:
        sim = simulation
        if sim is None:
            sim = await Simulation.start()
            stack.push_async_callback(sim.close)
        adapter = sim.adapters[0].ble_adapter(slots)
        on_radio = len(sim.straps) + len(sim.bikes)
        if on_radio + n > adapter.budget.slots:
            raise AdapterBudgetError(
                f"{n} simulated bike(s) and {on_radio} device(s) already on adapter {adapter.name} need "
                f"{on_radio + n} connection slots, it has {adapter.budget.slots}: use fewer"
            )
        bikes = [await sim.add_bike(kind) for kind in kinds]
        sources = BikeSources(BleBikeSource(bike.address, adapter=adapter, settings=base) for bike in bikes)
        sources.simulation = sim
        rides = profiles or [RideProfile.generated(SIM_RIDE_S, seed=100 + i) for i in range(n)]
        async with asyncio.TaskGroup() as tg:
            players = (
                [
                    tg.create_task(bike.play(ride, speed), name=f"sim {bike.name}")
                    for bike, ride in zip(bikes, rides, strict=True)
                ]
                if play
                else []
            )
            try:
                yield sources
            finally:
                for task in players:
                    task.cancel()
