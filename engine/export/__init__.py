"""Ride export to FIT, TCX and CSV: pure functions from a resolved ride to bytes (no I/O).

```python
from engine.export import FORMATS, export, from_docs
ride = from_docs(store.ride_docs(ride_id))  # the view's totals + the authoritative samples as rows
data = export(ride, "fit")                 # bytes; FORMATS["fit"].content_type, .filename(ride_id)
```
What goes into each file: engine/export/model.py (rows, laps, totals) and each format's module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.export.errors import ExportError
from engine.export.model import ExportRide, Lap, Row, build, from_docs


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    content_type: str
    extension: str
    write: Callable[[ExportRide], bytes]

    def filename(self, ride_id: str) -> str:
        """`<ride>.<ext>`; a ride id's `:` (allowed in ids, not in Windows file names) becomes `_`."""
        return f"{ride_id.replace(':', '_')}.{self.extension}"


def _fit(ride: ExportRide) -> bytes:
    from engine.export.fit import export_fit  # the FIT SDK is loaded only when a FIT file is asked for

    return export_fit(ride)


def _tcx(ride: ExportRide) -> bytes:
    from engine.export.tcx import export_tcx

    return export_tcx(ride)


def _csv(ride: ExportRide) -> bytes:
    from engine.export.csv import export_csv

    return export_csv(ride)


FORMATS: dict[str, Format] = {
    "fit": Format("fit", "application/vnd.ant.fit", "fit", _fit),
    "tcx": Format("tcx", "application/vnd.garmin.tcx+xml", "tcx", _tcx),
    "csv": Format("csv", "text/csv; charset=utf-8", "csv", _csv),
}


def export(ride: ExportRide, fmt: str) -> bytes:
    """The ride as `fmt` (a key of FORMATS) bytes; `ExportError` if the format cannot hold it."""
    try:
        spec = FORMATS[fmt]
    except KeyError:
        raise ExportError(f"unknown format {fmt!r} (fit, tcx, csv)") from None
    return spec.write(ride)


__all__ = ["FORMATS", "ExportError", "ExportRide", "Format", "Lap", "Row", "build", "export", "from_docs"]
