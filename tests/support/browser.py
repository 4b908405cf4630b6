"""Real Chromium for the dashboard tests: its arguments, where screenshots go, and the hang guard."""

from __future__ import annotations

from engine.demo.browser import CHROMIUM_ARGS
from tests.support.paths import ROOT

__all__ = ["CHROMIUM_ARGS", "HANG_GUARD_S", "SCREENSHOTS"]

SCREENSHOTS = ROOT / "artifacts" / "screenshots"
HANG_GUARD_S = 60.0
