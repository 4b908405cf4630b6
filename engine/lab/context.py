"""What every lab scenario gets: the devices to use, how long to wait for what, and the guide.

Timings differ between a bench and the simulator. On a bench a person walks, unclips and replugs, and
BlueZ's backoff and discovery take tens of seconds, so the waits are long and a step's effect is timed
from its prompt. The simulator does each step itself and its radio answers in milliseconds, so the waits
are short and a step's effect is timed from the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.lab.guide import Guide

if TYPE_CHECKING:
    from adapters.ble.factory import HrSources

# The simulated radio's supervision timeout in the lab: a link out of range ends this long after its
# last packet (reason 0x08). The product's simulator default is 4 s; the kit's is shorter to keep a
# whole simulated run well under a minute, and it is reported with every timing it shapes.
SIM_SUPERVISION_TIMEOUT_S = 1.5
# The simulated line sensor's clock starts this long before millis()*1024 overflows (69:54.304) and
# runs past micros()'s wrap (71:34.967), at this speed-up (sensor seconds per wall second).
SIM_WRAP_LEAD_S = 20.0
SIM_WRAP_TAIL_S = 15.0
SIM_WRAP_SPEED = 60.0
SIM_WRAP_RPM = 80


@dataclass(frozen=True, slots=True)
class Timing:
    connect_s: float  # a device's first reading after its source starts
    settle_s: float  # readings gathered before a step, and again after recovery
    stream_s: float  # the two-straps window
    lose_s: float  # a step's effect (link lost, port gone) after the step or its prompt
    recover_s: float  # readings again after the undo step or its prompt
    absent_s: float  # how long the simulator stays away after the loss was seen
    probe_s: float  # scanning for a strap that should not be advertising
    calibration_s: float  # resistance readings gathered for the calibration scenario
    scenario_s: float  # hang guard for one whole scenario


BENCH = Timing(
    connect_s=60.0,
    settle_s=10.0,
    stream_s=30.0,
    lose_s=90.0,
    recover_s=120.0,
    absent_s=0.0,
    probe_s=10.0,
    calibration_s=30.0,
    scenario_s=900.0,
)
SIMULATED = Timing(
    connect_s=15.0,
    settle_s=0.5,
    stream_s=2.0,
    lose_s=SIM_SUPERVISION_TIMEOUT_S + 10.0,
    recover_s=20.0,
    absent_s=0.5,
    probe_s=1.0,
    calibration_s=1.0,
    scenario_s=60.0,
)


@dataclass
class LabConfig:
    hr: str | None = None  # --hr: sim, sim:N, sim:N@M, ADDR or NAME, or A,B
    adapters: str | None = None  # --adapter hci0,hci1
    serial: str | None = None  # --serial: sim or a port (two comma-separated for a listen tap)
    protocol: str = "peloton"
    mode: str = "poll"
    baud: int | None = None
    calibration: str | None = None  # --calibration FILE (builds that support it)
    data_dir: str | None = None  # --data DIR: where a build that stores tables per bike keeps them
    bike_id: str | None = None
    line: str | None = None  # --line: a DIY line-protocol cadence sensor besides the bike
    line_run_min: float | None = None  # real line sensor: stream this long (across the 70-minute mark)
    line_uptime_min: float = 0.0  # real line sensor: minutes it has been powered when the run starts
    speed: float = 10.0  # simulated devices' speed-up
    interactive: bool = False
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()

    @property
    def hr_simulated(self) -> bool:
        return bool(self.hr) and (self.hr == "sim" or str(self.hr).startswith("sim:"))

    @property
    def serial_simulated(self) -> bool:
        return bool(self.serial) and (self.serial == "sim" or str(self.serial).startswith("sim:"))

    @property
    def line_spec(self) -> str | None:
        """The DIY line sensor under test: --line, or --serial when it speaks the line protocol; with a
        simulated bike the simulator brings a simulated DIY sensor too, so that every scenario runs."""
        if self.line:
            return self.line
        if self.protocol == "line":
            return self.serial
        return "sim" if self.serial_simulated else None

    @property
    def line_simulated(self) -> bool:
        spec = self.line_spec
        return bool(spec) and (spec == "sim" or str(spec).startswith("sim:"))


@dataclass
class Lab:
    config: LabConfig
    guide: Guide
    hr: HrSources | None = None
    notes: list[str] = field(default_factory=list)

    def timing(self, simulated: bool) -> Timing:
        return SIMULATED if simulated else BENCH
