"""The demo's end-of-run JSON report (`ridesync demo --json`).

Live lane: per rider, what each sensor delivered, what the publisher sent, and what a viewer of the class
received. Durable lane: `reconciliation_report(riders)`, per ride, samples on the bike vs the backend,
lost and duplicated samples, end events counted, final phase and sync state
(docs/architecture.md#interfaces-others-rely-on), from what
`DemoSession.end_rides` recorded; a ride whose outcome was never recorded says so rather than guessing.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from engine.demo.session import DemoSession, DurableOutcome, Rider

NOT_ENDED = "rides not ended (the demo stopped before end_rides)"
NO_DURABLE_LANE = "off (DemoConfig.durable_lane=False)"


def ride_reconciliation(device: str, outcome: DurableOutcome) -> dict[str, object]:
    """One ride: the bike's own document against the same document on the backend, by sample seq.

    `lost`: seqs the bike recorded that the backend does not hold; `duplicated`: extra copies of a seq on
    the backend. Phase, end events and sync state are the backend's (`GET /v1/rides/{id}`)."""
    bike = outcome.bike_seqs
    backend = outcome.backend_seqs if outcome.backend_seqs is not None else []
    view = outcome.backend_view or {}
    summary = outcome.bike_summary
    return {
        "device": device,
        "samples_bike": len(bike),
        "samples_backend": len(backend),
        "backend_samples_with": dict(outcome.backend_with),
        "lost": len(set(bike) - set(backend)),
        "duplicated": len(backend) - len(set(backend)),
        "end_events_counted": view.get("end_events_counted"),
        "phase": view.get("phase"),
        "sync_state": view.get("sync_state"),
        "sync_reason": view.get("sync_reason"),
        "bike_sync_state": summary.get("sync_state"),
        "bike_sync_reason": summary.get("sync_reason"),
        "sync_connects": summary.get("sync_connects"),
        "finished_in_time": outcome.finished,
        **({"error": summary["error"]} if "error" in summary else {}),
    }


def reconciliation_report(riders: Sequence[Rider]) -> dict[str, dict[str, object]]:
    """Per ride id: how the ride reconciled between the bike replica and the backend."""
    out: dict[str, dict[str, object]] = {}
    for r in riders:
        if r.replica is None:
            out[r.ride_id] = {"device": r.spec.device, "durable_lane": NO_DURABLE_LANE}
        elif r.outcome is None:
            out[r.ride_id] = {"device": r.spec.device, "durable_lane": NOT_ENDED}
        else:
            out[r.ride_id] = ride_reconciliation(r.spec.device, r.outcome)
    return out


def durable_summary(reconciliation: dict[str, dict[str, object]]) -> dict[str, int]:
    rides = reconciliation.values()
    return {
        "rides": len(reconciliation),
        "reconciled": sum(1 for r in rides if r.get("sync_state") == "reconciled"),
        "lost": sum(int(v) for r in rides if isinstance(v := r.get("lost"), int)),
        "duplicated": sum(int(v) for r in rides if isinstance(v := r.get("duplicated"), int)),
    }


def percentiles_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": pick(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def rider_report(session: DemoSession, rider: Rider) -> dict[str, object]:
    seen = session.monitor.riders.get(rider.spec.device)
    received = {m: s.values for m, s in sorted(seen.metrics.items())} if seen is not None else {}
    stats = rider.publisher.stats
    return {
        "device": rider.spec.device,
        "name": rider.spec.name,
        "ride_id": rider.ride_id,
        "bike": rider.spec.bike,
        # The kind of bike a viewer of the class was told (the tile's label), from the rider's hello.
        "bike_seen_by_viewer": seen.bike if seen is not None else None,
        "sensors": {"hr": rider.hr.to_json(), "bike": rider.bike.to_json()},
        "published": {
            "sent": stats.sent,
            "offered": stats.offered,
            "superseded": stats.superseded,
            "dropped_offline": stats.dropped_offline,
            "connects": stats.connects,
        },
        # Distinct live values (by seq) a viewer of the class received, per metric: hr, cad, pwr, res.
        "received_by_viewer": received,
        "reconnects": rider.reconnects,
    }


def demo_report(session: DemoSession, latencies_s: Sequence[float] = ()) -> dict[str, object]:
    reconciliation = reconciliation_report(session.riders)
    return {
        "report": "demo",
        "class": session.config.class_id,
        "riders": [rider_report(session, r) for r in session.riders],
        "elapsed_s": round(session.elapsed_s(), 2),
        "speed": session.config.speed,
        "viewer": {
            "frames": session.monitor.frames,
            "leaderboard_frames": session.monitor.leaderboard_frames,
            "connects": session.monitor.connects,
        },
        # Sensor timestamp (host receipt of the notification) -> a class viewer's receipt, heart rate only.
        "live_latency_hr": percentiles_ms(latencies_s),
        "durable_lane": durable_summary(reconciliation),
        "reconciliation": reconciliation,
        "chaos": None,  # --chaos fills it in (engine/demo/chaos.py: chaos_report)
    }
