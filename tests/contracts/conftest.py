"""Fixtures for the conformance suites: implementations that need a real service (redis-server,
PostgreSQL) get it here, or skip naming the Debian package."""

from __future__ import annotations

from tests.support.postgres import pg_cluster, pg_url
from tests.support.redis import redis_server

__all__ = ["pg_cluster", "pg_url", "redis_server"]
