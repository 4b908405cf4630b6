"""A simulated bike for poll mode: answers head-unit requests on a pty like the real bike does.

It answers `F5 C` with the profile's current value, `F7 k` with calibration entry k and `FE` with the
startup reply; anything else goes unanswered, as on the real bus. The ride clock starts when the
simulator starts and runs `speed` times faster than real time. `sent` logs every value reply that went
out intact, in order, for tests to compare with what the adapter reports.
"""

from __future__ import annotations

import asyncio

from adapters.serial.peloton import (
    CALIBRATION_ENTRIES,
    POLL_CYCLE,
    Command,
    PelotonFramer,
    RequestFrame,
    encode_calibration_reply,
    encode_reply_payload,
)
from adapters.serial.peloton.synth import DEFAULT_CALIBRATION, reply_for
from adapters.serial.sim.bus import SentValue, sent_value
from adapters.serial.sim.faults import Faults
from adapters.serial.sim.profile import RideProfile
from adapters.serial.sim.pty_port import PtyPort, Unplugged

_REQUEST_READ = 0xF5
_REQUEST_CALIBRATION = 0xF7
_REQUEST_STARTUP = 0xFE


class BikeSimulator:
    def __init__(
        self,
        port: PtyPort,
        *,
        profile: RideProfile,
        speed: float = 1.0,
        table: tuple[int, ...] = DEFAULT_CALIBRATION,
        faults: Faults | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.port = port
        self.profile = profile
        self.speed = speed
        self.table = table
        self.faults = faults if faults is not None else Faults()
        self.sent: list[SentValue] = []
        self.calibration_replies = 0
        self.requests_seen = 0
        self.requests_ignored = 0  # unknown requests, or any request while silent
        self._start: float | None = None

    def ride_s(self) -> float:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        return (loop.time() - self._start) * self.speed

    async def run(self) -> None:
        framer = PelotonFramer()
        self.ride_s()
        while True:
            try:
                data = await self.port.read()
            except Unplugged:
                await self.port.wait_plugged()
                framer = PelotonFramer()  # a new cable: nothing half-received survives
                continue
            for ev in framer.feed(data):
                if isinstance(ev, RequestFrame):
                    await self._answer(ev)

    async def _answer(self, req: RequestFrame) -> None:
        self.requests_seen += 1
        reply = self._reply(req)
        if reply is None or self.faults.silent:
            self.requests_ignored += 1
            return
        wire, intact = self.faults.apply(reply)
        try:
            written = await self.port.write(wire)
        except Unplugged:
            return
        intact = intact and written == len(wire)
        if intact and req.head == _REQUEST_READ:
            self.sent.append(sent_value(Command(req.command), reply))
        if intact and req.head == _REQUEST_CALIBRATION:
            self.calibration_replies += 1

    def _reply(self, req: RequestFrame) -> bytes | None:
        if req.head == _REQUEST_READ and req.command in POLL_CYCLE:
            return reply_for(Command(req.command), self.profile.at(self.ride_s()))
        if req.head == _REQUEST_CALIBRATION and req.command < CALIBRATION_ENTRIES:
            return encode_calibration_reply(self.table[req.command])
        if req.head == _REQUEST_STARTUP:
            return encode_reply_payload(Command.STARTUP, b"000")
        return None
