"""`ridesync rides list|show|export`: against a real `ridesync serve` holding a ride that a real
`ridesync ride` (simulated strap and bike) recorded and synced, and against that bike's own data dir with
no backend at all; and the one-line errors."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import http.server
import io
import json
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from engine.backend.http import LIST_LIMIT
from engine.cli.main import main
from engine.cli.rides_source import BackendSource, RidesError
from engine.device.common import replica_dir
from engine.ride.schema import Role
from engine.server.keys import REGISTRY
from engine.store import ReplicaStore
from tests.export.test_formats import decode_fit
from tests.support.backend_server import MakeServer
from tests.support.processes import HANG_GUARD_S, Backend, spawn
from tests.support.samples import T0, sample
from tests.support.stored_rides import seed_rides

RIDE = "ride-cli"
RIDE_S = 120


# The installed command, as a user runs it (under `python -m engine.cli.main` the module is `__main__`, and
# the CliError the handlers raise is not the one `main` catches).
RIDESYNC = str(Path(sys.executable).parent / "ridesync")


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        RIDESYNC, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_a_ride_recorded_by_a_real_bike_lists_shows_and_exports(
    backend: Backend, tmp_path: Path, tcx_schema: xmlschema.XMLSchema
) -> None:
    bike_token = backend.token("bike", "bike-1", rider="alice")
    app_token = backend.token("app", "tablet-1", rider="alice")
    bike_data = tmp_path / "bike-data"
    async with asyncio.timeout(HANG_GUARD_S):
        bike = await spawn(
            "ride", "--backend", backend.url, "--token", bike_token, "--hr", "sim", "--serial", "sim",
            "--ride-id", RIDE, "--duration", str(RIDE_S), "--speed", "30", "--data", str(bike_data),
            "--json", "--sync-timeout", "60", "--retry-cap", "1",
            stderr_path=tmp_path / "ride.log",
        )  # fmt: skip
        assert await bike.finish() == 0, bike.lines[-3:]
        summary = bike.last
        assert summary["phase"] == "finalized", summary
        common = ("--backend", backend.url, "--token", app_token)
        listed = await run_cli("rides", "list", *common, "--json")
        table = await run_cli("rides", "list", *common)
        shown = await run_cli("rides", "show", RIDE, *common, "--json")
        shown_text = await run_cli("rides", "show", RIDE, *common)
        out = tmp_path / "out"
        out.mkdir()
        exports = {
            fmt: await run_cli("rides", "export", RIDE, *common, "--format", fmt, "-o", str(out / f"r.{fmt}"))
            for fmt in ("fit", "tcx", "csv")
        }
        # The bike's own data dir, no backend needed (the backend is still up; it is not asked).
        local_list = await run_cli("rides", "list", "--data", str(bike_data), "--json")
        local_fit = await run_cli(
            "rides", "export", RIDE, "--data", str(bike_data), "-o", str(out / "local.fit")
        )

    code, stdout, _ = listed
    assert code == 0
    rides = json.loads(stdout)["rides"]
    assert [(r["ride_id"], r["phase"], r["sync_state"]) for r in rides] == [(RIDE, "finalized", "reconciled")]
    assert table[0] == 0 and RIDE in table[1] and "finalized" in table[1] and "RIDE" in table[1]
    code, stdout, _ = shown
    view = json.loads(stdout)
    assert code == 0 and view["ride_id"] == RIDE and view["totals"] == summary["totals"]
    assert shown_text[0] == 0 and "duration" in shown_text[1] and "0:02:00" in shown_text[1]
    count = view["samples"]["bike-1"]
    assert count == RIDE_S

    assert all(code == 0 for code, _, _ in exports.values()), exports
    messages = decode_fit((out / "r.fit").read_bytes())
    assert len(messages["record_mesgs"]) == count
    (session,) = messages["session_mesgs"]
    assert session["total_elapsed_time"] == view["totals"]["duration_s"]
    if view["totals"]["avg_power_w"] is not None:
        assert session["avg_power"] == round(view["totals"]["avg_power_w"])
    tcx_schema.validate(str(out / "r.tcx"))
    table_rows = list(csv.DictReader(io.StringIO((out / "r.csv").read_text())))
    assert len(table_rows) == count

    code, stdout, _ = local_list
    assert code == 0
    (local,) = json.loads(stdout)["rides"]
    assert local["ride_id"] == RIDE and local["replica"] == "bike:bike-1"
    assert local_fit[0] == 0
    assert len(decode_fit((out / "local.fit").read_bytes())["record_mesgs"]) == count


async def test_one_line_errors(backend: Backend) -> None:
    app_token = backend.token("app", "tablet-1")
    common = ("--backend", backend.url, "--token", app_token)
    async with asyncio.timeout(HANG_GUARD_S):
        unknown = await run_cli("rides", "show", "no-such-ride", *common)
        refused = await run_cli("rides", "list", "--backend", backend.url, "--token", "rs1.bogus.bogus.bogus")
        unreachable = await run_cli("rides", "list", "--backend", "http://127.0.0.1:9", "--token", app_token)
        neither = await run_cli("rides", "list")
    for code, stdout, stderr in (unknown, refused, unreachable, neither):
        assert code == 2 and stdout == ""
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert "unknown ride" in json.loads(unknown[2])["error"]
    refusal = json.loads(refused[2])["error"]
    assert refusal.startswith("the backend refused the token (401 token_") and "key" in refusal
    assert "cannot reach the backend at http://127.0.0.1:9" in json.loads(unreachable[2])["error"]
    assert "--backend URL and --token T" in json.loads(neither[2])["error"]


async def test_list_follows_next_over_more_rides_than_one_page(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """`GET /v1/rides` answers 200 rides a page by default: `rides list` follows `next` to the end."""
    ids = seed_rides(tmp_path / "data", LIST_LIMIT + 7)
    server = await make_server(data=tmp_path / "data")
    token = server.token("app", "tablet-1")
    async with asyncio.timeout(HANG_GUARD_S):
        code, stdout, stderr = await run_cli(
            "rides", "list", "--backend", server.url, "--token", token, "--json"
        )
    assert code == 0, stderr
    assert [r["ride_id"] for r in json.loads(stdout)["rides"]] == ids  # each once, in order
    pages = server.test_server.app[REGISTRY].get_sample_value(
        "ridesync_backend_http_requests_total", {"route": "list", "status": "200"}
    )
    assert pages == 2


def test_a_cursor_that_does_not_advance_is_a_one_line_error() -> None:
    """A hostile or broken backend that sends the same `next` again must not keep the client looping."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = json.dumps({"rides": [{"ride_id": "ride-b"}], "next": "ride-b"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            source = BackendSource(f"http://127.0.0.1:{httpd.server_address[1]}", "t")
            with pytest.raises(RidesError, match="bad page cursor"):
                source.list()
        finally:
            httpd.shutdown()
            thread.join()
    assert seen == ["/v1/rides", "/v1/rides?after=ride-b"]


