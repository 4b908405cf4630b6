"""ridesync's pytest plugin: simulated straps and bikes, and a real backend, for other projects' tests.

Loaded through the `pytest11` entry point (`ridesync = "engine.testing.plugin"`). Public: the fixtures,
and the classes they yield (`SimStrapControl`, `SimBikeControl`, `RidesyncBackend`, `RidesyncHub`).
"""

from engine.testing.backend import RidesyncBackend, RidesyncHub
from engine.testing.bike import SimBikeControl
from engine.testing.strap import SimStrapControl

__all__ = ["RidesyncBackend", "RidesyncHub", "SimBikeControl", "SimStrapControl"]
