"""`SimStrapControl`: one simulated heart-rate strap for a test, and the clock that makes it beat.

The strap is a bumble peripheral on the virtual radio (adapters/ble/sim); the test's own bleak code reads
it through the simulator's bleak backend (`bleak_kwargs`). Its clock ticks once per simulated second,
`speed` times faster than real time, and each tick notifies one Heart Rate Measurement built from the
current controls (heart rate or ramp or profile, contact, RR intervals). `pause()` stops the clock;
`advance(seconds)` then moves it by hand, one notification per simulated second, at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bleak.backends.device import BLEDevice

from adapters.ble.hrm import encode_hrm
from adapters.ble.sim.profile import HrProfile, beats_between, rr_raw_for, validate_speed
from adapters.ble.sim.simulation import Simulation
from adapters.ble.sim.strap import SimStrap
from engine.readings import Contact


def dual_backend(scanner: type[Any], client: type[Any]) -> type[Any]:
    """One class for bleak's `backend=` that serves both BleakScanner and BleakClient: bleak builds a
    scanner backend from a detection callback and a client backend from an address or BLEDevice."""

    class RidesyncSimBackend:
        def __new__(cls, first: Any = None, *args: Any, **kwargs: Any) -> Any:
            if isinstance(first, str | BLEDevice):
                return client(first, *args, **kwargs)
            return scanner(first, *args, **kwargs)

    return RidesyncSimBackend


class SimStrapControl:
    """What a test holds: the strap's address and bleak arguments, and its controls."""

    def __init__(self, sim: Simulation, strap: SimStrap, *, speed: float, seed: int) -> None:
        self._sim = sim
        self._strap = strap
        self.speed = validate_speed(speed)
        self.seed = seed
        self._rng = random.Random(seed)
        self._profile: HrProfile | None = None
        self._profile_t0 = 0.0
        self._hr = 70
        self._contact = True
        self._rr: tuple[int, ...] | None = None
        self._beat = 0
        self.sim_time_s = 0.0
        self.payloads: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._backend = dual_backend(sim.scanner_backend, sim.client_backend)

    # --- what user code needs ----------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self._strap.address

    @property
    def name(self) -> str:
        return self._strap.name

    @property
    def bleak_kwargs(self) -> dict[str, Any]:
        """`BleakClient(address, **bleak_kwargs)`, `BleakScanner(**bleak_kwargs)`: the virtual radio."""
        return {"backend": self._backend}

    @property
    def in_range(self) -> bool:
        return self._strap.in_range

    @property
    def connected(self) -> bool:
        return self._strap.connection_count > 0

    async def wait_disconnected(self) -> None:
        """Until no central is connected (wrap in `asyncio.timeout`)."""
        await self._strap.wait_idle()

    # --- controls ----------------------------------------------------------------------------------

    def set_hr(self, bpm: int) -> None:
        """A fixed heart rate from the next tick on (and in the notification sent on subscription)."""
        if not 1 <= bpm <= 0xFFFF:
            raise ValueError(f"heart rate {bpm} outside 1..65535")
        self._profile = None
        self._hr = bpm
        self._set_last(bpm)

    def ramp(self, start: float, end: float, seconds: float) -> None:
        """From `start` to `end` bpm over `seconds` of simulated time, then held at `end`."""
        if seconds <= 0:
            raise ValueError("a ramp needs seconds > 0")
        self.profile(HrProfile(((0.0, float(start)), (float(seconds), float(end)))))

    def profile(self, profile: HrProfile | Sequence[tuple[float, float]] | str | Path) -> None:
        """Follow a profile from now on: an `HrProfile`, points `[(t_s, bpm), ...]` or a `t_s,bpm` CSV.
        Held at its last point once played."""
        if isinstance(profile, str | Path):
            profile = HrProfile.from_csv(profile)
        elif not isinstance(profile, HrProfile):
            profile = HrProfile(tuple((float(t), float(b)) for t, b in profile))
        self._profile = profile
        self._profile_t0 = self.sim_time_s
        self._set_last(profile.bpm_at(0.0))

    def set_contact(self, contact: bool) -> None:
        """Skin contact: False makes every notification say "contact not detected"."""
        self._contact = contact
        self._set_last(self.bpm_now())

    def set_battery(self, pct: int) -> None:
        """Battery level (0x2A19), read by the central."""
        self._strap.set_battery(pct)

    def set_rr(self, rr_s: Sequence[float] | None) -> None:
        """RR intervals in seconds carried by every following notification (rounded to 1/1024 s);
        `[]` sends none, None goes back to intervals derived from the heart rate (the default)."""
        self._rr = None if rr_s is None else tuple(max(1, min(0xFFFF, round(s * 1024))) for s in rr_s)

    def out_of_range(self) -> None:
        """The rider walks away: traffic is dropped; past the supervision timeout the link ends (0x08)."""
        self._strap.walk_out_of_range()

    def back_in_range(self) -> None:
        self._strap.walk_back()

    async def send_raw(self, payload: bytes) -> None:
        """Notify exact bytes on 0x2A37 (malformed, truncated, 16-bit values, ...)."""
        await self._strap.notify_raw(bytes(payload))
        self.payloads.append(bytes(payload))

    # --- the clock ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the clock (the fixture starts it): one notification per simulated second."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"sim-strap-{self.name}")

    def pause(self) -> None:
        """Stop the clock: nothing is notified until `advance()` or `start()`."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def advance(self, seconds: float) -> None:
        """Move simulated time by hand: one notification per simulated second, sent now."""
        for _ in range(round(seconds)):
            await self._tick()
            await asyncio.sleep(0)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start, ticks = loop.time(), 0
        while True:
            ticks += 1
            await asyncio.sleep(max(0.0, start + ticks / self.speed - loop.time()))
            try:
                await self._tick()
            except Exception:  # a link dropping mid-notify is normal (out of range); the heart beats on
                continue

    def bpm_now(self) -> float:
        if self._profile is None:
            return float(self._hr)
        return self._profile.bpm_at(self.sim_time_s - self._profile_t0)

    def _set_last(self, bpm: float) -> None:
        """What the strap notifies the moment a central subscribes."""
        contact = Contact.DETECTED if self._contact else Contact.NOT_DETECTED
        self._strap.set_current(max(1, round(bpm)), contact)

    async def _tick(self) -> None:
        prev = self.sim_time_s
        self.sim_time_s += 1.0
        bpm = self.bpm_now()
        self._set_last(bpm)
        if self._rr is not None:
            rr = self._rr
        else:
            n = min(beats_between(prev, self.sim_time_s, bpm), 8)
            # The seed picks each beat's variability: same seed, same intervals.
            rr = tuple(rr_raw_for(bpm, self._beat + i, 0.02 + 0.02 * self._rng.random()) for i in range(n))
            self._beat += n
        contact = Contact.DETECTED if self._contact else Contact.NOT_DETECTED
        payload = encode_hrm(max(1, round(bpm)), contact=contact, rr_raw=rr)
        self.payloads.append(payload)
        await self._strap.notify_raw(payload)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
