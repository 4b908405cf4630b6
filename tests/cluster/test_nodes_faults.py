"""Several backend nodes over one PostgreSQL database, with nodes SIGKILLed while bikes ride.

Real parts throughout: a throwaway PostgreSQL cluster (Debian's `postgresql`), a real redis-server for the
ride push, three `ridesync serve --store postgresql://… --push redis://…` processes, a fault proxy
(engine/chaos/proxy.py) in front of each, bikes as `ridesync ride` processes with simulated straps at
--speed, apps as `ridesync app` processes. Every node is SIGKILLed and restarted in turn while the bikes
ride; afterwards every ride is ended by apps on other nodes than its bike's (some twice, on two other
nodes). Then, read from every node: each ride holds exactly its bike's samples, one end event, finalized;
and the database holds one finalization per ride.

`make test` runs the short variant (`test_nodes_short`: 3 bikes); the full one (20 bikes, every node
killed twice) is marked `cluster` and runs with `make test-cluster` (README.md, "Several backend nodes").
Both skip, naming the Debian package, where PostgreSQL or redis-server is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.campaign.procs import Proc, ServeProcess, get_json, issue_token, spawn
from engine.chaos.proxy import ChaosProxy, Faults
from engine.testing.postgres import PostgresCluster
from tests.support.postgres import pg_cluster  # noqa: F401  (the fixture)
from tests.support.redis import RedisProcess, redis_server  # noqa: F401  (the fixture)

HANG_GUARD_S = 240
SPEED = "20"


@dataclass
class Cluster:
    nodes: list[ServeProcess]
    proxies: list[ChaosProxy]
    db_url: str

    def proxy_url(self, i: int) -> str:
        return f"http://{self.proxies[i % len(self.proxies)].address}"


@contextlib.asynccontextmanager
async def cluster(tmp: Path, db_url: str, redis_url: str, n: int = 3) -> AsyncIterator[Cluster]:
    """`n` serve processes over one database and one broker, each behind its own fault proxy. Light
    faults on every link (resets after the handshake, short stalls): the devices retry through them."""
    nodes = [
        ServeProcess(
            data=tmp / f"node{i}",
            logs=tmp / "logs" / f"node{i}",
            extra=("--store", db_url, "--push", redis_url, "--log-level", "INFO"),
        )
        for i in range(n)
    ]
    proxies: list[ChaosProxy] = []
    try:
        await nodes[0].start()
        for node in nodes[1:]:
            node.data.mkdir(parents=True)
            shutil.copy2(nodes[0].data / "token-keys.json", node.data / "token-keys.json")
            await node.start()
        faults = Faults(reset=0.3, kill_min=500, kill_window=8000, stall_probability=0.01, stall_max=0.3)
        for i, node in enumerate(nodes):
            proxy = ChaosProxy(("127.0.0.1", node.port), faults=faults, seed=i)
            await proxy.start()
            proxies.append(proxy)
        yield Cluster(nodes, proxies, db_url)
    finally:
        for proxy in proxies:
            await proxy.stop()
        for node in nodes:
            await asyncio.shield(node.stop())


def ride_cmd(url: str, token: str, ride: str, data: Path, duration: int) -> list[str]:
    return [
        "ride", "--backend", url, "--token", token, "--ride-id", ride, "--hr", "sim", "--duration",
        str(duration), "--speed", SPEED, "--data", str(data), "--json", "--retry-cap", "0.5",
        "--heartbeat", "1", "--sync-timeout", "120",
    ]  # fmt: skip


def app_cmd(url: str, token: str, ride: str, data: Path) -> list[str]:
    return [
        "app", "--backend", url, "--token", token, "--ride-id", ride, "--data", str(data), "--json",
        "--retry-cap", "0.5", "--heartbeat", "1", "--sync-timeout", "120", "--end", "--wait-phase",
        "finalized",
    ]  # fmt: skip


def _finalizations(db_url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT ride_id, count(*) FROM finalizations GROUP BY ride_id").fetchall()
    return {str(ride): int(n) for ride, n in rows}


def _finalized_log_lines(tmp: Path) -> dict[str, int]:
    """`ride finalized` INFO lines per ride over every node's log (kept across restarts)."""
    import json

    out: dict[str, int] = {}
    for log in sorted((tmp / "logs").glob("node*/serve.log")):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("msg") == "ride finalized":
                    ride = str(entry.get("ride_id"))
                    out[ride] = out.get(ride, 0) + 1
    return out


