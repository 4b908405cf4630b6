"""The reference sketch's clock (adapters/serial/firmware/ridesync_cadence): 1/1024 s ticks that stay
exact past 70 minutes and across micros()'s wrap at 2^32 us (about 71.6 minutes).

`SketchClock` mirrors the sketch's `micros64()` and `sensor_ticks()` with explicit uint32/uint64
arithmetic; the sketch must contain the very lines mirrored here. Where g++ exists, the sketch itself is
also built against a stub Arduino.h (tests/serial/firmware_host) and run for 75 simulated minutes."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.serial.cadence import CrankCadence
from adapters.serial.line_protocol import CrankRecord, Ident, LineParser

SKETCH_DIR = Path(__file__).parents[2] / "adapters/serial/firmware/ridesync_cadence"
SKETCH = SKETCH_DIR / "ridesync_cadence.ino"
HOST = Path(__file__).parent / "firmware_host"
U16, U32, U64 = 1 << 16, 1 << 32, 1 << 64
WRAP_US = U32  # micros() wraps here: 71 min 34.97 s
SEVENTY_FIVE_MIN_US = 75 * 60 * 1_000_000


class SketchClock:
    """micros64() and sensor_ticks() as the sketch computes them, in C's unsigned arithmetic."""

    def __init__(self) -> None:
        self.last_micros = 0  # uint32_t
        self.total_micros = 0  # uint64_t

    def micros64(self, micros: int) -> int:
        now = micros % U32
        self.total_micros = (self.total_micros + (now - self.last_micros) % U32) % U64
        self.last_micros = now
        return self.total_micros

    def event_us(self, now_us: int, event_micros: int) -> int:
        """loop(): the 64-bit time of the last crank event, from the ISR's 32-bit micros()."""
        return (now_us - (self.last_micros - event_micros) % U32) % U64


def sensor_ticks(us: int) -> int:
    return ((us * 1024) % U64 // 1_000_000) % U32 % U16


def exact_ticks(us: int) -> int:
    """1/1024 s since boot, low 16 bits, from exact integer math."""
    return us * 1024 // 1_000_000 % U16


MIRRORED = (
    "total_micros += (uint32_t)(now - last_micros);",
    "return (uint16_t)(uint32_t)((uint64_t)us * 1024 / 1000000);",
    "uint64_t event_us = seen ? now_us - (uint32_t)(last_micros - event_micros) : 0;",
    "static uint64_t total_micros = 0;",
    "static uint32_t last_micros = 0;",
)


def test_the_sketch_has_the_lines_this_test_mirrors() -> None:
    text = SKETCH.read_text()
    for line in MIRRORED:
        assert line in text, line


def times_past_the_wrap(seed: int) -> list[int]:
    """Sample instants over 75 minutes (random gaps up to 5 s, as loop() may stall), plus every
    microsecond around micros()'s wrap and around the 70-minute mark where millis()*1024 overflows."""
    rng = random.Random(seed)
    t, out = 0, []
    while t < SEVENTY_FIVE_MIN_US:
        out.append(t)
        t += rng.randint(1, 5_000_000)
    out += range(WRAP_US - 5, WRAP_US + 5)
    out += range(4_194_304_000 - 5, 4_194_304_000 + 5)  # 2^32 / 1024 ms: millis()*1024 overflows
    return sorted(set(out))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ticks_match_exact_math_for_75_minutes_across_the_micros_wrap(seed: int) -> None:
    clock = SketchClock()
    samples = times_past_the_wrap(seed)
    assert samples[-1] > WRAP_US > 70 * 60 * 1_000_000
    for t in samples:
        us = clock.micros64(t % U32)  # what micros() returns at true time t
        assert us == t
        assert sensor_ticks(us) == exact_ticks(t)


@given(st.integers(0, 10 * WRAP_US), st.integers(0, WRAP_US - 1))
def test_crank_event_time_is_exact_even_when_micros_wrapped_between(event_t: int, age: int) -> None:
    clock = SketchClock()
    clock.micros64(event_t % U32)
    # loop() samples at least every 71 minutes: walk there in big steps, as loop() would
    now_t = event_t
    while now_t < event_t + age:
        now_t = min(event_t + age, now_t + WRAP_US // 3)
        clock.micros64(now_t % U32)
    clock.total_micros = now_t  # a sketch that booted at 0 has exactly this
    assert clock.event_us(now_t, event_t % U32) == event_t


def test_the_usual_shortcuts_are_wrong_which_is_why_the_sketch_does_not_use_them() -> None:
    t = 71 * 60 * 1_000_000  # 71 minutes in
    millis = t // 1000
    assert (millis * 1024 % U32) // 1000 % U16 != exact_ticks(t)  # millis()*1024/1000 overflowed
    one_minute = 60 * 1_000_000
    shifted = one_minute >> 10  # micros()>>10: 1.024 ms ticks
    assert abs(shifted / (one_minute * 1024 / 1_000_000) - 1) > 0.04  # about 5% slow


def build_sketch(tmp_path: Path) -> Path:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not installed: the sketch is only checked through its mirror")
    exe = tmp_path / "harness"
    subprocess.run(
        [gxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{HOST}", f"-I{SKETCH_DIR}",
         str(HOST / "harness.cpp"), "-o", str(exe)],
        check=True,
        timeout=120,
    )  # fmt: skip
    return exe


def test_the_sketch_itself_gives_exact_ticks_across_the_wrap(tmp_path: Path) -> None:
    exe = build_sketch(tmp_path)
    samples = times_past_the_wrap(4)
    out = subprocess.run(
        [str(exe), "ticks", *map(str, samples)], check=True, capture_output=True, text=True, timeout=60
    ).stdout.split("\n")
    for t, line in zip(samples, out, strict=False):
        us, ticks = map(int, line.split())
        assert (us, ticks) == (t, exact_ticks(t))


def test_the_sketch_reports_a_steady_75_rpm_for_75_minutes(tmp_path: Path) -> None:
    exe = build_sketch(tmp_path)
    text = subprocess.run(
        [str(exe), "ride", str(75 * 60), "800000"], check=True, capture_output=True, timeout=120
    ).stdout
    parser = LineParser()
    events = parser.feed(text)
    assert parser.counters.lines_ok == len(events) > 75 * 60
    assert isinstance(events[0], Ident) and events[0].device_id == "reed-01"
    cadence = CrankCadence(stop_after_s=3.0)
    rpms = []
    for ev in events:
        if isinstance(ev, CrankRecord):
            update = cadence.on_record(ev)
            if update is not None:
                rpms.append(update.rpm)
    assert len(rpms) > 75 * 60
    assert all(abs(rpm - 75.0) < 0.2 for rpm in rpms), (min(rpms), max(rpms))
    assert cadence.counters.as_dict()["resyncs"] == 0
