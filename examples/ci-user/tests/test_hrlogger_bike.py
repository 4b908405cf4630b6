"""hrlogger's bike code against ridesync's simulated Peloton bus: real pyserial on a pty.

`sim_bike` is a factory (`sim_bike(protocol=..., mode=...)`); used as it is, it is a Peloton bus in
listen mode, the tap hrlogger is.
"""

from __future__ import annotations

import threading

import pytest

from hrlogger import read_bike


@pytest.fixture
def ridesync_speed():
    return 10.0  # ten bus seconds per second: 100 frames


def test_reads_cadence_and_power(sim_bike):
    sim_bike.set_cadence(90)
    sim_bike.set_power(212.5)
    log = read_bike(sim_bike.port, 1.0)
    assert log.cadence and set(log.cadence) == {90}
    assert set(log.power_w) == {212.5}
    assert log.bad_frames == 0


def test_counts_frames_with_bad_checksums(sim_bike):
    bike = sim_bike(protocol="peloton", mode="listen", seed=1)
    timer = threading.Timer(0.3, bike.flip, args=(4,))  # once hrlogger has the port open
    timer.start()
    log = read_bike(bike.port, 1.5)
    timer.join()
    assert log.bad_frames == 4
    assert bike.injected["flip"] == 4


def test_an_unplugged_cable_ends_the_log(sim_bike):
    timer = threading.Timer(0.3, sim_bike.unplug)
    timer.start()
    log = read_bike(sim_bike.port, 10)
    timer.join()
    assert log.unplugged
    assert log.cadence  # what came before the cable was pulled
