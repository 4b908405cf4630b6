"""Opening heart-rate sources from one spec string, for the CLI and the demo.

    async with open_hr_sources("sim:3", speed=10) as sources:
        sim = sources.simulation            # None for real straps
        sim.straps[0].walk_out_of_range()   # simulation handles, see adapters/ble/sim
        async for item in sources[0].stream(): ...

Specs:
    sim           one simulated strap
    sim:N         N simulated straps on one virtual radio (one simulated adapter)
    sim:N@M       N simulated straps spread over M simulated adapters (sim0..simM-1) on one radio
    ADDRESS       a real strap by address (AA:BB:CC:DD:EE:FF, or a CoreBluetooth UUID), default backend
    NAME          a real strap by advertised name, default backend
    A,B,...       several real straps (addresses or names)

Real straps go on the adapters named by `adapters` (e.g. ["hci0", "hci1"]; default: the one bleak
picks). Straps are spread evenly over the adapters within each one's connection slots; when they do not
fit, `AdapterBudgetError` says in one line how many adapters are needed and how to name them.

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
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from adapters.ble.adapter import BleAdapter, assign
from adapters.ble.budget import DEFAULT_SLOTS, adapter_budget
from adapters.ble.source import BleHeartRateSource, StrapSettings
from adapters.ble.timeouts import HARDWARE_CONNECT_TIMEOUT_S, SIM_CONNECT_TIMEOUT_S, SIM_SCAN_TIMEOUT_S
from engine.readings import SensorSource

if TYPE_CHECKING:
    from adapters.ble.sim import HrProfile, Simulation
    from adapters.ble.sim.range_walk import RangeWalk

log = logging.getLogger(__name__)

MAX_SIM_STRAPS = 64
__all__ = [
    "SIM_CONNECT_TIMEOUT_S",
    "SIM_SCAN_TIMEOUT_S",
    "AdapterBudgetError",
    "HrSources",
    "HrSpecError",
    "open_hr_sources",
    "parse_adapters",
    "parse_sim",
    "parse_spec",
]

_SIM = re.compile(r"sim(?::(\d+)(?:@(\d+))?)?")
_ADAPTER = re.compile(r"default|hci\d{1,2}")
MAX_SIM_ADAPTERS = 16


class HrSpecError(ValueError):
    """A --hr spec that names nothing we can open."""


class AdapterBudgetError(HrSpecError):
    """More straps than the adapters' connection slots hold; the message names the fix."""


class HrSources(list[SensorSource]):
    """The opened sources, plus the simulation behind them when the spec was `sim`/`sim:N`/`sim:N@M`."""

    simulation: Simulation | None = None


def parse_adapters(text: str | None) -> list[str]:
    """`--adapter hci0,hci1` as a list; None or empty: the default adapter."""
    if not text:
        return ["default"]
    names = [part.strip() for part in text.split(",")]
    for name in names:
        if not _ADAPTER.fullmatch(name):
            raise HrSpecError(f"bad adapter {name!r} in --adapter: use BlueZ names like hci0,hci1")
    if len(set(names)) != len(names):
        raise HrSpecError(f"adapter named twice in --adapter {text!r}")
    return names


def parse_sim(spec: str) -> tuple[int, int] | None:
    """(straps, adapters) for `sim`, `sim:N`, `sim:N@M`; None for a spec that is not the simulator."""
    spec = spec.strip()
    if m := _SIM.fullmatch(spec):
        n = int(m.group(1) or 1)
        adapters = int(m.group(2) or 1)
        if not 1 <= n <= MAX_SIM_STRAPS:
            raise HrSpecError(f"sim:N needs 1 <= N <= {MAX_SIM_STRAPS}, got {n}")
        if not 1 <= adapters <= MAX_SIM_ADAPTERS:
            raise HrSpecError(f"sim:N@M needs 1 <= M <= {MAX_SIM_ADAPTERS} adapters, got {adapters}")
        return (n, adapters)
    if spec.startswith("sim:") or spec.startswith("sim@"):
        raise HrSpecError(
            f"bad simulator spec {spec!r}: use sim, sim:N (N straps) or sim:N@M (N straps over M adapters)"
        )
    return None


