"""Walking one simulated strap out of range for a while: `--sim-out-of-range STRAP:SECONDS@START`.

`2:10@5` takes strap 2 (1-based, as in `ridesync-sim-hr-2`) out of range 5 s after the straps start,
for 10 s, then brings it back. Times are wall-clock seconds. The strap's link ends with reason 0x08 once
the simulated supervision timeout (4 s) passes, so an absence shorter than that keeps the link.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.ble.sim.simulation import Simulation

_SPEC = re.compile(r"^(\d+):(\d+(?:\.\d+)?)(?:@(\d+(?:\.\d+)?))?$")


class RangeWalkError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RangeWalk:
    strap: int
    duration_s: float
    start_s: float = 0.0

    @classmethod
    def parse(cls, text: str) -> RangeWalk:
        m = _SPEC.match(text.strip())
        if not m:
            raise RangeWalkError(
                f"bad --sim-out-of-range {text!r}: use STRAP:SECONDS@START, e.g. 2:10@5 "
                "(strap 2 out of range for 10 s, starting 5 s in)"
            )
        walk = cls(int(m.group(1)), float(m.group(2)), float(m.group(3) or 0))
        if walk.strap < 1 or not (math.isfinite(walk.duration_s) and walk.duration_s > 0):
            raise RangeWalkError(f"bad --sim-out-of-range {text!r}: strap counts from 1, seconds > 0")
        return walk

    def check(self, straps: int) -> None:
        if self.strap > straps:
            raise RangeWalkError(f"--sim-out-of-range names strap {self.strap}, but only {straps} run")

    async def run(self, sim: Simulation) -> None:
        strap = sim.straps[self.strap - 1]
        await asyncio.sleep(self.start_s)
        strap.walk_out_of_range()
        try:
            await asyncio.sleep(self.duration_s)
        finally:
            strap.walk_back()
        # Stay alive until the simulation ends, like the profile players beside it.
        await asyncio.Event().wait()
