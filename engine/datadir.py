"""Where a command keeps its data when not told: the one default data dir of every command.

`ridesync serve`, the device commands (`ride`, `app`, `sync`, `sensors`), `token` and the lab share it,
so it lives here rather than in any of them. Checking a data dir (keys, damaged files) is
engine/cli/datadir.py.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """`$RIDESYNC_DATA` if set, else `./ridesync-data`: next to where the user runs the command, so a demo
    or a lab bench keeps its keys and databases in plain sight."""
    env = os.environ.get("RIDESYNC_DATA")
    return Path(env) if env else Path("ridesync-data")
