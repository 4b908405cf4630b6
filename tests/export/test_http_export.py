"""`GET /v1/rides/{id}/export?format=…` on the real backend (loopback, real SQLite), for a ride a bike
replica synced: headers, contents, and the same refusals as `GET /v1/rides/{id}`."""

from __future__ import annotations

import asyncio
import csv
import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import xmlschema

from engine.export.tcx import NS
from engine.ride.schema import Role
from tests.export.test_formats import decode_fit
from tests.support.backend_server import HANG_GUARD, Server
from tests.support.samples import T0, sample

RIDE = "ride-export"
N = 30


async def _synced(server: Server) -> None:
    """bike-1 records N samples (one without contact) and syncs them: the backend owns a copy."""
    bike = server.replica(Role.BIKE, "bike-1")
    bike.start_ride(RIDE, t=T0)
    bike.append_samples(
        RIDE, [sample(i, rr=(800 + i,)) if i != 7 else sample(i, contact="not_detected") for i in range(N)]
    )
    bike.fold(RIDE)
    bike.edit_shared(RIDE, "title", "Tempo")
    async with server.client(server.token("bike", "bike-1"), bike, RIDE) as bc:
        await bc.open_ride()
        await server.backend.wait_for(lambda: server.holds_all_of(bike, RIDE))


async def _get(server: Server, path: str, token: str | None) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with server.http.get(server.url + path, headers=headers) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_each_format_downloads_with_its_type_and_filename(
    server: Server, tcx_schema: xmlschema.XMLSchema
) -> None:
    token = server.token("app", "app-1", rides=[RIDE])
    async with asyncio.timeout(HANG_GUARD):
        await _synced(server)
        fit = await _get(server, f"/v1/rides/{RIDE}/export?format=fit", token)
        tcx = await _get(server, f"/v1/rides/{RIDE}/export?format=tcx", token)
        as_csv = await _get(server, f"/v1/rides/{RIDE}/export?format=csv", token)
        # The token may also come as ?token= (what the ride page's download links use).
        by_query = await _get(server, f"/v1/rides/{RIDE}/export?format=fit&token={token}", None)
    view = server.backend.store.view(RIDE)

    status, body, headers = fit
    assert status == 200
    assert headers["Content-Type"] == "application/vnd.ant.fit"
    assert headers["Content-Disposition"] == f'attachment; filename="{RIDE}.fit"'
    messages = decode_fit(body)
    records = messages["record_mesgs"]
    assert len(records) == N
    assert [r["timestamp"] for r in records] == [datetime.fromtimestamp(T0 + i, UTC) for i in range(N)]
    expected = [sample(i) for i in range(N)]
    assert [r.get("heart_rate") for r in records] == [s.hr if s.seq != 7 else None for s in expected]
    assert [r.get("cadence") for r in records] == [s.cadence for s in expected]
    assert [r.get("power") for r in records] == [
        None if s.power_w is None else round(s.power_w) for s in expected
    ]
    assert len(messages["hrv_mesgs"]) == N - 1
    (session,) = messages["session_mesgs"]
    assert session["avg_heart_rate"] == round(view.totals["avg_hr"])
    assert session["max_power"] == round(view.totals["max_power_w"])
    assert session["total_work"] == round(view.totals["output_kj"] * 1000)
    assert session["total_elapsed_time"] == view.totals["duration_s"]
    assert by_query[0] == 200 and by_query[1] == body

    status, body, headers = tcx
    assert status == 200
    assert headers["Content-Type"] == "application/vnd.garmin.tcx+xml"
    assert headers["Content-Disposition"] == f'attachment; filename="{RIDE}.tcx"'
    tcx_schema.validate(body.decode())
    root = ET.fromstring(body)
    assert len(root.findall(f".//{{{NS}}}Trackpoint")) == N
    assert root.findtext(f".//{{{NS}}}Activity/{{{NS}}}Notes") == "Tempo"

    status, body, headers = as_csv
    assert status == 200
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"] == f'attachment; filename="{RIDE}.csv"'
    table = list(csv.DictReader(io.StringIO(body.decode())))
    assert [int(r["seq"]) for r in table] == list(range(N))
    assert table[7]["heart_rate_bpm"] == "" and table[8]["heart_rate_bpm"] == str(sample(8).hr)


async def test_refusals_match_the_ride_view(server: Server) -> None:
    app = server.token("app", "app-1", rides=[RIDE])
    async with asyncio.timeout(HANG_GUARD):
        await _synced(server)
        bad_format = await _get(server, f"/v1/rides/{RIDE}/export?format=gpx", app)
        no_format = await _get(server, f"/v1/rides/{RIDE}/export", app)
        no_token = await _get(server, f"/v1/rides/{RIDE}/export?format=fit", None)
        unknown = await _get(server, "/v1/rides/nope/export?format=fit", server.token("app", "app-2"))
        other_ride = await _get(
            server, f"/v1/rides/{RIDE}/export?format=fit", server.token("app", "a", rides=["r9"])
        )
        viewer = await _get(
            server, f"/v1/rides/{RIDE}/export?format=csv", server.token("viewer", "v-1", classes=["c"])
        )
    assert bad_format[0] == 400 and b'"bad_format"' in bad_format[1]
    assert no_format[0] == 400
    assert no_token[0] == 401 and b"token_missing" in no_token[1]
    assert unknown[0] == 404 and b"unknown_ride" in unknown[1]
    assert other_ride[0] == 403
    assert viewer[0] == 403
