"""The exporters as pure functions: FIT decoded by Garmin's official SDK, TCX validated against Garmin's
TCX v2 schema, CSV read back with the csv module; for fixed rides and for any ride (hypothesis)."""

from __future__ import annotations

import csv
import io
import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import fitdecode
import pytest
import xmlschema
from garmin_fit_sdk import Decoder, Stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.export import FORMATS, ExportError, ExportRide, Row, build, export, from_docs
from engine.export.csv import COLUMNS
from engine.export.fit import fit_seconds, record_fields, rr_seconds
from engine.export.tcx import NS, NS_EXT, trackpoint_fields
from engine.ride import policy
from engine.ride.model import DeviceDoc, RideDocs
from engine.ride.samples import Sample
from engine.ride.schema import DocKind, DocRef
from tests.support.export_rides import rides

T0 = 1_795_000_000.0
TOTALS = {
    "duration_s": 9.0,
    "output_kj": 1.8,
    "energy_kcal": 1.8,
    "avg_hr": 124.5,
    "max_hr": 129,
    "avg_power_w": 200.5,
    "max_power_w": 230.0,
    "avg_cadence": 81.2,
}
TC = f"{{{NS}}}"
EXT = f"{{{NS_EXT}}}"


def decode_fit(data: bytes) -> Any:
    assert Decoder(Stream.from_byte_array(bytearray(data))).is_fit()
    assert Decoder(Stream.from_byte_array(bytearray(data))).check_integrity()  # header and CRC
    messages, errors = Decoder(Stream.from_byte_array(bytearray(data))).read()
    assert errors == []
    return messages


def decode_fit_independently(data: bytes) -> dict[str, list[dict[str, Any]]]:
    """The same file through fitdecode (not Garmin's code), CRC checked: message name → field values."""
    out: dict[str, list[dict[str, Any]]] = {}
    with fitdecode.FitReader(io.BytesIO(data), check_crc=fitdecode.CrcCheck.RAISE) as fit:
        for frame in fit:
            if isinstance(frame, fitdecode.FitDataMessage):
                values = {f.name: f.value for f in frame.fields if f.value is not None}
                out.setdefault(frame.name, []).append(values)
    return out


def _ride() -> ExportRide:
    rows = [
        Row(
            t=T0 + i + 0.25,
            device="bike-1",
            seq=i,
            hr=120 + i if i != 3 else None,
            hr_device="bike-1" if i != 3 else None,
            rr=(900, 1000) if i % 2 and i != 3 else (),
            cadence=80 + i,
            power_w=200.0 + 3 * i if i != 4 else None,
            resistance=30,
        )
        for i in range(10)
    ]
    return build("ride-x", rows, totals=TOTALS, shared={"title": "Hill climb"})


def test_fit_holds_every_record_with_its_values_and_the_session_totals() -> None:
    ride = _ride()
    messages = decode_fit(export(ride, "fit"))
    records = messages["record_mesgs"]
    assert len(records) == 10
    assert [r["timestamp"] for r in records] == [datetime.fromtimestamp(T0 + i, UTC) for i in range(10)]
    assert [r.get("heart_rate") for r in records] == [120, 121, 122, None, 124, 125, 126, 127, 128, 129]
    assert [r.get("cadence") for r in records] == list(range(80, 90))
    assert [r.get("power") for r in records] == [200, 203, 206, 209, None, 215, 218, 221, 224, 227]
    # RR intervals as hrv messages (seconds): one per record that has them.
    assert [m["time"] for m in messages["hrv_mesgs"]] == [[0.879, 0.977]] * 4
    (session,) = messages["session_mesgs"]
    assert session["sport"] == "cycling" and session["sub_sport"] == "indoor_cycling"
    assert session["start_time"] == datetime.fromtimestamp(T0, UTC)
    assert session["total_elapsed_time"] == 9.0 and session["total_timer_time"] == 9.0
    assert (session["avg_heart_rate"], session["max_heart_rate"]) == (124, 129)
    assert (session["avg_power"], session["max_power"], session["avg_cadence"]) == (200, 230, 81)
    assert (session["total_work"], session["total_calories"]) == (1800, 2)
    assert session["num_laps"] == 1
    (lap,) = messages["lap_mesgs"]
    assert lap["total_elapsed_time"] == 9.0 and lap["avg_heart_rate"] == 124
    assert messages["activity_mesgs"][0]["num_sessions"] == 1
    assert messages["file_id_mesgs"][0]["type"] == "activity"
    assert [e["event_type"] for e in messages["event_mesgs"]] == ["start", "stop_all"]
    # An independent reader sees the same records and totals.
    other = decode_fit_independently(export(ride, "fit"))
    assert [r.get("heart_rate") for r in other["record"]] == [r.get("heart_rate") for r in records]
    assert [r.get("power") for r in other["record"]] == [r.get("power") for r in records]
    assert [r["timestamp"] for r in other["record"]] == [r["timestamp"] for r in records]
    assert other["session"][0]["total_work"] == 1800 and other["session"][0]["avg_heart_rate"] == 124
    assert [m["time"] for m in other["hrv"]] == [(0.879, 0.977)] * 4


