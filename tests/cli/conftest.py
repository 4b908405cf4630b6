"""Fixtures for the CLI tests: a real PostgreSQL where its binaries are installed."""

from tests.support.postgres import pg_cluster, pg_url  # noqa: F401
