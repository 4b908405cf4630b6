"""The fuzz campaign: every parser gets seeded, mutated inputs; its only allowed failure is its own typed
error. Targets that live in the engine are here; the adapters' parsers (HRM, Peloton framer, line
protocol) are injected by the composition root (engine/cli/fuzz_targets.py), since the engine never
imports adapters.

The short version feeds each parser a few thousand inputs from a seeded mutator (reproducible by seed).
The long version feeds ≥ 1M each: with atheris (coverage-guided, one subprocess per target) when it is
installed, else with the same seeded mutator, saying which package is missing."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import re
import sys
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cbor2

from engine.backend import http as backend_http
from engine.backend.auth import RequestError
from engine.campaign.report import CampaignOptions, CampaignReport, Progress
from engine.live import rfc6455
from engine.live import wire as live_wire
from engine.ride import compact, samples
from engine.sync import wire as sync_wire
from engine.wire_error import WireError

SHORT_INPUTS = 3000
LONG_INPUTS = 1_000_000
_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x3F, 0x40, 0xC0, 0x9F, 0xBF, 0xFE)


@dataclass(frozen=True)
class FuzzTarget:
    name: str
    parse: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    seeds: tuple[bytes, ...]


def mutate(rnd: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    """A few byte-level mutations: flips, interesting bytes, inserts, deletes, repeats and splices."""
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.randrange(7)
        pos = rnd.randrange(len(buf) + 1)
        if op == 0 and buf:
            i = rnd.randrange(len(buf))
            buf[i] ^= 1 << rnd.randrange(8)
        elif op == 1 and buf:
            buf[rnd.randrange(len(buf))] = rnd.choice(_INTERESTING)
        elif op == 2:
            buf[pos:pos] = rnd.randbytes(rnd.randint(1, 8))
        elif op == 3 and buf:
            del buf[pos : pos + rnd.randint(1, 8)]
        elif op == 4 and buf:
            chunk = buf[pos : pos + rnd.randint(1, 16)]
            buf[pos:pos] = chunk * rnd.randint(1, 64)
        elif op == 5 and corpus:
            other = rnd.choice(corpus)
            cut = rnd.randrange(len(other) + 1)
            buf = buf[:pos] + bytearray(other[cut:])
        else:
            buf = buf[: rnd.randrange(len(buf) + 1)]
    return bytes(buf)


def run_target(target: FuzzTarget, count: int, seed: int) -> dict[str, Any]:
    """Feed `count` inputs; returns counts and the first unexpected failures (input hex, traceback)."""
    rnd = random.Random(f"{seed}:{target.name}")
    corpus = list(target.seeds) or [b""]
    outcomes = {"ok": 0, "typed_error": 0, "unexpected": 0}
    crashes: list[dict[str, str]] = []
    for i in range(count):
        if i < len(corpus):
            data = corpus[i]
        elif rnd.random() < 0.05:
            data = rnd.randbytes(rnd.randint(0, 64))
        else:
            data = mutate(rnd, rnd.choice(corpus), corpus)
        try:
            target.parse(data)
        except target.allowed:
            outcomes["typed_error"] += 1
        except Exception as exc:  # the finding this campaign exists for
            outcomes["unexpected"] += 1
            if len(crashes) < 5:
                crashes.append({"input_hex": data[:256].hex(), "error": repr(exc)[:300],
                                "where": traceback.format_exc(limit=-2)[-600:]})  # fmt: skip
        else:
            outcomes["ok"] += 1
            if len(corpus) < 512 and rnd.random() < 0.02:
                corpus.append(data)
    return {"target": target.name, "inputs": count, **outcomes, "crashes": crashes}


# -- engine targets ---------------------------------------------------------------------------------------


def _sync_seeds() -> tuple[bytes, ...]:
    doc = "4NMNnkMhL8jXrdJ9jamS2rLwhAfv"
    msgs: list[object] = [
        {"type": "join", "senderId": "bike-1", "peerMetadata": {"storageId": "s1", "isEphemeral": False},
         "supportedProtocolVersions": ["1"]},
        {"type": "request", "senderId": "bike-1", "targetId": "ridesync-backend", "documentId": doc,
         "data": b"\x42\x00\x01"},
        {"type": "sync", "senderId": "bike-1", "targetId": "ridesync-backend", "documentId": doc,
         "data": bytes(range(40))},
        {"type": "ephemeral", "senderId": "a", "targetId": "b", "documentId": doc, "count": 1,
         "sessionId": "x", "data": b"{}"},
        {"type": "remote-subscription-change", "senderId": "a", "targetId": "b", "add": ["s"]},
        {"type": "leave", "senderId": "a"},
        {"type": "doc-unavailable", "senderId": "a", "targetId": "b", "documentId": doc},
        {"type": "error", "senderId": "a", "targetId": "b", "message": "x"},
        [[[[[[[[[[[]]]]]]]]]]],
    ]  # fmt: skip
    return (*tuple(cbor2.dumps(m) for m in msgs), b"\x81" * 2000 + b"\x80")


def _sync_parse(data: bytes) -> object:
    return sync_wire.decode(data, max_size=1 << 20)


def _live_parse(data: bytes) -> object:
    return live_wire.parse_inbound_batch(data, "bike-1", 1_700_000_000.0)


def _live_seeds() -> tuple[bytes, ...]:
    msgs: list[object] = [
        {"type": "sample", "kind": "heart_rate", "v": 142, "seq": 7, "t": 1_700_000_000.0},
        {"type": "sample", "kind": "cadence", "v": 88.5, "seq": 8, "t": 1_699_999_999.0, "src": "s1"},
        {"type": "state", "kind": "heart_rate", "state": "no_contact", "t": 1_700_000_000.0},
        {"type": "hello", "name": "Ann", "max_hr": 190},
        {"type": "hello", "bike": "ble-ftms"},
        [{"type": "sample", "kind": "power", "v": 230, "seq": 1, "t": 1.0, "contact": "detected"}],
    ]
    return (*tuple(json.dumps(m).encode() for m in msgs), b"[" * 3000)


def _frames_parse(data: bytes) -> object:
    parser = rfc6455.ClientFrameParser(max_msg=1 << 16)
    half = len(data) // 2
    return parser.feed(data[:half]) + parser.feed(data[half:])


def _masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _frames_seeds() -> tuple[bytes, ...]:
    return (
        _masked(1, b'{"metric":"hr","value":120}'),
        _masked(9, b"ping") + _masked(10, b""),
        _masked(1, b"frag", fin=False) + _masked(0, b"ment"),
        _masked(8, b"\x03\xe8bye"),
        _masked(2, bytes(300)),
    )


def _samples_parse(data: bytes) -> object:
    return samples.decode_blob(data)


def _samples_seeds() -> tuple[bytes, ...]:
    batch = [
        samples.Sample(seq=i, t=1_700_000_000.0 + i, hr=120 + i, rr=(800, 810), cadence=80, power_dw=2000)
        for i in range(5)
    ]
    return (
        samples.encode_blob(batch),
        samples.encode_blob(batch[:1]),
        bytes(samples.encode_record(batch[0], 0)),
    )


def _batches_parse(data: bytes) -> object:
    return compact.decode_batch(data)


def _batches_seeds() -> tuple[bytes, ...]:
    rnd = random.Random(7)
    ride = [
        samples.Sample(
            i, 1_700_000_000.0 + i, 120 + i % 9, (500 + rnd.randint(-9, 9),), 85, rnd.randint(0, 3000)
        )
        for i in range(600)
    ]
    sparse = [replace(s, hr=None, rr=()) if s.seq % 7 < 3 else s for s in ride[:40]]
    # The encoder stores a body this small raw; the decoder still accepts it deflated, so seed that form.
    body = compact.encode_body(sparse)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (
        compact.encode_batch(ride[:1]),
        compact.encode_batch(sparse),  # raw, with "no value" runs
        compact._compressed(compact._FLAG_DEFLATED, body, packer.compress(body) + packer.flush()),
        compact.encode_batch(ride),  # LZMA2
        bytes([compact.BATCH_VERSION, 0]) + compact.encode_body(ride[:30]),
    )


def _http_parse(data: bytes) -> object:
    payload = backend_http._json_object(data, empty_ok=True)
    if payload:
        backend_http._meta_fields(payload)
    return payload


def _http_seeds() -> tuple[bytes, ...]:
    return (
        b'{"title":"Hill climb","rating":4,"notes":"ok"}',
        b'{"targets":{"hr":150,"power":200}}',
        b'{"device":"tablet-2","role":"app"}',
        b"{}",
        b'{"title":' * 500,
    )


ENGINE_TARGETS: tuple[FuzzTarget, ...] = (
    FuzzTarget("sync-wire-cbor", _sync_parse, (WireError,), _sync_seeds()),
    FuzzTarget("live-frames-json", _live_parse, (WireError,), _live_seeds()),
    FuzzTarget("live-rfc6455", _frames_parse, (rfc6455.FrameError,), _frames_seeds()),
    FuzzTarget("store-sample-records", _samples_parse, (samples.SampleDecodeError,), _samples_seeds()),
    FuzzTarget("store-sample-batches", _batches_parse, (compact.CompactDecodeError,), _batches_seeds()),
    FuzzTarget("http-json-bodies", _http_parse, (RequestError,), _http_seeds()),
)


def atheris_available() -> bool:
    return importlib.util.find_spec("atheris") is not None


async def _atheris(target: FuzzTarget, runs: int, seed: int, corpus: Path) -> dict[str, Any]:
    """One coverage-guided atheris run in its own process (libFuzzer exits the process when done)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli.fuzz_targets", target.name, str(runs), str(seed), str(corpus),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = err.decode(errors="replace")
    crashes = [] if proc.returncode == 0 else [{"error": text[-1500:]}]
    executed = re.search(r"stat::number_of_executed_units:\s*(\d+)", text)
    inputs = int(executed.group(1)) if executed else runs
    unexpected = 0 if proc.returncode == 0 else 1
    return {"target": target.name, "inputs": inputs, "engine": "atheris", "unexpected": unexpected,
            "crashes": crashes}  # fmt: skip


async def run(
    options: CampaignOptions,
    progress: Progress,
    report: CampaignReport,
    adapter_targets: Sequence[FuzzTarget] = (),
) -> CampaignReport:
    targets = [*adapter_targets, *ENGINE_TARGETS]
    count = LONG_INPUTS if options.long else SHORT_INPUTS
    use_atheris = options.long and atheris_available()
    engine = "atheris" if use_atheris else "seeded-mutator"
    if options.long and not use_atheris:
        progress("atheris is not installed (pip install atheris): using the seeded mutator instead")
    report.details["fuzzer"] = engine
    results = []
    for target in targets:
        progress(f"{target.name}: {count} inputs ({engine})")
        if use_atheris:
            result = await _atheris(target, count, options.seed, options.workdir / target.name)
        else:
            result = await asyncio.to_thread(run_target, target, count, options.seed)
        results.append(result)
        detail = json.dumps(result.get("crashes", [])[:1])[:800] if result["unexpected"] else ""
        report.case(f"fuzz {target.name}", result["unexpected"] == 0, detail)
    report.details["targets"] = [{k: v for k, v in r.items() if k != "crashes"} for r in results]
    report.details["findings"] = {str(r["target"]): r["crashes"] for r in results if r["crashes"]}
    return report
