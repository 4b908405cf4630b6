"""`ridesync bench sync`, offline part: the cost curve of reconciling a ride recorded offline.

For each length (default 5 min, 30 min, 4 h, 8 h at 1 Hz, engine/bench/ridegen.py samples) and in the same
run, against the same `ridesync serve` build:
- `schema2_lazy`: what a bike does now: schema 2 batches, a fold every `offline_fold_interval_s` while it
  cannot reach the backend, the backlog folded at reconnect;
- `schema1_10s`: what it did before: schema 1 batches, a fold every 10 s whatever the link;
- `naive_whole_document_*`: the baseline, uploading each whole saved document in one HTTP POST (with the
  bearer token a device sends) to a server that loads it and stores it durably (for the documents of
  either variant). `*_bytes` counts the bodies alone (`len(doc.save())`), `*_wire_bytes` what the upload
  costs on the wire both ways (request line and headers, bodies, responses), counted by the same relay
  as the sync path; the ratios are given against both.
Per variant: time until the backend acknowledged every document (`reconciled`, best of `repeats`) and
until it finalized, bytes on the wire both ways after permessage-deflate (counted by a fault-free relay),
the bike's CPU to fold and to resolve the ride, the server's CPU per reconcile and its RSS growth per
reconciled ride. Each variant gets a fresh server.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from engine.bench._servers import cpu_of, naive_server, rss_of, serve
from engine.bench._servers import ms as _ms
from engine.bench.ridegen import T0, RideSignal

VARIANTS = {"schema2_lazy": (2, True), "schema1_10s": (1, False)}


class SimClock:
    """The store's clock: simulated ride time while a ride is recorded (so the offline fold interval is
    ride time, not the benchmark's), real time otherwise."""

    def __init__(self) -> None:
        self.t: float | None = None

    def __call__(self) -> float:
        return time.time() if self.t is None else self.t


def record(store: Any, clock: SimClock, ride_id: str, first: int, last: int, *, lazy: bool) -> float:
    """Samples first..last-1 at 1 Hz, offered to the store 10 at a time: `lazy` folds as an offline bike
    does (maybe_fold, link down), otherwise every 10 s. Returns the CPU seconds spent folding."""
    signal = RideSignal(ride_id)
    if first:
        signal.take(first)
    spent = 0.0
    for lo in range(first, last, 10):
        batch = signal.take(min(10, last - lo))
        clock.t = T0 + lo + len(batch)
        store.append_samples(ride_id, batch)
        c0 = time.process_time()
        if lazy:
            store.maybe_fold(ride_id, online=False)
        else:
            store.fold(ride_id)
        spent += time.process_time() - c0
    return spent


def build_ride(store: Any, clock: SimClock, ride_id: str, samples: int, *, lazy: bool) -> float:
    """A ride recorded offline, folded at reconnect (the bike's first sample with the link back), ended."""
    clock.t = T0
    store.start_ride(ride_id, t=T0)
    spent = record(store, clock, ride_id, 0, samples, lazy=lazy)
    c0 = time.process_time()
    store.fold(ride_id)
    spent += time.process_time() - c0
    clock.t = None
    store.end_ride(ride_id, t=T0 + samples, duration_s=float(samples))
    return spent


def resolve_cpu(store: Any, ride_id: str) -> float:
    """CPU seconds to decode every document of the ride afresh and resolve its view."""
    from engine.ride import documents, policy
    from engine.ride.model import BackendDoc, DeviceDoc, RideDocs

    c0 = time.process_time()
    decoded = [documents.decode(store.doc(r.doc_id), r) for r in store.ride_refs(ride_id)]
    policy.resolve(
        RideDocs(
            ride_id,
            devices=tuple(d for d in decoded if isinstance(d, DeviceDoc)),
            backends=tuple(d for d in decoded if isinstance(d, BackendDoc)),
        )
    )
    return time.process_time() - c0


async def reconcile(
    store: Any, url: str, token: str, ride_id: str, timeout_s: float = 300.0
) -> dict[str, float]:
    from engine.device.connection import DeviceSync
    from engine.ride.schema import Phase

    sync = DeviceSync(store, url, token)
    sync.track(ride_id)
    out: dict[str, float] = {}
    async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as tg:
        t0 = time.perf_counter()
        task = tg.create_task(sync.run())
        await sync.wait_for(lambda: sync.reconciled(ride_id))
        out["reconciled_s"] = time.perf_counter() - t0
        await sync.wait_for(lambda: sync.reconciled(ride_id) and store.phase(ride_id) is Phase.FINALIZED)
        out["finalized_s"] = time.perf_counter() - t0
        task.cancel()
    return out


