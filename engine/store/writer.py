"""A store's write-behind: one thread that commits the store's writes in groups (group commit).

Why: a commit with synchronous=FULL waits for fsync. A backend that commits on its event loop stalls
every connection (and `/healthz`) for each commit, and 500 bikes joining at once queue thousands of them.
Here the event loop only queues SQL jobs (plain closures over bytes: no Automerge object ever crosses
threads, docs/architecture.md#automerge-hazards) and goes on; the writer thread runs everything queued so far
in one transaction, so one
fsync covers many connections' writes, and the next group gathers while it waits.

The durability contract stays: jobs commit in the order they were queued (the file always holds a prefix
of the writes), and `flushed()` returns only once everything queued before the call is committed. The
owner must not acknowledge anything (a sync reply whose heads include new changes, an HTTP answer) before
awaiting it; then a SIGKILL at any moment loses nothing acknowledged.

A full disk is waited out (the group is retried every second, acknowledgements wait, nothing is lost).
Any other failure stops the writer: every waiter and every later write gets `StoreError`.

The database is behind a `GroupSession`: `SqliteSession` here (its own connection to the replica's file),
`PostgresSession` in engine/store/postgres/storage.py (which retries a dropped connection for a while
before it gives up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from engine.store import db
from engine.store.db import StorageFull, StoreError

log = logging.getLogger(__name__)

# A job gets the session's handle: a sqlite3.Cursor for SQLite, a transaction object for PostgreSQL.
Job = Callable[[Any], object]
# Called on the writer thread after each group commits: (jobs, seconds for the whole group, seconds of the
# COMMIT alone, i.e. the fsync). Keep it cheap and thread-safe (Prometheus metrics are).
GroupObserver = Callable[[int, float, float], None]
DEFAULT_MAX_GROUP = 2000
FULL_RETRY_S = 1.0


class WriterFailed(StoreError):
    """The write-behind thread stopped on an error; nothing queued after the last commit is on disk."""


class StoreWriter:
    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        max_group: int = DEFAULT_MAX_GROUP,
        on_group: GroupObserver | None = None,
        session: GroupSession | None = None,
    ) -> None:
        self.max_group = max_group
        self.on_group = on_group
        if session is None:
            if data_dir is None:
                raise ValueError("a StoreWriter needs a data dir (SQLite) or a session")
            session = SqliteSession(Path(data_dir))
        self._session = session
        self._queue: queue.SimpleQueue[tuple[int, Job] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._committed_cond = threading.Condition(self._lock)
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.queued = 0  # sequence number of the last queued job (event-loop side)
        self.committed = 0  # sequence number of the last committed job
        self.groups = 0
        self.failure: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ridesync-store-writer", daemon=True)
        self._thread.start()

    # -- owner side ------------------------------------------------------------------------------------

    def submit(self, job: Job) -> int:
        with self._lock:
            if self.failure is not None:
                raise WriterFailed(f"the store's writer stopped: {self.failure}")
            if self._closed:
                raise WriterFailed("the store's writer is closed")
            self.queued += 1
            seq = self.queued
        self._queue.put((seq, job))
        return seq

    @property
    def pending(self) -> int:
        return self.queued - self.committed

    async def flushed(self) -> None:
        """Return once every job queued before this call is committed; WriterFailed if it never will be."""
        with self._lock:
            target = self.queued
            if self.failure is not None:
                raise WriterFailed(f"the store's writer stopped: {self.failure}")
            if self.committed >= target:
                return
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((target, loop, future))
        await future

    def flush(self, timeout: float | None = None) -> None:
        """Blocking `flushed` (for shutdown, reload and synchronous callers)."""
        with self._lock:
            target = self.queued
            ok = self._committed_cond.wait_for(
                lambda: self.committed >= target or self.failure is not None, timeout
            )
            if self.failure is not None:
                raise WriterFailed(f"the store's writer stopped: {self.failure}")
            if not ok:
                raise StoreError(f"the store's writer did not commit within {timeout} s")

    def close(self) -> None:
        """Commit everything queued, then stop the thread and close its connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._session.close()

    # -- writer thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            batch: list[tuple[int, Job]] = []
            if item is None:
                stop = True
            else:
                batch.append(item)
            while not stop and len(batch) < self.max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch.append(more)
            if batch and not self._commit(batch):
                return

    def _commit(self, batch: list[tuple[int, Job]]) -> bool:
        jobs = [job for _, job in batch]
        while True:
            started = time.perf_counter()
            try:
                commit_s = self._session.commit_group(jobs)
            except StorageFull as exc:
                # Acknowledgements wait; nothing queued is dropped. Loud, repeated until space returns.
                log.critical("storage full; store writes wait", extra={"error": str(exc)})
                time.sleep(FULL_RETRY_S)
                continue
            except BaseException as exc:
                self._fail(exc)
                return False
            break
        group_s = time.perf_counter() - started
        self.groups += 1
        self._committed(batch[-1][0])
        if self.on_group is not None:
            try:
                self.on_group(len(batch), group_s, commit_s)
            except Exception:
                log.exception("store writer: group observer failed")
        return True

    def _committed(self, seq: int) -> None:
        with self._lock:
            self.committed = seq
            ready = [w for w in self._waiters if w[0] <= seq]
            self._waiters = [w for w in self._waiters if w[0] > seq]
            self._committed_cond.notify_all()
        for _, loop, future in ready:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, future, None)

    def _fail(self, exc: BaseException) -> None:
        log.critical("store writer stopped; writes are no longer committed", extra={"error": repr(exc)})
        with self._lock:
            self.failure = exc
            waiters, self._waiters = self._waiters, []
            self._committed_cond.notify_all()
        error = WriterFailed(f"the store's writer stopped: {exc}")
        for _, loop, future in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future, error)


class GroupSession(Protocol):
    """The writer thread's own connection to one database: runs a group of jobs in one transaction."""

    def commit_group(self, jobs: list[Job]) -> float:
        """Run every job, then commit; returns the seconds the COMMIT took. Everything is rolled back on
        an error: `StorageFull` (the group is retried later), anything else stops the writer."""

    def close(self) -> None: ...


class SqliteSession:
    """The SQLite writer connection: jobs get a cursor inside BEGIN IMMEDIATE ... COMMIT."""

    def __init__(self, data_dir: Path) -> None:
        self._conn = db.connect(data_dir, quick_check=False)

    def commit_group(self, jobs: list[Job]) -> float:
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            for job in jobs:
                job(cur)
            committing = time.perf_counter()
            cur.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback(cur)
            if "full" in str(exc).lower():
                raise StorageFull(str(exc)) from exc
            raise
        except BaseException:
            self._rollback(cur)
            raise
        return time.perf_counter() - committing

    def _rollback(self, cur: sqlite3.Cursor) -> None:
        try:
            if self._conn.in_transaction:
                cur.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("store writer: rollback failed")

    def close(self) -> None:
        self._conn.close()


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
