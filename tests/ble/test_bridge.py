"""`ridesync bridge` end to end: a simulated serial bike on a real pty feeds a ride whose readings the bridge
advertises on the simulated radio; ridesync's own bleak sources read the bike (and the paired strap) back,
a plain BleakClient checks Cycling Power, CSC and the FTMS control point, and the ride is recorded and
synced as `ridesync ride` records it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakClient
from bleak.exc import BleakGATTProtocolError

from adapters.ble.bike_source import BleBikeSource
from adapters.ble.bridge.gatt import (
    CPS_FEATURE_UUID,
    CSC_FEATURE_UUID,
    FTMS_CONTROL_POINT_UUID,
    FTMS_FEATURE_UUID,
    SENSOR_LOCATION_UUID,
)
from adapters.ble.bridge.model import CPS_FEATURE_VALUE, CSC_FEATURE_VALUE, FTMS_FEATURE_VALUE
from adapters.ble.bridge.peripheral import bridged, open_bridge
from adapters.ble.cps import CYCLING_POWER_MEASUREMENT_UUID, parse_cps
from adapters.ble.csc import CSC_MEASUREMENT_UUID, parse_csc
from adapters.ble.revolutions import EVENT_TIME_MOD, RevolutionData, RevolutionRate
from adapters.ble.sim import Simulation
from adapters.ble.source import BleHeartRateSource
from engine.cli.sensor_sources import open_sensor_sources
from engine.device.bike import BikeOptions, BikeRide
from engine.readings import Kind, Reading, SourceItem
from engine.testing.bike import SimBikeControl
from tests.support.backend_server import Server, make_server, server
from tests.support.ble import FAST
from tests.support.sources import HANG_GUARD_S, recording

__all__ = ["make_server", "server"]

ROOT = Path(__file__).resolve().parents[2]
CADENCE, POWER = 90, 200.0


def values(readings: list[Reading], kind: Kind) -> list[float]:
    return [r.value for r in readings if r.kind is kind and r.value is not None]


Timed = list[tuple[float, bytes]]
CRANK_REVS_NEEDED = 4  # revolutions to collect on each service: over 2 s at 90 rpm


async def cps_and_csc(sim: Simulation, address: str, adapter: int) -> tuple[Timed, Timed, bytes]:
    """Cycling Power and CSC notifications (with arrival times), and the control point's answers, through
    a plain BleakClient."""
    power: Timed = []
    csc: Timed = []
    enough = asyncio.Event()

    def arrived(into: Timed, data: bytearray) -> None:
        into.append((time.monotonic(), bytes(data)))
        revs = [_crank_revs(power, parse_cps), _crank_revs(csc, parse_csc)]
        if min(revs) >= CRANK_REVS_NEEDED:
            enough.set()

    answers: asyncio.Queue[bytes] = asyncio.Queue()
    backend = sim.adapters[adapter].client_backend
    async with BleakClient(address, backend=backend, timeout=2.0) as client:
        assert bytes(await client.read_gatt_char(FTMS_FEATURE_UUID)) == FTMS_FEATURE_VALUE
        assert bytes(await client.read_gatt_char(CPS_FEATURE_UUID)) == CPS_FEATURE_VALUE
        assert bytes(await client.read_gatt_char(CSC_FEATURE_UUID)) == CSC_FEATURE_VALUE
        locations = [c for s in client.services for c in s.characteristics if c.uuid == SENSOR_LOCATION_UUID]
        assert len(locations) == 2  # one in Cycling Power, one in CSC
        await client.start_notify(CYCLING_POWER_MEASUREMENT_UUID, lambda _c, b: arrived(power, b))
        await client.start_notify(CSC_MEASUREMENT_UUID, lambda _c, b: arrived(csc, b))
        await client.start_notify(FTMS_CONTROL_POINT_UUID, lambda _c, b: answers.put_nowait(bytes(b)))
        # A write with no op code is an ATT error, not an answer.
        with pytest.raises(BleakGATTProtocolError, match="Invalid Attribute Value Length"):
            await client.write_gatt_char(FTMS_CONTROL_POINT_UUID, b"", response=True)
        # Start before Request Control is refused; Request Control is granted; a target is not supported.
        for request in (b"\x07", b"\x00", b"\x05\xc8\x00"):
            await client.write_gatt_char(FTMS_CONTROL_POINT_UUID, request, response=True)
        got_answers = b"".join([await answers.get() for _ in range(3)])
        await enough.wait()
    return power, csc, got_answers


def _crank_revs(timed: Timed, parse: Callable[[bytes], Any]) -> int:
    """Revolutions between the first and the last notification (uint16 counter, as on the air)."""
    cranks = [parse(payload).crank for _, payload in timed]
    if len(cranks) < 2 or cranks[0] is None or cranks[-1] is None:
        return 0
    return int((cranks[-1].revs - cranks[0].revs) % (1 << 16))


def cadences(timed: Timed, parse: Callable[[bytes], Any]) -> tuple[float, list[float]]:
    """The cadence over the whole window (revolutions / event time between the first and last), and
    what a head unit's rate tracker (the bike source's own) reports notification by notification."""
    cranks: list[RevolutionData] = [parse(payload).crank for _, payload in timed]
    # The window starts at a revolution: before it, the count and event time may still be the "no
    # revolution yet" zeros (or the last one before the rider sped up), which say nothing of the rate.
    start = next(i for i, c in enumerate(cranks) if c.revs != cranks[0].revs)
    first, last = cranks[start], cranks[-1]
    revs = (last.revs - first.revs) % (1 << 16)
    seconds = ((last.event_time_raw - first.event_time_raw) % EVENT_TIME_MOD) / 1024
    rate = RevolutionRate(max_per_min=250)
    tracked = []
    for (at_s, _), crank in list(zip(timed, cranks, strict=True))[start:]:
        if (update := rate.update(crank, at_s)) is not None:
            tracked.append(update.per_min)
    return revs / seconds * 60, tracked


async def test_serial_bike_read_back_through_the_bridge_and_ride_recorded(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial_bike = SimBikeControl("peloton", "poll", speed=1.0)
    serial_bike.set_cadence(CADENCE)
    serial_bike.set_power(POWER)
    # Three simulated adapters on one radio: a phone reading the bike, a watch reading the heart rate, and
    # a head unit checking the other services, each its own central as on real hardware.
    sim = await Simulation.start(adapters=3, supervision_timeout_s=0.5)
    token = server.token("bike", "bike-1")
    fed: list[SourceItem] = []
    try:
        async with (
            asyncio.timeout(HANG_GUARD_S),
            open_bridge("sim", simulation=sim, with_hr=True, heartbeat_s=0.25) as bridge,
        ):
            offer = bridge.offer

            def spy(item: SourceItem) -> None:
                fed.append(item)
                offer(item)

            monkeypatch.setattr(bridge, "offer", spy)
            options = BikeOptions(
                backend=server.url,
                token=token,
                device="bike-1",
                ride_id="bridged-1",
                data_root=tmp_path / "bike",
                sensors=lambda: bridged(
                    open_sensor_sources(
                        hr="sim", serial=serial_bike.port, protocol="peloton", mode="poll", speed=1.0
                    ),
                    bridge,
                ),
                sync_timeout_s=20.0,
                fold_interval_s=1.0,
            )
            ride = BikeRide(options)
            three_samples = asyncio.Event()
            append = ride.store.append_sample

            def appended(*args: Any, **kwargs: Any) -> Any:
                out = append(*args, **kwargs)
                if ride.store.next_seq("bridged-1") >= 3:
                    three_samples.set()
                return out

            monkeypatch.setattr(ride.store, "append_sample", appended)
            running = asyncio.create_task(ride.run())
            try:
                phone = BleBikeSource(bridge.address, adapter=sim.adapters[0].ble_adapter(), settings=FAST)
                watch = BleHeartRateSource(
                    bridge.address, adapter=sim.adapters[1].ble_adapter(), settings=FAST
                )
                async with recording(phone) as bike_rec, recording(watch) as hr_rec:
                    await bike_rec.until(
                        lambda r: (
                            CADENCE in values(r.readings, Kind.CADENCE)
                            and POWER in values(r.readings, Kind.POWER)
                        )
                    )
                    await hr_rec.until(lambda r: len(r.heart_rates()) >= 2)
                    power, csc, answers = await cps_and_csc(sim, bridge.address, adapter=2)
                    await three_samples.wait()  # enough ride seconds recorded to check them
                ride.stop.set()
                summary = await running
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
            assert bridge.stats.centrals_connected >= 3
    finally:
        await sim.close()
        serial_bike.close()

    # FTMS: the bike source chose Fitness Machine and reads what the serial bike was set to.
    streaming = next(s for s in bike_rec.states if s.state.value == "streaming")
    assert streaming.extra["service"] == "ftms"
    assert streaming.extra["device_info"]["manufacturer"] == "ridesync"
    assert values(bike_rec.readings, Kind.CADENCE)[-1] == CADENCE
    assert values(bike_rec.readings, Kind.POWER)[-1] == POWER
    # HRS: the heart rates read back are ones the strap fed the ride.
    fed_hr = {r.value for r in fed if isinstance(r, Reading) and r.kind is Kind.HEART_RATE}
    read_hr = {r.value for r in hr_rec.heart_rates()}
    assert read_hr and read_hr <= fed_hr
    # Cycling Power and CSC: parseable, the power as fed, cadence derivable from the synthesised crank.
    parsed_power = [parse_cps(p) for _, p in power]
    assert {m.power_w for m in parsed_power} == {int(POWER)}
    assert all(m.crank is not None and m.wheel is None for m in parsed_power)
    assert all(parse_csc(p).crank is not None and parse_csc(p).wheel is None for _, p in csc)
    for timed, parse in ((power, parse_cps), (csc, parse_csc)):
        window, tracked = cadences(timed, parse)
        assert window == pytest.approx(CADENCE, abs=0.5)
        assert tracked and all(abs(c - CADENCE) <= 1.0 for c in tracked), str(tracked)
    # Control point: 0x07 before control -> Control Not Permitted; 0x00 -> Success; 0x05 -> Not Supported.
    assert answers == bytes.fromhex("800705800001800502")
    # The ride: recorded durably and synced, as `ridesync ride` does.
    assert summary["sync_state"] == "reconciled", summary
    assert summary["samples_recorded"] >= 3
    assert summary["totals"]["avg_power_w"] == pytest.approx(POWER, rel=0.2)


def test_transport_that_cannot_open_is_one_json_error_and_records_nothing(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli.main import main

    # A TCP HCI transport to a port nobody listens on: bumble cannot open it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    data = tmp_path / "bike"
    argv = [
        "bridge", "--transport", f"tcp-client:127.0.0.1:{closed_port}",
        "--serial", "sim", "--backend", server.url, "--token", server.token("bike", "bike-1"),
        "--data", str(data), "--duration", "2", "--json",
    ]  # fmt: skip
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    message = json.loads(lines[0])["error"]
    assert f"tcp-client:127.0.0.1:{closed_port}" in message and "adapters/ble/README.md#the-bridge" in message
    assert not (data / "replicas").exists() and not any(data.rglob("*.sqlite*"))


async def test_bridge_on_a_controller_behind_an_hci_transport() -> None:
    """The path a USB dongle or hci-socket takes: bumble's `open_transport`, a host speaking HCI bytes to a
    controller at the other end, power-on, advertising and GATT through it. Here the controller is a
    simulated one on the radio, served over a TCP HCI transport; ridesync's bike source reads it back."""
    from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

    from adapters.ble.sim.radio import SimController

    sim = await Simulation.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    hci_server = await open_tcp_server_transport_with_socket(sock)
    SimController("dongle", host_source=hci_server.source, host_sink=hci_server.sink, link=sim.link)
    try:
        async with (
            asyncio.timeout(HANG_GUARD_S),
            open_bridge(f"tcp-client:127.0.0.1:{port}", with_hr=False, heartbeat_s=0.25) as bridge,
        ):
            bridge.offer(Reading(0.0, "serial:x", 1, Kind.CADENCE, 90.0))
            bridge.offer(Reading(0.0, "serial:x", 2, Kind.POWER, 200.0))
            # HCI over a byte stream (with ACL flow control) makes discovery slower than in-process.
            settings = replace(FAST, connect_timeout_s=5.0)
            phone = BleBikeSource(bridge.address, adapter=sim.adapters[0].ble_adapter(), settings=settings)
            async with recording(phone) as rec:
                await rec.until(lambda r: len(values(r.readings, Kind.POWER)) >= 2)
            assert bridge.transport.startswith("tcp-client:") and bridge.simulation is None
    finally:
        await hci_server.close()
        await sim.close()
    assert values(rec.readings, Kind.CADENCE)[-1] == CADENCE
    assert values(rec.readings, Kind.POWER)[-1] == POWER