def test_tcx_validates_and_holds_every_trackpoint(tcx_schema: xmlschema.XMLSchema) -> None:
    data = export(_ride(), "tcx")
    tcx_schema.validate(data.decode())
    root = ET.fromstring(data)
    points = root.findall(f".//{TC}Trackpoint")
    assert len(points) == 10
    assert points[0].findtext(f"{TC}Time") == "2026-11-18T11:06:40.250Z"
    hrs = [p.findtext(f"{TC}HeartRateBpm/{TC}Value") for p in points]
    assert hrs[:5] == ["120", "121", "122", None, "124"]
    assert points[4].find(f".//{EXT}Watts") is None
    assert points[1].findtext(f".//{EXT}Watts") == "203"
    lap = root.find(f".//{TC}Lap")
    assert lap is not None
    assert lap.findtext(f"{TC}TotalTimeSeconds") == "9.0"
    assert lap.findtext(f"{TC}AverageHeartRateBpm/{TC}Value") == "124"
    assert lap.findtext(f"{TC}Calories") == "2"
    assert lap.findtext(f".//{EXT}AvgWatts") == "200.5"
    assert root.findtext(f".//{TC}Activity/{TC}Notes") == "Hill climb"


def test_csv_is_one_row_per_sample_under_a_header() -> None:
    table = list(csv.DictReader(io.StringIO(export(_ride(), "csv").decode())))
    assert len(table) == 10
    assert tuple(table[0]) == COLUMNS
    first, second, fourth = table[0], table[1], table[3]
    assert first["time_utc"] == "2026-11-18T11:06:40.250Z" and first["elapsed_s"] == "0"
    assert (first["heart_rate_bpm"], first["cadence_rpm"], first["power_w"]) == ("120", "80", "200")
    assert second["rr_ms"] == "878.906 976.562" and second["elapsed_s"] == "1"
    assert fourth["heart_rate_bpm"] == "" and fourth["heart_rate_source"] == ""


def test_an_empty_ride_still_exports(tcx_schema: xmlschema.XMLSchema) -> None:
    ride = build("ride-empty", [], fallback_t=T0)
    messages = decode_fit(export(ride, "fit"))
    assert messages.get("record_mesgs", []) == []
    assert len(messages["session_mesgs"]) == 1
    tcx_schema.validate(export(ride, "tcx").decode())
    assert export(ride, "csv").decode().splitlines() == [",".join(COLUMNS)]


def test_times_fit_cannot_hold_are_refused_and_formats_are_named() -> None:
    with pytest.raises(ExportError, match="outside what FIT can hold"):
        export(build("old", [Row(t=1000.0, device="b", seq=0)]), "fit")
    with pytest.raises(ExportError, match="unknown format"):
        export(_ride(), "gpx")
    assert FORMATS["fit"].filename("r:1") == "r_1.fit"
    assert FORMATS["tcx"].content_type == "application/vnd.garmin.tcx+xml"


def test_rows_follow_the_policy_authority_and_gap_fill() -> None:
    """The bike's samples; an app's heart rate only where the policy fills a bike gap, merged into the
    bike's row at that time, or a row of its own where the bike has none; unusable HR left empty."""
    # Bike: no usable HR at 3, 4 and 6 s, no sample at all at 5 s, a strap without contact at 8 s.
    bike = [
        Sample(seq=i, t=T0 + i, hr=None if i in (3, 4, 6) else 150, contact="detected", power_dw=2000)
        for i in range(10)
        if i not in (5, 8)
    ] + [Sample(seq=8, t=T0 + 8, hr=99, contact="not_detected", power_dw=2000)]
    bike.sort(key=lambda s: s.seq)
    app = [Sample(seq=i, t=T0 + i, hr=100 + i, contact="detected") for i in range(10)]
    app.append(Sample(seq=10, t=T0 + 7.6, hr=77, contact="detected"))
    docs = RideDocs(
        ride_id="ride-fill",
        devices=(
            DeviceDoc(DocRef("ride-fill", DocKind.BIKE, "bike-1"), samples=tuple(bike)),
            DeviceDoc(DocRef("ride-fill", DocKind.APP, "app-1"), samples=tuple(app)),
        ),
    )
    ride = from_docs(docs)
    assert [(r.device, r.seq, r.hr) for r in ride.rows] == [
        ("bike-1", 0, 150),
        ("bike-1", 1, 150),
        ("bike-1", 2, 150),
        ("bike-1", 3, None),  # the app's 3 s value is within 1 s of the bike's usable 2 s: not used
        ("bike-1", 4, 104),  # filled from the app, in the bike's row (which keeps its power)
        ("app-1", 5, 105),  # filled where the bike has no sample: a row of its own
        ("bike-1", 6, None),
        ("bike-1", 7, 150),
        ("bike-1", 8, None),  # no contact: empty, never the 99 the strap sent
        ("bike-1", 9, 150),
    ]
    filled = ride.rows[4]
    assert (filled.hr_device, filled.power_w) == ("app-1", 200.0)
    assert ride.rows[5].power_w is None and ride.rows[5].cadence is None
    assert ride.totals["avg_hr"] == round((150 * 5 + 104 + 105) / 7, 1) and ride.laps[0].count == 10


