"""Backend limits and their defaults: `ridesync serve` flags win over environment variables, which win
over the defaults here (README.md, "Limits and configuration")."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from engine.ids import ID_CHARS, valid_id
from engine.store.location import StoreLocation
from engine.sync import wire

# 8 MiB, the sync codec's own default (engine/sync/wire.py says why).
DEFAULT_MAX_MESSAGE_BYTES = wire.DEFAULT_MAX_MESSAGE_BYTES
# Below this even a join with metadata or one fold's sync message may not fit.
MIN_MESSAGE_BYTES = 4096
MAX_MESSAGE_BYTES = 1024 * 1024 * 1024
MAX_HEARTBEAT_S = 3600.0
# Changes a connection may leave queued unapplied (waiting for a dependency it never sends). An honest
# peer queues a few at most, while a Bloom-filter false positive makes it skip one; a whole 4-hour
# backlog is ~1,440 changes and ~350 KB. Past either limit the connection is closed (4413).
DEFAULT_MAX_QUEUED_CHANGES = 10_000
DEFAULT_MAX_QUEUED_BYTES = 16 * 1024 * 1024
MAX_QUEUED_CHANGES = 10_000_000
# A ride idle this long (no connection, no request, everything committed) leaves the backend's memory,
# not its storage, and is read back at its next use (engine/backend/workingset.py).
DEFAULT_UNLOAD_IDLE_S = 60.0
MIN_UNLOAD_IDLE_S = 1.0
MAX_UNLOAD_IDLE_S = 7 * 24 * 3600.0

# (field, flag, environment variable): one table, so errors name what the user actually set.
LIMITS = (
    ("max_message_bytes", "--max-message-bytes", "RIDESYNC_MAX_MESSAGE_BYTES"),
    ("heartbeat_s", "--heartbeat-s", "RIDESYNC_HEARTBEAT_S"),
    ("rate_per_s", "--rate-per-s", "RIDESYNC_RATE_PER_S"),
    ("burst", "--rate-burst", "RIDESYNC_RATE_BURST"),
    ("max_queued_changes", "--max-queued-changes", "RIDESYNC_MAX_QUEUED_CHANGES"),
    ("max_queued_bytes", "--max-queued-bytes", "RIDESYNC_MAX_QUEUED_BYTES"),
    ("unload_idle_s", "--unload-idle-s", "RIDESYNC_UNLOAD_IDLE_S"),
)


class ConfigError(ValueError):
    """A limit is out of range or not a number; the message names the flag or variable."""


@dataclass(frozen=True, slots=True)
class BackendConfig:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    heartbeat_s: float = 5.0
    join_timeout_s: float = 10.0
    # After sending a close frame, how long to read on for the peer's before closing the socket.
    close_timeout_s: float = 2.0
    # Per device: HTTP requests and WebSocket upgrades share one bucket.
    rate_per_s: float = 10.0
    burst: float = 40.0
    max_rides_per_connection: int = 32
    # Per connection: changes received but not applied (Automerge queues those whose dependencies are
    # missing), in count and bytes (engine/store/gate.py, Backlog).
    max_queued_changes: int = DEFAULT_MAX_QUEUED_CHANGES
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES
    max_body_bytes: int = 64 * 1024
    unload_idle_s: float = DEFAULT_UNLOAD_IDLE_S
    device_id: str = "backend"
    # Where the store and the idempotency ledger live (`--store`); None: SQLite in DATA/backend/.
    store: StoreLocation | None = None
    server_peer_id: str = "ridesync-backend"
    # Several backend nodes over one database: the ride push between them (redis://HOST:PORT); None is
    # one node, which tells nobody (engine/backend/push.py).
    push_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BackendConfig:
        env = os.environ if env is None else env
        values: dict[str, float] = {}
        for name, _, var in LIMITS:
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            try:
                values[name] = float(raw)
            except ValueError:
                raise ConfigError(f"{var} must be a number, got {raw!r}") from None
        config = cls()
        device_id = env.get("RIDESYNC_BACKEND_ID") or config.device_id
        if not valid_id(device_id):
            raise ConfigError(f"RIDESYNC_BACKEND_ID must be a device id ({ID_CHARS}), got {device_id!r}")
        config = replace(config, device_id=device_id)
        return config._with(values, {name: var for name, _, var in LIMITS})

    def override(
        self,
        *,
        max_message_bytes: float | None = None,
        heartbeat_s: float | None = None,
        rate_per_s: float | None = None,
        burst: float | None = None,
        max_queued_changes: float | None = None,
        max_queued_bytes: float | None = None,
        unload_idle_s: float | None = None,
    ) -> BackendConfig:
        """This config with the limits given (command-line flags; None = keep)."""
        given = {"max_message_bytes": max_message_bytes, "heartbeat_s": heartbeat_s}
        given |= {"rate_per_s": rate_per_s, "burst": burst}
        given |= {"max_queued_changes": max_queued_changes, "max_queued_bytes": max_queued_bytes}
        given |= {"unload_idle_s": unload_idle_s}
        values = {name: v for name, v in given.items() if v is not None}
        return self._with(values, {name: flag for name, flag, _ in LIMITS})

    def _with(self, values: Mapping[str, float], labels: Mapping[str, str]) -> BackendConfig:
        for name, value in values.items():
            _check(name, value, labels[name])
        config = self
        if "max_message_bytes" in values:
            config = replace(config, max_message_bytes=int(values["max_message_bytes"]))
        if "max_queued_changes" in values:
            config = replace(config, max_queued_changes=int(values["max_queued_changes"]))
        if "max_queued_bytes" in values:
            config = replace(config, max_queued_bytes=int(values["max_queued_bytes"]))
        if "heartbeat_s" in values:
            config = replace(config, heartbeat_s=float(values["heartbeat_s"]))
        if "rate_per_s" in values:
            config = replace(config, rate_per_s=float(values["rate_per_s"]))
        if "burst" in values:
            config = replace(config, burst=float(values["burst"]))
        if "unload_idle_s" in values:
            config = replace(config, unload_idle_s=float(values["unload_idle_s"]))
        return config


def _check(name: str, value: float, label: str) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{label} must be a finite number, got {value!r}")
    if name == "max_message_bytes":
        if value != int(value) or not MIN_MESSAGE_BYTES <= value <= MAX_MESSAGE_BYTES:
            raise ConfigError(
                f"{label} must be a whole number of bytes from {MIN_MESSAGE_BYTES} to {MAX_MESSAGE_BYTES} "
                f"(a 4-hour offline backlog needs ~350 KB), got {value:g}"
            )
    elif name == "max_queued_changes":
        if value != int(value) or not 1 <= value <= MAX_QUEUED_CHANGES:
            raise ConfigError(
                f"{label} must be a whole number of changes from 1 to {MAX_QUEUED_CHANGES}, got {value:g}"
            )
    elif name == "max_queued_bytes":
        if value != int(value) or not MIN_MESSAGE_BYTES <= value <= MAX_MESSAGE_BYTES:
            raise ConfigError(
                f"{label} must be a whole number of bytes from {MIN_MESSAGE_BYTES} to {MAX_MESSAGE_BYTES}, "
                f"got {value:g}"
            )
    elif name == "heartbeat_s":
        if not 0 < value <= MAX_HEARTBEAT_S:
            raise ConfigError(
                f"{label} must be more than 0 and at most {MAX_HEARTBEAT_S:g} seconds, got {value:g}"
            )
    elif name == "rate_per_s":
        if not value > 0:
            raise ConfigError(f"{label} must be positive (requests per second per device), got {value:g}")
    elif name == "unload_idle_s":
        if not MIN_UNLOAD_IDLE_S <= value <= MAX_UNLOAD_IDLE_S:
            raise ConfigError(
                f"{label} must be from {MIN_UNLOAD_IDLE_S:g} to {MAX_UNLOAD_IDLE_S:g} seconds, got {value:g}"
            )
    elif name == "burst" and not value >= 1:
        raise ConfigError(
            f"{label} must be at least 1 (a bucket below one token refuses everything), got {value:g}"
        )
