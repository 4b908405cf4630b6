"""A second benchmark ride, from the simulators' physics rather than from independent noise per field.

`RideSignal` (engine/bench/ridegen.py) draws power as ±15 W uniform noise around a target, which no head
unit reports: a bike that measures cadence and resistance computes power from them. This ride takes what
the simulated bikes ride (the serial simulator's generated `RideProfile`: warm-up, 2-min-on/1-min-off
intervals, cool-down; cadence and raw resistance with the profile's own jitter), maps raw resistance to
percent through the bike's calibration table as the head unit does, and computes power from cadence and
resistance with an eddy-current brake model, reported in deciwatts as the bus carries it. Heart rate and
RR intervals come from the simulated strap's model (adapters/ble/sim/profile.py): a class profile of the
same shape, one RR interval per beat that fell in the second (so 1 to 3 per sample, as a strap sends
them), with its breathing-like wobble.

So its power carries no information of its own beyond cadence and resistance, and its RR intervals follow
a smooth rhythm: the opposite end from RideSignal's noise, between them the data real rides produce.
"""

from __future__ import annotations

import math

from adapters.ble.sim.profile import HrProfile, beats_between, class_profile, rr_raw_for
from adapters.serial.peloton.calibration import CalibrationTable
from adapters.serial.peloton.synth import DEFAULT_CALIBRATION
from adapters.serial.sim.profile import RideProfile
from engine.bench.ridegen import T0
from engine.ride.samples import MAX_RR, Sample

# Eddy-current brake: P = k(r) * omega^2, k growing with the magnets' engagement r (percent). Fitted to
# the usual figures of a studio bike: ~150 W at 80 rpm and 40 %, ~220 W at 90 rpm and 50 %, ~330 W at
# 100 rpm and 60 %; ~20 W freewheeling the flywheel at 60 rpm and no resistance.
_K0_W_S2 = 0.55
_K_PER_PERCENT = 0.04
_CALIBRATION = CalibrationTable(DEFAULT_CALIBRATION)
# The strap's class, in the bike profile's shape: 15 % warm-up, 2-min-on / 1-min-off, 15 % cool-down.
_WORK_S, _REST_S = 120.0, 60.0


def head_unit_power_w(cadence_rpm: int, resistance_raw: int) -> float:
    """Power a head unit shows for a cadence and a raw resistance reading."""
    omega = 2 * math.pi * cadence_rpm / 60
    return (_K0_W_S2 + _K_PER_PERCENT * _CALIBRATION.percent(resistance_raw)) * omega * omega


def strap_profile(duration_s: int) -> HrProfile:
    edge = max(duration_s * 0.15, 1.0)
    intervals = max(int((duration_s - 2 * edge) // (_WORK_S + _REST_S)), 0)
    return class_profile(warmup_s=edge, intervals=intervals, work_s=_WORK_S, rest_s=_REST_S, cooldown_s=edge)


class SimBikeRide:
    """A deterministic (per seed) ride of `duration_s` seconds; past its end the last second holds.
    `sample(seq)` must be called with seq 0, 1, 2, ..."""

    def __init__(self, seed: int = 0, duration_s: int = 3600, t0: float = T0) -> None:
        self.bike = RideProfile.generated(duration_s, seed=seed)
        self.heart = strap_profile(duration_s)
        self.t0 = t0
        self.beat = 0
        self._next = 0

    def sample(self, seq: int) -> Sample:
        bike = self.bike.at(seq)
        bpm = self.heart.bpm_at(seq)
        # The strap's second [seq - 1, seq): the beats that fell in it, each with its interval.
        beats = beats_between(seq - 1, seq, bpm) if seq else 1
        rr = tuple(rr_raw_for(bpm, self.beat + i) for i in range(min(beats, MAX_RR)))
        self.beat += beats
        power = head_unit_power_w(bike.cadence, bike.resistance_raw) if bike.cadence else 0.0
        return Sample(
            seq=seq,
            t=self.t0 + seq,
            hr=round(bpm),
            rr=rr,
            cadence=bike.cadence,
            power_dw=round(power * 10),
            resistance=bike.resistance_raw,
            contact="detected",
        )

    def take(self, count: int) -> list[Sample]:
        """The next `count` samples."""
        start, self._next = self._next, self._next + count
        return [self.sample(seq) for seq in range(start, start + count)]


def sim_ride(count: int, seed: int = 0) -> list[Sample]:
    return SimBikeRide(seed, duration_s=count).take(count)
