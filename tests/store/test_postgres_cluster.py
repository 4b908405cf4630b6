"""The throwaway PostgreSQL cluster the tests and benchmarks run (engine/testing/postgres.py), and the
schema's migration steps beyond the first."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from engine.store.postgres import PostgresStorage, schema
from engine.testing import postgres as cluster_module
from engine.testing.postgres import PostgresCluster, PostgresUnavailable


def test_the_cluster_runs_unprivileged_and_gives_fresh_databases(pg_cluster: PostgresCluster) -> None:
    pid = int((pg_cluster.data / "postmaster.pid").read_text().splitlines()[0])
    assert os.stat(f"/proc/{pid}").st_uid != 0  # PostgreSQL refuses root; so does this helper
    first, second = pg_cluster.database(), pg_cluster.database()
    assert first != second
    with psycopg.connect(first) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname='public'").fetchone() == (0,)


def test_missing_binaries_name_the_debian_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cluster_module, "_BIN_GLOB", str(tmp_path / "none" / "*" / "bin"))
    with pytest.raises(PostgresUnavailable, match="install the Debian package `postgresql`"):
        cluster_module.find_bindir()


def test_a_database_at_an_older_version_runs_only_the_newer_steps(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    PostgresStorage(pg_url, compact_interval_s=None).close()  # at this code's latest version
    known = [v for v, _, _ in schema.MIGRATIONS]
    step = (
        schema.LATEST + 1,
        "a test step",
        "ALTER TABLE rides ADD COLUMN note TEXT; INSERT INTO meta VALUES('step2', 'ran')",
    )
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, step])
    monkeypatch.setattr(schema, "LATEST", schema.LATEST + 1)
    PostgresStorage(pg_url, compact_interval_s=None).close()
    PostgresStorage(pg_url, compact_interval_s=None).close()  # nothing left to run
    with psycopg.connect(pg_url) as conn:
        versions = conn.execute("SELECT version, description FROM schema_version ORDER BY version").fetchall()
        assert [v for v, _ in versions] == [*known, step[0]] and versions[-1][1] == "a test step"
        assert conn.execute("SELECT value FROM meta WHERE key='step2'").fetchall() == [("ran",)]
