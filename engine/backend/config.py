"""Backend limits and their defaults, overridable from the environment (`ridesync serve` has no flags
for them; the variables are listed in README.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# A 4-hour offline backlog at the default 10 s fold is ~350 KB (engine/ride/README.md); 8 MiB leaves a
# 20x margin for claims, edits and a denser commit interval.
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BackendConfig:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    heartbeat_s: float = 5.0
    join_timeout_s: float = 10.0
    # Per device: HTTP requests and WebSocket upgrades share one bucket.
    rate_per_s: float = 10.0
    burst: float = 40.0
    max_rides_per_connection: int = 32
    max_body_bytes: int = 64 * 1024
    device_id: str = "backend"
    server_peer_id: str = "ridesync-backend"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BackendConfig:
        env = os.environ if env is None else env
        base = cls()

        def num(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {raw!r}") from None
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {raw!r}")
            return value

        return cls(
            max_message_bytes=int(num("RIDESYNC_MAX_MESSAGE_BYTES", base.max_message_bytes)),
            heartbeat_s=num("RIDESYNC_HEARTBEAT_S", base.heartbeat_s),
            rate_per_s=num("RIDESYNC_RATE_PER_S", base.rate_per_s),
            burst=num("RIDESYNC_RATE_BURST", base.burst),
            device_id=env.get("RIDESYNC_BACKEND_ID") or base.device_id,
        )
