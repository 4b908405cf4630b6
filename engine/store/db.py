"""The replica's SQLite file: schema, connection settings and checksummed records.

One file per replica data dir, WAL mode with synchronous=FULL, so a committed transaction survives a
kill -9 and a power cut. Every blob row carries a CRC32 over its identity and content, so a torn or
bit-flipped record is detected on read, reported and skipped; it is never loaded silently.
"""

from __future__ import annotations

import sqlite3
import zlib
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = "1"
DB_NAME = "ridesync.sqlite3"
HASH_LEN = 32
QUICK_CHECK_MAX_BYTES = 64 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rides(
    ride_id TEXT PRIMARY KEY, created REAL NOT NULL, sync_state TEXT NOT NULL,
    sync_reason TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS docs(
    doc_id TEXT PRIMARY KEY, ride_id TEXT NOT NULL, kind TEXT NOT NULL, device TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS docs_ride ON docs(ride_id);
CREATE TABLE IF NOT EXISTS snapshots(
    doc_id TEXT PRIMARY KEY, data BLOB NOT NULL, heads BLOB NOT NULL, upto INTEGER NOT NULL,
    crc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS changes(
    id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, data BLOB NOT NULL, heads BLOB NOT NULL,
    crc INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS changes_doc ON changes(doc_id, id);
CREATE TABLE IF NOT EXISTS raw_samples(
    ride_id TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
    crc INTEGER NOT NULL, folded INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(ride_id, device, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS actors(
    actor BLOB PRIMARY KEY, device TEXT NOT NULL, role TEXT NOT NULL, bound REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ride_owners(
    ride_id TEXT PRIMARY KEY, device TEXT NOT NULL, rider TEXT, class_id TEXT, bound REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ride_owners_class ON ride_owners(class_id);
CREATE TABLE IF NOT EXISTS finalizations(
    ride_id TEXT PRIMARY KEY, by_actor TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS peer_heads(
    doc_id TEXT NOT NULL, peer TEXT NOT NULL, heads BLOB NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY(doc_id, peer));
"""


class StoreError(Exception):
    """The store cannot do what was asked; the message says why."""


class StoreCorrupt(StoreError):
    """The store file itself is unreadable (not a database, empty, or malformed)."""


class StorageFull(StoreError):
    """SQLite could not write: the disk (or the database's page limit) is full."""


def connect(data_dir: Path, *, quick_check: bool = True) -> sqlite3.Connection:
    """Open (or create) the replica's file. `quick_check=False` for a second connection to a file the
    store has just checked (its write-behind writer)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return open_sqlite(data_dir / DB_NAME, STORE_FILE, quick_check=quick_check)


@dataclass(frozen=True)
class SqliteFile:
    """What `open_sqlite` needs to know of one kind of ridesync SQLite file."""

    label: str  # in messages: "<path> is not a readable <label>"
    schema: str
    format_version: str
    corrupt: type[StoreCorrupt]  # raised for a file that cannot be what it claims
    format_error: type[StoreError]  # raised for a file of an unknown format
    pragmas: tuple[str, ...]  # journal and durability settings, after WAL


STORE_FILE = SqliteFile(
    "ridesync store", _SCHEMA, FORMAT_VERSION, StoreCorrupt, StoreError, ("PRAGMA synchronous=FULL",)
)


def open_sqlite(path: Path | None, kind: SqliteFile, *, quick_check: bool = True) -> sqlite3.Connection:
    """Open (or create) a ridesync SQLite file in WAL mode (`None`: in memory), check it is one of
    `kind`, create its tables. A damaged or foreign file raises `kind.corrupt` naming it; an empty one too,
    because SQLite would take it for a new database and a file that had data must not start over silently
    (moving it away is the operator's decision)."""
    target = ":memory:" if path is None else str(path)
    if path is not None and path.exists() and path.stat().st_size == 0 and not Path(f"{path}-wal").exists():
        raise kind.corrupt(
            f"{path} is empty (0 bytes): refusing to start over silently; move it away to reset"
        )
    conn: sqlite3.Connection | None = None
    try:
        # Autocommit (transactions are explicit); the app may be built on another thread than the one
        # that serves it.
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        # Damaged text must not raise from deep inside a query: it decodes to something that then fails
        # validation (ids, kinds) and is reported and skipped row by row.
        conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
        conn.execute("PRAGMA journal_mode=WAL")
        for pragma in kind.pragmas:
            conn.execute(pragma)
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(kind.schema)
        version = conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if version is None:
            conn.execute("INSERT INTO meta(key, value) VALUES('format', ?)", (kind.format_version,))
        elif version[0] != kind.format_version:
            known = kind.format_version
            raise kind.format_error(
                f"{target}: {kind.label} format {version[0]} is not supported (expected {known})"
            )
        # A full page scan at every open is cheap for a small file and too slow for a big backend store;
        # there, per-record CRCs and SQLite's own page checks on read still catch damage.
        if quick_check and path is not None and path.stat().st_size <= QUICK_CHECK_MAX_BYTES:
            check = conn.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise kind.corrupt(f"{path} failed SQLite's integrity check: {check}")
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        # (SQLite's own error text can carry damaged schema bytes that are not UTF-8.)
        if conn is not None:
            conn.close()
        raise kind.corrupt(f"{target} is not a readable {kind.label}: {exc}") from None
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn


def crc(*parts: bytes | str | int) -> int:
    value = 0
    for part in parts:
        if isinstance(part, str):
            chunk = part.encode()
        elif isinstance(part, int):
            chunk = str(part).encode()
        else:
            chunk = part
        value = zlib.crc32(chunk + b"\x00", value)
    return value


def pack_heads(heads: list[bytes]) -> bytes:
    return b"".join(sorted(heads))


def unpack_heads(blob: bytes) -> list[bytes]:
    if len(blob) % HASH_LEN:
        raise ValueError("heads blob is not a whole number of hashes")
    return [blob[i : i + HASH_LEN] for i in range(0, len(blob), HASH_LEN)]
