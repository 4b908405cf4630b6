"""The host's configuration (`ridesync serve`): where it listens, its data dir, its connection limits.

Lanes carry their own configuration (`HubConfig` for the live lane, `BackendConfig` for the durable
lane); the caller hands each to its lane (docs/architecture.md#the-host-and-its-lanes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The default data dir's home is engine/datadir.py; re-exported here for callers of the former location.
from engine.datadir import default_data_dir

DEFAULT_PORT = 8750
DEFAULT_HEAP_TRIM_S = 30.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What a client may hold of the server before it has shown a valid token, for every path `ridesync
    serve` answers (sync /v1/*, class hub /live/v1, dashboard, /healthz, /metrics). engine/server/guard.py
    enforces them; `ridesync serve` has a flag for each."""

    # A request's line and headers must arrive in full within this many seconds of its first byte (of the
    # connection's opening, for its first request): a client that sends a few bytes now and then is closed.
    header_timeout_s: float = 10.0
    # While a request's body is incomplete, at most this long between two reads of it (the body may be
    # large; it may not stall).
    body_timeout_s: float = 30.0
    # An idle keep-alive connection (no request in progress) is closed after this long.
    keepalive_timeout_s: float = 75.0
    # Connections from one IP address that have not yet presented a valid token (in a request's
    # `Authorization: Bearer` header or `token` query parameter): one more is refused with 429. One that
    # presents a valid token in its first request is let in even past the cap, so a class of bikes behind
    # one NAT address reconnecting at once is not refused.
    max_pending_per_ip: int = 64


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    http: HttpLimits = field(default_factory=HttpLimits)
    # Create the signing keys when the data dir has none (`ridesync serve --init`). Off by default: new
    # keys invalidate every token issued with the old ones, so a missing key file is an error.
    init_keys: bool = False
    # Every this many seconds, give heap memory the server freed back to the system (engine/server/heap.py;
    # `ridesync serve --heap-trim-interval`); 0: never.
    heap_trim_s: float = DEFAULT_HEAP_TRIM_S
