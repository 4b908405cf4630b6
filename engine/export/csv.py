"""CSV: one row per sample, with a header (a pure function from an `ExportRide` to bytes).

Columns (UTF-8, comma-separated, RFC 4180 quoting, `\\r\\n` line ends as the csv module writes them; an
empty cell means no value):

| column | meaning |
|---|---|
| `time_utc` | ISO 8601 UTC time of the sample, millisecond resolution |
| `elapsed_s` | seconds since the ride's first sample |
| `device`, `seq` | the sample's identity: the device that recorded it and its sequence number there |
| `heart_rate_bpm` | usable heart rate only (no contact, stale or gap → empty) |
| `heart_rate_source` | the device whose strap gave it (an app's where the policy filled a bike gap) |
| `rr_ms` | RR intervals in milliseconds, space-separated (the strap's 1/1024 s units, 3 decimals) |
| `cadence_rpm`, `power_w`, `resistance` | the bike's values as recorded (resistance: the bike's raw value) |

The ride's totals are not in the file (a CSV is one table); the FIT and TCX exports carry them.
"""

from __future__ import annotations

import csv
import io

from engine.export.model import ExportRide, Row
from engine.export.tcx import iso

COLUMNS = (
    "time_utc",
    "elapsed_s",
    "device",
    "seq",
    "heart_rate_bpm",
    "heart_rate_source",
    "rr_ms",
    "cadence_rpm",
    "power_w",
    "resistance",
)
CONTENT_TYPE = "text/csv; charset=utf-8"


def _cell(value: float | int | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}" if value.is_integer() and abs(value) < 1e15 else repr(round(value, 3))
    return str(value)


def rr_ms(rr: tuple[int, ...]) -> str:
    return " ".join(f"{round(value * 1000 / 1024, 3):g}" for value in rr)


def row_cells(ride: ExportRide, row: Row) -> list[str]:
    return [
        iso(row.t),
        _cell(round(row.t - ride.start_t, 3)),
        row.device,
        str(row.seq),
        _cell(row.hr),
        _cell(row.hr_device),
        rr_ms(row.rr),
        _cell(row.cadence),
        _cell(row.power_w),
        _cell(row.resistance),
    ]


def export_csv(ride: ExportRide) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in ride.rows:
        writer.writerow(row_cells(ride, row))
    return out.getvalue().encode()
