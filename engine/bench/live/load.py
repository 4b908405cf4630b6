"""The benchmark's load: generator processes that multiplex many riders and viewers over raw sockets,
publish at the configured rate, and (the probes) record each new sample's age on arrival."""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import os
import random
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from engine.bench.live.procs import pin, proc_cpu_s, raise_nofile

DRAIN_LOWAT = 32 * 1024


@dataclass
class GenSpec:
    data_dir: str
    conns: list[tuple[str, str, str, bool, int]]  # (class_id, device, role, probe, hub port)
    rate: float
    seed: int
    rider_mode: str = "pubsub"
    metrics: int = 1
    batch: bool = False


@dataclass
class GenResult:
    latencies: bytes = b""
    probe_frames: int = 0
    bytes_received: int = 0
    live_over_1s: int = 0
    non_live_records: int = 0
    connect_errors: int = 0
    lost_during_measure: int = 0
    published: int = 0
    cpu_s: float = 0.0


class _Gen:
    def __init__(self) -> None:
        self.measuring = False
        self.latencies = array.array("d")
        self.res = GenResult()


_METRICS = (("heart_rate", "hrm"), ("cadence", "bus"), ("power", "bus"), ("resistance", "bus"))


class _LoadConn(asyncio.Protocol):
    def __init__(self, gen: _Gen, request: bytes, probe: bool) -> None:
        from engine.live.wire import FrameReader

        self.gen = gen
        self.request = request
        self.probe = probe
        self.reader = FrameReader()
        self.head = b""
        self.upgraded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.seen: dict[str, int] = {}
        self.seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if isinstance(getattr(transport, "max_size", None), int):
            # asyncio reads with recv(256 KiB), which glibc serves with a fresh mmap per read: page faults
            # that made the generator's reads several times dearer (see engine/live/hub.py, Connection).
            transport.max_size = 2 * DRAIN_LOWAT  # type: ignore[attr-defined]
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            ok = self.head.startswith(b"HTTP/1.1 101")
            self.upgraded.set_result(ok)
            if ok and not self.probe and self.transport is not None:
                self._batch_wakeups()
            data = self.head[end + 4 :]
            self.head = b""
            if not ok:
                return
        gen = self.gen
        gen.res.bytes_received += len(data)
        if not self.probe:
            return
        now = time.time()
        for op, payload in self.reader.feed(data):
            if op != 1 or not gen.measuring:
                continue
            frame = json.loads(payload)
            if frame.get("type") != "delta":
                continue
            gen.res.probe_frames += 1
            seen = self.seen
            for device, rec in frame["riders"].items():
                hr = rec.get("hr")
                if hr is None:
                    continue
                if hr["state"] != "live":
                    gen.res.non_live_records += 1
                    continue
                if hr["seq"] <= seen.get(device, -1):
                    continue
                seen[device] = hr["seq"]
                age = now - hr["t"]
                gen.latencies.append(age)
                if age > 1.0:
                    gen.res.live_over_1s += 1

    def _batch_wakeups(self) -> None:
        # Drain-only connections ask the kernel to wake us once per DRAIN_LOWAT bytes instead of once per
        # frame: the generator's per-wakeup cost would otherwise exceed the hub's per-frame cost. The hub
        # writes every frame all the same; the bytes just wait in this socket's (large) receive buffer.
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * DRAIN_LOWAT)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, DRAIN_LOWAT)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_result(False)
        if self.gen.measuring:
            self.gen.res.lost_during_measure += 1

    def publish(self, now: float, hr: int, metrics: int = 1, batch: bool = False) -> None:
        from engine.live.wire import client_text_frame

        if self.transport is None or self.transport.is_closing():
            return
        self.seq += 1
        msgs = [
            f'{{"type":"sample","kind":"{kind}","v":{hr},"t":{now:.6f},"seq":{self.seq},"src":"{src}"}}'
            for kind, src in _METRICS[:metrics]
        ]
        if batch and len(msgs) > 1:
            self.transport.write(client_text_frame(("[" + ",".join(msgs) + "]").encode()))
        else:
            self.transport.write(b"".join(client_text_frame(m.encode()) for m in msgs))


def gen_main(ctl: Connection, spec: GenSpec, cpus: set[int] | None) -> None:
    # Started by `point.start_child`: Ctrl-C is ignored here, only the parent decides when a run ends.
    pin(cpus)
    raise_nofile()
    asyncio.run(_gen(ctl, spec))


async def _gen(ctl: Connection, spec: GenSpec) -> None:
    from engine.auth.tokens import KeyRing

    ring = KeyRing.load_or_create(spec.data_dir)
    loop = asyncio.get_running_loop()
    gen = _Gen()
    rng = random.Random(spec.seed)
    sem = asyncio.Semaphore(128)
    conns: list[_LoadConn] = []
    publishers: list[_LoadConn] = []

    async def connect(class_id: str, device: str, role: str, probe: bool, port: int) -> None:
        token = ring.issue(role, device, classes=[class_id], ttl_s=3600)
        mode = spec.rider_mode if role == "bike" else "sub"
        req = (
            f"GET /live/v1/classes/{class_id}/ws?mode={mode}&token={token} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        async with sem:
            for _attempt in range(3):
                proto = _LoadConn(gen, req, probe)
                try:
                    await loop.create_connection(lambda p=proto: p, "127.0.0.1", port)  # type: ignore[misc]
                    async with asyncio.timeout(60):
                        ok = await proto.upgraded
                except (OSError, TimeoutError):
                    ok = False
                if ok:
                    conns.append(proto)
                    if role == "bike":
                        publishers.append(proto)
                    return
                if proto.transport is not None:
                    proto.transport.abort()
                await asyncio.sleep(0.2)
            gen.res.connect_errors += 1

    async with asyncio.TaskGroup() as tg:
        for c in spec.conns:
            tg.create_task(connect(*c))
    ctl.send("ready")
    publish_start, measure_start, measure_end = await loop.run_in_executor(None, ctl.recv)
    rng.shuffle(publishers)
    cpu0 = proc_cpu_s(os.getpid())
    n = len(publishers)
    period = 1.0 / spec.rate
    k = 0
    await asyncio.sleep(max(0.0, publish_start - time.time()))
    while True:
        now = time.time()
        if now >= measure_end:
            break
        gen.measuring = measure_start <= now
        due = int((now - publish_start) / period * n) if n else 0
        while k < due:
            publishers[k % n].publish(now, 100 + (k % 80), spec.metrics, spec.batch)
            k += 1
        await asyncio.sleep(0.005)
    gen.measuring = False
    gen.res.published = k
    gen.res.cpu_s = proc_cpu_s(os.getpid()) - cpu0
    gen.res.latencies = gen.latencies.tobytes()
    for lc in conns:
        if lc.transport is not None:
            lc.transport.abort()
    ctl.send(gen.res)
