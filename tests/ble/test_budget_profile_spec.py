"""Connection budget, heart-rate profiles and --hr specs: the small pure pieces."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.ble.budget import ConnectionBudget, ConnectionBudgetExceeded
from adapters.ble.factory import HrSpecError, parse_spec
from adapters.ble.sim.profile import SAMPLE_PROFILES, HrProfile, ProfileError, class_profile, rr_raw_for


def test_budget_reserves_until_full_then_names_everyone() -> None:
    budget = ConnectionBudget("hci0", 2)
    a = budget.reserve("a")
    with budget.reserve("b"):
        with pytest.raises(ConnectionBudgetExceeded) as info:
            budget.reserve("c")
        assert info.value.holders == ("a", "b")
        assert info.value.requester == "c"
        assert "hci0 has 2 connection slot(s), 2 in use (a, b)" in str(info.value)
    assert budget.available == 1
    a.release()
    assert budget.holders == ()


def test_budget_up_front_check_and_duplicates() -> None:
    budget = ConnectionBudget("hci0", 5)
    budget.check(5, "five straps")
    with pytest.raises(ConnectionBudgetExceeded):
        budget.check(6, "six straps")
    budget.reserve("x")
    with pytest.raises(ValueError, match="already holds"):
        budget.reserve("x")
    with pytest.raises(ValueError):
        ConnectionBudget("hci0", 0)


def test_profile_interpolates_and_holds() -> None:
    p = HrProfile(((0, 60), (10, 160), (20, 160)))
    assert p.bpm_at(-1) == 60
    assert p.bpm_at(5) == 110
    assert p.bpm_at(15) == 160
    assert p.bpm_at(99) == 160
    assert p.duration_s == 20


def test_profile_from_csv(tmp_path: Path) -> None:
    f = tmp_path / "ride.csv"
    f.write_text("t_s,bpm,note\n0,70,rest\n60,150,climb\n")
    assert HrProfile.from_csv(f).points == ((0.0, 70.0), (60.0, 150.0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t_s,bpm\n", "at least one point"),
        ("t_s,bpm\n0,70\n0,80\n", "strictly ascending"),
        ("t_s,bpm\n0,700\n", "outside 20..300"),
        ("t_s,bpm\n0,abc\n", "ride.csv:2"),
        ("time,heart\n0,70\n", "expected numeric t_s,bpm"),
        ("t_s,bpm\n0,nan\n", "non-finite"),
    ],
)
def test_bad_profiles_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "ride.csv"
    f.write_text(text)
    with pytest.raises(ProfileError, match=message):
        HrProfile.from_csv(f)


def test_shipped_sample_profile_loads() -> None:
    p = HrProfile.from_csv(SAMPLE_PROFILES / "spin-class-20min.csv")
    assert p.duration_s == 1200
    assert max(b for _, b in p.points) == 175


def test_missing_profile_file() -> None:
    with pytest.raises(ProfileError, match="cannot read profile"):
        HrProfile.from_csv("/nonexistent/ride.csv")


def test_generated_class_has_warmup_intervals_and_cooldown() -> None:
    p = class_profile(warmup_s=100, intervals=2, work_s=50, rest_s=50, cooldown_s=100)
    assert p.bpm_at(0) == 70
    assert p.bpm_at(100) == 120
    assert p.bpm_at(140) == 165  # inside the first work block
    assert p.bpm_at(200) == 120  # end of the first rest
    assert p.duration_s == 400


@given(st.floats(20, 300), st.integers(0, 10**6))
def test_rr_intervals_match_the_rate(bpm: float, beat: int) -> None:
    rr = rr_raw_for(bpm, beat)
    assert 0 < rr <= 0xFFFF
    assert abs(rr / 1024 - 60 / bpm) <= 0.04 * 60 / bpm + 1 / 1024


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("sim", ("sim", 1)),
        ("sim:3", ("sim", 3)),
        ("AA:BB:CC:DD:EE:FF", ("straps", ["AA:BB:CC:DD:EE:FF"])),
        ("Polar H10 1234", ("straps", ["Polar H10 1234"])),
        ("A, B", ("straps", ["A", "B"])),
    ],
)
def test_specs(spec: str, parsed: object) -> None:
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["", "sim:0", "sim:1000", "sim:x", "a,,b", "a,a"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(HrSpecError):
        parse_spec(spec)


def test_sim_adapter_and_out_of_range_specs() -> None:
    from adapters.ble.factory import HrSpecError, parse_adapters, parse_sim
    from adapters.ble.sim.range_walk import RangeWalk, RangeWalkError

    assert parse_sim("sim") == (1, 1)
    assert parse_sim("sim:12@2") == (12, 2)
    assert parse_sim("AA:BB:CC:DD:EE:FF") is None
    for bad in ("sim:12@0", "sim:3@x", "sim@2"):
        with pytest.raises(HrSpecError):
            parse_sim(bad)
    assert parse_adapters(None) == ["default"]
    assert parse_adapters("hci0, hci1") == ["hci0", "hci1"]
    with pytest.raises(HrSpecError):
        parse_adapters("hci0,hci0")
    assert RangeWalk.parse("2:10@5") == RangeWalk(2, 10.0, 5.0)
    assert RangeWalk.parse("1:3") == RangeWalk(1, 3.0, 0.0)
    for bad in ("0:10@5", "2:0", "two:10", "2:10@"):
        with pytest.raises(RangeWalkError):
            RangeWalk.parse(bad)
    with pytest.raises(RangeWalkError, match="only 3 run"):
        RangeWalk.parse("4:1").check(3)
