"""`ridesync bench commits`: how many acknowledged writes per second the storage port sustains, on
SQLite (the embedded baseline) and on PostgreSQL with 1 and with N nodes, in one run.

The write path of an acknowledged sync message: `C` connections per node each write one job (one Automerge
change record of `--record-bytes`, as a new row, plus the peer's acknowledged heads) and await `flushed()`
before the next, as the backend does before answering; the write-behind commits them in groups. Each node
is its own storage with its own connections (`--nodes` storages in this process, as `--nodes` backend
processes would hold). Reported per configuration: acknowledged writes per second, ack latency p50/p99,
commits (groups) per second, jobs per commit, and this process's CPU per acknowledged write (client side;
the PostgreSQL server's CPU is not included, the machine's load average is reported beside).

Without `--store`, PostgreSQL is a throwaway cluster from Debian's `postgresql` binaries with fsync on
(engine/testing/postgres.py), so a commit waits for the disk as SQLite's does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.store.port import StoragePort, StorageTx

NAME = "commits"
HELP = "acknowledged writes per second: SQLite beside PostgreSQL with 1 and N nodes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per configuration")
    parser.add_argument("--connections", type=int, default=50, help="concurrent writers per node")
    parser.add_argument("--nodes", type=int, default=3, help="PostgreSQL nodes in the multi-node run")
    parser.add_argument("--record-bytes", type=int, default=400, help="bytes of one change record")
    parser.add_argument(
        "--store", default=None, metavar="URL", help="postgresql://... (default: a throwaway local cluster)"
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _drive(storages: list[StoragePort], connections: int, seconds: float, size: int) -> dict[str, Any]:
    latencies: list[float] = []
    groups = [0]

    def job(doc: str, n: int) -> Callable[[StorageTx], None]:
        # Distinct bytes per record: each is a new row, as a new change is.
        data = n.to_bytes(8, "big") + os.urandom(max(0, size - 8))
        heads = [os.urandom(32)]

        def write(tx: StorageTx) -> None:
            tx.append_change(doc, data, heads)
            tx.set_peer_heads(doc, "bike", heads, 0.0)

        return write

    async def connection(storage: StoragePort, name: str, stop: float) -> None:
        n = 0
        while time.perf_counter() < stop:
            started = time.perf_counter()
            storage.write(job(name, n))
            await storage.flushed()
            latencies.append(time.perf_counter() - started)
            n += 1

    cpu = _cpu()
    started = time.perf_counter()
    stop = started + seconds
    async with asyncio.TaskGroup() as tasks:
        for i, storage in enumerate(storages):
            for c in range(connections):
                tasks.create_task(connection(storage, f"doc-{i}-{c}", stop))
    elapsed = time.perf_counter() - started
    cpu = _cpu() - cpu
    groups[0] = sum(getattr(getattr(s, "writer", None), "groups", 0) for s in storages)
    acks = len(latencies)
    return {
        "nodes": len(storages),
        "connections": connections * len(storages),
        "acks": acks,
        "acks_per_s": round(acks / elapsed, 1),
        "ack_ms_p50": round(_percentile(latencies, 0.50) * 1000, 2),
        "ack_ms_p99": round(_percentile(latencies, 0.99) * 1000, 2),
        "commits_per_s": round(groups[0] / elapsed, 1),
        "jobs_per_commit": round(acks / groups[0], 1) if groups[0] else None,
        "client_cpu_us_per_ack": round(cpu / acks * 1e6, 1) if acks else None,
    }


def _measure(open_: Callable[[int], StoragePort], nodes: int, args: argparse.Namespace) -> dict[str, Any]:
    storages = [open_(i) for i in range(nodes)]
    try:
        for storage in storages:
            storage.start_write_behind(2000, None)
        return asyncio.run(_drive(storages, args.connections, args.seconds, args.record_bytes))
    finally:
        for storage in storages:
            storage.close()


@contextlib.contextmanager
def _postgres(url: str | None) -> Iterator[tuple[str, str]]:
    if url is not None:
        yield url, "given"
        return
    from engine.testing.postgres import PostgresCluster

    with PostgresCluster(durable=True) as cluster:
        yield cluster.database("bench"), f"throwaway cluster ({cluster.bindir.parent.name}), fsync on"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from engine.store.sqlite import SqliteStorage

    result: dict[str, Any] = {"load_avg_before": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="ridesync-bench-commits-") as name:
        result["sqlite_1_node"] = _measure(lambda i: SqliteStorage(Path(name) / f"n{i}"), 1, args)
    try:
        from engine.store.postgres import PostgresStorage
        from engine.testing.postgres import PostgresUnavailable
    except ImportError:
        result["postgresql"] = "skipped: psycopg is not installed (the `postgres` extra)"
        return result
    try:
        with _postgres(args.store) as (url, where):
            result["postgresql"] = where

            def open_(i: int) -> StoragePort:
                return PostgresStorage(url, compact_interval_s=None)

            result["postgresql_1_node"] = _measure(open_, 1, args)
            result[f"postgresql_{args.nodes}_nodes"] = _measure(open_, args.nodes, args)
    except PostgresUnavailable as exc:
        result["postgresql"] = f"skipped: {exc}"
    result["load_avg_after"] = os.getloadavg()
    return result
