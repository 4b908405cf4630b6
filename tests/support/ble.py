"""BLE test helpers: short strap settings for the virtual radio, and a source on it."""

from __future__ import annotations

from adapters.ble.adapter import BleAdapter
from adapters.ble.budget import ConnectionBudget
from adapters.ble.sim import Simulation
from adapters.ble.source import BleHeartRateSource, StrapSettings
from engine.backoff import Backoff

# Short everything, so range loss and reconnects take well under a second each on the virtual radio.
SUPERVISION_TIMEOUT_S = 0.3
FAST = StrapSettings(
    connect_timeout_s=1.0,
    scan_timeout_s=2.0,
    stale_after_s=0.5,
    stable_after_s=0.2,
    backoff=Backoff(base=0.05, cap=0.2),
    tick_s=0.05,
)


def sim_source(
    sim: Simulation, selector: str, budget: ConnectionBudget | None = None, settings: StrapSettings = FAST
) -> BleHeartRateSource:
    adapter = BleAdapter(
        "sim",
        budget or ConnectionBudget("sim", 7),
        scanner_backend=sim.scanner_backend,
        client_backend=sim.client_backend,
        recover=sim.adapters[0].recover_stale,
    )
    return BleHeartRateSource(selector, adapter=adapter, settings=settings)
