"""Server configuration and the default data directory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.live.config import HubConfig

DEFAULT_PORT = 8750


def default_data_dir() -> Path:
    """`$RIDESYNC_DATA` if set, else `./ridesync-data`: next to where the user runs the command, so a demo
    or a lab bench keeps its keys and databases in plain sight."""
    env = os.environ.get("RIDESYNC_DATA")
    return Path(env) if env else Path("ridesync-data")


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    hub: HubConfig = field(default_factory=HubConfig)
    # Create the signing keys when the data dir has none (`ridesync serve --init`). Off by default: new
    # keys invalidate every token issued with the old ones, so a missing key file is an error.
    init_keys: bool = False
