"""`ridesync bench store`: the durable store next to its naive alternatives, in one run.

Packed samples in batch blobs + a durable raw log (what ridesync does) against a list of maps (one Automerge
map per sample) and "save the whole document after every sample". Every figure sits next to its baseline:
sample batch schema 2 (columns, engine/ride/compact.py) next to schema 1 (records), folds every 10 s (a
live link) next to hourly folds (offline), on engine/bench/ridegen.py's rides; and the saved hour against
the information its samples carry, on that ride and on one from the simulated bike's physics
(`information_bound`, engine/bench/store_bound.py); and one live hour as the backend holds it, 10 s folds
into the bike document next to rolling live segments (`live_segments`, engine/bench/store_segments.py).
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.bench.ridegen import bench_store_sample as sample
from engine.bench.store_bound import bench_information_bound
from engine.bench.store_rss import LAYOUTS, bench_backend_rss, bench_rss
from engine.bench.store_segments import bench_live_segments
from engine.crdt import CrdtDoc, SyncSession, new_actor_id
from engine.ride import documents, policy
from engine.ride.model import BackendDoc, DeviceDoc, RideDocs
from engine.ride.samples import Sample
from engine.ride.schema import DocKind, DocRef, Role
from engine.store import ReplicaStore, SyncState
from engine.store.replica import DEFAULT_FOLD_INTERVAL_S

NAME = "store"
HELP = "append/commit cost, snapshot and load time, size per hour, bytes to sync, RSS per ride"
T0 = 1_764_000_000.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hours", type=float, default=1.0, help="ride length for size and load figures")
    parser.add_argument("--appends", type=int, default=300, help="durable appends timed per variant")
    parser.add_argument(
        "--naive-samples",
        type=int,
        default=3600,
        help="ride length (samples) at which save-after-every-sample is timed",
    )
    parser.add_argument("--rides", type=int, default=50, help="open rides for the RSS figure")


def as_map(s: Sample) -> dict[str, Any]:
    return {
        "seq": s.seq,
        "t": s.t,
        "hr": s.hr,
        "rr": s.rr[0] if s.rr else None,
        "contact": s.contact,
        "cadence": s.cadence,
        "power_dw": s.power_dw,
        "resistance": s.resistance,
        "stale": s.stale,
        "gap": s.gap,
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_per_ride(open_ride: Callable[[str], None], rides: int) -> int:
    """Resident bytes each ride opened by `open_ride` adds, in the calling (fresh) interpreter: one warm-up
    ride first, so that imports, allocator pools and SQLite caches are not counted, then `rides` more."""
    open_ride("warm-up")
    gc.collect()
    before = rss_bytes()
    for i in range(rides):
        open_ride(f"r{i}")
    gc.collect()
    return (rss_bytes() - before) // rides


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 1)


def bench_append(tmp: Path, count: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, group in (("per_sample_fsync", 1), ("grouped_10", 10)):
        store = ReplicaStore(tmp / f"append-{label}", device_id="bike-b", role=Role.BIKE, fold_interval_s=1e9)
        store.start_ride("r")
        t0 = time.perf_counter()
        for base in range(0, count, group):
            store.append_samples("r", [sample(i) for i in range(base, min(count, base + group))])
        out[f"{label}_us_per_sample"] = _us((time.perf_counter() - t0) / count)
        store.close()
    # Naive: add the sample as a map and save the whole document durably, every sample.
    conn = sqlite3.connect(tmp / "naive.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS doc(id INTEGER PRIMARY KEY, data BLOB)")
    doc = CrdtDoc.new(new_actor_id("naive"))
    t0 = time.perf_counter()
    n = min(count, 300)
    for i in range(n):
        doc.append_maps("samples", [as_map(sample(i))])
        conn.execute("INSERT OR REPLACE INTO doc VALUES(1, ?)", (doc.save(),))
    out["naive_save_every_sample_us_per_sample_first_300"] = _us((time.perf_counter() - t0) / n)
    conn.close()
    out["ratio_naive_vs_per_sample_fsync"] = round(
        out["naive_save_every_sample_us_per_sample_first_300"] / out["per_sample_fsync_us_per_sample"], 2
    )
    return out


def bench_doc_append(samples: int = 1800) -> dict[str, Any]:
    """CPU per sample of writing into the document, per layout (no I/O)."""
    out: dict[str, Any] = {}
    for label, (batch_schema, interval) in LAYOUTS.items():
        t0 = time.process_time()
        build_packed(samples, interval, batch_schema)
        out[f"{label}_us_per_sample"] = _us((time.process_time() - t0) / samples)
    t0 = time.process_time()
    build_maps(samples, DEFAULT_FOLD_INTERVAL_S)
    out["list_of_maps_10s_us_per_sample"] = _us((time.process_time() - t0) / samples)
    out["ratio_schema2_10s_vs_schema1_10s"] = round(
        out["schema2_10s_us_per_sample"] / max(out["schema1_10s_us_per_sample"], 1e-9), 2
    )
    return out


def bench_codec() -> dict[str, Any]:
    """Batch blob bytes per sample and CPU per sample to encode and decode, schema 1 vs 2, for a 10 s batch
    and an hour's key, on realistic samples, on independent uniform noise (which no sensor produces; delta
    coding cannot shrink it, the codec's worst case here) and on the periodic pattern earlier runs of this
    benchmark used (its best case)."""
    from engine.bench.ridegen import periodic, ride, uniform_noise
    from engine.ride.batches import decode_batch, encode_batch

    out: dict[str, Any] = {}
    sources = {
        "realistic": ride(3600, "codec"),
        "uniform_noise": uniform_noise(3600, "codec"),
        "periodic_previous_bench": periodic(3600),
    }
    for source, hour in sources.items():
        for size in (10, 3600):
            batches = [hour[i : i + size] for i in range(0, 3600, size)]
            row: dict[str, Any] = {}
            for batch_schema in (1, 2):
                t0 = time.process_time()
                blobs = [encode_batch(b, batch_schema) for b in batches]
                encode_s = time.process_time() - t0
                t0 = time.process_time()
                for blob in blobs:
                    decode_batch(blob)
                decode_s = time.process_time() - t0
                row[f"schema{batch_schema}_bytes_per_hour"] = sum(map(len, blobs))
                row[f"schema{batch_schema}_bytes_per_sample"] = round(sum(map(len, blobs)) / 3600, 2)
                row[f"schema{batch_schema}_encode_us_per_sample"] = _us(encode_s / 3600)
                row[f"schema{batch_schema}_decode_us_per_sample"] = _us(decode_s / 3600)
            row["ratio_bytes_schema2_vs_schema1"] = round(
                row["schema2_bytes_per_hour"] / row["schema1_bytes_per_hour"], 3
            )
            out[f"{source}_batch_{size}"] = row
    return out


def bench_offline_interval(minutes: tuple[int, ...] = (30, 240)) -> dict[str, Any]:
    """The offline fold interval's knee: bytes of Automerge changes (and deflated, as the wire carries
    them) a backlog of `minutes` costs to reconcile, by interval, in schema 2; schema 1 at 10 s beside."""
    out: dict[str, Any] = {}
    for span in minutes:
        samples = span * 60
        rows = []
        for batch_schema, interval in [(1, 10)] + [(2, i) for i in (10, 60, 300, 900, 1800, 3600)]:
            doc = build_packed(samples, interval, batch_schema)
            changes = doc.changes_since([])
            data = b"".join(c.data for c in changes)
            rows.append(
                {
                    "batch_schema": batch_schema,
                    "interval_s": interval,
                    "changes": len(changes),
                    "change_bytes": len(data),
                    "change_bytes_deflated": len(zlib.compress(data, 6)),
                    "samples_held_in_memory_max": min(interval, samples),
                }
            )
        out[f"backlog_{span}min"] = rows
    return out


def bench_naive_growth(samples: int) -> dict[str, Any]:
    """Save-after-every-sample cost grows with the document: time it at the end of a longer ride."""
    doc = CrdtDoc.new(new_actor_id("naive"))
    doc.append_maps("samples", [as_map(sample(i)) for i in range(samples)])
    t0 = time.perf_counter()
    for i in range(samples, samples + 20):
        doc.append_maps("samples", [as_map(sample(i))])
        doc.save()
    return {f"naive_save_every_sample_us_at_{samples}_samples": _us((time.perf_counter() - t0) / 20)}


def build_packed(
    samples: int, interval: float, batch_schema: int = 1, source: Callable[[int], Sample] = sample
) -> CrdtDoc:
    """A bike document of `samples` 1 Hz samples (`source(seq)`, the benchmark's ride by default) folded
    every `interval` seconds (no I/O)."""
    ref = DocRef("r", DocKind.BIKE, "bike-b")
    doc = CrdtDoc.new(new_actor_id("bike-b"))
    documents.init_doc(doc, ref)
    step = max(int(interval), 1)
    for base in range(0, samples, step):
        batch = [source(i) for i in range(base, min(samples, base + step))]
        documents.add_samples(doc, batch, batch_schema=batch_schema)
    return doc


def build_maps(samples: int, interval: float) -> CrdtDoc:
    doc = CrdtDoc.new(new_actor_id("maps"))
    step = max(int(interval), 1)
    for base in range(0, samples, step):
        doc.append_maps("samples", [as_map(sample(i)) for i in range(base, min(samples, base + step))])
    return doc


def wire_bytes(src: CrdtDoc, dst: CrdtDoc) -> tuple[int, int, int]:
    """Bytes, deflated bytes (each message alone, as permessage-deflate without context takeover would)
    and messages of the Automerge sync conversation that brings `dst` up to `src` (fresh sessions)."""
    a, b = SyncSession(), SyncSession()
    sent: list[bytes] = []
    for _ in range(50):
        m1 = a.generate(src)
        if m1 is not None:
            b.receive(dst, m1)
            sent.append(m1)
        m2 = b.generate(dst)
        if m2 is not None:
            a.receive(src, m2)
            sent.append(m2)
        if m1 is None and m2 is None:
            break
    return sum(map(len, sent)), sum(len(zlib.compress(m, 6)) for m in sent), len(sent)


def bench_batch_interval(tmp: Path) -> dict[str, Any]:
    """The fold interval's trade-off: bytes to sync 30 min offline vs commit cost, at 1 Hz."""
    rows = []
    for interval in (1, 2, 5, 10, 30, 60):
        store = ReplicaStore(
            tmp / f"fold-{interval}", device_id="bike-b", role=Role.BIKE, fold_interval_s=1e9
        )
        store.start_ride("r")
        ref = DocRef("r", DocKind.BIKE, "bike-b")
        heads = store.heads(ref.doc_id)
        backend_copy = store.doc(ref.doc_id).fork()
        folds = 0
        fold_s = 0.0
        for base in range(0, 1800, interval):
            store.append_samples("r", [sample(i) for i in range(base, min(1800, base + interval))])
            t0 = time.perf_counter()
            store.fold("r")
            fold_s += time.perf_counter() - t0
            folds += 1
        sync_bytes = sum(len(c.data) for c in store.changes_since(ref.doc_id, heads))
        on_wire, deflated, messages = wire_bytes(store.doc(ref.doc_id), backend_copy)
        rows.append(
            {
                "interval_s": interval,
                "bytes_to_sync_30min": sync_bytes,
                "sync_protocol_bytes_30min": on_wire,
                "sync_protocol_bytes_30min_deflated": deflated,
                "sync_messages": messages,
                "commit_ms": _ms(fold_s / folds),
                "commits_per_hour": round(3600 / interval),
                "commit_cpu_ms_per_hour": round(fold_s / folds * 3600 / interval * 1000, 1),
            }
        )
        store.close()
    maps = build_maps(1800, 1)
    maps_10 = build_maps(1800, DEFAULT_FOLD_INTERVAL_S)
    return {
        "default_interval_s": DEFAULT_FOLD_INTERVAL_S,
        "by_interval": rows,
        "naive_upload_whole_saved_doc_bytes_30min_schema1": len(
            build_packed(1800, DEFAULT_FOLD_INTERVAL_S).save()
        ),
        "naive_list_of_maps_bytes_to_sync_30min_per_sample_commit": sum(
            len(c.data) for c in maps.changes_since([])
        ),
        "naive_list_of_maps_bytes_to_sync_30min_10s_commits": sum(
            len(c.data) for c in maps_10.changes_since([])
        ),
    }


def bench_size_and_load(tmp: Path, hours: float) -> dict[str, Any]:
    samples = int(hours * 3600)
    out: dict[str, Any] = {"samples": samples}
    docs = {label: build_packed(samples, interval, bs) for label, (bs, interval) in LAYOUTS.items()}
    docs["list_of_maps_10s"] = build_maps(samples, DEFAULT_FOLD_INTERVAL_S)
    for label, doc in docs.items():
        t0 = time.perf_counter()
        saved = doc.save()
        out[f"{label}_snapshot_ms"] = _ms(time.perf_counter() - t0)
        out[f"{label}_saved_bytes"] = len(saved)
        out[f"{label}_saved_bytes_per_hour"] = round(len(saved) / hours)
        out[f"{label}_bytes_per_sample"] = round(len(saved) / samples, 2)
        t0 = time.perf_counter()
        CrdtDoc.load(saved, new_actor_id("x"))
        out[f"{label}_load_ms"] = _ms(time.perf_counter() - t0)
        history = b"".join(c.data for c in doc.changes_since([]))
        t0 = time.perf_counter()
        CrdtDoc.load(history, new_actor_id("x"))
        out[f"{label}_load_uncompacted_changes_ms"] = _ms(time.perf_counter() - t0)
        t0 = time.process_time()
        documents.decode(doc, DocRef("r", DocKind.BIKE, "bike-b"))
        out[f"{label}_decode_cpu_ms"] = _ms(time.process_time() - t0)
    for label in ("schema2_10s", "schema2_hourly", "list_of_maps_10s"):
        out[f"size_ratio_{label}_vs_schema1_10s"] = round(
            out[f"{label}_saved_bytes"] / out["schema1_10s_saved_bytes"], 3
        )
    # The whole store for a compacted hour, and the time to open it (recovery included).
    store = ReplicaStore(tmp / "hour", device_id="bike-b", role=Role.BIKE, fold_interval_s=1e9)
    store.start_ride("r")
    for base in range(0, samples, int(DEFAULT_FOLD_INTERVAL_S)):
        store.append_samples(
            "r", [sample(i) for i in range(base, min(samples, base + int(DEFAULT_FOLD_INTERVAL_S)))]
        )
        store.fold("r")
    for ref in store.ride_refs("r"):
        store.compact(ref.doc_id)
    store.close()
    out["store_file_bytes_per_hour_unsynced_with_raw_log"] = _vacuumed_size(tmp / "hour")
    t0 = time.perf_counter()
    reopened = ReplicaStore(tmp / "hour", device_id="bike-b", role=Role.BIKE)
    out["store_open_ms"] = _ms(time.perf_counter() - t0)
    t0 = time.perf_counter()
    decoded = [documents.decode(reopened.doc(r.doc_id), r) for r in reopened.ride_refs("r")]
    policy.resolve(
        RideDocs(
            "r",
            devices=tuple(d for d in decoded if isinstance(d, DeviceDoc)),
            backends=tuple(d for d in decoded if isinstance(d, BackendDoc)),
        )
    )
    out["decode_and_resolve_cold_ms"] = _ms(time.perf_counter() - t0)
    t0 = time.perf_counter()
    view = reopened.view("r")
    out["resolve_view_ms"] = _ms(time.perf_counter() - t0)
    t0 = time.perf_counter()
    reopened.phase("r")
    out["phase_only_ms"] = _ms(time.perf_counter() - t0)
    out["view_samples"] = view.samples.get("bike-b", 0)
    reopened.set_sync_state("r", SyncState.RECONCILED)
    reopened.compact_ride("r")
    reopened.close()
    out["store_file_bytes_per_hour_reconciled_compacted"] = _vacuumed_size(tmp / "hour")
    return out


def _vacuumed_size(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "ridesync.sqlite3")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()
    return (data_dir / "ridesync.sqlite3").stat().st_size


def bench_gate(tmp: Path, hours: float) -> dict[str, Any]:
    """Backend cost of receiving 30 min of offline backlog on top of an `hours`-long ride document,
    gated (fork, check actors and phase, merge, persist) vs ungated (receive on the document, persist)."""
    total = int(hours * 3600)
    backlog_from = max(total - 1800, 0)
    bike = ReplicaStore(tmp / "gate-bike", device_id="bike-g", role=Role.BIKE, fold_interval_s=1e9)
    bike.start_ride("g")
    ref = DocRef("g", DocKind.BIKE, "bike-g")
    step = int(DEFAULT_FOLD_INTERVAL_S)
    before: CrdtDoc | None = None
    for base in range(0, total, step):
        if base >= backlog_from and before is None:
            before = bike.doc(ref.doc_id).fork()
        bike.append_samples("g", [sample(i) for i in range(base, min(total, base + step))])
        bike.fold("g")
    assert before is not None
    out: dict[str, Any] = {"doc_changes": len(bike.changes_since(ref.doc_id, [])), "backlog_samples": 1800}
    for label in ("ungated", "gated"):
        backend = ReplicaStore(tmp / f"gate-{label}", device_id="backend", role=Role.BACKEND)
        backend.ensure_doc(ref)
        backend.merge_remote(ref.doc_id, before)
        backend.bind_actor(bike.actor, "bike-g", Role.BIKE)
        mine, theirs = SyncSession(), SyncSession()
        gated = backend.gated_sync(ref.doc_id)
        spent = 0.0
        for _ in range(50):
            msg = bike.generate_sync(ref.doc_id, mine)
            if msg is not None:
                t0 = time.perf_counter()
                if label == "gated":
                    result = gated.receive(msg, device="bike-g", role=Role.BIKE)
                    assert result.accepted, result.reason
                else:
                    backend.receive_sync(ref.doc_id, theirs, msg)
                spent += time.perf_counter() - t0
            reply = gated.generate() if label == "gated" else backend.generate_sync(ref.doc_id, theirs)
            if reply is not None:
                bike.receive_sync(ref.doc_id, mine, reply)
            if msg is None and reply is None:
                break
        assert backend.heads(ref.doc_id) == bike.heads(ref.doc_id)
        out[f"{label}_receive_ms"] = _ms(spent)
        backend.close()
    bike.close()
    out["ratio_gated_vs_ungated"] = round(out["gated_receive_ms"] / max(out["ungated_receive_ms"], 1e-6), 2)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ridesync-bench-store-") as name:
        tmp = Path(name)
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("append", lambda: bench_append(tmp, args.appends)),
            ("codec", bench_codec),
            ("offline_fold_interval", bench_offline_interval),
            ("doc_append", bench_doc_append),
            ("naive_growth", lambda: bench_naive_growth(args.naive_samples)),
            ("batch_interval", lambda: bench_batch_interval(tmp)),
            ("size_and_load", lambda: bench_size_and_load(tmp, args.hours)),
            ("information_bound", lambda: bench_information_bound(args.hours, sample, build_packed)),
            ("gate", lambda: bench_gate(tmp, max(args.hours, 0.5))),
            ("rss", lambda: bench_rss(args.rides, args.hours)),
            ("backend_rss", lambda: bench_backend_rss(max(args.rides // 3, 5), args.hours)),
            ("live_segments", lambda: bench_live_segments(args.rides, args.hours)),
        ]
        result: dict[str, Any] = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
        started = time.monotonic()
        for number, (key, step) in enumerate(steps, 1):
            # Progress on stderr (the JSON goes to stdout): the whole run takes a minute or two.
            print(
                f"bench store: {number}/{len(steps)} {key} (+{time.monotonic() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            result[key] = step()
    return result
