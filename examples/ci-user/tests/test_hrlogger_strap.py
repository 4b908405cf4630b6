"""hrlogger's strap code against ridesync's simulated strap: real bleak on a virtual radio.

`sim_strap` comes from ridesync's pytest plugin (installed with ridesync); nothing is imported from it.
"""

from __future__ import annotations

import asyncio

import pytest

from hrlogger import StrapLogger, find_strap, log_heart_rate


async def test_logs_the_heart_rate(sim_strap):
    sim_strap.set_hr(150)
    log = await log_heart_rate(sim_strap.address, 2.5, **sim_strap.bleak_kwargs)
    assert log.bpm and set(log.bpm) == {150}
    assert not log.disconnected


async def test_finds_the_strap_by_name(sim_strap):
    assert await find_strap("ridesync-sim-hr", scan_s=1.0, **sim_strap.bleak_kwargs) == sim_strap.address
    assert await find_strap("Polar", scan_s=1.0, **sim_strap.bleak_kwargs) is None


async def test_ignores_readings_without_skin_contact(sim_strap):
    sim_strap.pause()  # simulated time moves only when told
    sim_strap.set_contact(False)
    async with StrapLogger(sim_strap.address, **sim_strap.bleak_kwargs) as logger:
        await sim_strap.advance(3)
        await asyncio.sleep(0.2)
        sim_strap.set_contact(True)
        await sim_strap.advance(1)
        await asyncio.sleep(0.2)
    assert [m.contact for m in logger.log.measurements] == [False, False, False, False, True]
    assert len(logger.log.bpm) == 1


async def test_survives_malformed_notifications_and_reads_rr(sim_strap):
    sim_strap.pause()
    async with StrapLogger(sim_strap.address, **sim_strap.bleak_kwargs) as logger:
        await sim_strap.send_raw(b"\x00")  # flags only
        await sim_strap.send_raw(b"\x01\x50")  # says 16-bit, carries 8 bits
        sim_strap.set_rr([0.8, 0.81])
        await sim_strap.advance(1)
        await asyncio.sleep(0.2)
    assert logger.log.malformed == 2
    assert logger.log.measurements[-1].rr_s == [819 / 1024, 829 / 1024]


async def test_a_30_minute_ride_takes_seconds(sim_strap):
    sim_strap.pause()
    sim_strap.ramp(90, 180, 1800)
    async with StrapLogger(sim_strap.address, **sim_strap.bleak_kwargs) as logger:
        await sim_strap.advance(1800)  # half an hour of simulated time, sent now
        await asyncio.sleep(0.3)
    bpm = logger.log.bpm[1:]
    assert len(bpm) == 1800
    assert bpm == sorted(bpm) and bpm[0] == 90 and bpm[-1] == 180


class TestRange:
    @pytest.fixture
    def ridesync_speed(self):
        return 10.0  # simulated time 10x: a strap out of range loses its link after 0.5 s

    async def test_a_strap_walking_away_ends_the_log(self, sim_strap):
        async with StrapLogger(sim_strap.address, **sim_strap.bleak_kwargs) as logger:
            sim_strap.out_of_range()
            async with asyncio.timeout(10):
                await logger.gone.wait()
        assert logger.log.disconnected