def _needed(count: int, slots: int) -> int:
    return -(-count // slots)


def parse_spec(spec: str) -> tuple[str, int] | tuple[str, list[str]]:
    """("sim", N) or ("straps", [selector, ...])."""
    spec = spec.strip()
    if not spec:
        raise HrSpecError("empty --hr spec: use sim, sim:N, sim:N@M, a strap address or a strap name")
    if (sim := parse_sim(spec)) is not None:
        return ("sim", sim[0])
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
    adapters: Sequence[str] | None = None,
    out_of_range: RangeWalk | None = None,
) -> AsyncIterator[HrSources]:
    """Open the heart-rate sources `spec` names; see the module docstring.

    `settings` tune the sources (timeouts, staleness, backoff); for `sim` the connect and scan
    timeouts default to the simulator's short ones. `profile` is an `HrProfile` for the simulated
    straps (default: a generated warm-up/intervals/cool-down). `play=False` leaves the straps silent
    so a caller drives them with `notify`/`notify_raw` only. `slots` is each adapter's connection budget;
    `adapters` names the real adapters (BlueZ hciN) the straps are spread over. `out_of_range` walks
    one simulated strap out of range and back (see adapters/ble/sim/range_walk.py).
    """
    kind, arg = parse_spec(spec)
    if kind == "straps":
        assert isinstance(arg, list)
        names = list(adapters or ["default"])
        if out_of_range is not None:
            raise HrSpecError("--sim-out-of-range needs simulated straps (--hr sim:N)")
        if settings is not None and settings.connect_timeout_s < HARDWARE_CONNECT_TIMEOUT_S:
            log.warning(
                "connect timeout below what real adapters need",
                extra={
                    "connect_timeout_s": settings.connect_timeout_s,
                    "recommended_s": HARDWARE_CONNECT_TIMEOUT_S,
                },
            )
        real = [
            BleAdapter(name, adapter_budget(name, slots), bluez_adapter=None if name == "default" else name)
            for name in names
        ]
        placed = assign(len(arg), real)
        if placed is None:
            need = _needed(len(arg), slots)
            example = ",".join(f"hci{i}" for i in range(need))
            raise AdapterBudgetError(
                f"{len(arg)} straps need {need} adapters ({slots} connection slots each), "
                f"{len(names)} given: add --adapter {example}"
            )
        yield HrSources(
            BleHeartRateSource(selector, adapter=adapter, settings=settings)
            for selector, adapter in zip(arg, placed, strict=True)
        )
        return

    assert isinstance(arg, int)
    sim_spec = parse_sim(spec)
    assert sim_spec is not None
    n_adapters = sim_spec[1]
    from adapters.ble.sim import Simulation, class_profile
    from adapters.ble.sim.profile import validate_speed
    from adapters.ble.sim.simulation import DEFAULT_SUPERVISION_TIMEOUT_S

    validate_speed(speed)
    if out_of_range is not None:
        out_of_range.check(arg)
    if adapters and list(adapters) != ["default"]:
        raise HrSpecError("--adapter names real adapters; for simulated ones use --hr sim:N@M")
    if arg > slots * n_adapters:
        need = _needed(arg, slots)
        raise AdapterBudgetError(
            f"{arg} simulated straps need {need} adapters ({slots} connection slots each), "
            f"{n_adapters} given: use --hr sim:{arg}@{need}"
        )
    base = settings or StrapSettings()
    if settings is None:
        base = replace(base, connect_timeout_s=SIM_CONNECT_TIMEOUT_S, scan_timeout_s=SIM_SCAN_TIMEOUT_S)
    sim = await Simulation.start(
        supervision_timeout_s=supervision_timeout_s or DEFAULT_SUPERVISION_TIMEOUT_S, adapters=n_adapters
    )
    try:
        straps = [await sim.add_strap() for _ in range(arg)]
        sim_adapters = [a.ble_adapter(slots) for a in sim.adapters]
        placed = assign(arg, sim_adapters)
        assert placed is not None
        sources = HrSources(
            BleHeartRateSource(strap.address, adapter=adapter, settings=base)
            for strap, adapter in zip(straps, placed, strict=True)
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
            if out_of_range is not None:
                players.append(tg.create_task(out_of_range.run(sim), name="sim out of range"))
            try:
                yield sources
            finally:
                for task in players:
                    task.cancel()
    finally:
        await sim.close()
