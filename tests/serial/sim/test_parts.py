"""Simulator building blocks: ride profiles, capture timing files, fault bookkeeping, the pty port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.serial.peloton.synth import BikeSample
from adapters.serial.sim.faults import Faults
from adapters.serial.sim.profile import ProfileError, RideProfile
from adapters.serial.sim.pty_port import PtyPort, Unplugged
from adapters.serial.sim.replay import CaptureError, Replayer, load_timing


def test_csv_profile_with_header_and_comments(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("cadence,power,resistance\n# warm-up\n80,150.5,500\n\n90,200,600\n")
    p = RideProfile.from_csv(f)
    assert p.samples == (BikeSample(80, 150.5, 500), BikeSample(90, 200.0, 600))
    assert p.at(-3) == p.samples[0] and p.at(1.9) == p.samples[1] and p.at(99) == p.samples[1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("80,150\n", "expected cadence,power,resistance"),
        ("80,x,500\n", "not numbers"),
        ("1000,150,500\n", "out of range"),
        ("80,150,-1\n", "out of range"),
        ("", "at least one sample"),
    ],
)
def test_bad_csv_profiles(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "p.csv"
    f.write_text(text)
    with pytest.raises(ProfileError, match=message):
        RideProfile.from_csv(f)


def test_binary_file_is_not_a_profile(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(ProfileError):
        RideProfile.from_csv(f)


def test_generated_profile_fits_the_bus() -> None:
    p = RideProfile.generated(1800, seed=4)
    assert p.duration_s == 1800
    assert all(
        0 <= s.cadence <= 999 and 0 <= s.power_w <= 9999 and 0 <= s.resistance_raw <= 9999 for s in p.samples
    )
    # warm-up is easier than the intervals
    assert sum(s.power_w for s in p.samples[:200]) < sum(s.power_w for s in p.samples[300:500])


def test_timing_file(tmp_path: Path) -> None:
    f = tmp_path / "cap.bin.timing"
    f.write_text('{"offset": 4, "t": 0.1}\n{"offset": 10, "t": 0.25}\n')
    assert load_timing(f, 10) == [(4, 0.1), (10, 0.25)]
    for bad in ('{"offset": 11, "t": 1}\n', '{"offset": 4, "t": 1}\n{"offset": 3, "t": 2}\n', "nonsense\n"):
        f.write_text(bad)
        with pytest.raises(CaptureError):
            load_timing(f, 10)


def test_fault_bookkeeping() -> None:
    f = Faults(truncate=1, flip=1, garbage=1, spacing=1, seed=1)
    frame = bytes.fromhex("f14103303030c5f6")
    first, intact1 = f.apply(frame)  # garbage + truncation on the first frame
    clean, intact2 = f.apply(frame)  # spacing: the next one goes out untouched
    flipped, intact3 = f.apply(frame)
    assert (intact1, intact2, intact3) == (False, True, False)
    assert clean == frame
    assert len(flipped) == len(frame) and flipped != frame
    assert f.injected == {"garbage": 1, "drop": 0, "truncate": 1, "flip": 1}
    assert f.garbage_bytes + f.damaged_bytes == len(first) + len(flipped)
    assert not f.armed


def _target(link: str) -> str:
    return str(Path(link).resolve())


async def test_pty_port_unplug_replug_keeps_the_path(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "dev")
    port.plug()
    first_tty = port.tty_name
    reader = asyncio.create_task(port.read())
    await asyncio.sleep(0)
    port.unplug()
    with pytest.raises(Unplugged):
        await reader
    with pytest.raises(Unplugged):
        await port.write(b"x")
    port.plug()
    try:
        assert first_tty and port.tty_name
        assert _target(port.path) == port.tty_name  # same path, pointing at the new pty
    finally:
        port.close()


async def test_replayer_paces_by_rate(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "dev")
    port.plug()
    try:
        r = Replayer(port, b"x" * 100, speed=10, rate=1000, chunk=10)
        assert r.timing[0] == (10, 0.01) and r.timing[-1] == (100, 0.1)
        await r.run()
        assert r.bytes_sent == 100
    finally:
        port.close()
