"""`open_serial_sources`: the serial sources for a spec, real or simulated, as one async context.

    async with open_serial_sources("sim:2", protocol="peloton", mode="poll", speed=10) as sources:
        for source in sources:                  # SerialSources is a list of SensorSource
            ...source.stream()...
        sources.simulators[0].unplug()          # fault injection on the simulated device behind source 0
        sources.simulators[0].faults.flip = 3
        sources.simulators[0].replug()

Peloton sources get their calibration table from `calibration_file`, else from the table stored for the
bike under `data_dir` (see calibration_store.py); one seen on the bus replaces it and is stored there.
`baud`: the readers' baud rate (default: each protocol's own) and, unless `sim_baud` says otherwise, the
simulated line sensors' (a reader at another speed than its sensor reads garbage, as on a real cable).
`tablet_boots`: a simulated listen-mode bus plays the tablet's boot (and so the table) first; by default,
like a real tap, it does not.

spec: "sim" (one simulated device), "sim:N" (N of them, each on its own pty), or a real port path;
for a listen-mode tap on two ports give both paths separated by a comma ("/dev/ttyUSB0,/dev/ttyUSB1").
Simulators run inside the context (in a TaskGroup it owns) and are stopped, and their ptys closed, when it
exits; those that talk unprompted (listen-mode bus, line sensor) start once their source has opened the
port, so nothing of the ride is lost before someone listens. For real ports `simulators` is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.serial.calibration_store import (
    CalibrationFileError,
    CalibrationKeeper,
    CalibrationStore,
    bike_key,
    load_table_file,
)
from adapters.serial.line_source import LINE_BAUD, LineSource
from adapters.serial.peloton_listen import PelotonListenSource
from adapters.serial.peloton_poll import PelotonPollSource
from adapters.serial.port_source import PortSource
from adapters.serial.sim.bike import BikeSimulator
from adapters.serial.sim.bus import BusEmitter
from adapters.serial.sim.faults import Faults
from adapters.serial.sim.line_sensor import LineSensor
from adapters.serial.sim.profile import RideProfile
from adapters.serial.sim.pty_port import PtyPort

PROTOCOLS = ("peloton", "line")
MODES = ("poll", "listen")
Device = BikeSimulator | BusEmitter | LineSensor


class SpecError(ValueError):
    """A spec, protocol or mode that does not name a usable set of sources."""


@dataclass
class SimulatorHandle:
    """One simulated device: its pty port(s), the simulator object and its armed faults."""

    name: str
    ports: tuple[PtyPort, ...]
    device: Device
    faults: Faults

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p.path for p in self.ports)

    @property
    def sent(self) -> list[Any]:
        """What the device sent intact, in order (SentValue for Peloton, CrankRecord for the line sensor)."""
        return list(self.device.sent)

    def unplug(self) -> None:
        """Pull the cable: the ptys close and their paths vanish."""
        for port in self.ports:
            port.unplug()

    def replug(self) -> None:
        """Plug it back: new ptys behind the same paths."""
        for port in self.ports:
            port.plug()


class SerialSources(list[PortSource]):
    """The sources (a plain list, in spec order), plus the simulators behind them."""

    def __init__(self, sources: list[PortSource], simulators: list[SimulatorHandle]) -> None:
        super().__init__(sources)
        self.simulators = simulators


def parse_spec(spec: str) -> tuple[int, list[str]]:
    """(number of simulated devices, []) or (0, [port paths])."""
    spec = spec.strip()
    if spec == "sim":
        return 1, []
    if spec.startswith("sim:"):
        try:
            n = int(spec[4:])
        except ValueError:
            raise SpecError(f"'{spec}': expected sim:N with N a number") from None
        if not 1 <= n <= 32:
            raise SpecError(f"'{spec}': between 1 and 32 simulated devices")
        return n, []
    paths = [p.strip() for p in spec.split(",") if p.strip()]
    if not 1 <= len(paths) <= 2:
        raise SpecError(f"'{spec}': one port, or two comma-separated for a listen-mode tap")
    return 0, paths


def make_source(
    paths: list[str], *, protocol: str, mode: str, source_id: str, options: dict[str, Any]
) -> PortSource:
    if protocol == "line":
        if len(paths) != 1:
            raise SpecError("a line-protocol sensor uses one port")
        return LineSource(paths[0], source_id=source_id, **options)
    if mode == "listen":
        return PelotonListenSource(paths, source_id=source_id, **options)
    if len(paths) != 1:
        raise SpecError("poll mode drives one port; two ports are for listen mode")
    return PelotonPollSource(paths[0], source_id=source_id, **options)


@contextlib.asynccontextmanager
async def open_serial_sources(
    spec: str,
    *,
    protocol: str = "peloton",
    mode: str = "poll",
    speed: float = 1.0,
    profile: RideProfile | str | Path | None = None,
    tap_ports: int = 1,
    source_options: dict[str, Any] | None = None,
    tablet_boots: bool = False,
    calibration_file: str | Path | None = None,
    data_dir: str | Path | None = None,
    bike_id: str | None = None,
    baud: int | None = None,
    sim_baud: int | None = None,
) -> AsyncIterator[SerialSources]:
    """See the module docstring. `profile`: a RideProfile or CSV path for simulators (default: a
    generated 30-minute ride); `tap_ports`: 1 or 2 ptys per simulated listen-mode bus; `source_options`:
    keyword arguments for every source (timeouts, backoff, baudrate)."""
    if protocol not in PROTOCOLS:
        raise SpecError(f"protocol must be one of {', '.join(PROTOCOLS)}, not '{protocol}'")
    if mode not in MODES:
        raise SpecError(f"mode must be one of {', '.join(MODES)}, not '{mode}'")
    if speed <= 0:
        raise SpecError("speed must be > 0")
    options = dict(source_options or {})
    for rate in (baud, sim_baud):
        if rate is not None and rate <= 0:
            raise SpecError(f"baud rate must be positive, not {rate}")
    if baud is not None:
        options["baudrate"] = baud
    n_sim, paths = parse_spec(spec)
    store = CalibrationStore(Path(data_dir) / "calibration") if data_dir is not None else None
    if calibration_file is not None:
        try:
            load_table_file(calibration_file)  # a bad file is the user's to fix now, not a warning later
        except CalibrationFileError as exc:
            raise SpecError(f"--calibration: {exc}") from None

    def with_calibration(key: str) -> dict[str, Any]:
        if protocol != "peloton" or "calibration" in options:
            return options
        return {**options, "calibration": CalibrationKeeper(file=calibration_file, store=store, key=key)}

    if not n_sim:
        # The bike-side line of a two-port tap names the bike best; one port names it either way.
        key = bike_key(paths[-1], bike_id)
        source = make_source(
            paths, protocol=protocol, mode=mode, source_id=f"serial:{spec}", options=with_calibration(key)
        )
        yield SerialSources([source], [])
        return
    if isinstance(profile, RideProfile):
        ride = profile
    else:
        ride = RideProfile.from_csv(profile) if profile is not None else RideProfile.generated(1800)
    with tempfile.TemporaryDirectory(prefix="ridesync-serial-") as tmp:
        handles: list[SimulatorHandle] = []
        sources: list[PortSource] = []
        for i in range(n_sim):
            name = f"{'cadence' if protocol == 'line' else 'bike'}{i}"
            count = tap_ports if (protocol, mode) == ("peloton", "listen") else 1
            ports = tuple(
                PtyPort(Path(tmp) / (name if count == 1 else f"{name}-{side}")) for side in "ab"[:count]
            )
            for port in ports:
                port.plug()
            faults = Faults(seed=i)
            device: Device
            if protocol == "line":
                device = LineSensor(
                    ports[0],
                    profile=ride,
                    speed=speed,
                    faults=faults,
                    device_id=f"sim-{name}",
                    baud=sim_baud or baud or LINE_BAUD,
                )
            elif mode == "listen":
                device = BusEmitter(
                    ports[0],
                    ports[1] if count == 2 else None,
                    profile=ride,
                    speed=speed,
                    faults=faults,
                    boot=tablet_boots,
                )
            else:
                device = BikeSimulator(ports[0], profile=ride, speed=speed, faults=faults)
            handles.append(SimulatorHandle(name, ports, device, faults))
            key = (bike_id if n_sim == 1 else f"{bike_id}-{i}") if bike_id else f"sim-{name}"
            sources.append(
                make_source(
                    [p.path for p in ports],
                    protocol=protocol,
                    mode=mode,
                    source_id=name,
                    options=with_calibration(key),
                )
            )
        tasks: list[asyncio.Task[None]] = []
        try:
            async with asyncio.TaskGroup() as tg:
                for handle, source in zip(handles, sources, strict=True):
                    run = (
                        _when_open(source, handle.device) if protocol == "line" or mode == "listen" else None
                    )
                    coro: Coroutine[Any, Any, None] = run if run is not None else handle.device.run()
                    tasks.append(tg.create_task(coro, name=f"serial-sim-{handle.name}"))
                try:
                    yield SerialSources(sources, handles)
                finally:
                    for task in tasks:
                        task.cancel()
        finally:
            for handle in handles:
                for port in handle.ports:
                    port.close()


async def _when_open(source: PortSource, device: Device) -> None:
    """Devices that talk unprompted start when their reader is listening, so it hears the whole ride
    (the boot-time calibration read above all), as a lab would start the bike after the tap."""
    await source.port_open.wait()
    await device.run()
