"""`ridesync bench sync --nodes N [--store postgresql://…]`: the durable lane over several backend nodes.

The same 500-bike fleet as `bench sync` (engine/bench/sync.py, `fleet_worker`: each bike appends a
sample a second, folds every 10 s, and times fold → acknowledgement) against three configurations in one
run, each on fresh storage: **SQLite on 1 node** (the embedded default, the baseline), **PostgreSQL on 1
node**, and **PostgreSQL on N nodes** (default 3) linked by the ride push over a throwaway redis-server
(engine/backend/redis_push.py), bikes spread round-robin over the nodes. Without `--store` a throwaway
PostgreSQL cluster (engine/testing/postgres.py, durable: fsync on) is started and each configuration gets
its own database; with `--store URL` the given database is used and every configuration's ride ids are
its own.

Per configuration: ack p50/p99; the commits per second the database sustained (the nodes' group commits,
from their `ridesync_store_commit_seconds` counts; for PostgreSQL also `pg_stat_database.xact_commit`,
which adds the ledger's and the claims' transactions); CPU seconds per acknowledged change (the nodes',
and the database server's processes' for PostgreSQL); and, with more than one node, the **cross-node push
latency**: probe rides whose bike syncs on one node, with one app on that node (the witness) and one on
the next node. For each change the bike pushes, `push_ms` is the remote app's receipt minus the witness's
(what crossing nodes adds: commit, announcement, the remote node's read from storage and its sync), and
`end_to_end_ms` the bike's push → the remote app's receipt.

`push_transport` compares the two transports on their own, idle, before the fleets: one announcement at a
time, publish → the other connection hears it, over Redis pub/sub (RedisPush) and over PostgreSQL
LISTEN/NOTIFY (pg_notify in an autocommit transaction).
Everything runs on loopback on this machine, sharing its cores: the load averages are part of the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.bench._servers import Server, cpu_of, rss_of
from engine.bench._servers import ms as _ms
from engine.bench.sync import _pct, server_histograms, start_fleet_child
from engine.metrics_scrape import scrape

PROBE_RIDES = 6
PROBE_INTERVAL_S = 0.25

# ---- nodes ---------------------------------------------------------------------------------------------


def start_node(data: Path, store: str | None, push: str | None) -> Server:
    argv = [sys.executable, "-m", "engine.cli.main", "serve", "--port", "0", "--data", str(data)]
    if store is not None:
        argv += ["--store", store]
    if push is not None:
        argv += ["--push", push]
    return Server([*argv, "--log-level", "WARNING"], data.parent / f"{data.name}.log")


def start_nodes(root: Path, count: int, store: str | None, push: str | None) -> list[Server]:
    """`count` nodes sharing one signing key file (tokens are valid on every node)."""
    from engine.auth.tokens import KeyRing

    dirs = [root / f"node{i}" for i in range(count)]
    KeyRing.load_or_create(dirs[0])
    for d in dirs[1:]:
        d.mkdir(parents=True, exist_ok=True)
        for key_file in dirs[0].glob("token-keys.json"):
            shutil.copy2(key_file, d / key_file.name)
    nodes: list[Server] = []
    try:
        for d in dirs:
            nodes.append(start_node(d, store, push))
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def _commit_count(url: str) -> int:
    return int(server_histograms(url)["fsync_count"])


def _sync_bytes(url: str) -> int:
    """WebSocket sync bytes both ways (before compression), from the node's `ridesync_sync_bytes`."""
    return int(scrape(url).total("ridesync_sync_bytes_total"))


def _pg_commits(url: str) -> int | None:
    try:
        import psycopg
    except ImportError:
        return None
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return None if row is None else int(row[0])


