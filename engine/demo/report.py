"""The demo's end-of-run JSON report (`ridesync demo --json`).

Live lane: per rider, what each sensor delivered, what the publisher sent, and what a viewer of the class
received. Durable lane: `reconciliation_report(riders)` is the seam for the per-ride reconciliation report
(samples on the bike vs the backend, end events counted, final phase, sync state; DESIGN §9). The durable
lane is not built yet, so it says so instead of inventing numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from engine.demo.session import DemoSession, Rider

DURABLE_LANE = "not yet built"


def reconciliation_report(riders: Sequence[Rider]) -> dict[str, dict[str, object]]:
    """Per ride id: how the ride reconciled between the bike replica and the backend.

    Once bike replicas sync over the durable lane, this fills each entry from the backend's
    `GET /v1/rides/{id}` and the bike's own summary: `samples_bike`, `samples_backend`, `lost`,
    `duplicated`, `end_events_counted`, `phase`, `sync_state`.
    """
    return {r.ride_id: {"device": r.spec.device, "durable_lane": DURABLE_LANE} for r in riders}


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
        "durable_lane": DURABLE_LANE,
        "reconciliation": reconciliation_report(session.riders),
        "chaos": "not yet built",
    }
