"""FIT activity file (Garmin's binary format), written with Garmin's official FIT SDK for Python
(`garmin_fit_sdk.Encoder`): a pure function from an `ExportRide` to bytes.

Messages, in order: file_id (activity), event timer start, then per row a `record` (timestamp,
heart_rate, cadence, power) followed by an `hrv` message with the row's RR intervals when it has any,
event timer stop, one `lap` per lap, one `session` (sport cycling, indoor) and the `activity`. Laps and
the session carry the ride's totals: elapsed and timer time, average/maximum heart rate and power, average
cadence, total work (J) and calories (kcal).

FIT's types bound what a record can hold: heart rate and cadence are uint8 (254 at most), power uint16
(65,534 W), an RR interval 65.534 s, timestamps whole seconds since 1989-12-31 00:00 UTC (a sample's
time is cut to its second). A value out of range is left out of that record (the CSV export keeps it); a
ride whose times fall outside FIT's range raises `ExportError`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from garmin_fit_sdk import Encoder, Profile

from engine.export.errors import ExportError
from engine.export.model import ExportRide, Lap, Row

FIT_EPOCH_UNIX = 631_065_600  # 1989-12-31T00:00:00Z
MAX_U8 = 254  # 255 is FIT's "invalid"
MAX_U16 = 65_534
MAX_RR_S = MAX_U16 / 1000
MAX_T = FIT_EPOCH_UNIX + 0xFFFF_FFFE
MAX_ELAPSED_S = 0xFFFF_FFFE / 1000  # uint32, ms: about 49 days


def fit_seconds(t: float) -> int:
    """A unix time as a FIT timestamp holds it: the whole second it falls in (as unix seconds)."""
    if not (math.isfinite(t) and FIT_EPOCH_UNIX <= t <= MAX_T):
        raise ExportError(f"time {t} is outside what FIT can hold (1989-12-31 to 2126)")
    return math.floor(t)


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(fit_seconds(t), UTC)


def _u8(value: float | None) -> int | None:
    if value is None:
        return None
    rounded = round(value)
    return rounded if 0 <= rounded <= MAX_U8 else None


def _u16(value: float | None) -> int | None:
    if value is None:
        return None
    rounded = round(value)
    return rounded if 0 <= rounded <= MAX_U16 else None


def _elapsed(seconds: float) -> float | None:
    return seconds if 0 <= seconds <= MAX_ELAPSED_S else None


def record_fields(row: Row) -> dict[str, int | None]:
    """What a row becomes in its FIT record (also what the tests expect back from the decoder)."""
    return {"heart_rate": _u8(row.hr), "cadence": _u8(row.cadence), "power": _u16(row.power_w)}


def rr_seconds(row: Row) -> list[float]:
    """The row's RR intervals as the hrv message holds them (seconds, 1 ms resolution)."""
    out = []
    for rr in row.rr:
        seconds = round(rr / 1024, 3)
        if 0 < seconds <= MAX_RR_S:
            out.append(seconds)
    return out


MESG = Profile["mesg_num"]


def _summary(ride: ExportRide, start_t: float, end_t: float) -> dict[str, Any]:
    elapsed = _elapsed(max(end_t - start_t, ride.duration_s, 0.0))
    fields: dict[str, Any] = {
        "start_time": _when(start_t),
        "timestamp": _when(end_t),
        "total_elapsed_time": elapsed,
        "total_timer_time": elapsed,
        "sport": "cycling",
        "sub_sport": "indoor_cycling",
        "avg_heart_rate": _u8(ride.total("avg_hr")),
        "max_heart_rate": _u8(ride.total("max_hr")),
        "avg_power": _u16(ride.total("avg_power_w")),
        "max_power": _u16(ride.total("max_power_w")),
        "avg_cadence": _u8(ride.total("avg_cadence")),
        "total_calories": _u16(ride.total("energy_kcal")),
    }
    output_kj = ride.total("output_kj")
    if output_kj is not None and 0 <= output_kj < 4_294_967:  # uint32 joules
        fields["total_work"] = round(output_kj * 1000)
    return {k: v for k, v in fields.items() if v is not None}


def _lap(ride: ExportRide, lap: Lap, index: int) -> dict[str, Any]:
    # ridesync has one lap per ride (engine/export/model.py), so the lap's totals are the ride's.
    return {
        "mesg_num": MESG["LAP"],
        "message_index": index,
        "event": "lap",
        "event_type": "stop",
        "lap_trigger": "session_end",
        **_summary(ride, lap.start_t, lap.end_t),
    }


def export_fit(ride: ExportRide) -> bytes:
    try:
        return _encode(ride)
    except ValueError as exc:  # the SDK's "Could not write Message: …" for a value its type cannot hold
        if isinstance(exc, ExportError):
            raise
        raise ExportError(f"FIT cannot hold this ride: {exc}") from None


def _encode(ride: ExportRide) -> bytes:
    start = ride.start_t
    end = max([start, *(r.t for r in ride.rows)])
    fit = Encoder()
    fit.write_mesg(
        {
            "mesg_num": MESG["FILE_ID"],
            "type": "activity",
            "manufacturer": "development",
            "product": 0,
            "serial_number": 1,
            "time_created": _when(start),
        }
    )
    fit.write_mesg(
        {"mesg_num": MESG["EVENT"], "timestamp": _when(start), "event": "timer", "event_type": "start"}
    )
    for row in ride.rows:
        record: dict[str, Any] = {"mesg_num": MESG["RECORD"], "timestamp": _when(row.t)}
        record.update((k, v) for k, v in record_fields(row).items() if v is not None)
        fit.write_mesg(record)
        rr = rr_seconds(row)
        if rr:
            fit.write_mesg({"mesg_num": MESG["HRV"], "time": rr})
    fit.write_mesg(
        {"mesg_num": MESG["EVENT"], "timestamp": _when(end), "event": "timer", "event_type": "stop_all"}
    )
    for index, lap in enumerate(ride.laps):
        fit.write_mesg(_lap(ride, lap, index))
    fit.write_mesg(
        {
            "mesg_num": MESG["SESSION"],
            "message_index": 0,
            "event": "session",
            "event_type": "stop",
            "trigger": "activity_end",
            "first_lap_index": 0,
            "num_laps": len(ride.laps),
            **_summary(ride, start, end),
        }
    )
    activity = {
        "mesg_num": MESG["ACTIVITY"],
        "timestamp": _when(end),
        "total_timer_time": _elapsed(max(end - start, ride.duration_s, 0.0)),
        "num_sessions": 1,
        "type": "manual",
        "event": "activity",
        "event_type": "stop",
    }
    fit.write_mesg({k: v for k, v in activity.items() if v is not None})
    return fit.close()
