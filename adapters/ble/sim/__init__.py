"""The simulated heart-rate strap: bumble peripherals on an in-process virtual radio, plus a bleak
backend over it. A product feature (CI, demos), not a test double: see adapters/ble/README.md."""

from adapters.ble.sim.profile import HrProfile, ProfileError, class_profile
from adapters.ble.sim.simulation import Simulation
from adapters.ble.sim.strap import SimStrap

__all__ = ["HrProfile", "ProfileError", "SimStrap", "Simulation", "class_profile"]
