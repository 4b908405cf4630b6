"""Debian's Chromium, as the browser tests and `ridesync bench demo --browser` drive it through Playwright's
`executable_path` (Playwright's own browser download does not work here,
docs/architecture.md#testing-without-hardware)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# Started the way it works in containers and CI: no sandbox, no GPU, no phoning home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_missing() -> str | None:
    """Why the browser cannot be driven here (naming what to install), or None when it can."""
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        return "Debian's Chromium is not installed: apt-get install chromium (package `chromium`)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright's Python package is not installed: pip install playwright (a dev dependency)"
    return None