async def run_campaign(
    tmp: Path, db_url: str, redis_url: str, *, bikes: int, ride_s: int, kill_rounds: int
) -> dict[str, Any]:
    async with cluster(tmp, db_url, redis_url) as c, asyncio.timeout(HANG_GUARD_S):
        ring = c.nodes[0].ring()
        riders: list[tuple[str, str, str, str]] = []  # (bike device, ride, bike token, app token)
        for i in range(bikes):
            device, rider = f"bike-{i:02d}", f"rider-{i:02d}"
            riders.append(
                (
                    device,
                    f"ride-{i:02d}",
                    issue_token(ring, "bike", device, rider=rider),
                    issue_token(ring, "app", f"tablet-{i:02d}", rider=rider),
                )
            )
        procs: list[Proc] = []
        try:
            for i, (device, ride, token, _) in enumerate(riders):
                cmd = ride_cmd(c.proxy_url(i), token, ride, tmp / device, ride_s)
                procs.append(await spawn(*cmd, stderr_path=tmp / "logs" / f"{device}.log"))
            # Every bike is riding and synced once before the first kill.
            for p in procs:
                await p.wait_line(lambda o: o.get("event") == "sync" and o.get("state") == "reconciled")
            kills = 0
            riding_at_first_kill = sum(p.running for p in procs)
            # Every device's link is reset once (besides the random resets), then the nodes die in turn.
            for proxy in c.proxies:
                proxy.reset_all()
            for _ in range(kill_rounds):
                for node in c.nodes:
                    await node.restart()  # SIGKILL, then start again on the same port and database
                    kills += 1
                    await asyncio.sleep(0.5)
            codes = [await p.finish() for p in procs]
            assert codes == [0] * bikes, [p.lines[-1:] for p, code in zip(procs, codes, strict=True) if code]
            # Apps end each ride on another node than its bike's; every third ride twice, on both others.
            apps: list[Proc] = []
            for i, (_, ride, _, app_token) in enumerate(riders):
                ends = [i + 1, i + 2] if i % 3 == 0 else [i + 1]
                for k, at in enumerate(ends):
                    cmd = app_cmd(c.proxy_url(at), app_token, ride, tmp / f"tablet-{i:02d}-{k}")
                    apps.append(await spawn(*cmd, stderr_path=tmp / "logs" / f"tablet-{i:02d}.log"))
            app_codes = [await a.finish() for a in apps]
            assert app_codes == [0] * len(apps), [a.lines[-1:] for a in apps if a.proc.returncode]
            summaries = {ride: p.last for (_, ride, _, _), p in zip(riders, procs, strict=True)}
        finally:
            for p in procs:
                await p.stop(grace_s=2)
        views: dict[str, list[dict[str, Any]]] = {}
        for _device, ride, token, _ in riders:
            for node in c.nodes:
                status, view = await get_json(f"{node.url}/v1/rides/{ride}", token)
                assert status == 200, (node.url, ride, view)
                views.setdefault(ride, []).append(view)
            assert summaries[ride]["samples_recorded"] == ride_s, summaries[ride]
        return {
            "riders": riders,
            "views": views,
            "kills": kills,
            "riding_at_first_kill": riding_at_first_kill,
            "proxy_resets": sum(p.count("reset") for p in c.proxies),
            "finalizations": _finalizations(db_url),
            "finalized_lines": _finalized_log_lines(tmp),
        }


def check(result: dict[str, Any], ride_s: int) -> None:
    print(  # the campaign's figures, for `pytest -s`
        {k: result[k] for k in ("kills", "riding_at_first_kill", "proxy_resets")}
        | {"rides": len(result["riders"])}
    )
    for device, ride, _, _ in result["riders"]:
        for view in result["views"][ride]:
            assert view["samples"].get(device) == ride_s, (ride, view["samples"])
            assert view["declared"][device] == {"last_seq": ride_s - 1, "count": ride_s}
            assert view["missing_samples"] == {}
            assert view["phase"] == "finalized", (ride, view["phase"])
            assert view["end_events_counted"] == 1, (ride, view["end_events_counted"])
        first = result["views"][ride][0]
        assert all(v["totals"] == first["totals"] for v in result["views"][ride])  # every node agrees
    rides = {ride for _, ride, _, _ in result["riders"]}
    assert result["riding_at_first_kill"] == len(rides)  # the nodes die under riding bikes
    assert result["proxy_resets"] >= len(rides)  # and every device's link was reset too
    assert result["finalizations"] == dict.fromkeys(rides, 1)
    assert result["finalized_lines"] == dict.fromkeys(rides, 1), result["finalized_lines"]


async def test_nodes_short(
    tmp_path: Path,
    pg_cluster: PostgresCluster,  # noqa: F811
    redis_server: RedisProcess,  # noqa: F811
) -> None:
    """3 bikes, one per node, each node killed once: the variant `make test` runs."""
    result = await run_campaign(
        tmp_path, pg_cluster.database(), redis_server.url, bikes=3, ride_s=200, kill_rounds=1
    )
    check(result, 200)
    assert result["kills"] == 3


@pytest.mark.cluster
async def test_nodes_20_bikes(
    tmp_path: Path,
    pg_cluster: PostgresCluster,  # noqa: F811
    redis_server: RedisProcess,  # noqa: F811
) -> None:
    """20 bikes, every node killed twice in turn, apps ending on other nodes (every third twice)."""
    result = await run_campaign(
        tmp_path, pg_cluster.database(), redis_server.url, bikes=20, ride_s=300, kill_rounds=2
    )
    check(result, 300)
    assert result["kills"] == 6
