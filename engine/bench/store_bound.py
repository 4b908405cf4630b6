"""`ridesync bench store`, information bound: how far the saved ride is from what its samples carry.

For each data model, the same hour is saved as a bike document in sample batch schema 2, folded every
10 s (a live link) and hourly (offline), and its single batch blob (the codec alone, no Automerge) is
measured; beside them, the order-0 entropy of the delta-coded columns (engine/bench/entropy.py), so each
figure reads as "saved bytes / information bound". The models:

- `ride_signal`: engine/bench/ridegen.py's RideSignal, the ride every other `bench store` figure uses
  (power as ±15 W uniform noise around a target, one RR interval per sample);
- `sim_bike_physics`: engine/bench/ridegen_sim.py, the simulated bike's profile with power computed from
  cadence and resistance as a head unit does, heart rate and every RR interval from the strap's model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.bench.entropy import delta_entropy_bytes
from engine.crdt import CrdtDoc
from engine.ride.batches import encode_batch
from engine.ride.samples import Sample

# build_packed(samples, interval_s, batch_schema, source) from engine/bench/store.py, passed in so this
# module does not import the benchmark that runs it.
BuildPacked = Callable[[int, float, int, Callable[[int], Sample]], CrdtDoc]
TARGET_SAVED_BYTES_PER_HOUR = 8 * 1024


def bench_information_bound(
    hours: float, ride_signal: Callable[[int], Sample], build_packed: BuildPacked
) -> dict[str, Any]:
    # Imported here: the simulators pull in bumble, whose import leaves freed memory behind, and
    # engine/bench/store_rss.py's children import engine/bench/store.py to measure RSS growth.
    from engine.bench.ridegen_sim import SimBikeRide

    count = int(hours * 3600)
    sim = SimBikeRide(0, duration_s=count)
    models = {"ride_signal": ride_signal, "sim_bike_physics": sim.sample}
    out: dict[str, Any] = {"samples": count}
    for name, draw in models.items():
        rows = [draw(seq) for seq in range(count)]
        bound = delta_entropy_bytes(rows)
        per_hour = bound["total"] / hours
        row: dict[str, Any] = {
            "bound_bytes_per_hour": round(per_hour),
            "bound_bytes_per_hour_by_column": {
                k: round(v / hours) for k, v in bound.items() if k != "total" and v
            },
            "one_batch_blob_bytes_per_hour": round(len(encode_batch(rows, 2)) / hours),
        }
        for label, interval in (("live_10s", 10.0), ("offline_hourly", 3600.0)):
            saved = len(build_packed(count, interval, 2, rows.__getitem__).save()) / hours
            row[f"saved_bytes_per_hour_{label}"] = round(saved)
            row[f"ratio_saved_{label}_vs_bound"] = round(saved / max(per_hour, 1), 2)
        row["ratio_one_batch_blob_vs_bound"] = round(
            row["one_batch_blob_bytes_per_hour"] / max(per_hour, 1), 2
        )
        row["offline_hour_under_8KB"] = (
            row["saved_bytes_per_hour_offline_hourly"] <= TARGET_SAVED_BYTES_PER_HOUR
        )
        row["bound_under_8KB"] = per_hour <= TARGET_SAVED_BYTES_PER_HOUR
        out[name] = row
    return out
