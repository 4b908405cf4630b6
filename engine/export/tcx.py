"""TCX (Garmin Training Center XML, schema v2), written with the standard library's ElementTree: a pure
function from an `ExportRide` to bytes.

One `Activity` (Sport "Biking", Id = the ride's start) with one `Lap` per lap: total time, distance 0
(a stationary bike), calories, average/maximum heart rate, average cadence, and a `Track` of one
`Trackpoint` per row (Time, HeartRateBpm, Cadence; power as the ActivityExtension v2 `TPX/Watts`
extension that Garmin Connect, Strava and TrainingPeaks read; lap average/maximum power as `LX`). TCX has no
place for RR intervals (the FIT and CSV exports carry them). The ride's title and notes go into the
activity's Notes.

The schema's types bound the values: heart rate 1 to 255, cadence 0 to 254, calories 0 to 65,535; a
value out of range is left out of that element, like a missing one.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from engine.export.errors import ExportError
from engine.export.model import ExportRide, Lap, Row

NS = "http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2"
NS_EXT = "http://www.garmin.com/xmlschemas/ActivityExtension/v2"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMA_LOCATION = f"{NS} http://www.garmin.com/xmlschemas/TrainingCenterDatabasev2.xsd"
CONTENT_TYPE = "application/vnd.garmin.tcx+xml"
MAX_CADENCE = 254
MAX_HR = 255
MAX_U16 = 65_535

ET.register_namespace("", NS)
ET.register_namespace("tpx", NS_EXT)
ET.register_namespace("xsi", NS_XSI)


# Characters XML 1.0 cannot hold at all (control characters, surrogates, U+FFFE/U+FFFF): a title or
# note holding one is written without it, rather than as a file no reader parses.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    return _NOT_XML.sub("", text)


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


def iso(t: float) -> str:
    """xsd:dateTime in UTC, millisecond resolution."""
    if not math.isfinite(t) or not 0 <= t < 253_402_300_800:  # year 10000
        raise ExportError(f"time {t} is not a representable date")
    moment = datetime.fromtimestamp(round(t, 3), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _num(value: float) -> str:
    return repr(round(float(value), 3))


def _sub(parent: ET.Element, name: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, _q(name))
    if text is not None:
        el.text = text
    return el


def _bounded(value: float | None, low: int, high: int) -> int | None:
    if value is None or not math.isfinite(value):
        return None
    rounded = round(value)
    return rounded if low <= rounded <= high else None


def trackpoint_fields(row: Row) -> dict[str, int | float | None]:
    """What a row becomes in its Trackpoint (also what the tests expect back)."""
    watts = None if row.power_w is None or row.power_w < 0 else round(row.power_w)
    return {
        "hr": _bounded(row.hr, 1, MAX_HR),
        "cadence": _bounded(row.cadence, 0, MAX_CADENCE),
        "watts": watts,
    }


def _hr_element(parent: ET.Element, name: str, value: int) -> None:
    _sub(_sub(parent, name), "Value", str(value))


def _lap(activity: ET.Element, ride: ExportRide, lap: Lap) -> None:
    el = ET.SubElement(activity, _q("Lap"), {"StartTime": iso(lap.start_t)})
    # ridesync has one lap per ride (engine/export/model.py), so the lap's totals are the ride's.
    _sub(el, "TotalTimeSeconds", _num(max(ride.duration_s, lap.end_t - lap.start_t, 0.0)))
    _sub(el, "DistanceMeters", "0.0")
    calories = _bounded(ride.total("energy_kcal"), 0, MAX_U16)
    _sub(el, "Calories", str(calories if calories is not None else 0))
    avg_hr = _bounded(ride.total("avg_hr"), 1, MAX_HR)
    if avg_hr is not None:
        _hr_element(el, "AverageHeartRateBpm", avg_hr)
    max_hr = _bounded(ride.total("max_hr"), 1, MAX_HR)
    if max_hr is not None:
        _hr_element(el, "MaximumHeartRateBpm", max_hr)
    _sub(el, "Intensity", "Active")
    cadence = _bounded(ride.total("avg_cadence"), 0, MAX_CADENCE)
    if cadence is not None:
        _sub(el, "Cadence", str(cadence))
    _sub(el, "TriggerMethod", "Manual")
    rows = ride.rows[lap.first : lap.first + lap.count]
    if rows:
        track = _sub(el, "Track")
        for row in rows:
            _trackpoint(track, row)
    avg_w, max_w = ride.total("avg_power_w"), ride.total("max_power_w")
    if (avg_w is not None and avg_w >= 0) or (max_w is not None and max_w >= 0):
        lx = ET.SubElement(_sub(el, "Extensions"), f"{{{NS_EXT}}}LX")
        if avg_w is not None and avg_w >= 0:
            ET.SubElement(lx, f"{{{NS_EXT}}}AvgWatts").text = _num(avg_w)
        if max_w is not None and max_w >= 0:
            ET.SubElement(lx, f"{{{NS_EXT}}}MaxWatts").text = str(round(max_w))


def _trackpoint(track: ET.Element, row: Row) -> None:
    point = _sub(track, "Trackpoint")
    _sub(point, "Time", iso(row.t))
    fields = trackpoint_fields(row)
    if fields["hr"] is not None:
        _hr_element(point, "HeartRateBpm", int(fields["hr"]))
    if fields["cadence"] is not None:
        _sub(point, "Cadence", str(fields["cadence"]))
    if fields["watts"] is not None:
        tpx = ET.SubElement(_sub(point, "Extensions"), f"{{{NS_EXT}}}TPX")
        ET.SubElement(tpx, f"{{{NS_EXT}}}Watts").text = str(fields["watts"])


def export_tcx(ride: ExportRide) -> bytes:
    root = ET.Element(_q("TrainingCenterDatabase"), {f"{{{NS_XSI}}}schemaLocation": SCHEMA_LOCATION})
    activity = ET.SubElement(_sub(root, "Activities"), _q("Activity"), {"Sport": "Biking"})
    _sub(activity, "Id", iso(ride.start_t))
    for lap in ride.laps:
        _lap(activity, ride, lap)
    notes = "\n\n".join(part for part in (ride.title, ride.notes) if part)
    if notes:
        _sub(activity, "Notes", xml_text(notes))
    ET.indent(root, space=" ")
    body: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    return body + b"\n"
