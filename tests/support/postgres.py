"""pytest fixtures for a real PostgreSQL: one throwaway cluster per test session (per xdist worker), from
Debian's `postgresql` binaries (engine/testing/postgres.py), and a fresh database per test. Where the
binaries are missing, the tests that use them skip, naming the package. A conftest imports them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.testing.postgres import PACKAGE, PostgresCluster, PostgresUnavailable, find_bindir


def postgres_available() -> bool:
    try:
        find_bindir()
    except PostgresUnavailable:
        return False
    return True


SKIP_REASON = f"PostgreSQL server binaries not found: install the Debian package `{PACKAGE}`"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    if not postgres_available():
        pytest.skip(SKIP_REASON)
    # fsync off: these tests kill ridesync processes, never the database server.
    with PostgresCluster(durable=False) as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    """A fresh, empty database on the session's cluster."""
    return pg_cluster.database()
