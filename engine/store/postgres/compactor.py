"""Background compaction for the PostgreSQL storage: merge a document's snapshot and change rows, as every
node wrote them, into one snapshot.

A node's own compaction (`put_snapshot`) only drops rows it knows its document holds, so with several
nodes rows and kept snapshots of other nodes accumulate. Here one document at a time, under the same
per-document advisory lock as `put_snapshot`: load the snapshot and every intact row into a private
Automerge document (on this thread only; it never leaves it), save it as the new snapshot, and delete
exactly the rows whose changes the saved document holds. A row whose dependencies are not in the database
yet (another node has not committed them) is not applied by Automerge, so it is kept; a damaged row stops
the document's compaction (recovery reports it on the next load).

`Compactor` runs `compact_pending` every `interval_s` on its own thread with its own connection.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from engine.crdt import CrdtDoc, CrdtError, new_actor_id, split_changes
from engine.store import db
from engine.store.postgres.conn import connect, record_key

log = logging.getLogger(__name__)

DEFAULT_MIN_ROWS = 64
DEFAULT_INTERVAL_S = 30.0
_BATCH = 100
_ACTOR_DEVICE = "compactor"


def compact_doc(url_or_conn: str | psycopg.Connection[Any], doc_id: str) -> bool:
    """Compact one document now; True if a new snapshot was written."""
    if isinstance(url_or_conn, str):
        with connect(url_or_conn) as conn:
            return _compact(conn, doc_id)
    return _compact(url_or_conn, doc_id)


def _compact(conn: psycopg.Connection[Any], doc_id: str) -> bool:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (doc_id,))
        snap = conn.execute(
            "SELECT hash, data, heads, crc FROM snapshots WHERE doc_id=%s", (doc_id,)
        ).fetchone()
        rows = conn.execute(
            "SELECT hash, data, heads, crc FROM changes WHERE doc_id=%s", (doc_id,)
        ).fetchall()
        parts = []
        for key, data, heads, check in ([snap] if snap else []) + rows:
            if check != db.crc(doc_id, bytes(key), bytes(heads), bytes(data)):
                log.warning("not compacting a document with a damaged row", extra={"doc_id": doc_id})
                return False
            parts.append(bytes(data))
        if not rows:
            return False
        try:
            doc = CrdtDoc.load(b"".join(parts), new_actor_id(_ACTOR_DEVICE))
            held = {change.hash for change in doc.changes_since([])}
            data = doc.save()
            heads = doc.heads()
        except CrdtError as exc:
            log.warning("not compacting an unreadable document", extra={"doc_id": doc_id, "error": str(exc)})
            return False
        covered = [bytes(key) for key, raw, _, _ in rows if _held(bytes(raw), held)]
        packed = db.pack_heads(heads)
        key = record_key(data)
        conn.execute(
            "INSERT INTO snapshots VALUES(%s, %s, %s, %s, %s) ON CONFLICT(doc_id) DO UPDATE SET "
            "hash=excluded.hash, data=excluded.data, heads=excluded.heads, crc=excluded.crc",
            (doc_id, key, data, packed, db.crc(doc_id, key, packed, data)),
        )
        conn.execute("DELETE FROM changes WHERE doc_id=%s AND hash = ANY(%s)", (doc_id, covered))
    return True


def _held(data: bytes, held: set[bytes]) -> bool:
    """Whether the saved document holds every change of this row (a saved-document row: it was loaded)."""
    chunks = split_changes(data)
    return chunks is None or all(change_hash in held for change_hash, _ in chunks)


def compact_pending(conn: psycopg.Connection[Any], min_rows: int = DEFAULT_MIN_ROWS) -> int:
    """Compact every document with at least `min_rows` change rows (up to a batch); returns how many."""
    with conn.transaction():
        docs = conn.execute(
            "SELECT doc_id FROM changes GROUP BY doc_id HAVING count(*) >= %s LIMIT %s", (min_rows, _BATCH)
        ).fetchall()
    return sum(_compact(conn, doc_id) for (doc_id,) in docs)


class Compactor:
    """`compact_pending` every `interval_s` on a daemon thread; `close()` stops it."""

    def __init__(
        self, url: str, *, interval_s: float = DEFAULT_INTERVAL_S, min_rows: int = DEFAULT_MIN_ROWS
    ) -> None:
        self.url = url
        self.interval_s = interval_s
        self.min_rows = min_rows
        self.compacted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ridesync-pg-compactor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with connect(self.url) as conn:
                    self.compacted += compact_pending(conn, self.min_rows)
            except Exception as exc:  # the database is away: try again next round
                log.warning("background compaction failed", extra={"error": str(exc)})

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
