"""FIT activity file (Garmin's binary format), written with fit-tool: a pure function from an
`ExportRide` to bytes.

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
from typing import Any

from fit_tool.fit_file_builder import FitFileBuilder
from fit_tool.profile.messages.activity_message import ActivityMessage
from fit_tool.profile.messages.event_message import EventMessage
from fit_tool.profile.messages.file_id_message import FileIdMessage
from fit_tool.profile.messages.hrv_message import HrvMessage
from fit_tool.profile.messages.lap_message import LapMessage
from fit_tool.profile.messages.record_message import RecordMessage
from fit_tool.profile.messages.session_message import SessionMessage
from fit_tool.profile.profile_type import (
    Activity,
    Event,
    EventType,
    FileType,
    LapTrigger,
    Manufacturer,
    SessionTrigger,
    Sport,
    SubSport,
)

from engine.export.errors import ExportError
from engine.export.model import ExportRide, Lap, Row

FIT_EPOCH_UNIX = 631_065_600  # 1989-12-31T00:00:00Z
MAX_U8 = 254  # 255 is FIT's "invalid"
MAX_U16 = 65_534
MAX_RR_S = MAX_U16 / 1000
MAX_T = FIT_EPOCH_UNIX + 0xFFFF_FFFE


def fit_seconds(t: float) -> int:
    """A unix time as a FIT timestamp holds it: the whole second it falls in (as unix seconds)."""
    if not (math.isfinite(t) and FIT_EPOCH_UNIX <= t <= MAX_T):
        raise ExportError(f"time {t} is outside what FIT can hold (1989-12-31 to 2126)")
    return math.floor(t)


def _ms(t: float) -> int:
    # fit-tool takes unix milliseconds and rounds them to FIT's whole seconds: hand it whole seconds.
    return fit_seconds(t) * 1000


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


def _summary(msg: Any, ride: ExportRide, start_t: float, end_t: float) -> None:
    msg.start_time = _ms(start_t)
    msg.timestamp = _ms(end_t)
    elapsed = max(end_t - start_t, ride.duration_s, 0.0)
    msg.total_elapsed_time = elapsed
    msg.total_timer_time = elapsed
    msg.sport = Sport.CYCLING
    msg.sub_sport = SubSport.INDOOR_CYCLING
    fields = {
        "avg_heart_rate": _u8(ride.total("avg_hr")),
        "max_heart_rate": _u8(ride.total("max_hr")),
        "avg_power": _u16(ride.total("avg_power_w")),
        "max_power": _u16(ride.total("max_power_w")),
        "avg_cadence": _u8(ride.total("avg_cadence")),
        "total_calories": _u16(ride.total("energy_kcal")),
    }
    output_kj = ride.total("output_kj")
    if output_kj is not None and output_kj >= 0:
        fields["total_work"] = round(output_kj * 1000)
    for name, value in fields.items():
        if value is not None:
            setattr(msg, name, value)


def _lap(ride: ExportRide, lap: Lap, index: int) -> LapMessage:
    msg = LapMessage()
    msg.message_index = index
    msg.event = Event.LAP
    msg.event_type = EventType.STOP
    msg.lap_trigger = LapTrigger.SESSION_END
    # ridesync has one lap per ride (engine/export/model.py), so the lap's totals are the ride's.
    _summary(msg, ride, lap.start_t, lap.end_t)
    return msg


def export_fit(ride: ExportRide) -> bytes:
    start = ride.start_t
    end = max([start, *(r.t for r in ride.rows)])
    builder = FitFileBuilder(auto_define=True, min_string_size=50)

    file_id = FileIdMessage()
    file_id.type = FileType.ACTIVITY
    file_id.manufacturer = Manufacturer.DEVELOPMENT.value
    file_id.product = 0
    file_id.serial_number = 1
    file_id.time_created = _ms(start)
    builder.add(file_id)

    builder.add(_timer(start, EventType.START))
    for row in ride.rows:
        record = RecordMessage()
        record.timestamp = _ms(row.t)
        for name, value in record_fields(row).items():
            if value is not None:
                setattr(record, name, value)
        builder.add(record)
        rr = rr_seconds(row)
        if rr:
            hrv = HrvMessage()
            hrv.time = rr
            builder.add(hrv)
    builder.add(_timer(end, EventType.STOP_ALL))

    for index, lap in enumerate(ride.laps):
        builder.add(_lap(ride, lap, index))

    session = SessionMessage()
    session.message_index = 0
    session.event = Event.SESSION
    session.event_type = EventType.STOP
    session.trigger = SessionTrigger.ACTIVITY_END
    session.first_lap_index = 0
    session.num_laps = len(ride.laps)
    _summary(session, ride, start, end)
    builder.add(session)

    activity = ActivityMessage()
    activity.timestamp = _ms(end)
    activity.total_timer_time = max(end - start, ride.duration_s, 0.0)
    activity.num_sessions = 1
    activity.type = Activity.MANUAL
    activity.event = Event.ACTIVITY
    activity.event_type = EventType.STOP
    builder.add(activity)
    data: bytes = builder.build().to_bytes()
    return data


def _timer(t: float, kind: EventType) -> EventMessage:
    msg = EventMessage()
    msg.event = Event.TIMER
    msg.event_type = kind
    msg.timestamp = _ms(t)
    return msg
