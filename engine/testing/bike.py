"""`SimBikeControl`: one simulated serial device on a pty, for a test's own pyserial code.

The device runs on its own event loop in a background thread, so both plain and async tests can read
its pty with blocking pyserial calls. Protocols: the Peloton bus, tapped (`mode="listen"`: the bike's
replies to a head unit's polls, 10 per second of ride time) or polled by the test's code (`mode="poll"`:
the bike answers requests after the head unit's boot handshake `FE 00`, `F5 FB`), and the DIY line
protocol (`protocol="line"`: one crank record per second of ride time, an identity line every 10 s).
Values follow a generated ride (seeded) until `set_cadence`/`set_power`/`set_resistance` fix them.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from adapters.serial.line_protocol import SEQ_MOD, U16, encode_ident, encode_record
from adapters.serial.peloton.synth import BikeSample
from adapters.serial.sim import sensor_clock
from adapters.serial.sim.bike import BikeSimulator
from adapters.serial.sim.bus import BusEmitter
from adapters.serial.sim.faults import Faults
from adapters.serial.sim.profile import RideProfile
from adapters.serial.sim.pty_port import PtyPort, Unplugged

PROTOCOLS = {("peloton", "listen"), ("peloton", "poll"), ("line", None)}
# The generated ride behind the values (seeded); held at its last second after that.
RIDE_S = 3600
FOREVER_S = 10**9


class LiveProfile(RideProfile):
    """A ride profile whose values a test can pin while the simulator runs."""

    def __init__(self, base: RideProfile) -> None:
        super().__init__(base.samples)
        self.cadence: int | None = None
        self.power_w: float | None = None
        self.resistance_raw: int | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # RideProfile is a frozen slots dataclass; only the pinned values (not fields) change here.
        if name not in ("cadence", "power_w", "resistance_raw"):
            raise AttributeError(f"{name} cannot be set")
        object.__setattr__(self, name, value)

    @property
    def duration_s(self) -> int:
        return FOREVER_S  # the simulators run until the test ends

    def at(self, ride_s: float) -> BikeSample:
        base = super().at(ride_s)
        return BikeSample(
            cadence=base.cadence if self.cadence is None else self.cadence,
            power_w=base.power_w if self.power_w is None else self.power_w,
            resistance_raw=base.resistance_raw if self.resistance_raw is None else self.resistance_raw,
        )


class LineEmitter:
    """The DIY cadence sensor, following the live profile (sim/line_sensor.py precomputes its ride)."""

    def __init__(self, port: PtyPort, profile: LiveProfile, *, speed: float, faults: Faults) -> None:
        self.port = port
        self.profile = profile
        self.speed = speed
        self.faults = faults
        self.device_id = "sim-reed"
        self.lines_written = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        revs, event_s, n = 0.0, 0.0, 0
        await self._send(encode_ident(self.device_id))
        while True:
            await asyncio.sleep(max(0.0, start + n / self.speed - loop.time()))
            t = float(n)
            rate = self.profile.at(t).cadence / 60
            if n > 0 and rate > 0:
                before = revs
                revs += rate
                if math.floor(revs) > math.floor(before):
                    event_s = t - 1 + (math.floor(revs) - before) / rate
            if n and n % 10 == 0:
                await self._send(encode_ident(self.device_id))
            if not self.faults.silent:
                ticks, event_ticks = sensor_clock.sensor_ticks(t), sensor_clock.sensor_ticks(event_s)
                await self._send(encode_record(n % SEQ_MOD, math.floor(revs) % U16, event_ticks, ticks))
            n += 1

    async def _send(self, line: bytes) -> None:
        wire, _ = self.faults.apply(line, header=1, body=(1, len(line) - 1), avoid=b"$\n\r")
        try:
            await self.port.write(wire)
            self.lines_written += 1
        except Unplugged:
            pass


class SimBikeControl:
    """A running simulated serial device: `port` for pyserial, and its controls."""

    def __init__(
        self,
        protocol: str = "peloton",
        mode: str | None = "listen",
        *,
        speed: float = 1.0,
        seed: int = 0,
        handshake: bool = True,
        tablet_boots: bool = False,
    ) -> None:
        if protocol == "line":
            mode = None
        if (protocol, mode) not in PROTOCOLS:
            raise ValueError(
                f"unknown simulated bike {protocol!r}/{mode!r}: use protocol='peloton' with "
                "mode='listen' or 'poll', or protocol='line'"
            )
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number, got {speed}")
        self.protocol, self.mode, self.speed, self.seed = protocol, mode, speed, seed
        self.profile = LiveProfile(RideProfile.generated(RIDE_S, seed=seed))
        # Two clean frames between faulted ones, so a reader can count each fault on its own.
        self.faults = Faults(seed=seed, spacing=2)
        self._tmp = tempfile.TemporaryDirectory(prefix="ridesync-bike-")
        self._port = PtyPort(Path(self._tmp.name) / "tty")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ridesync-sim-bike", daemon=True)
        self._thread.start()
        self._handshake = handshake
        self._tablet_boots = tablet_boots
        self.device: Any = None
        self._task: Future[None] = self._call(self._start())

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _sync(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return self._call(run()).result(timeout=10)

    async def _start(self) -> None:
        self._port.plug()
        if self.protocol == "line":
            self.device = LineEmitter(self._port, self.profile, speed=self.speed, faults=self.faults)
        elif self.mode == "listen":
            self.device = BusEmitter(
                self._port,
                profile=self.profile,
                speed=self.speed,
                faults=self.faults,
                boot=self._tablet_boots,
            )
        else:
            self.device = BikeSimulator(
                self._port,
                profile=self.profile,
                speed=self.speed,
                faults=self.faults,
                handshake=self._handshake,
            )
        self._runner = asyncio.get_running_loop().create_task(self.device.run())

    @property
    def port(self) -> str:
        """The pty path to open with pyserial (stable across unplug/replug)."""
        self._task.result(timeout=10)
        return self._port.path

    # --- controls ----------------------------------------------------------------------------------

    def set_cadence(self, rpm: int | None) -> None:
        """Pin the cadence (rpm); None follows the generated ride again."""
        self.profile.cadence = rpm

    def set_power(self, watts: float | None) -> None:
        self.profile.power_w = watts

    def set_resistance(self, raw: int | None) -> None:
        """The bike's raw resistance value, as on the bus."""
        self.profile.resistance_raw = raw

    def flip(self, frames: int = 1) -> None:
        """Flip one bit in each of the next `frames` frames (a bad checksum for the reader)."""
        self._sync(lambda: setattr(self.faults, "flip", self.faults.flip + frames))

    def garbage(self, frames: int = 1) -> None:
        """Put 1-20 bytes of line noise before each of the next `frames` frames."""
        self._sync(lambda: setattr(self.faults, "garbage", self.faults.garbage + frames))

    def silent(self, silent: bool = True) -> None:
        """Send (or answer) nothing while True."""
        self._sync(lambda: setattr(self.faults, "silent", silent))

    @property
    def injected(self) -> dict[str, int]:
        """Faults actually applied so far, by kind."""
        return dict(self.faults.injected)

    def unplug(self) -> None:
        """Pull the USB cable: the pty closes (the reader gets an error) and the path vanishes."""
        self._sync(self._port.unplug)

    def replug(self) -> None:
        """Plug it back in: a new pty behind the same path."""
        self._sync(self._port.plug)

    @property
    def plugged(self) -> bool:
        return self._port.plugged

    def close(self) -> None:
        async def stop() -> None:
            runner = getattr(self, "_runner", None)
            if runner is not None:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
            self._port.close()

        try:
            self._call(stop()).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._tmp.cleanup()
