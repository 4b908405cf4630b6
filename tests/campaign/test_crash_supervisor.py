"""The crash campaign's supervisor and a bike killed after it ended its ride: `ridesync ride` then refuses
that ride (exit 2, "already ended on this bike"), rightly. The supervisor must finish the ride the
product's way (`ridesync sync`) and move on, not restart the refused ride for ever (the long crash run
reported "bike bike-00: last run exited 2" after restarting it again and again)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.campaign.crash import Crash
from engine.campaign.procs import get_json
from engine.campaign.report import CampaignOptions, CampaignReport, Progress

HANG_GUARD_S = 120
SAMPLES = 20


async def test_a_bike_refused_as_already_ended_is_synced_and_done(tmp_path: Path) -> None:
    options = CampaignOptions(seed=14, long=False, workdir=tmp_path, quiet=True)
    crash = Crash(options, CampaignReport("crash", 14, "short"), Progress("crash", quiet=True))
    async with asyncio.timeout(HANG_GUARD_S), crash.serve:
        crash.add_replicas(1, 0)
        (bike,) = crash.replicas
        bike.args = ["--hr", "sim", "--duration", str(SAMPLES), "--speed", "50", "--sync-timeout", "30"]
        await bike.start(crash.serve.url)
        assert await bike.reap() == 0  # the ride ended and reconciled
        # The supervisor restarts it on the same ride, as after a kill that landed past the end.
        await bike.start(crash.serve.url)
        assert bike.proc is not None
        await bike.proc.proc.wait()  # refused: the supervisor finds it stopped
        await crash.keep_running()
        assert bike.done and not bike.running
        status, view = await get_json(f"{crash.serve.url}/v1/rides/{bike.ride_id}", bike.token)
    assert status == 200
    assert view["samples"][bike.device] == SAMPLES and view["phase"] == "finalized"
