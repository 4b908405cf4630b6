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

from engine.store import db
from engine.store.db import StoreError

log = logging.getLogger(__name__)

Job = Callable[[sqlite3.Cursor], object]
# Called on the writer thread after each group commits: (jobs, seconds for the whole group, seconds of the
# COMMIT alone, i.e. the fsync). Keep it cheap and thread-safe (Prometheus metrics are).
GroupObserver = Callable[[int, float, float], None]
DEFAULT_MAX_GROUP = 2000
FULL_RETRY_S = 1.0


class WriterFailed(StoreError):
    """The write-behind thread stopped on an error; nothing queued after the last commit is on disk."""


class StoreWriter:
    def __init__(
        self, data_dir: Path, *, max_group: int = DEFAULT_MAX_GROUP, on_group: GroupObserver | None = None
    ) -> None:
        self.max_group = max_group
        self.on_group = on_group
        self._conn = db.connect(Path(data_dir), quick_check=False)
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
        self._conn.close()

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
        while True:
            cur = self._conn.cursor()
            started = time.perf_counter()
            try:
                cur.execute("BEGIN IMMEDIATE")
                for _, job in batch:
                    job(cur)
                committing = time.perf_counter()
                cur.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback(cur)
                if "full" in str(exc).lower():
                    # Acknowledgements wait; nothing queued is dropped. Loud, repeated until space returns.
                    log.critical("storage full; store writes wait", extra={"error": str(exc)})
                    time.sleep(FULL_RETRY_S)
                    continue
                self._fail(exc)
                return False
            except BaseException as exc:
                self._rollback(cur)
                self._fail(exc)
                return False
            break
        done = time.perf_counter()
        self.groups += 1
        self._committed(batch[-1][0])
        if self.on_group is not None:
            try:
                self.on_group(len(batch), done - started, done - committing)
            except Exception:
                log.exception("store writer: group observer failed")
        return True

    def _rollback(self, cur: sqlite3.Cursor) -> None:
        try:
            if self._conn.in_transaction:
                cur.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("store writer: rollback failed")

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


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
