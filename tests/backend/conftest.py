"""Fixtures for the backend tests: the real application (build_app + setup_backend) on 127.0.0.1 with a
kernel-chosen port, real SQLite files in tmp_path, device replicas on their own data dirs."""

from __future__ import annotations

import time
from typing import Any

from engine.ride.samples import Sample
from tests.backend.server import MakeServer, Server, make_server, server
from tests.support.postgres import pg_cluster, pg_url  # noqa: F401  (PostgreSQL fixtures)

__all__ = ["HANG_GUARD", "T0", "MakeServer", "Server", "make_server", "now", "sample", "server"]

HANG_GUARD = 30
T0 = 1_795_000_000.0


def sample(seq: int, t0: float = T0, **kw: Any) -> Sample:
    fields: dict[str, Any] = {
        "hr": 120 + seq % 40,
        "contact": "detected",
        "cadence": 80 + seq % 15,
        "power_dw": 1500 + (seq * 37) % 900,
        "resistance": 30 + seq % 20,
    }
    fields.update(kw)
    return Sample(seq=seq, t=t0 + seq, **fields)


def now() -> float:
    return time.time()
