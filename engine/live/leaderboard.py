"""The class leaderboard: ranks by cumulative output (kJ), power, cadence and heart-rate zone, sent as
batched deltas.

Riders without a power meter (no power value since they joined) are not ranked last on output: they get
no output rank (`rank_kj`/`rank_pwr` null, `power` false) and a rank of their own among themselves,
`rank_effort`, by their time at zone 3 or above (zones from each rider's own max HR, so it is fair across
riders), then their current zone and cadence. The class page lists them apart, under the output ranking.

Pure. Each tick computes the full table and diffs it against the previous tick's; peers that saw the
previous tick get the delta, everyone else (new or lagging peers) gets the full table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from engine.live.slots import RiderSlot

Row = dict[str, object]


def _rank(rows: dict[str, Row], key: str) -> dict[str, int]:
    # Riders without a live value rank after everyone with one, in a stable (device id) order.
    def sort_key(device: str) -> tuple[int, float, str]:
        v = rows[device][key]
        return (0, -float(v), device) if isinstance(v, int | float) else (1, 0.0, device)

    return {device: i + 1 for i, device in enumerate(sorted(rows, key=sort_key))}


def table(riders: Iterable[RiderSlot]) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for slot in riders:
        if not slot.present:
            continue
        pwr, cad, hr = slot.live_value("pwr"), slot.live_value("cad"), slot.live_value("hr")
        rows[slot.device] = {
            "pwr": None if pwr is None else round(pwr),
            "cad": None if cad is None else round(cad),
            "hr": None if hr is None else round(hr),
            "zone": slot.zone(),
            "kj": slot.kj(),
            "power": slot.has_power,
            "hard_s": round(slot.hard_s),
        }
    for key, rank_key in (("pwr", "rank_pwr"), ("cad", "rank_cad")):
        for device, rank in _rank(rows, key).items():
            rows[device][rank_key] = rank
    powered = {d: r for d, r in rows.items() if r["power"]}
    for row in rows.values():
        if not row["power"]:
            row["rank_pwr"] = None
            row["rank_kj"] = None
    for device, rank in _rank(powered, "kj").items():
        rows[device]["rank_kj"] = rank

    def effort_key(device: str) -> tuple[float, int, float, str]:
        row = rows[device]
        cad = row["cad"]
        return (
            -float(row["hard_s"]),  # type: ignore[arg-type]
            -int(row["zone"]),  # type: ignore[call-overload]
            -float(cad) if isinstance(cad, int | float) else 0.0,
            device,
        )

    for i, device in enumerate(sorted((d for d, r in rows.items() if not r["power"]), key=effort_key)):
        rows[device]["rank_effort"] = i + 1

    # Zone ranks by zone, then by heart rate as a share of the rider's own max (finer than the zone).
    def zone_key(device: str) -> tuple[int, float, str]:
        row = rows[device]
        hr = row["hr"]
        return (-int(row["zone"]), -float(hr) if isinstance(hr, int | float) else 0.0, device)  # type: ignore[call-overload]

    for i, device in enumerate(sorted(rows, key=zone_key)):
        rows[device]["rank_zone"] = i + 1
    return rows


class Leaderboard:
    def __init__(self, class_id: str) -> None:
        self.class_id = class_id
        self.seq = 0
        self.rows: dict[str, Row] = {}
        self.full_frame = b""

    def tick(self, riders: Iterable[RiderSlot], now: float) -> bytes | None:
        """Advance one leaderboard tick. Returns the delta frame, or None when nothing changed."""
        new = table(riders)
        changed = {d: r for d, r in new.items() if self.rows.get(d) != r}
        removed = sorted(d for d in self.rows if d not in new)
        self.rows = new
        if not changed and not removed and self.seq > 0:
            return None
        self.seq += 1
        head = {"type": "leaderboard", "class": self.class_id, "seq": self.seq, "ts": round(now, 3)}
        self.full_frame = json.dumps(
            {**head, "full": True, "rows": new, "removed": []}, separators=(",", ":")
        ).encode()
        return json.dumps(
            {**head, "full": False, "rows": changed, "removed": removed}, separators=(",", ":")
        ).encode()
