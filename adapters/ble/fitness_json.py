"""The JSON shape of the fitness-profile values (`ridesync decode ftms|cps|csc`): every key always present,
null for a field the value does not carry, numbers in the units the key names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapters.ble.cps import CyclingPowerMeasurement, parse_cps
from adapters.ble.csc import CscMeasurement, parse_csc
from adapters.ble.ftms import IndoorBikeData, parse_indoor_bike_data
from adapters.ble.revolutions import RevolutionData


def ftms_json(m: IndoorBikeData) -> dict[str, Any]:
    e = m.energy
    return {
        "speed_kmh": m.speed_kmh,
        "avg_speed_kmh": m.avg_speed_kmh,
        "cadence_rpm": m.cadence_rpm,
        "avg_cadence_rpm": m.avg_cadence_rpm,
        "distance_m": m.distance_m,
        "resistance": m.resistance,
        "power_w": m.power_w,
        "avg_power_w": m.avg_power_w,
        # A "Data Not Available" energy value is null too: the machine sent the field but no number.
        "energy_kcal": None if e is None else e.total_kcal,
        "energy_kcal_per_h": None if e is None else e.per_hour_kcal,
        "energy_kcal_per_min": None if e is None else e.per_minute_kcal,
        "hr": m.hr,
        "met": m.met,
        "elapsed_s": m.elapsed_s,
        "remaining_s": m.remaining_s,
    }


def _revs(prefix: str, data: RevolutionData | None) -> dict[str, Any]:
    return {
        f"{prefix}_revs": None if data is None else data.revs,
        f"{prefix}_time_s": None if data is None else data.event_time_s,
    }


def cps_json(m: CyclingPowerMeasurement) -> dict[str, Any]:
    return {
        "power_w": m.power_w,
        "balance_pct": m.balance_pct,
        "torque_nm": m.torque_nm,
        **_revs("wheel", m.wheel),
        **_revs("crank", m.crank),
        "energy_kj": m.energy_kj,
    }


def csc_json(m: CscMeasurement) -> dict[str, Any]:
    return {**_revs("wheel", m.wheel), **_revs("crank", m.crank)}


# profile -> payload to JSON object; each raises its FitnessPayloadError subclass on a bad payload.
DECODERS: dict[str, Callable[[bytes], dict[str, Any]]] = {
    "ftms": lambda payload: ftms_json(parse_indoor_bike_data(payload)),
    "cps": lambda payload: cps_json(parse_cps(payload)),
    "csc": lambda payload: csc_json(parse_csc(payload)),
}