async def naive_upload(store: Any, url: str, token: str, ride_id: str) -> dict[str, float]:
    """Each of the ride's documents saved whole and POSTed, as a device would: one session, its bearer
    token on every request."""
    import aiohttp

    refs = [r for r in store.ride_refs(ride_id) if store.heads(r.doc_id)]
    sent = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        t0 = time.perf_counter()
        for ref in refs:
            body = store.doc(ref.doc_id).save()
            sent += len(body)
            async with http.post(f"{url}/naive/{ref.doc_id}", data=body) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()
        spent = time.perf_counter() - t0
    return {"seconds": spent, "bytes": sent}


async def naive_wire(store: Any, naive_url: str, token: str, ride_id: str) -> dict[str, int]:
    """The whole-document upload through a fault-free relay: its bytes on the wire, both ways."""
    from engine.chaos.proxy import ChaosProxy

    host, port = naive_url.removeprefix("http://").rsplit(":", 1)
    async with ChaosProxy((host, int(port))) as relay:
        run = await naive_upload(store, f"http://{relay.address}", token, ride_id)
        return {
            "body_bytes": int(run["bytes"]),
            "wire_bytes": relay.stats.bytes_up + relay.stats.bytes_down,
            "wire_bytes_up": relay.stats.bytes_up,
        }


async def _variant(tmp: Path, label: str, samples: int, repeats: int, naive_url: str) -> dict[str, Any]:
    from engine.auth.tokens import KeyRing
    from engine.chaos.proxy import ChaosProxy
    from engine.ride.schema import DocKind, Role
    from engine.store import ReplicaStore

    batch_schema, lazy = VARIANTS[label.split("-", 1)[0]]
    clock = SimClock()
    bike = ReplicaStore(
        tmp / f"bike-{label}", device_id="bench-bike", role=Role.BIKE, clock=clock, batch_schema=batch_schema
    )
    rides = [f"off-{label}-{i}" for i in range(repeats + 1)]
    fold_cpu = [build_ride(bike, clock, ride_id, samples, lazy=lazy) for ride_id in rides]
    own = next(r for r in bike.ride_refs(rides[0]) if r.kind is DocKind.BIKE)
    server = serve(tmp / f"serve-{label}")
    try:
        token = KeyRing.load_or_create(tmp / f"serve-{label}").issue("bike", "bench-bike")
        rss_before, cpu_before = rss_of(server.proc.pid), cpu_of(server.proc.pid)
        timings = [await reconcile(bike, server.url, token, r) for r in rides[:repeats]]
        server_cpu = cpu_of(server.proc.pid) - cpu_before
        rss_after = rss_of(server.proc.pid)
        async with ChaosProxy(("127.0.0.1", server.port)) as relay:
            await reconcile(bike, f"http://{relay.address}", token, rides[repeats])
            wire, up = relay.stats.bytes_up + relay.stats.bytes_down, relay.stats.bytes_up
        naive_runs = [await naive_upload(bike, naive_url, token, r) for r in rides[:repeats]]
        naive_on_wire = await naive_wire(bike, naive_url, token, rides[repeats])
        resolve = min(resolve_cpu(bike, r) for r in rides[:repeats])
        changes = len(bike.changes_since(own.doc_id, []))
    finally:
        server.stop()
        bike.close()
    return {
        "batch_schema": batch_schema,
        "fold": "offline interval, backlog at reconnect" if lazy else "every 10 s",
        "reconciled_ms": _ms(min(t["reconciled_s"] for t in timings)),
        "finalized_ms": _ms(min(t["finalized_s"] for t in timings)),
        "runs_reconciled_ms": [_ms(t["reconciled_s"]) for t in timings],
        "wire_bytes": wire,
        "wire_bytes_up": up,
        "bike_doc_changes": changes,
        "fold_cpu_ms": _ms(min(fold_cpu)),
        "resolve_cpu_ms": _ms(resolve),
        "server_cpu_ms_per_reconcile": _ms(server_cpu / max(repeats, 1)),
        "server_rss_bytes_per_reconciled_ride": (rss_after - rss_before) // max(repeats, 1),
        "naive_upload_ms": _ms(min(n["seconds"] for n in naive_runs)),
        "naive_upload_bytes": int(naive_runs[0]["bytes"]),
        "naive_upload_wire_bytes": naive_on_wire["wire_bytes"],
        "naive_upload_wire_bytes_up": naive_on_wire["wire_bytes_up"],
    }