async def test_bridge_command_rides_advertises_and_reads_back(server: Server, tmp_path: Path) -> None:
    """The command itself: `ridesync bridge --transport sim --readback` on a simulated serial bike records
    and syncs the ride, and ridesync's BLE bike source reads the bridge back on the simulated radio."""
    argv = [
        sys.executable, "-m", "engine.cli.main", "bridge", "--transport", "sim", "--readback",
        "--serial", "sim", "--backend", server.url, "--token", server.token("bike", "bike-2"),
        "--data", str(tmp_path / "bike"), "--duration", "20", "--speed", "5", "--json",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ}
    )
    async with asyncio.timeout(HANG_GUARD_S):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert lines[0] == {
        "event": "bridge",
        "state": "advertising",
        "transport": "sim",
        "name": "ridesync bridge",
        "address": "F0:52:53:42:52:01",
        "services": ["ftms", "cps", "csc"],
    }
    readback = [line for line in lines if line.get("event") == "bridge_readback"]
    assert {line["kind"] for line in readback} >= {"cadence", "power", "speed"}
    assert any(line["kind"] == "power" and line["value"] > 0 for line in readback)
    summary = lines[-1]
    assert summary["sync_state"] == "reconciled" and summary["samples_recorded"] == 20
    assert summary["bridge"]["centrals_connected"] == 1 and summary["bridge"]["notifications"] > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--hr", "sim"], "give --serial (or --bike)"),
        (["--serial", "sim", "--readback", "--transport", "usb:0"], "--readback needs --transport sim"),
    ],
)
def test_bridge_refuses_what_it_cannot_do(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli.main import main

    argv = ["bridge", "--transport", "sim", "--backend", "http://127.0.0.1:1", "--token", "t", *extra]
    assert main(argv) == 2
    assert message in json.loads(capsys.readouterr().err)["error"]


@pytest.mark.parametrize(
    "bad",
    [
        ["--ble-name", ""],
        ["--ble-name", "x" * 30],
        ["--ble-name", " padded"],
        ["--ble-address", "00:11:22:33:44:55"],  # not a static random address
        ["--ble-address", "F0:52:53"],
    ],
)
def test_bad_name_or_address_is_a_usage_error(bad: list[str]) -> None:
    from engine.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(
            ["bridge", "--transport", "sim", "--serial", "sim", "--backend", "http://x", "--token", "t", *bad]
        )
    assert exited.value.code == 2


def test_bench_bridge_reports_both_paths_and_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli.main import main

    assert main(["bench", "bridge", "--count", "100", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "bridge"
    for path in ("serial_to_ble_notification", "baseline_serial_to_reading", "ble_hop_only"):
        assert 0 < result[path]["p50_ms"] <= result[path]["p99_ms"] <= result[path]["max_ms"]
    assert set(result["ratios"]) == {"p50_ble_over_serial", "p99_ble_over_serial"}
