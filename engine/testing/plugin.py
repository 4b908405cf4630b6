"""The pytest plugin (entry point `pytest11: ridesync`): simulated devices and a real backend as fixtures.

Fixtures: `sim_strap` (async), `sim_bike` (a factory; plain or async tests), `ridesync_backend`,
`ridesync_hub`, `ridesync_seed`, `ridesync_speed`. Options: `--ridesync-seed N` (default 0),
`--ridesync-speed X` (simulated seconds per real second, default 1). A project overrides the speed for
some tests by defining its own `ridesync_speed` fixture. docs/testing.md is the user's guide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import pytest_asyncio

    HAVE_PYTEST_ASYNCIO = True
except ImportError:  # the plugin loads in every pytest run of an environment with ridesync installed
    HAVE_PYTEST_ASYNCIO = False

from engine.testing.backend import RidesyncBackend, RidesyncHub
from engine.testing.bike import SimBikeControl
from engine.testing.strap import SimStrapControl

# Past this much wall-clock time out of range a link ends (reason 0x08); shortened at higher speeds.
SUPERVISION_TIMEOUT_S = 4.0
MIN_SUPERVISION_TIMEOUT_S = 0.5


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ridesync", "ridesync simulated devices")
    group.addoption(
        "--ridesync-seed",
        type=int,
        default=0,
        help="seed of every ridesync simulator (generated rides, RR variability, fault positions)",
    )
    group.addoption(
        "--ridesync-speed",
        type=float,
        default=1.0,
        help="simulated seconds per real second for sim_strap and sim_bike (default 1)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.getoption("--ridesync-seed")
    speed = config.getoption("--ridesync-speed")
    return f"ridesync: seed {seed}, speed {speed:g}"


@pytest.fixture
def ridesync_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this run's simulators (`--ridesync-seed`, default 0)."""
    return int(request.config.getoption("--ridesync-seed"))


@pytest.fixture
def ridesync_speed(request: pytest.FixtureRequest) -> float:
    """Simulated seconds per real second (`--ridesync-speed`); override this fixture to change it."""
    return float(request.config.getoption("--ridesync-speed"))


async def _sim_strap(ridesync_seed: int, ridesync_speed: float) -> AsyncIterator[SimStrapControl]:
    """A simulated heart-rate strap on a fresh virtual radio, beating once per simulated second."""
    from adapters.ble.sim.simulation import Simulation

    supervision = max(MIN_SUPERVISION_TIMEOUT_S, SUPERVISION_TIMEOUT_S / ridesync_speed)
    sim = await Simulation.start(supervision_timeout_s=supervision)
    try:
        strap = await sim.add_strap()
        control = SimStrapControl(sim, strap, speed=ridesync_speed, seed=ridesync_seed)
        control.start()
        try:
            yield control
        finally:
            await control.close()
    finally:
        await sim.close()


if HAVE_PYTEST_ASYNCIO:
    sim_strap = pytest_asyncio.fixture(_sim_strap, name="sim_strap")
else:

    @pytest.fixture(name="sim_strap")
    def _sim_strap_needs_asyncio() -> None:
        pytest.fail("the sim_strap fixture needs pytest-asyncio: pip install 'ridesync[testing]'")


class SimBikeFactory:
    """`sim_bike(protocol=..., mode=...)` makes a simulated device; the fixture itself stands for a
    default one (Peloton bus, listen mode, or the fixture's indirect parameter), made on first use."""

    def __init__(self, seed: int, speed: float, defaults: dict[str, Any]) -> None:
        self._seed, self._speed, self._defaults = seed, speed, defaults
        self._made: list[SimBikeControl] = []
        self._default: SimBikeControl | None = None

    def __call__(
        self,
        protocol: str = "peloton",
        mode: str | None = "listen",
        *,
        speed: float | None = None,
        seed: int | None = None,
        handshake: bool = True,
        tablet_boots: bool = False,
    ) -> SimBikeControl:
        bike = SimBikeControl(
            protocol,
            mode,
            speed=self._speed if speed is None else speed,
            seed=(self._seed + len(self._made)) if seed is None else seed,
            handshake=handshake,
            tablet_boots=tablet_boots,
        )
        self._made.append(bike)
        return bike

    @property
    def default(self) -> SimBikeControl:
        if self._default is None:
            self._default = self(**self._defaults)
        return self._default

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.default, name)

    def close(self) -> None:
        for bike in self._made:
            bike.close()


@pytest.fixture
def sim_bike(
    request: pytest.FixtureRequest, ridesync_seed: int, ridesync_speed: float
) -> Iterator[SimBikeFactory]:
    """Simulated serial bikes on ptys. Call it for a device (`sim_bike(protocol="line")`), or use it as
    one: `sim_bike.port`, `sim_bike.set_cadence(90)` (Peloton listen, or the indirect parameter's)."""
    defaults: dict[str, Any] = dict(getattr(request, "param", None) or {})
    factory = SimBikeFactory(ridesync_seed, ridesync_speed, defaults)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def ridesync_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RidesyncBackend]:
    """A real `ridesync serve` on 127.0.0.1 (a free port) with a fresh data dir and keys."""
    backend = RidesyncBackend(Path(tmp_path_factory.mktemp("ridesync-backend")))
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def ridesync_hub(ridesync_backend: RidesyncBackend) -> RidesyncHub:
    """The class hub of `ridesync_backend` (the live lane): `ws_url(class, token)`, `token(...)`."""
    return RidesyncHub(ridesync_backend)
