"""`ridesync serve --store`: SQLite stays the embedded default; `sqlite:DIR` moves it; a PostgreSQL URL
puts the store and the idempotency ledger in that database (migrated at start). A bad or unreachable URL
is one JSON error line, exit 2, never a traceback and never the password."""

from __future__ import annotations

import signal
from pathlib import Path

import psycopg

from engine.store.postgres import schema
from tests.cli.test_data_dir import TIMEOUT_S, assert_refused, ridesync
from tests.cli.test_serve import _start


def test_a_malformed_store_is_a_usage_error(tmp_path: Path) -> None:
    for bad in ("mysql://h/db", "postgresql://", "postgresql://u@h:port/db", "sqlite:"):
        proc = ridesync(["serve", "--port", "0", "--data", str(tmp_path), "--init", "--store", bad])
        assert proc.returncode == 2 and "--store" in proc.stderr and "Traceback" not in proc.stderr, bad


def test_an_unreachable_database_is_one_json_error_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://ridesync:s3cret-pw@127.0.0.1:1/rides?connect_timeout=3"
    ridesync(["token", "issue", "--role", "bike", "--device", "b1", "--data", str(tmp_path), "--init"])
    proc = ridesync(["serve", "--port", "0", "--data", str(tmp_path), "--store", url])
    error = assert_refused(proc, "cannot connect to PostgreSQL")
    assert "s3cret-pw" not in proc.stderr + proc.stdout and "s3cret-pw" not in error


def test_serve_on_postgresql_migrates_and_binds_its_actor_there(tmp_path: Path, pg_url: str) -> None:
    proc, listening = _start(tmp_path / "data", "--init", "--store", pg_url)
    try:
        assert listening["event"] == "listening"
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (schema.LATEST,)
            meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            actors = conn.execute("SELECT device, role FROM actors").fetchall()
        assert meta["device_id"] == "backend" and meta["role"] == "backend"
        assert actors == [("backend", "backend")]
        assert not (tmp_path / "data" / "backend" / "ridesync.sqlite3").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0


def test_serve_with_sqlite_dir_keeps_its_store_there(tmp_path: Path) -> None:
    proc, listening = _start(tmp_path / "data", "--init", "--store", f"sqlite:{tmp_path / 'elsewhere'}")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=TIMEOUT_S)
    assert listening["event"] == "listening"
    assert (tmp_path / "elsewhere" / "ridesync.sqlite3").exists()
    assert (tmp_path / "elsewhere" / "idempotency.sqlite3").exists()
