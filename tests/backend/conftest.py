"""Fixtures for the backend tests: the real application (build_app + setup_backend) on 127.0.0.1 with a
kernel-chosen port, real SQLite files in tmp_path (tests/support/backend_server.py)."""

from __future__ import annotations

from tests.support.backend_server import make_server, server
from tests.support.postgres import pg_cluster, pg_url

__all__ = ["make_server", "pg_cluster", "pg_url", "server"]
