"""open_serial_sources: simulated and real specs, simulator handles for fault injection."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from adapters.serial.factory import SpecError, open_serial_sources, parse_spec
from adapters.serial.line_source import LineSource
from adapters.serial.peloton_listen import PelotonListenSource
from adapters.serial.peloton_poll import PelotonPollSource
from adapters.serial.sim.profile import ProfileError
from engine.readings import Reading, SourceState
from tests.support.serial import FAST, Collector

POLL: dict[str, Any] = {"interval_s": 0.05, "reply_timeout_s": 0.045, **FAST}


def _exists(path: str) -> bool:
    return os.path.lexists(path)


async def test_two_simulated_bikes_in_poll_mode_stream_independently() -> None:
    async with open_serial_sources(
        "sim:2", protocol="peloton", mode="poll", speed=10, source_options=POLL
    ) as sources:
        assert len(sources) == 2 and len(sources.simulators) == 2
        assert all(isinstance(s, PelotonPollSource) for s in sources)
        assert [s.source_id for s in sources] == ["bike0", "bike1"]
        assert sources.simulators[0].paths != sources.simulators[1].paths
        collectors = [Collector(s) for s in sources]
        for c in collectors:
            c.start()
        try:
            for c in collectors:
                await c.wait_for(lambda c: len(c.readings) >= 6, "readings")
            # Unplug one: only its source notices; then replug through the handle.
            sources.simulators[1].unplug()
            await collectors[1].wait_state(SourceState.LOST)
            assert SourceState.LOST not in collectors[0].states()
            n = len(collectors[1].readings)
            sources.simulators[1].replug()
            await collectors[1].wait_for(lambda c: len(c.readings) >= n + 3, "readings after replug")
            sent = [(v.kind, v.value) for v in sources.simulators[0].sent]
            got = [(r.kind, r.value) for r in collectors[0].readings]
            assert got == sent[: len(got)]
        finally:
            for c in collectors:
                await c.stop()
    # the context closed the ptys and removed their paths
    assert not any(_exists(p) for h in sources.simulators for p in h.paths)


@pytest.mark.parametrize(
    ("protocol", "mode", "kind", "ports"),
    [("peloton", "listen", PelotonListenSource, 2), ("line", "poll", LineSource, 1)],
)
async def test_listen_tap_and_line_sensor(protocol: str, mode: str, kind: type, ports: int) -> None:
    async with open_serial_sources(
        "sim", protocol=protocol, mode=mode, speed=20, tap_ports=2, source_options=FAST, tablet_boots=True
    ) as sources:
        (source,) = sources
        assert isinstance(source, kind)
        assert len(sources.simulators[0].ports) == ports
        c = Collector(source)
        c.start()
        try:
            await c.wait_for(lambda c: len(c.readings) >= 3, "readings")
            if protocol == "peloton":
                # the bus started only once the tap listened: the tablet's boot-time calibration was heard
                await c.wait_for(
                    lambda c: any(r.pct is not None for r in c.readings), "calibrated resistance"
                )
        finally:
            await c.stop()
        assert all(isinstance(r, Reading) and r.source == source.source_id for r in c.readings)


async def test_profile_from_csv(tmp_path: Path) -> None:
    csv = tmp_path / "ride.csv"
    csv.write_text("cadence,power,resistance\n" + "90,250.5,700\n" * 5)
    async with open_serial_sources(
        "sim", mode="listen", speed=5, profile=csv, source_options=FAST
    ) as sources:
        c = Collector(sources[0])
        c.start()
        try:
            await c.wait_for(lambda c: len(c.readings) >= 6, "readings")
        finally:
            await c.stop()
    assert {(r.kind.value, r.value) for r in c.readings} <= {
        ("cadence", 90.0),
        ("power", 250.5),
        ("resistance", 700.0),
    }


async def test_real_port_spec_makes_a_plain_source(tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyUSB9")
    async with open_serial_sources(missing, mode="listen", source_options=FAST) as sources:
        assert sources.simulators == []
        (source,) = sources
        assert source.source_id == f"serial:{missing}"
        c = Collector(source)
        c.start()
        try:
            await c.wait_state(SourceState.BACKING_OFF)
        finally:
            await c.stop()
    async with open_serial_sources("/dev/a,/dev/b", mode="listen") as sources:
        assert sources[0].paths == ("/dev/a", "/dev/b")


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("sim:x", {}, "sim:N"),
        ("sim:0", {}, "between 1 and 32"),
        ("a,b,c", {}, "one port, or two"),
        ("sim", {"protocol": "ant"}, "protocol"),
        ("sim", {"mode": "push"}, "mode"),
        ("sim", {"speed": 0}, "speed"),
        ("/dev/a,/dev/b", {"mode": "poll"}, "poll mode drives one port"),
        ("/dev/a,/dev/b", {"protocol": "line"}, "one port"),
    ],
)
async def test_bad_specs_are_refused(spec: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        async with open_serial_sources(spec, **kwargs):  # type: ignore[arg-type]
            pass


async def test_bad_profile_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("90,abc,700\n")
    with pytest.raises(ProfileError, match=r"bad\.csv:1"):
        async with open_serial_sources("sim", profile=bad):
            pass


def test_parse_spec() -> None:
    assert parse_spec("sim") == (1, [])
    assert parse_spec("sim:3") == (3, [])
    assert parse_spec(" /dev/ttyUSB0 ") == (0, ["/dev/ttyUSB0"])


async def test_simulators_stop_with_the_context() -> None:
    async with open_serial_sources("sim", source_options=FAST):
        before = {t.get_name() for t in asyncio.all_tasks()}
        assert any(name.startswith("serial-sim-") for name in before)
    assert not any(t.get_name().startswith("serial-sim-") for t in asyncio.all_tasks())