# -- any ride -------------------------------------------------------------------------------------------

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(rides())
def test_any_ride_fit_decodes_with_the_same_records(ride: ExportRide) -> None:
    messages = decode_fit(export(ride, "fit"))
    records = messages.get("record_mesgs", [])
    assert len(records) == len(ride.rows)
    for row, record in zip(ride.rows, records, strict=True):
        assert record["timestamp"] == datetime.fromtimestamp(fit_seconds(row.t), UTC)
        for name, value in record_fields(row).items():
            assert record.get(name) == value, (name, row)
    # (the SDK gives a one-element array as a plain number)
    hrv = [m["time"] if isinstance(m["time"], list) else [m["time"]] for m in messages.get("hrv_mesgs", [])]
    assert hrv == [rr_seconds(r) for r in ride.rows if rr_seconds(r)]
    (session,) = messages["session_mesgs"]
    avg_hr = ride.total("avg_hr")
    assert session.get("avg_heart_rate") == (
        round(avg_hr) if avg_hr is not None and round(avg_hr) <= 254 else None
    )
    assert math.isclose(session["total_elapsed_time"], max(ride.duration_s, 0.0), abs_tol=0.001) or (
        session["total_elapsed_time"] >= ride.duration_s
    )


@PROPS
@given(rides())
def test_any_ride_tcx_validates_with_the_same_trackpoints(
    tcx_schema: xmlschema.XMLSchema, ride: ExportRide
) -> None:
    data = export(ride, "tcx")
    tcx_schema.validate(data.decode())
    points = ET.fromstring(data).findall(f".//{TC}Trackpoint")
    assert len(points) == len(ride.rows)
    for row, point in zip(ride.rows, points, strict=True):
        want = trackpoint_fields(row)
        hr = point.findtext(f"{TC}HeartRateBpm/{TC}Value")
        assert (int(hr) if hr is not None else None) == want["hr"]
        watts = point.findtext(f".//{EXT}Watts")
        assert (int(watts) if watts is not None else None) == want["watts"]


@PROPS
@given(rides())
def test_any_ride_csv_has_one_row_per_sample(ride: ExportRide) -> None:
    table = list(csv.reader(io.StringIO(export(ride, "csv").decode(), newline="")))
    assert table[0] == list(COLUMNS)
    assert len(table) == len(ride.rows) + 1
    for row, cells in zip(ride.rows, table[1:], strict=True):
        assert cells[4] == ("" if row.hr is None else str(row.hr))
        assert cells[8] == ("" if row.power_w is None else f"{row.power_w:g}")


@st.composite
def _docs(draw: st.DrawFn) -> RideDocs:
    def samples(n_max: int, bike: bool) -> tuple[Sample, ...]:
        times = sorted(set(draw(st.lists(st.integers(0, 1200), max_size=n_max))))
        return tuple(
            Sample(
                seq=seq,
                t=T0 + t / 2,
                hr=draw(st.one_of(st.none(), st.integers(1, 260))),
                rr=tuple(draw(st.lists(st.integers(1, 3000), max_size=3))),
                contact=draw(st.sampled_from(["detected", "not_detected", "unsupported", None])),
                stale=draw(st.booleans()),
                cadence=draw(st.one_of(st.none(), st.integers(0, 300))) if bike else None,
                power_dw=draw(st.one_of(st.none(), st.integers(0, 30_000))) if bike else None,
            )
            for seq, t in enumerate(times)
        )

    devices = [DeviceDoc(DocRef("ride-any", DocKind.BIKE, "bike-1"), samples=samples(40, True))]
    devices += [
        DeviceDoc(DocRef("ride-any", DocKind.APP, f"app-{i}"), samples=samples(40, False))
        for i in range(draw(st.integers(0, 2)))
    ]
    return RideDocs(ride_id="ride-any", devices=tuple(devices))


@PROPS
@given(_docs())
def test_any_ride_documents_export_every_bike_sample_once(docs: RideDocs) -> None:
    """From a ride's documents: every bike sample is one row (apps add rows only where they fill a gap the
    bike has no row for), heart rate only where usable, and the FIT file holds a record per row."""
    ride = from_docs(docs)
    bike = docs.devices[0].samples
    assert sorted(r.seq for r in ride.rows if r.device == "bike-1") == [s.seq for s in bike]
    filled = [r for r in ride.rows if r.hr is not None and r.hr_device != "bike-1"]
    if bike:
        assert len(filled) == sum(policy.resolve(docs).gap_fill.values())
    else:  # no bike samples yet: the apps' own heart rate, as the ride page shows it
        assert len(ride.rows) == sum(len(d.samples) for d in docs.devices[1:])
    by_seq = {s.seq: s for s in bike}
    for row in ride.rows:
        if row.device == "bike-1" and row.hr_device == "bike-1":
            assert by_seq[row.seq].hr_usable() and row.hr == by_seq[row.seq].hr
    records = decode_fit(export(ride, "fit")).get("record_mesgs", [])
    assert len(records) == len(ride.rows)
