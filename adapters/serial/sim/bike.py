"""A simulated bike for poll mode: answers head-unit requests on a pty like the real bike does.

It answers `F5 C` with the profile's current value, `F5 FB` with its bike id, `F7 k` with calibration
entry k and `FE 00` with the startup reply; anything else goes unanswered, as on the real bus.

Like a bike whose head unit has not booted, it is silent until it has seen the head unit's boot
handshake: before `FE 00` it answers nothing else, and between `FE 00` and `F5 FB` it answers only those
two. Once both were answered it answers everything, until `power_cycle()` (unplugging the USB adapter is
not a power cycle: the bike keeps its state). `handshake=False` gives the old forgiving bike.

The ride clock starts when the simulator starts and runs `speed` times faster than real time. `sent`
logs every value reply that went out intact, in order, for tests to compare with what the adapter
reports.
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
        handshake: bool = True,
        bike_id: bytes = b"4321000",
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
        self.requests_ignored = 0  # unknown requests, any request while silent or before the handshake
        self.bike_id = bike_id
        self.request_log: list[tuple[int, int]] = []  # (head, command) of the first 1000 requests
        self.handled = asyncio.Event()  # set after each request is answered or ignored
        # 0: waiting for FE 00; 1: FE answered, waiting for F5 FB; 2: booted
        self.boot_stage = 0 if handshake else 2
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
                    self.handled.set()

    async def _answer(self, req: RequestFrame) -> None:
        self.requests_seen += 1
        if len(self.request_log) < 1000:
            self.request_log.append((req.head, req.command))
        reply = None if self.faults.silent else self._reply(req)
        if reply is None:
            self.requests_ignored += 1
            return
        wire, intact = self.faults.apply(reply)
        try:
            written = await self.port.write(wire)
        except Unplugged:
            return
        intact = intact and written == len(wire)
        if intact and req.head == _REQUEST_READ and req.command in POLL_CYCLE:
            self.sent.append(sent_value(Command(req.command), reply))
        if intact and req.head == _REQUEST_CALIBRATION:
            self.calibration_replies += 1

    def power_cycle(self) -> None:
        """The bike is switched off and on: it waits for a head unit's boot handshake again."""
        if self.boot_stage:
            self.boot_stage = 0

    def _reply(self, req: RequestFrame) -> bytes | None:
        is_startup = req.head == _REQUEST_STARTUP and req.command == 0
        is_bike_id = req.head == _REQUEST_READ and req.command == Command.BIKE_ID
        if self.boot_stage < 2:
            if is_startup:
                self.boot_stage = max(self.boot_stage, 1)
            elif is_bike_id and self.boot_stage == 1:
                self.boot_stage = 2
            else:
                return None
        if is_bike_id:
            return encode_reply_payload(Command.BIKE_ID, self.bike_id)
        if req.head == _REQUEST_READ and req.command in POLL_CYCLE:
            return reply_for(Command(req.command), self.profile.at(self.ride_s()))
        if req.head == _REQUEST_CALIBRATION and req.command < CALIBRATION_ENTRIES:
            return encode_calibration_reply(self.table[req.command])
        if is_startup:
            return encode_reply_payload(Command.STARTUP, b"000")
        return None
