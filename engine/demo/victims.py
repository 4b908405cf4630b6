"""Which riders `--chaos` hits with which fault: drawn with a seed, so a run is reproducible and a
different seed moves the faults to other riders (a fault that only ever hits rider 1 proves less)."""

from __future__ import annotations

import random
from collections.abc import Sequence

# In the order they are injected (engine/demo/chaos.py).
FAULTS = ("network", "strap_range", "usb")
# With 8 riders it picks bike-04 (network), bike-05 (strap) and bike-07 (USB, a Peloton bike: its
# adapter writes polls, so the unplug also exercises a write into a pulled cable).
DEFAULT_CHAOS_SEED = 3


def chaos_victims(devices: Sequence[str], seed: int = DEFAULT_CHAOS_SEED) -> dict[str, str]:
    """fault -> device. Three different riders when there are three or more; fewer riders share faults."""
    if not devices:
        raise ValueError("chaos needs at least one rider")
    order = random.Random(seed).sample(list(devices), len(devices))
    return {fault: order[i % len(order)] for i, fault in enumerate(FAULTS)}
