"""The information bound `bench store` reports (engine/bench/entropy.py, store_bound.py) and the second
benchmark ride from the simulated bike's physics (engine/bench/ridegen_sim.py)."""

from __future__ import annotations

import math

from adapters.serial.sim.profile import RideProfile
from engine.bench.entropy import delta_columns, delta_entropy_bytes, order0_bits
from engine.bench.ridegen import bench_store_sample as sample
from engine.bench.ridegen import ride
from engine.bench.ridegen_sim import SimBikeRide, head_unit_power_w, sim_ride
from engine.bench.store import build_packed
from engine.bench.store_bound import bench_information_bound
from engine.ride.samples import Sample


def test_order0_bits_of_known_distributions() -> None:
    assert order0_bits([]) == 0
    assert order0_bits([7] * 100) == 0
    assert math.isclose(order0_bits([0, 1, 2, 3] * 25), 200)  # 2 bits each
    assert math.isclose(order0_bits([0, 1]), 2)


def test_columns_are_coded_as_schema_2_codes_them() -> None:
    items = [
        Sample(seq=10, t=100.0, hr=120, rr=(500,), power_dw=2000),
        Sample(seq=11, t=101.0, hr=None, rr=(), power_dw=2010),
        Sample(seq=12, t=102.0, hr=123, rr=(498, 503), power_dw=1990),
    ]
    columns = delta_columns(items)
    assert columns["seq"] == [10, 1, 1]
    assert columns["t"] == [10_000, 100, 100]
    # Deltas skip absent values; presence is its own column.
    assert columns["hr"] == [120, 3]
    assert columns["hr_present"] == [True, False, True]
    assert columns["power_dw"] == [2000, 10, -20]
    assert columns["rr"] == [500, -2, 5]
    assert columns["rr_count"] == [1, 0, 2]
    assert columns["cadence"] == []


def test_a_steady_ride_carries_little_and_noise_carries_its_entropy() -> None:
    steady = [Sample(seq=i, t=float(i), hr=120, cadence=80) for i in range(600)]
    assert delta_entropy_bytes(steady)["total"] < 10  # only the first value of each column
    # Power alternating by +-10 dW: one bit per sample after the first.
    toggling = [Sample(seq=i, t=float(i), power_dw=2000 + 10 * (i % 2)) for i in range(801)]
    assert 99 <= delta_entropy_bytes(toggling)["power_dw"] <= 102


def test_the_ride_signal_hour_carries_about_8_KB() -> None:
    # The figure the earlier reports quote: RideSignal's statistics are unchanged.
    bound = delta_entropy_bytes(ride(3600, "bench-store"))
    assert 7_900 < bound["total"] < 8_500
    assert 3_700 < bound["power_dw"] < 4_300


def test_the_sim_ride_is_the_simulators_ride_with_head_unit_power() -> None:
    items = sim_ride(1200, seed=3)
    bike = RideProfile.generated(1200, seed=3)
    assert [s.seq for s in items] == list(range(1200))
    for s in items:
        b = bike.at(s.seq)
        assert (s.cadence, s.resistance) == (b.cadence, b.resistance_raw)
        assert s.power_dw == round(head_unit_power_w(b.cadence, b.resistance_raw) * 10)
    # More resistance or more cadence: more power.
    assert head_unit_power_w(90, 900) > head_unit_power_w(90, 500) > head_unit_power_w(60, 500) > 0
    assert 120 < head_unit_power_w(80, 653) < 200  # ~40 % on the default calibration, ~150 W
    # Heart rate follows the strap's class profile, every beat's RR interval reported.
    heart = SimBikeRide(3, duration_s=1200).heart
    assert all(s.hr == round(heart.bpm_at(s.seq)) for s in items)
    rates = [s.hr for s in items if s.hr is not None]
    assert (min(rates), max(rates)) == (70, 165)  # the class's rest and work
    beats = sum(len(s.rr) for s in items)
    expected = sum(heart.bpm_at(t) / 60 for t in range(1200))
    assert abs(beats - expected) / expected < 0.02
    assert items == sim_ride(1200, seed=3)


def test_information_bound_report_is_consistent() -> None:
    out = bench_information_bound(0.1, sample, build_packed)
    assert out["samples"] == 360
    for model in ("ride_signal", "sim_bike_physics"):
        row = out[model]
        per_hour = row["bound_bytes_per_hour"]
        assert abs(sum(row["bound_bytes_per_hour_by_column"].values()) - per_hour) <= 10
        assert row["saved_bytes_per_hour_offline_hourly"] < row["saved_bytes_per_hour_live_10s"]
        offline = row["saved_bytes_per_hour_offline_hourly"]
        assert row["ratio_saved_offline_hourly_vs_bound"] == round(offline / per_hour, 2)


def test_the_store_benchmark_does_not_import_the_simulators() -> None:
    """store_rss.py's children import engine/bench/store.py in a fresh interpreter and measure RSS growth;
    bumble's import leaves enough freed memory behind to hide 50 open rides (measured 0 B per ride)."""
    import subprocess
    import sys

    code = "import sys, engine.bench.store; print('bumble' in sys.modules, 'adapters.ble.sim' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.split() == ["False", "False"]
