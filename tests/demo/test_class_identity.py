"""Rider identity, cumulative output and the class's rides kept across restarts, without a browser:
token claims, the rider book, the hub's kJ and zone time, the leaderboard's fair ranking, the ride
directory on disk and the results endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine.auth.tokens import KeyRing, Role, TokenMalformed
from engine.dashboard.directory import RIDES, RideDirectory
from engine.dashboard.routes import setup_dashboard
from engine.live.lane import live_lane
from engine.live.leaderboard import table
from engine.live.riders import CLASS_GAP_S, RiderBook
from engine.live.routes import HUB
from engine.live.slots import ClassSlots, RiderSlot
from engine.live.wire import HelloIn, SampleIn
from engine.server.app import build_app
from engine.server.config import ServerConfig
from tests.support.paths import ROOT

CLI = [sys.executable, "-m", "engine.cli.main"]

# --- tokens -----------------------------------------------------------------------------------------------


def test_token_carries_name_and_max_hr(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    claims = ring.verify(ring.issue(Role.BIKE, "bike-7", classes=["spin"], name="Ann Lee", max_hr=172))
    assert (claims.name, claims.max_hr) == ("Ann Lee", 172)
    plain = ring.verify(ring.issue(Role.BIKE, "bike-7", classes=["spin"]))
    assert (plain.name, plain.max_hr) == (None, None)
    assert "name" not in plain.to_payload()


@pytest.mark.parametrize(
    ("name", "max_hr"), [("", None), ("x" * 65, None), ("a\nb", None), (None, 99), (None, 251)]
)
def test_token_refuses_bad_name_or_max_hr(tmp_path: Path, name: str | None, max_hr: int | None) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    with pytest.raises(TokenMalformed):
        ring.issue(Role.BIKE, "bike-7", name=name, max_hr=max_hr)


def test_token_issue_cli_with_name_and_max_hr(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *CLI,
            *(
                "token",
                "issue",
                "--init",
                "--role",
                "bike",
                "--device",
                "bike-7",
                "--class",
                "spin",
                "--json",
            ),
            *("--name", "Ann", "--max-hr", "172", "--data", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    claims = json.loads(out.stdout)["claims"]
    assert (claims["name"], claims["max_hr"]) == ("Ann", 172)


def test_ride_refuses_a_bad_max_hr(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    token = ring.issue(Role.BIKE, "bike-7", classes=["spin"])
    out = subprocess.run(
        [
            *CLI,
            *("ride", "--backend", "http://127.0.0.1:9", "--hr", "sim", "--max-hr", "300"),
            *("--token", token, "--data", str(tmp_path / "bike")),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode != 0
    assert "--max-hr" in out.stdout + out.stderr


# --- the rider book -----------------------------------------------------------------------------------------


def test_rider_book_survives_a_restart_and_merges(tmp_path: Path) -> None:
    book = RiderBook.in_dir(tmp_path)
    book.remember("spin", "bike-7", "Token Name", 150)  # from the token
    book.remember("spin", "bike-7", "Ann", None)  # the publisher's hello names her, keeps the max HR
    again = RiderBook.in_dir(tmp_path)
    ident = again.identity("spin", "bike-7")
    assert ident is not None and (ident.name, ident.max_hr) == ("Ann", 150)
    assert again.identity("other", "bike-7") is None


def test_class_start_is_the_first_join_until_the_class_empties_for_long(tmp_path: Path) -> None:
    book = RiderBook.in_dir(tmp_path)
    assert book.joined("spin", False, now=1000.0) == 1000.0
    assert book.joined("spin", True, now=1000.0 + 2 * CLASS_GAP_S) == 1000.0  # others rode all along
    book.left("spin", now=5000.0)
    assert RiderBook.in_dir(tmp_path).class_started("spin") == 1000.0  # kept across a restart
    assert book.joined("spin", False, now=5000.0 + 60) == 1000.0  # back within the gap: same class
    assert book.joined("spin", False, now=5060.0 + CLASS_GAP_S + 1) == 5060.0 + CLASS_GAP_S + 1


# --- the hub's rider records and leaderboard ---------------------------------------------------------


def _sample(device: str, metric: str, v: float | None, t: float, seq: int) -> SampleIn:
    return SampleIn(device, metric, v, t, seq, f"{metric}-src", None)


def test_output_and_zone_time_accumulate() -> None:
    slots = ClassSlots("spin", stale_after_s=3.0)
    slots.apply(HelloIn("b1", "Ann", 160), 0.0)
    for i in range(11):  # 200 W for 10 s, one value a second
        slots.apply(_sample("b1", "pwr", 200.0, 100.0 + i, i + 1), 100.0 + i)
    slot = slots.riders["b1"]
    assert slot.kj() == 2.0
    # A 20 s hole adds nothing; a value after it starts again.
    slots.apply(_sample("b1", "pwr", 300.0, 130.0, 20), 130.0)
    slots.apply(_sample("b1", "pwr", 300.0, 131.0, 21), 131.0)
    assert slot.kj() == 2.3
    # 130 bpm is zone 4 of 160 (zone 2 of the default 190): 5 s at it count as hard time.
    for i in range(6):
        slots.apply(_sample("b1", "hr", 130.0, 200.0 + i, i + 1), 200.0 + i)
    assert slot.zone() == 4 and round(slot.hard_s) == 5
    record = slot.record()
    assert record["max_hr"] == 160 and record["kj"] == 2.3 and record["hard_s"] == 5
    assert json.loads("{" + slot.fragment() + "}")["b1"] == record


def test_bikes_without_power_are_ranked_apart_not_last() -> None:
    riders = [RiderSlot("p1"), RiderSlot("p2"), RiderSlot("np1"), RiderSlot("np2")]
    riders[0].energy_j, riders[0].has_power = 5000.0, True
    riders[1].energy_j, riders[1].has_power = 9000.0, True
    riders[2].hard_s, riders[3].hard_s = 30.0, 90.0
    rows = table(riders)
    assert (rows["p2"]["rank_kj"], rows["p1"]["rank_kj"]) == (1, 2)
    assert rows["np1"]["rank_kj"] is None and rows["np1"]["rank_pwr"] is None
    assert rows["np1"]["power"] is False and rows["p1"]["power"] is True
    assert (rows["np2"]["rank_effort"], rows["np1"]["rank_effort"]) == (1, 2)
    assert "rank_effort" not in rows["p1"]


# --- the ride directory and the results after a restart ----------------------------------------------------


def test_directory_is_kept_on_disk(tmp_path: Path) -> None:
    d = RideDirectory.in_dir(tmp_path)
    d.register("spin", "bike-1", "r1", "Ann")
    d.register("spin", "bike-1", "r2")
    d.register("spin", "bike-2", "r3")
    again = RideDirectory.in_dir(tmp_path, names=lambda c, dev: "Ben" if dev == "bike-2" else None)
    assert [e.ride_id for e in again.class_history("spin")] == ["r1", "r2", "r3"]
    assert again.class_rides("spin")["bike-1"].ride_id == "r2"
    assert again.ride("r1") is not None and again.ride("r1").name == "Ann"  # type: ignore[union-attr]
    again.rename("spin", "bike-2", "Ben")
    assert RideDirectory.in_dir(tmp_path).ride("r3").name == "Ben"  # type: ignore[union-attr]


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[object]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make() -> TestClient[web.Request, web.Application]:
        config = ServerConfig(data_dir=tmp_path, port=0, init_keys=True)
        app = build_app(config, lanes=[live_lane(), setup_dashboard])
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


async def test_results_after_a_restart(tmp_path: Path, make_client: object) -> None:
    make = make_client
    client = await make()  # type: ignore[operator]
    app = client.app
    app[HUB].riders.remember("spin", "bike-2", "Ben", 181)
    app[RIDES].register("spin", "bike-1", "r1", "Ann")
    app[RIDES].register("spin", "bike-2", "r2")
    await client.close()

    client = await make()  # type: ignore[operator]
    viewer = KeyRing.load_or_create(tmp_path).issue(Role.VIEWER, "dash", classes=["spin"])
    resp = await client.get(
        "/dashboard/v1/classes/spin/results", headers={"Authorization": f"Bearer {viewer}"}
    )
    assert resp.status == 200
    body = await resp.json()
    assert [(r["ride_id"], r["name"]) for r in body["rides"]] == [("r1", "Ann"), ("r2", "Ben")]
    assert body["rides"][1]["max_hr"] == 181
    entry = await client.get("/dashboard/v1/rides/r1", headers={"Authorization": f"Bearer {viewer}"})
    assert entry.status == 200
    page = await client.get("/classes/spin/results")
    assert page.status == 200 and "results.js" in await page.text()
    other = KeyRing.load_or_create(tmp_path).issue(Role.VIEWER, "dash", classes=["other"])
    refused = await client.get(
        "/dashboard/v1/classes/spin/results", headers={"Authorization": f"Bearer {other}"}
    )
    assert refused.status == 403
