"""The ride directory's SQLite file (`rides.sqlite3` in the data dir): schema, connection settings, and the
one-time import of the `rides.json` that earlier versions kept instead.

One table keyed by ride id, plus an index on (class, device, registered), so that every question the
directory answers (engine/dashboard/directory.py) is an indexed statement and no registration rewrites
anything but its own row. The table is STRICT: a value of the wrong type is refused by SQLite itself.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from engine.store.db import SqliteFile, StoreCorrupt, StoreError, open_sqlite

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
# 100,000 rides made a 12 MB rides.json: a file far beyond that is not one this code wrote, and is not read
# into memory whole.
LEGACY_MAX_BYTES = 256 * 1024 * 1024
# (ride_id, class_id, device, name, registered): the row shape every statement reads and writes.
Row = tuple[str, str, str, str | None, float]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS rides(
    ride_id TEXT PRIMARY KEY, class_id TEXT NOT NULL, device TEXT NOT NULL, name TEXT,
    registered REAL NOT NULL) WITHOUT ROWID, STRICT;
CREATE INDEX IF NOT EXISTS rides_class_device ON rides(class_id, device, registered);
"""

UPSERT = (
    "INSERT INTO rides(ride_id, class_id, device, name, registered) VALUES(?, ?, ?, ?, ?) "
    "ON CONFLICT(ride_id) DO UPDATE SET class_id=excluded.class_id, device=excluded.device, "
    "name=excluded.name, registered=excluded.registered"
)


class DirectoryCorrupt(StoreCorrupt):
    """The directory's file is unreadable (not a database, empty, damaged, or of another format). A
    StoreCorrupt, so `ridesync serve` and `ridesync demo` report it as they report a damaged store: one
    line naming the file, exit status 2."""


# NORMAL, not FULL: a registration is on the event loop at every bike connect, and one lost to a power cut
# is found again from the backend's store (the results endpoint reads ride owners too). The WAL is
# truncated back to 1 MiB after each checkpoint rather than keeping its largest size.
DIRECTORY_FILE = SqliteFile(
    "ride directory",
    _SCHEMA,
    FORMAT_VERSION,
    DirectoryCorrupt,
    DirectoryCorrupt,
    ("PRAGMA synchronous=NORMAL", "PRAGMA journal_size_limit=1048576"),
)


def connect(path: Path | None) -> sqlite3.Connection:
    """Open (or create) the directory's file; `None` is an in-memory database (the demo's and tests')."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return open_sqlite(path, DIRECTORY_FILE)


def _legacy_rows(obj: object) -> list[Row]:
    """The rows of a `rides.json` ({"rides": [{"ride_id", "class", "device", "name", "registered"}]}),
    oldest first. Raises ValueError, KeyError or TypeError on anything else."""
    rows: list[Row] = []
    for r in obj["rides"]:  # type: ignore[index]
        registered = float(r.get("registered") or 0.0)
        if not math.isfinite(registered):
            raise ValueError(f"ride {r['ride_id']!r}: registered is not a finite number")
        name = r["name"] if isinstance(r.get("name"), str) else None
        row: Row = (str(r["ride_id"]), str(r["class"]), str(r["device"]), name, registered)
        for text in (*row[:3], name or ""):
            text.encode("utf-8")  # a lone surrogate from JSON cannot be stored: UnicodeEncodeError
        rows.append(row)
    rows.sort(key=lambda row: row[4])
    return rows


def import_legacy(conn: sqlite3.Connection, json_path: Path, db_label: str) -> int:
    """Import a `rides.json` once: its rows in one transaction, then the file renamed to
    `rides.json.imported` (an unreadable one to `rides.json.unreadable`, with one WARNING), so that it is
    neither read again nor lost. Returns the number of rides imported. A crash between the commit and the
    rename imports the same rows again at the next open, which changes nothing."""
    try:
        size = json_path.stat().st_size
        if size > LEGACY_MAX_BYTES:
            raise ValueError(f"{size} bytes is more than a ride directory ({LEGACY_MAX_BYTES} at most)")
        rows = _legacy_rows(json.loads(json_path.read_text("utf-8")))
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        # (OverflowError: a time like 1e999 as an integer; RecursionError: JSON nested past Python's stack.)
        log.warning(
            "ride directory unreadable, starting afresh", extra={"path": str(json_path), "error": f"{exc}"}
        )
        _set_aside(json_path, ".unreadable")
        return 0
    try:
        _insert_all(conn, rows)
    except sqlite3.Error as exc:
        # The JSON is fine and stays where it is: the next start imports it again.
        raise StoreError(f"{db_label}: cannot import {json_path}: {exc}") from None
    _set_aside(json_path, ".imported")
    log.info("ride directory imported", extra={"path": str(json_path), "rides": len(rows)})
    return len(rows)


def _insert_all(conn: sqlite3.Connection, rows: Iterable[Row]) -> None:
    # Oldest first, so that a ride listed twice ends as its newest row (as the JSON loader kept it).
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(UPSERT, rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    # An import writes the whole directory into the WAL at once: fold it into the file and give it back.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _set_aside(json_path: Path, suffix: str) -> None:
    try:
        os.replace(json_path, json_path.with_name(json_path.name + suffix))
    except OSError as exc:
        log.warning(
            "cannot move the old ride directory aside", extra={"path": str(json_path), "error": f"{exc}"}
        )
