"""`ridesync token issue` and `ridesync serve` as a user runs them: real processes, real sockets."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp

from engine.auth.tokens import KeyRing, Role
from engine.cli.main import main
from tests.support.live import HANG_GUARD_S, sample


def test_token_issue_prints_a_token_the_data_dir_verifies(tmp_path: Path, capsys: object) -> None:
    assert (
        main(
            [
                "token",
                "issue",
                "--role",
                "bike",
                "--device",
                "bike-9",
                "--class",
                "c1",
                "--class",
                "c2",
                "--data",
                str(tmp_path),
                "--init",
            ]
        )
        == 0
    )
    token = capsys.readouterr().out.strip()  # type: ignore[attr-defined]
    claims = KeyRing.load_or_create(tmp_path).verify(token)
    assert (
        claims.role is Role.BIKE and claims.device == "bike-9" and claims.classes == frozenset({"c1", "c2"})
    )
    assert main(["token", "issue", "--role", "viewer", "--device", "bad id", "--data", str(tmp_path)]) == 2


async def test_serve_runs_hub_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli.main", "serve", "--port", "0", "--data", str(tmp_path), "--init",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(HANG_GUARD_S):
            line = json.loads(await proc.stdout.readline())
        assert line["event"] == "listening"
        base = line["url"]
        ring = KeyRing.load_or_create(tmp_path)
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/healthz") as r:
                assert (await r.json())["ok"] is True
            ws_base = base.replace("http://", "ws://") + "/live/v1/classes/c1/ws"
            bike = await s.ws_connect(
                ws_base + "?mode=pub",
                headers={"Authorization": "Bearer " + ring.issue("bike", "b1", classes=["c1"])},
            )
            viewer = await s.ws_connect(ws_base + "?token=" + ring.issue("viewer", "v1", classes=["c1"]))
            await bike.send_str(sample(1, hr=99.0))
            async with asyncio.timeout(HANG_GUARD_S):
                while True:
                    frame = json.loads((await viewer.receive()).data)
                    if frame.get("riders", {}).get("b1", {}).get("hr"):
                        break
            assert frame["riders"]["b1"]["hr"]["v"] == 99.0
            proc.send_signal(signal.SIGTERM)
            # Shutdown tells peers why: 1001 going away.
            async with asyncio.timeout(HANG_GUARD_S):
                while not viewer.closed:
                    await viewer.receive()
            assert viewer.close_code == 1001
        async with asyncio.timeout(HANG_GUARD_S):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