async def bench_offline(tmp: Path, minutes: float, repeats: int) -> dict[str, Any]:
    """Both variants and both whole-document uploads for one offline length, in one run."""
    samples = int(minutes * 60)
    span = f"{minutes / 60:g}h" if minutes >= 60 else f"{minutes:g}min"
    naive = naive_server(tmp / f"naive-{span}")
    try:
        out: dict[str, Any] = {"samples": samples}
        for name in VARIANTS:
            out[name] = await _variant(tmp, f"{name}-{span}", samples, repeats, naive.url)
    finally:
        naive.stop()
    new, old = out["schema2_lazy"], out["schema1_10s"]
    out["naive_whole_document_schema1_bytes"] = old.pop("naive_upload_bytes")
    out["naive_whole_document_schema1_ms"] = old.pop("naive_upload_ms")
    out["naive_whole_document_schema2_bytes"] = new.pop("naive_upload_bytes")
    out["naive_whole_document_schema2_ms"] = new.pop("naive_upload_ms")
    for schema, variant in (("schema1", old), ("schema2", new)):
        out[f"naive_whole_document_{schema}_wire_bytes"] = variant.pop("naive_upload_wire_bytes")
        out[f"naive_whole_document_{schema}_wire_bytes_up"] = variant.pop("naive_upload_wire_bytes_up")
        out[f"ratio_wire_bytes_vs_naive_{schema}_wire"] = round(
            new["wire_bytes"] / max(out[f"naive_whole_document_{schema}_wire_bytes"], 1), 3
        )
    out["ratio_wire_bytes_vs_schema1"] = round(new["wire_bytes"] / max(old["wire_bytes"], 1), 3)
    out["ratio_wire_bytes_vs_naive_schema1"] = round(
        new["wire_bytes"] / max(out["naive_whole_document_schema1_bytes"], 1), 3
    )
    out["ratio_wire_bytes_vs_naive_schema2"] = round(
        new["wire_bytes"] / max(out["naive_whole_document_schema2_bytes"], 1), 3
    )
    out["ratio_reconciled_ms_vs_schema1"] = round(new["reconciled_ms"] / max(old["reconciled_ms"], 1e-9), 3)
    out["ratio_server_rss_vs_schema1"] = round(
        new["server_rss_bytes_per_reconciled_ride"] / max(old["server_rss_bytes_per_reconciled_ride"], 1), 3
    )
    return out


async def bench_incremental(tmp: Path, synced_min: float, offline_min: float) -> dict[str, Any]:
    """A long ride synced at 10 s folds up to a point, then `offline_min` more recorded offline (folded
    lazily) and ended: sync sends only what is new, the naive baseline uploads the whole document again."""
    from engine.auth.tokens import KeyRing
    from engine.chaos.proxy import ChaosProxy
    from engine.device.connection import DeviceSync
    from engine.ride.schema import Role
    from engine.store import ReplicaStore

    ride_id = "incremental"
    clock = SimClock()
    bike = ReplicaStore(tmp / "bike-incremental", device_id="bench-bike", role=Role.BIKE, clock=clock)
    server = serve(tmp / "serve-incremental")
    naive = naive_server(tmp / "naive-incremental")
    try:
        token = KeyRing.load_or_create(tmp / "serve-incremental").issue("bike", "bench-bike")
        first = int(synced_min * 60)
        total = first + int(offline_min * 60)
        clock.t = T0
        bike.start_ride(ride_id, t=T0)
        record(bike, clock, ride_id, 0, first, lazy=False)
        clock.t = None
        sync = DeviceSync(bike, server.url, token)
        sync.track(ride_id)
        async with asyncio.timeout(120), asyncio.TaskGroup() as tg:
            task = tg.create_task(sync.run())
            await sync.wait_for(lambda: sync.reconciled(ride_id))
            task.cancel()
        record(bike, clock, ride_id, first, total, lazy=True)
        clock.t = None
        bike.fold(ride_id)
        bike.end_ride(ride_id, t=T0 + total, duration_s=float(total))
        async with ChaosProxy(("127.0.0.1", server.port)) as relay:
            timing = await reconcile(bike, f"http://{relay.address}", token, ride_id)
            wire_bytes = relay.stats.bytes_up + relay.stats.bytes_down
        naive_run = await naive_upload(bike, naive.url, token, ride_id)
        naive_on_wire = await naive_wire(bike, naive.url, token, ride_id)
    finally:
        server.stop()
        naive.stop()
        bike.close()
    return {
        "synced_samples": first,
        "offline_samples": total - first,
        "reconciled_ms": _ms(timing["reconciled_s"]),
        "wire_bytes": wire_bytes,
        "naive_upload_ms": _ms(naive_run["seconds"]),
        "naive_upload_bytes": int(naive_run["bytes"]),
        "naive_upload_wire_bytes": naive_on_wire["wire_bytes"],
        "ratio_time_vs_naive": round(timing["reconciled_s"] / max(naive_run["seconds"], 1e-9), 2),
        "ratio_bytes_vs_naive": round(wire_bytes / max(naive_run["bytes"], 1), 2),
        "ratio_bytes_vs_naive_wire": round(wire_bytes / max(naive_on_wire["wire_bytes"], 1), 2),
        "note": "sync time through the byte-counting relay, the naive upload's without it; "
        "naive_upload_bytes counts bodies, naive_upload_wire_bytes the upload on the wire both ways",
    }