def _pg_cpu(cluster: Any) -> float | None:
    """CPU seconds of every process of the throwaway cluster (postmaster and its backends)."""
    if cluster is None:
        return None
    try:
        pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if int(entry) == pid or int(fields[1]) == pid:
                total += cpu_of(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return total


# ---- the cross-node push probe -------------------------------------------------------------------------


async def push_probe(
    urls: list[str], tokens: list[tuple[str, str, str, str]], root: Path, seconds: float
) -> dict[str, Any]:
    """Probe rides (bike on node i, witness app on node i, remote app on node i+1); see the module doc."""
    from engine.bench.ridegen import RideSignal
    from engine.campaign.sync_client import SyncClient
    from engine.ride.schema import Role
    from engine.store import ReplicaStore

    push_lat: list[float] = []
    e2e: list[float] = []
    timeouts = 0
    stop_at = time.monotonic() + seconds

    async def probe(i: int, bike_tok: str, witness_tok: str, remote_tok: str, bike_dev: str) -> None:
        nonlocal timeouts

        signal = RideSignal(seed=i)
        ride = f"probe-{bike_dev}"
        home, away = urls[i % len(urls)], urls[(i + 1) % len(urls)]
        bike = ReplicaStore(root / f"probe-{i}-bike", device_id=bike_dev, role=Role.BIKE)
        witness = ReplicaStore(root / f"probe-{i}-w", device_id=f"{bike_dev}-w", role=Role.APP)
        remote = ReplicaStore(root / f"probe-{i}-r", device_id=f"{bike_dev}-r", role=Role.APP)
        try:
            bike.start_ride(ride)
            bike.append_samples(ride, [signal.sample(0)])
            bike.fold(ride)
            async with SyncClient(home, bike_tok, bike, ride, peer_id=f"p-{bike_dev}") as bc:
                await bc.open_ride()
                await asyncio.sleep(0.5)  # the bike's first sync starts the ride on its node
                witness.start_ride(ride)
                remote.start_ride(ride)
                async with (
                    SyncClient(home, witness_tok, witness, ride, peer_id=f"w-{bike_dev}") as wc,
                    SyncClient(away, remote_tok, remote, ride, peer_id=f"r-{bike_dev}") as rc,
                ):
                    await wc.open_ride()
                    await rc.open_ride()

                    def has(store: ReplicaStore, n: int) -> bool:
                        return store.view(ride).samples.get(bike_dev, 0) >= n

                    async def seen(client: SyncClient, store: ReplicaStore, n: int) -> float:
                        await client.wait_for(lambda: has(store, n))
                        return time.monotonic()

                    async with asyncio.timeout(30):
                        await wc.wait_for(lambda: has(witness, 1))
                        await rc.wait_for(lambda: has(remote, 1))
                    seq = 1
                    while time.monotonic() < stop_at:
                        bike.append_samples(ride, [signal.sample(seq)])
                        bike.fold(ride)
                        seq += 1
                        t0 = time.monotonic()
                        await bc.push()
                        try:
                            async with asyncio.timeout(10):
                                tw, tr = await asyncio.gather(seen(wc, witness, seq), seen(rc, remote, seq))
                        except TimeoutError:
                            timeouts += 1
                            continue
                        push_lat.append(tr - tw)
                        e2e.append(tr - t0)
                        await asyncio.sleep(max(0.0, t0 + PROBE_INTERVAL_S - time.monotonic()))
        finally:
            for store in (bike, witness, remote):
                store.close()

    async with asyncio.TaskGroup() as tg:
        for i, (bike_dev, bike_tok, witness_tok, remote_tok) in enumerate(tokens):
            tg.create_task(probe(i, bike_tok, witness_tok, remote_tok, bike_dev))
    return {
        "probe_rides": len(tokens),
        "changes_measured": len(push_lat),
        "timeouts": timeouts,
        "push_p50_ms": _ms(_pct(push_lat, 0.5) or 0.0),
        "push_p99_ms": _ms(_pct(push_lat, 0.99) or 0.0),
        "push_max_ms": _ms(max(push_lat, default=0.0)),
        "end_to_end_p50_ms": _ms(_pct(e2e, 0.5) or 0.0),
        "end_to_end_p99_ms": _ms(_pct(e2e, 0.99) or 0.0),
    }


# ---- the push transports on their own ------------------------------------------------------------------


async def _redis_transport(url: str, count: int) -> list[float]:
    from engine.backend.redis_push import RedisPush

    sender, receiver = RedisPush(url, origin="bench-a"), RedisPush(url, origin="bench-b")
    heard: asyncio.Queue[float] = asyncio.Queue()

    def on_heard(origin: str, rides: Sequence[str]) -> None:
        if rides:  # an empty list is the receiver's catch-up call after subscribing, not an announcement
            heard.put_nowait(time.monotonic())

    tasks = [
        asyncio.create_task(sender.run(lambda o, r: None)),
        asyncio.create_task(receiver.run(on_heard)),
    ]
    out = []
    try:
        await sender.ready()
        await receiver.ready()
        for i in range(count):
            t0 = time.monotonic()
            sender.publish([f"ride-{i}"])
            async with asyncio.timeout(5):
                heard_at = await heard.get()
            out.append(heard_at - t0)
            await asyncio.sleep(0.002)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return out


async def _pg_transport(url: str, count: int) -> list[float]:
    import psycopg

    listener = await psycopg.AsyncConnection.connect(url, autocommit=True)
    sender = await psycopg.AsyncConnection.connect(url, autocommit=True)
    out = []
    try:
        await listener.execute("LISTEN ridesync_rides")
        notifies = listener.notifies()
        for i in range(count):
            t0 = time.monotonic()
            await sender.execute("SELECT pg_notify('ridesync_rides', %s)", (f"RSP1 bench-a\nride-{i}",))
            async with asyncio.timeout(5):
                await anext(notifies)
            out.append(time.monotonic() - t0)
            await asyncio.sleep(0.002)
    finally:
        await listener.close()
        await sender.close()
    return out


def push_transport(redis_url: str, pg_url: str | None, count: int = 500) -> dict[str, Any]:
    out: dict[str, Any] = {"announcements": count}
    for name, run in (("redis_pubsub", _redis_transport), ("pg_listen_notify", _pg_transport)):
        url = redis_url if name == "redis_pubsub" else pg_url
        if url is None:
            out[name] = None
            continue
        lat = asyncio.run(run(url, count))
        out[name] = {
            "p50_ms": _ms(_pct(lat, 0.5) or 0.0),
            "p99_ms": _ms(_pct(lat, 0.99) or 0.0),
            "max_ms": _ms(max(lat, default=0.0)),
        }
    return out


# ---- one configuration ---------------------------------------------------------------------------------


def run_config(
    label: str,
    *,
    nodes_n: int,
    store: str | None,
    redis_url: str | None,
    cluster: Any,
    tmp: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    from engine.auth.tokens import KeyRing

    root = tmp / label
    root.mkdir(parents=True)
    nodes = start_nodes(root, nodes_n, store, redis_url if nodes_n > 1 else None)
    try:
        ring = KeyRing.load_or_create(root / "node0")
        prefix = f"{label}-"
        bikes = [(f"{prefix}{i:04d}", ring.issue("bike", f"{prefix}{i:04d}")) for i in range(args.bikes)]
        probes = []
        if nodes_n > 1:
            for i in range(PROBE_RIDES):
                dev, rider = f"{prefix}probe-{i}", f"{prefix}rider-{i}"
                probes.append(
                    (
                        dev,
                        ring.issue("bike", dev, rider=rider),
                        ring.issue("app", f"{dev}-w", rider=rider),
                        ring.issue("app", f"{dev}-r", rider=rider),
                    )
                )
        return _measure(nodes, bikes, probes, root=root, store=store, cluster=cluster, args=args)
    finally:
        for node in nodes:
            node.stop()


def _measure(
    nodes: list[Server],
    bikes: list[tuple[str, str]],
    probes: list[tuple[str, str, str, str]],
    *,
    root: Path,
    store: str | None,
    cluster: Any,
    args: argparse.Namespace,
) -> dict[str, Any]:
    seconds = args.fleet_seconds
    warmup = min(args.warmup, seconds / 2)
    # Processes are a multiple of the nodes, each process's bikes on one node: round-robin over nodes.
    per_node = max(1, args.processes // len(nodes))
    shares = [bikes[i :: per_node * len(nodes)] for i in range(per_node * len(nodes))]
    shm = Path("/dev/shm")
    bikes_root = Path(tempfile.mkdtemp(prefix="ridesync-nodes-", dir=shm if shm.is_dir() else root))
    start_at = time.time() + 3.0 + len(bikes) * 0.01
    load_before = os.getloadavg()
    cpu_before = sum(cpu_of(n.proc.pid) for n in nodes)
    rss_before = sum(rss_of(n.proc.pid) for n in nodes)
    commits_before = sum(_commit_count(n.url) for n in nodes)
    bytes_before = sum(_sync_bytes(n.url) for n in nodes)
    pg_before = _pg_commits(store) if store is not None else None
    pg_cpu_before = _pg_cpu(cluster) if store is not None else None
    procs = []
    for n, share in enumerate(shares):
        spec = {
            "mode": "sync",
            "url": nodes[n % len(nodes)].url,
            "seconds": seconds,
            "warmup": warmup,
            "join_s": warmup * 0.8,
            "start_at": start_at,
            "dir": str(bikes_root / f"p{n}"),
            "bikes": share,
        }
        procs.append(start_fleet_child(spec))
    time.sleep(max(0.0, start_at - time.time()) + warmup)
    measured_from = time.monotonic()
    probe: dict[str, Any] | None = None
    if probes:
        probe = asyncio.run(
            push_probe([n.url for n in nodes], probes, bikes_root / "probes", seconds - warmup - 2.0)
        )
    rss_during = sum(rss_of(n.proc.pid) for n in nodes)
    load_during = os.getloadavg()
    results = []
    for proc in procs:
        assert proc.stdout is not None
        text = proc.stdout.read()
        proc.wait()
        try:
            results.append(json.loads(text.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            results.append({"latencies": [], "folds": 0, "acks": 0, "errors": 1})
    elapsed = time.monotonic() - measured_from + warmup
    node_cpu = sum(cpu_of(n.proc.pid) for n in nodes) - cpu_before
    commits = sum(_commit_count(n.url) for n in nodes) - commits_before
    sync_bytes = sum(_sync_bytes(n.url) for n in nodes) - bytes_before
    shutil.rmtree(bikes_root, ignore_errors=True)
    lat = [x for r in results for x in r["latencies"]]
    acks = sum(r["acks"] for r in results)
    out: dict[str, Any] = {
        "nodes": len(nodes),
        "store": "postgresql" if store is not None else "sqlite",
        "bikes": len(bikes),
        "seconds": seconds,
        "warmup_s": warmup,
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_during": round(load_during[0], 2),
        "folds": sum(r["folds"] for r in results),
        "acks": acks,
        "errors": sum(r["errors"] for r in results),
        "measured": len(lat),
        "ack_p50_ms": _ms(_pct(lat, 0.5) or 0.0),
        "ack_p99_ms": _ms(_pct(lat, 0.99) or 0.0),
        "ack_max_ms": _ms(max(lat, default=0.0)),
        "group_commits_per_s": round(commits / elapsed, 1),
        "nodes_cpu_s": round(node_cpu, 2),
        "nodes_cpu_ms_per_ack": round(node_cpu * 1000 / max(acks, 1), 3),
        "sync_bytes_per_ack": sync_bytes // max(acks, 1),
        "nodes_rss_bytes_per_open_ride": (rss_during - rss_before) // max(len(bikes), 1),
        "cross_node_push": probe,
    }
    if store is not None:
        pg_after = _pg_commits(store)
        if pg_before is not None and pg_after is not None:
            out["pg_xact_commits_per_s"] = round((pg_after - pg_before) / elapsed, 1)
        pg_cpu_after = _pg_cpu(cluster)
        if pg_cpu_before is not None and pg_cpu_after is not None:
            out["db_cpu_s"] = round(pg_cpu_after - pg_cpu_before, 2)
            out["db_cpu_ms_per_ack"] = round((pg_cpu_after - pg_cpu_before) * 1000 / max(acks, 1), 3)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from engine.bench.redis_server import RedisServer

    tmp = Path(tempfile.mkdtemp(prefix="ridesync-bench-nodes-"))
    cluster = None
    redis = None
    try:
        redis = RedisServer(tmp)
        redis.start()
        if args.store is None:
            from engine.testing.postgres import PostgresCluster

            cluster = PostgresCluster().start()

        def database() -> str:
            return args.store if cluster is None else cluster.database()

        result: dict[str, Any] = {
            "load_before": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
            "postgresql": "throwaway cluster (fsync on)" if cluster is not None else "given by --store",
            "push_transport": push_transport(redis.url, database()),
        }
        configs = (
            ("sqlite-1", 1, None),
            ("pg-1", 1, database()),
            (f"pg-{args.nodes}", args.nodes, database()),
        )
        for label, n, store in configs:
            try:
                result[label] = run_config(
                    label, nodes_n=n, store=store, redis_url=redis.url, cluster=cluster, tmp=tmp, args=args
                )
            except RuntimeError as exc:
                result[label] = {"error": str(exc)}
        return result
    finally:
        if redis is not None:
            redis.stop()
        if cluster is not None:
            cluster.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
