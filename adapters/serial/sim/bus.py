"""Listen-mode bus emitter: a head unit polling a bike, both sides' bytes, at any speed.

What a tap hears, by default, is what the common passive tap hears: the bike's TX line only (`lines=
"bike"`: replies, no requests) and no calibration table, because the table crosses the bus only while the
tablet boots. `boot=True` plays that boot during the capture (handshake `FE 00`, bike-id read `F5 FB`,
then `F7 00`..`F7 1E`, each with the bike's reply). `lines="both"` puts the requests and replies
interleaved on the one port (a capture of both lines; never two RS-232 drivers wired to one RX). With two
ports the head unit's requests go to the first and the bike's replies to the second.
Bus time runs `speed` times faster than real time: one request every `interval_s` of bus time, and the
profile sample answered is the one for that bus time.

`sent` logs every value whose reply went out intact, in order; `wire` keeps every byte sent (both
ports merged in send order) so a test can decode the very same bytes with `ridesync decode peloton`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from adapters.serial.peloton import POLL_CYCLE, Command, encode_reply_payload, encode_request
from adapters.serial.peloton.synth import DEFAULT_CALIBRATION, calibration_exchange, reply_for
from adapters.serial.peloton.wire import REQUEST_STARTUP
from adapters.serial.sim.faults import Faults
from adapters.serial.sim.profile import RideProfile
from adapters.serial.sim.pty_port import PtyPort, Unplugged
from engine.readings import Kind

KIND_OF = {Command.CADENCE: Kind.CADENCE, Command.POWER: Kind.POWER, Command.RESISTANCE: Kind.RESISTANCE}


@dataclass(frozen=True, slots=True)
class SentValue:
    kind: Kind
    value: float


def sent_value(command: Command, reply: bytes) -> SentValue:
    """The value a reply frame carries, as the adapter will report it."""
    digits = int(reply[3:-2][::-1])
    return SentValue(KIND_OF[command], digits / 10 if command is Command.POWER else float(digits))


class BusEmitter:
    def __init__(
        self,
        hu_port: PtyPort,
        bike_port: PtyPort | None = None,
        *,
        profile: RideProfile,
        speed: float = 1.0,
        table: tuple[int, ...] | None = DEFAULT_CALIBRATION,
        faults: Faults | None = None,
        interval_s: float = 0.1,
        boot: bool = False,
        lines: str = "bike",
        bike_id: bytes = b"4321000",
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if lines not in ("bike", "both"):
            raise ValueError("lines must be 'bike' (the bike's TX only) or 'both'")
        self.hu_port = hu_port
        self.bike_port = bike_port
        self.profile = profile
        self.speed = speed
        self.table = table
        self.faults = faults if faults is not None else Faults()
        self.interval_s = interval_s
        self.boot = boot
        # With two ports both lines are heard; with one, the head unit's line only if asked for.
        self.hear_head_unit = bike_port is not None or lines == "both"
        self.bike_id = bike_id
        self.sent: list[SentValue] = []
        self.wire = bytearray()
        self.requests = 0
        self.unheard_bytes = 0  # written while unplugged: nobody could hear them
        self.done = asyncio.Event()

    async def run(self) -> None:
        """Boot handshake and calibration read, then the ride; returns when the profile has been played."""
        try:
            await self._boot()
            await self._ride()
        finally:
            self.done.set()

    async def _boot(self) -> None:
        if not self.boot or self.table is None:
            return
        frames = [
            encode_request(0, head=REQUEST_STARTUP),
            encode_reply_payload(Command.STARTUP, b"000"),
            encode_request(Command.BIKE_ID),
            encode_reply_payload(Command.BIKE_ID, self.bike_id),
        ]
        frames += list(calibration_exchange(self.table))
        for i in range(0, len(frames), 2):
            # Request and reply a beat apart even at high speed: with two ports the adapter must see the
            # calibration request before its reply to pair them.
            await self._send([frames[i]], [])
            await asyncio.sleep(0.005)
            await self._send([], [frames[i + 1]])
            await asyncio.sleep(0.005)

    async def _ride(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        total = int(self.profile.duration_s / self.interval_s)
        k = 0
        while k < total:
            due = min(total, int((loop.time() - start) * self.speed / self.interval_s) + 1)
            requests: list[bytes] = []
            replies: list[bytes] = []
            while k < due:
                command = POLL_CYCLE[k % 3]
                sample = self.profile.at(k * self.interval_s)
                requests.append(encode_request(command))
                reply = reply_for(command, sample)
                replies.append(reply)
                k += 1
            await self._send(requests, replies, log=True)
            next_due = start + k * self.interval_s / self.speed
            await asyncio.sleep(max(0.0, next_due - loop.time()))

    async def _send(self, requests: list[bytes], replies: list[bytes], *, log: bool = False) -> None:
        faults = self.faults
        hu = bytearray()
        bike = bytearray()
        one_port = self.bike_port is None
        # (offset just past the reply in its port's buffer, value): a value counts as sent only if the
        # line really carried its whole frame (not dropped on a full line, not unplugged).
        hu_values: list[tuple[int, SentValue]] = []
        bike_values: list[tuple[int, SentValue]] = []
        for i in range(max(len(requests), len(replies))):
            if i < len(requests):
                self.requests += 1
                if self.hear_head_unit:
                    wire, _ = faults.apply(requests[i], header=1, body=(1, 3))
                    hu += wire
            if i < len(replies) and not faults.silent:
                reply = replies[i]
                wire, intact = faults.apply(reply)
                buf, values = (hu, hu_values) if one_port else (bike, bike_values)
                buf.extend(wire)
                if intact and log:
                    values.append((len(buf), sent_value(Command(reply[1]), reply)))
        written = await self._write(self.hu_port, bytes(hu))
        self.sent.extend(v for end, v in hu_values if end <= written)
        if self.bike_port is not None:
            written = await self._write(self.bike_port, bytes(bike))
            self.sent.extend(v for end, v in bike_values if end <= written)

    async def _write(self, port: PtyPort, data: bytes) -> int:
        if not data:
            return 0
        self.wire += data
        try:
            return await port.write(data)
        except Unplugged:
            self.unheard_bytes += len(data)
            return 0
