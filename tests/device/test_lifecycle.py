"""The ride's lifecycle across replicas, with real processes on loopback: an end from the app stops the
bike (online, offline across the end, both ending at once), and policy rule 8 (samples after the end are
kept but not counted) holds exactly on what the bike recorded."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from engine.chaos.proxy import ChaosProxy
from engine.device.common import own_doc, replica_dir
from engine.ride import policy
from engine.ride.schema import Role
from engine.store import ReplicaStore
from tests.device.test_e2e import app_cmd, log_tail, ride_cmd
from tests.support.processes import HANG_GUARD_S, Backend, spawn

pytestmark = pytest.mark.slow

LONG_RIDE_S = 3600  # an hour of ride time (60 s of wall time at --speed 60): the app ends it long before


def check_rule_8(view: dict[str, Any], bike_data: Path, device: str, ride_id: str) -> int:
    """The backend's official view follows rule 8 exactly on the samples the bike holds; returns how many
    samples lie after the end."""
    store = ReplicaStore(replica_dir(bike_data, Role.BIKE, device), device_id=device, role=Role.BIKE)
    try:
        mine = own_doc(store, ride_id)
        assert mine is not None and mine.ended is not None
        claim = mine.ended
        counted = [s for s in mine.samples if s.t <= claim.t]
        after = len(mine.samples) - len(counted)
    finally:
        store.close()
    # Every sample the bike recorded is declared, on the backend, and kept: none lost to the end.
    assert claim.count == len(mine.samples) == view["samples"][device]
    assert view["declared"] == {device: {"last_seq": len(mine.samples) - 1, "count": len(mine.samples)}}
    assert view["end_t"] == claim.t
    assert view["after_end"] == ({device: after} if after else {})
    expected, _ = policy.compute_totals(counted, [], [])
    official = dict(view["totals"])
    assert official.pop("duration_s") == claim.duration_s == round(counted[-1].t - counted[0].t + 1.0, 2)
    assert official == {k: v for k, v in expected.to_json().items() if k != "duration_s"}
    return after


async def until_samples_on_backend(backend: Backend, ride_id: str, token: str, device: str) -> None:
    """Wait (bounded by the caller's hang guard) until the backend holds samples of the bike: a first sync
    can reconcile an empty ride, and an end before any sample is not what these tests are about."""
    while True:
        if (await backend.ride(ride_id, token))["samples"].get(device):
            return
        await asyncio.sleep(0.1)  # polling a remote view: nothing here could set an event


async def test_an_end_from_the_app_stops_the_bike(backend: Backend, tmp_path: Path) -> None:
    bike_token = backend.token("bike", "bike-l1", rider="lee")
    app_token = backend.token("app", "tablet-l1", rider="lee")
    async with asyncio.timeout(HANG_GUARD_S):
        bike = await spawn(
            *ride_cmd(backend.url, bike_token, "r-l1", tmp_path / "bike", LONG_RIDE_S),
            stderr_path=tmp_path / "logs" / "ride.log",
        )
        await bike.wait_line(lambda o: o.get("event") == "sync" and o["state"] == "reconciled")
        await until_samples_on_backend(backend, "r-l1", bike_token, "bike-l1")
        app = await spawn(
            *app_cmd(backend.url, app_token, "r-l1", tmp_path / "app", "--end"),
            stderr_path=tmp_path / "logs" / "app.log",
        )
        assert await app.finish() == 0, (app.lines[-3:], log_tail(tmp_path, "app.log"))
        assert await bike.finish() == 0, (bike.lines[-3:], log_tail(tmp_path))
    summary = bike.last
    learned = bike.events("ride_end_learned")
    assert len(learned) == 1
    assert summary["ended_by"] == "remote"
    assert 0 < summary["samples_recorded"] < LONG_RIDE_S
    assert summary["phase"] == "finalized" and summary["sync_state"] == "reconciled"
    assert summary["end_events_counted"] == 1
    view = await backend.ride("r-l1", bike_token)
    assert view["phase"] == "finalized" and view["end_events_counted"] == 1 and view["problems"] == []
    check_rule_8(view, tmp_path / "bike", "bike-l1", "r-l1")
    assert summary["totals"] == view["totals"]


async def test_a_bike_offline_across_the_end_stops_when_it_reconnects(
    backend: Backend, tmp_path: Path
) -> None:
    bike_token = backend.token("bike", "bike-l2", rider="mo")
    app_token = backend.token("app", "tablet-l2", rider="mo")
    async with asyncio.timeout(HANG_GUARD_S), ChaosProxy(("127.0.0.1", backend.port)) as proxy:
        bike = await spawn(
            *ride_cmd(f"http://{proxy.address}", bike_token, "r-l2", tmp_path / "bike", LONG_RIDE_S),
            stderr_path=tmp_path / "logs" / "ride.log",
        )
        await bike.wait_line(lambda o: o.get("event") == "sync" and o["state"] == "reconciled")
        await until_samples_on_backend(backend, "r-l2", bike_token, "bike-l2")
        proxy.partition()
        await bike.wait_line(lambda o: o.get("event") == "sync" and o["state"] == "failed")
        # The tablet, still online, ends the ride while the bike cannot hear of it.
        app = await spawn(
            *app_cmd(backend.url, app_token, "r-l2", tmp_path / "app", "--end"),
            stderr_path=tmp_path / "logs" / "app.log",
        )
        assert await app.finish() == 0, (app.lines[-3:], log_tail(tmp_path, "app.log"))
        # The bike records on, offline: its backlog grows by 3 ride minutes after the end.
        backlog = max(o["unacked_samples"] for o in bike.events("sync"))
        await bike.wait_line(lambda o: o.get("event") == "sync" and o["unacked_samples"] >= backlog + 180)
        assert not bike.events("ride_end_learned")
        proxy.heal()
        assert await bike.finish() == 0, (bike.lines[-3:], log_tail(tmp_path))
    summary = bike.last
    assert summary["ended_by"] == "remote"
    assert summary["samples_recorded"] < LONG_RIDE_S
    assert summary["phase"] == "finalized" and summary["end_events_counted"] == 1
    view = await backend.ride("r-l2", bike_token)
    after = check_rule_8(view, tmp_path / "bike", "bike-l2", "r-l2")
    # What it recorded offline after the app's end is on the backend, in its document, and not counted.
    # (at least the 3 minutes above, less the backlog a rate-limited progress line had not shown yet)
    assert after >= 120
    assert view["samples"]["bike-l2"] == summary["samples_recorded"]
    assert summary["after_end"] == {"bike-l2": after}


async def test_bike_and_app_ending_in_the_same_second_count_once(backend: Backend, tmp_path: Path) -> None:
    bike_token = backend.token("bike", "bike-l3", rider="kim")
    app_token = backend.token("app", "tablet-l3", rider="kim")
    async with asyncio.timeout(HANG_GUARD_S):
        bike = await spawn(
            *ride_cmd(backend.url, bike_token, "r-l3", tmp_path / "bike", LONG_RIDE_S),
            stderr_path=tmp_path / "logs" / "ride.log",
        )
        await bike.wait_line(lambda o: o.get("event") == "sync" and o["state"] == "reconciled")
        await until_samples_on_backend(backend, "r-l3", bike_token, "bike-l3")
        # Ctrl-C on the bike and --end on the tablet at the same moment.
        bike.proc.send_signal(signal.SIGINT)
        app = await spawn(
            *app_cmd(backend.url, app_token, "r-l3", tmp_path / "app", "--end", "--wait-phase", "finalized"),
            stderr_path=tmp_path / "logs" / "app.log",
        )
        codes = list(await asyncio.gather(app.finish(), bike.finish()))
        assert codes == [0, 0], (app.lines[-3:], bike.lines[-3:], log_tail(tmp_path))
    assert bike.last["end_post"]["ok"] and app.last["end_post"]["ok"]
    view = await backend.ride("r-l3", bike_token)
    assert view["end_events_counted"] == 1 and bike.last["end_events_counted"] == 1
    assert app.last["end_events_counted"] == 1
    assert view["phase"] == "finalized"
    check_rule_8(view, tmp_path / "bike", "bike-l3", "r-l3")
