"""What the demo needs from the sensor side, without importing any adapter
(docs/architecture.md#ports-and-adapters).

A `SensorRig` opens, for a roster, one heart-rate source and one bike source per rider, plus whatever
controls the simulation offers (a strap that can walk out of range). The composition root
(`engine/cli/commands/demo.py`) provides the simulated rig; a lab could provide one with real straps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from engine.demo.roster import RiderSpec
from engine.readings import SensorSource


class StrapControl(Protocol):
    """The simulated strap's range control (adapters/ble/sim/strap.py has it)."""

    def walk_out_of_range(self) -> None: ...

    def walk_back(self) -> None: ...


class CableControl(Protocol):
    """The simulated bike's USB cable (adapters/serial/factory.py `SimulatorHandle` has it)."""

    def unplug(self) -> None: ...

    def replug(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RiderSensors:
    hr: SensorSource
    bike: SensorSource
    strap: StrapControl | None = None
    cable: CableControl | None = None
    # Free text for the console and the report: "strap F0:52:.. on the virtual radio", "pty /tmp/...".
    describe: str = ""


# rig(roster, speed) -> async context yielding one RiderSensors per rider, in roster order.
SensorRig = Callable[[Sequence[RiderSpec], float], AbstractAsyncContextManager[Sequence[RiderSensors]]]
