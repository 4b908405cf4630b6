"""The Peloton bus as a real lab meets it: a tap that hears only the bike's TX line, a table that crosses
the bus only when the tablet boots (so it is stored, or given), and a bike that wants the head unit's
boot handshake before it answers anything."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.serial.calibration_store import (
    CalibrationFileError,
    CalibrationKeeper,
    CalibrationStore,
    bike_key,
    parse_table,
)
from adapters.serial.link import QueueItem, SerialLink
from adapters.serial.peloton import (
    BusDecoder,
    CalibrationComplete,
    CalibrationTable,
    Command,
    PelotonFramer,
    ReplyFrame,
    encode_cadence,
    encode_calibration_reply,
    encode_calibration_request,
    encode_reply_payload,
    encode_request,
    encode_resistance,
)
from adapters.serial.peloton.synth import DEFAULT_CALIBRATION
from adapters.serial.peloton_listen import PelotonListenSource
from adapters.serial.peloton_poll import PelotonPollSource
from adapters.serial.port_source import PortSource
from adapters.serial.sim.bike import BikeSimulator
from adapters.serial.sim.bus import BusEmitter
from adapters.serial.sim.profile import RideProfile
from adapters.serial.sim.pty_port import PtyPort
from engine.cli.main import main
from engine.readings import Kind, Reading
from tests.support.serial import FAST, HANG_GUARD_S, Collector, wait_open

Collect = Callable[[PortSource], Collector]
Ptys = Callable[[str], PtyPort]
POLL: dict[str, Any] = {"interval_s": 0.05, "reply_timeout_s": 0.045, **FAST}
TABLE = CalibrationTable(DEFAULT_CALIBRATION)


def resistance(readings: list[Reading]) -> list[Reading]:
    return [r for r in readings if r.kind is Kind.RESISTANCE]


async def play(emitter: BusEmitter, collector: Collector) -> None:
    await emitter.run()
    await collector.wait_for(lambda c: len(c.readings) >= len(emitter.sent), "all values")


# ---- poll mode: the boot handshake ------------------------------------------------------------------


async def test_strict_bike_is_silent_until_the_boot_handshake(
    pty_factory: Ptys, tasks: list[asyncio.Task[None]]
) -> None:
    port = pty_factory("bike")
    bike = BikeSimulator(port, profile=RideProfile.generated(60), speed=1)
    tasks.append(asyncio.create_task(bike.run()))
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    link = await SerialLink.open(port.path, queue, baudrate=19200)
    framer = PelotonFramer()

    async def ask(request: bytes) -> ReplyFrame | None:
        ignored = bike.requests_ignored
        bike.handled.clear()
        link.write(request)
        async with asyncio.timeout(HANG_GUARD_S):
            await bike.handled.wait()
            if bike.requests_ignored > ignored:
                return None
            while True:
                chunk = await queue.get()
                assert not isinstance(chunk, Exception)
                frames = [f for f in framer.feed(chunk.data) if isinstance(f, ReplyFrame)]
                if frames:
                    return frames[0]

    try:
        assert await ask(encode_request(Command.CADENCE)) is None
        assert await ask(encode_calibration_request(0)) is None
        assert await ask(encode_request(Command.BIKE_ID)) is None  # FB before FE: not yet
        reply = await ask(encode_request(0, head=0xFE))
        assert reply is not None and reply.command == Command.STARTUP
        assert await ask(encode_request(Command.CADENCE)) is None  # FE alone is not enough
        reply = await ask(encode_request(Command.BIKE_ID))
        assert reply is not None and reply.command == Command.BIKE_ID and len(reply.payload) == 7
        reply = await ask(encode_calibration_request(0))
        assert reply is not None and reply.payload == b"4610"  # 164, least significant digit first
        reply = await ask(encode_request(Command.CADENCE))
        assert reply is not None and reply.command == Command.CADENCE
        bike.power_cycle()
        assert await ask(encode_request(Command.CADENCE)) is None
    finally:
        link.close()


async def test_poll_sends_the_boot_handshake_before_calibration(
    pty_factory: Ptys, collect: Collect, tasks: list[asyncio.Task[None]]
) -> None:
    port = pty_factory("bike")
    bike = BikeSimulator(port, profile=RideProfile.generated(600, seed=2), speed=20)
    tasks.append(asyncio.create_task(bike.run()))
    source = PelotonPollSource(port.path, source_id="bike", **POLL)
    c = collect(source)
    await c.wait_for(lambda c: len(resistance(c.readings)) >= 2, "resistance readings")
    assert bike.request_log[:3] == [(0xFE, 0x00), (0xF5, 0xFB), (0xF7, 0x00)]
    assert source.decoder.calibration == TABLE
    assert all(r.pct is not None and r.extra["calibration"] == "seen" for r in resistance(c.readings))


async def test_poll_repeats_the_handshake_until_a_late_bike_answers(
    pty_factory: Ptys, collect: Collect, tasks: list[asyncio.Task[None]]
) -> None:
    port = pty_factory("bike")
    bike = BikeSimulator(port, profile=RideProfile.generated(600), speed=5)
    bike.faults.silent = True  # switched off
    tasks.append(asyncio.create_task(bike.run()))
    source = PelotonPollSource(port.path, source_id="bike", **POLL)
    c = collect(source)
    await c.wait_for(lambda c: source.poll_counters["handshakes"] >= 3, "handshake retried")
    bike.faults.silent = False
    await c.wait_for(lambda c: len(resistance(c.readings)) >= 1, "readings once the bike is on")
    assert bike.boot_stage == 2
    assert source.decoder.calibration == TABLE


# ---- listen mode: what a tap hears, and where the table comes from -------------------------------------


async def test_default_tap_hears_only_the_bike_and_no_table(pty_factory: Ptys, collect: Collect) -> None:
    port = pty_factory("bike")
    source = PelotonListenSource([port.path], source_id="bike", **FAST)
    c = collect(source)
    await wait_open(source)
    emitter = BusEmitter(port, profile=RideProfile.generated(10, seed=3), speed=10)
    await play(emitter, c)
    s = source.summary()
    assert s["requests_ok"] == 0 and s["replies_ok"] == len(emitter.sent)
    res = resistance(c.readings)
    assert res and all(r.pct is None and r.extra["calibration"] is None for r in res)
    assert as_json_has_null_calibration(res[0])


def as_json_has_null_calibration(r: Reading) -> bool:
    out = r.to_json()
    return "calibration" in out and out["calibration"] is None


async def test_bike_only_tap_during_tablet_boot_learns_the_table(pty_factory: Ptys, collect: Collect) -> None:
    port = pty_factory("bike")
    source = PelotonListenSource([port.path], source_id="bike", **FAST)
    c = collect(source)
    await wait_open(source)
    emitter = BusEmitter(port, profile=RideProfile.generated(10, seed=3), speed=10, boot=True)
    await play(emitter, c)
    assert source.summary()["requests_ok"] == 0  # no request was heard, yet:
    assert source.decoder.calibration == TABLE
    res = resistance(c.readings)
    assert all(r.pct == TABLE.percent(int(r.value or 0)) for r in res)
    assert {r.extra["calibration"] for r in res} == {"seen"}


async def test_table_seen_once_is_stored_and_used_by_the_next_run(
    pty_factory: Ptys, collect: Collect, tmp_path: Path
) -> None:
    store = CalibrationStore(tmp_path / "data" / "calibration")
    port = pty_factory("bike")
    first = PelotonListenSource(
        [port.path], source_id="bike", calibration=CalibrationKeeper(store=store, key="bike-7"), **FAST
    )
    c1 = collect(first)
    await wait_open(first)
    await play(BusEmitter(port, profile=RideProfile.generated(5), speed=10, boot=True), c1)
    await c1.stop()
    stored = store.path_for("bike-7")
    assert json.loads(stored.read_text())["table"] == list(DEFAULT_CALIBRATION)
    # The next run: the tablet was already up, the table never crosses the bus.
    second = PelotonListenSource(
        [port.path], source_id="bike", calibration=CalibrationKeeper(store=store, key="bike-7"), **FAST
    )
    c2 = collect(second)
    await wait_open(second)
    await play(BusEmitter(port, profile=RideProfile.generated(5, seed=4), speed=10), c2)
    res = resistance(c2.readings)
    assert res and all(r.pct == TABLE.percent(int(r.value or 0)) for r in res)
    assert {r.extra["calibration"] for r in res} == {f"stored:{stored}"}


def test_sensors_cli_uses_a_calibration_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "bike.json"
    table.write_text(json.dumps(list(DEFAULT_CALIBRATION)))
    argv = ["sensors", "--serial", "sim", "--mode", "listen", "--duration", "3", "--speed", "10"]
    assert main([*argv, "--calibration", str(table)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    res = [x for x in lines if x.get("kind") == "resistance"]
    assert res and all(x["calibration"] == f"file:{table}" and x["pct"] is not None for x in res)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 3]")
    assert main([*argv, "--calibration", str(bad)]) == 2
    assert "--calibration" in json.loads(capsys.readouterr().err)["error"]


def test_sensors_cli_stores_the_table_under_data_for_the_bike_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sensors", "--serial", "sim", "--mode", "listen", "--duration", "4", "--speed", "10"]
    argv += ["--data", str(tmp_path), "--bike-id", "studio-bike-3"]
    assert main([*argv, "--tablet-boots"]) == 0
    stored = tmp_path / "calibration" / "studio-bike-3.json"
    assert json.loads(stored.read_text())["table"] == list(DEFAULT_CALIBRATION)
    capsys.readouterr()
    assert main(argv) == 0
    res = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"resistance"' in x]
    assert res and {x["calibration"] for x in res} == {f"stored:{stored}"}


# ---- sans-I/O: the decoder on a bike-only line, the table file parser, the bike key ---------------------


def bike_line_boot(table: tuple[int, ...]) -> list[bytes]:
    out = [encode_reply_payload(Command.STARTUP, b"000"), encode_reply_payload(Command.BIKE_ID, b"1234567")]
    return out + [encode_calibration_reply(v) for v in table]


def decode(frames: list[bytes]) -> BusDecoder:
    decoder = BusDecoder()
    framer = PelotonFramer()
    for ev in framer.feed(b"".join(frames)):
        if isinstance(ev, ReplyFrame):
            decoder.on_frame(ev)
    return decoder


def test_decoder_takes_boot_replies_in_order_on_a_bike_only_line() -> None:
    assert decode([*bike_line_boot(DEFAULT_CALIBRATION), encode_resistance(500)]).calibration == TABLE
    # one entry lost on the line: the run is incomplete, no table is guessed
    frames = bike_line_boot(DEFAULT_CALIBRATION)
    del frames[10]
    assert decode([*frames, encode_cadence(80)]).calibration is None
    # replies without the boot before them stay unpaired
    decoder = decode([encode_calibration_reply(v) for v in DEFAULT_CALIBRATION])
    assert decoder.calibration is None and decoder.counters.replies_unpaired == 31
    # a value reply ends the run: later table replies are not taken as entries
    frames = bike_line_boot(DEFAULT_CALIBRATION)
    decoder = decode([*frames[:12], encode_cadence(80), *frames[12:]])
    assert decoder.calibration is None


def test_decoder_reports_the_complete_table_once() -> None:
    decoder = BusDecoder()
    framer = PelotonFramer()
    events = []
    for ev in framer.feed(b"".join(bike_line_boot(DEFAULT_CALIBRATION))):
        if isinstance(ev, ReplyFrame):
            events += decoder.on_frame(ev)
    assert [e for e in events if isinstance(e, CalibrationComplete)] == [CalibrationComplete(TABLE)]


@given(st.text(max_size=400))
def test_table_parser_never_raises_anything_else(text: str) -> None:
    try:
        table = parse_table(text, "f")
    except CalibrationFileError as exc:
        assert str(exc).startswith("f: ")
    else:
        assert len(table.raw) == 31


@given(st.lists(st.integers(min_value=0, max_value=99999), min_size=31, max_size=31, unique=True))
def test_table_parser_reads_its_formats(values: list[int]) -> None:
    values.sort()
    for text in (
        json.dumps(values),
        json.dumps({"table": values}),
        ",".join(map(str, values)),
        " ".join(map(str, values)),
    ):
        assert parse_table(text, "f").raw == tuple(values)


def test_bike_key_prefers_bike_id_then_by_id_name(tmp_path: Path) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    node = tmp_path / "ttyUSB3"
    node.touch()
    (by_id / "usb-FTDI_FT232R_A10K1234-if00-port0").symlink_to(node)
    assert bike_key(str(node), "studio bike/3", by_id_dir=by_id) == "studio_bike_3"
    assert bike_key(str(node), by_id_dir=by_id) == "usb-FTDI_FT232R_A10K1234-if00-port0"
    assert bike_key(str(by_id / "usb-FTDI_FT232R_A10K1234-if00-port0"), by_id_dir=by_id) == (
        "usb-FTDI_FT232R_A10K1234-if00-port0"
    )
    assert bike_key(str(tmp_path / "ttyUSB9"), by_id_dir=by_id) == "ttyUSB9"


OPS = st.one_of(
    st.just(b"fe"),
    st.just(b"fb"),
    st.just(b"cad"),
    st.just(b"badcal"),
    st.integers(0, 9999).map(encode_calibration_reply),
)


def op_frame(op: bytes) -> bytes:
    if op == b"fe":
        return encode_reply_payload(Command.STARTUP, b"000")
    if op == b"fb":
        return encode_reply_payload(Command.BIKE_ID, b"1234567")
    if op == b"cad":
        return encode_cadence(80)
    if op == b"badcal":
        return encode_reply_payload(Command.CALIBRATION, b"12x4")
    return op


@given(st.lists(OPS, max_size=120))
def test_decoder_on_any_bike_line_never_raises_and_adopts_only_whole_runs(ops: list[bytes]) -> None:
    frames = [op_frame(op) for op in ops]
    decoder = decode(frames)
    if decoder.calibration is not None:
        # a table is only ever adopted from 31 calibration replies right after an FB reply
        raw = b"".join(frames)
        assert encode_reply_payload(Command.BIKE_ID, b"1234567") in raw
        assert len(decoder.calibration.raw) == 31


@given(st.lists(st.integers(0, 9999), min_size=31, max_size=31, unique=True))
def test_decoder_adopts_any_increasing_boot_run(values: list[int]) -> None:
    values.sort()
    assert decode(bike_line_boot(tuple(values))).calibration == CalibrationTable(tuple(values))
