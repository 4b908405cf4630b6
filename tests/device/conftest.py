"""Real processes on loopback: `ridesync serve`, `ridesync ride`, `ridesync app`, and the fault proxy
(in the test's own event loop) between them (tests/support/processes.py, tests/support/backend_server.py)."""

from __future__ import annotations

from tests.support.backend_server import make_server, server
from tests.support.processes import backend

__all__ = ["backend", "make_server", "server"]