# -- a replica's data dir, in process ------------------------------------------------------------------


def _digest(db: Path) -> tuple[int, int, str]:
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as conn:
        actors = conn.execute("SELECT count(*) FROM actors").fetchone()[0]
        changes = conn.execute("SELECT count(*) FROM changes").fetchone()[0]
        raw = conn.execute("SELECT group_concat(seq || ':' || folded) FROM raw_samples").fetchone()[0]
    return actors, changes, hashlib.sha256(str(raw).encode()).hexdigest()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_data_dir_is_read_from_a_copy_while_the_bike_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tcx_schema: xmlschema.XMLSchema
) -> None:
    data = tmp_path / "data"
    bike = ReplicaStore(replica_dir(data, Role.BIKE, "bike-1"), device_id="bike-1", role=Role.BIKE)
    try:
        bike.start_ride("r-local", t=T0)
        bike.append_samples("r-local", [sample(i) for i in range(20)])
        bike.fold("r-local")
        # Five more, durable in the raw log but not folded into the document yet (as mid-ride).
        bike.append_samples("r-local", [sample(i) for i in range(20, 25)])
        db = bike.data_dir / "ridesync.sqlite3"
        before = _digest(db)

        code, out, _ = _run(capsys, "rides", "list", "--data", str(data), "--json")
        assert code == 0
        (ride,) = json.loads(out)["rides"]
        assert (ride["ride_id"], ride["phase"], ride["replica"]) == ("r-local", "active", "bike:bike-1")
        code, out, _ = _run(capsys, "rides", "list", "--data", str(data))
        assert code == 0 and "r-local" in out and "bike:bike-1" in out

        code, out, _ = _run(capsys, "rides", "show", "r-local", "--data", str(bike.data_dir), "--json")
        view: dict[str, Any] = json.loads(out)
        assert code == 0 and view["samples"] == {"bike-1": 25}  # the unfolded five too

        target = tmp_path / "r.csv"
        code, out, _ = _run(capsys, "rides", "export", "r-local", "--data", str(data), "--format", "csv",
                            "-o", str(target), "--json")  # fmt: skip
        assert code == 0 and json.loads(out)["path"] == str(target)
        assert len(target.read_text().splitlines()) == 26
        code, out, _ = _run(
            capsys, "rides", "export", "r-local", "--data", str(data), "--format", "tcx", "-o", "-"
        )
        assert code == 0
        tcx_schema.validate(out)

        code, _, err = _run(capsys, "rides", "show", "nope", "--data", str(data))
        assert code == 2 and "unknown ride" in err
        code, _, err = _run(capsys, "rides", "list", "--data", str(tmp_path / "empty-dir-missing"))
        assert code == 2 and "no such directory" in err

        # Nothing was written to the bike's own store: no new actor, no fold, no change record.
        assert _digest(db) == before
        assert bike.pending_samples("r-local") == 5
    finally:
        bike.close()