async def _live_wire(
    tmp: Path, batch_schema: int, samples: int, segment_interval_s: float | None = None
) -> int:
    """Bytes on the wire both ways while `samples` are recorded and synced live at 10 s folds: into the
    bike document, or with `segment_interval_s` into live segments consolidated that often (the bike's
    own `maybe_fold(online=True)`, as the bike runner folds)."""
    from engine.auth.tokens import KeyRing
    from engine.chaos.proxy import ChaosProxy
    from engine.device.connection import DeviceSync
    from engine.ride.schema import Role
    from engine.store import ReplicaStore

    label = f"live-schema{batch_schema}-{segment_interval_s}"
    clock = SimClock()
    bike = ReplicaStore(
        tmp / f"bike-{label}",
        device_id="bench-bike",
        role=Role.BIKE,
        clock=clock,
        batch_schema=batch_schema,
        segment_interval_s=segment_interval_s,
    )
    server = serve(tmp / f"serve-{label}")
    try:
        token = KeyRing.load_or_create(tmp / f"serve-{label}").issue("bike", "bench-bike")
        signal = RideSignal("live")
        clock.t = T0
        bike.start_ride("live", t=T0)
        async with ChaosProxy(("127.0.0.1", server.port)) as relay:
            sync = DeviceSync(bike, f"http://{relay.address}", token)
            sync.track("live")
            async with asyncio.timeout(600), asyncio.TaskGroup() as tg:
                task = tg.create_task(sync.run())
                await sync.wait_for(lambda: sync.reconciled("live"))
                start = relay.stats.bytes_up + relay.stats.bytes_down
                for lo in range(0, samples, 10):
                    clock.t = T0 + lo + 10
                    bike.append_samples("live", signal.take(min(10, samples - lo)))
                    if segment_interval_s is None:
                        bike.fold("live")
                    else:
                        bike.maybe_fold("live", online=True)
                    sync.notify("live")
                    await sync.wait_for(lambda: sync.reconciled("live"))
                task.cancel()
            return relay.stats.bytes_up + relay.stats.bytes_down - start
    finally:
        server.stop()
        bike.close()


async def bench_live(tmp: Path, minutes: float) -> dict[str, Any]:
    """A ride synced live: every 10 s fold offered at once and acknowledged before the next, as a bike with
    a link does (the ride's start, before its first fold, not counted). Bytes on the wire both ways,
    schema 2 next to schema 1 and next to live segments, in the same run."""
    samples = int(minutes * 60)
    out: dict[str, Any] = {"samples": samples}
    cases = (("schema2_10s", 2, None), ("schema1_10s", 1, None), ("schema2_segments_5min", 2, 300.0))
    for label, batch_schema, segment_interval_s in cases:
        wire = await _live_wire(tmp, batch_schema, samples, segment_interval_s)
        out[f"{label}_wire_bytes"] = wire
        out[f"{label}_wire_bytes_per_hour"] = round(wire * 3600 / max(samples, 1))
    out["ratio_wire_bytes_schema2_vs_schema1"] = round(
        out["schema2_10s_wire_bytes"] / max(out["schema1_10s_wire_bytes"], 1), 3
    )
    # Live segments send each sample twice (its fold into the segment, then the consolidation) and open a
    # document every interval: what they cost on the wire, against the same folds into the bike document.
    out["ratio_wire_bytes_segments_vs_schema2_10s"] = round(
        out["schema2_segments_5min_wire_bytes"] / max(out["schema2_10s_wire_bytes"], 1), 3
    )
    return out
