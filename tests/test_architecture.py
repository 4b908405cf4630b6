"""The folder tree is the architecture: these checks keep the dependency rules of
docs/architecture.md#ports-and-adapters true."""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def test_engine_core_never_imports_radio_serial_or_adapters() -> None:
    """Only the composition root (engine/cli, engine/bench, engine/lab, and the public surfaces that wire
    devices for users: engine/api.py, engine/testing) may wire adapters in."""
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[1] in {"cli", "bench", "lab", "testing", "api.py"}:
            continue
        bad = {n for n in _imports(path) if _top(n) in {"bleak", "bumble", "serial", "adapters"}}
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert offenders == []


IO_MODULES = {
    "asyncio",
    "socket",
    "select",
    "os",
    "serial",
    "bleak",
    "bumble",
    "aiohttp",
    "websockets",
    "redis",
    "sqlite3",
}


def _adapter_protocol_files() -> list[Path]:
    serial = ROOT / "adapters/serial"
    files = [ROOT / "adapters/ble/hrm.py", ROOT / "adapters/ble/link_state.py"]
    files += [ROOT / f"adapters/ble/{m}.py" for m in ("gatt_fields", "revolutions", "ftms", "cps", "csc")]
    # What a bike's measurement means as readings, and what a simulated bike notifies: bytes only.
    files += [ROOT / "adapters/ble/bike_services.py", ROOT / "adapters/ble/sim/bike_model.py"]
    # The bridge's measurement model: readings in, bytes out.
    files.append(ROOT / "adapters/ble/bridge/model.py")
    files += [serial / "line_protocol.py", serial / "cadence.py", serial / "peloton_readings.py"]
    return files + sorted((serial / "peloton").glob("*.py"))


@pytest.mark.parametrize(
    "path",
    _adapter_protocol_files(),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_protocol_modules_are_sans_io(path: Path) -> None:
    """Parsers, framers and protocol state machines are pure: no event loop, sockets, HTTP, serial ports,
    radios or databases, not even imported lazily inside a function."""
    assert path.exists()
    assert {n for n in _imports(path) if _top(n) in IO_MODULES} == set()


LANES = {"engine.live", "engine.backend", "engine.dashboard"}


def _in(name: str, packages: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_host_knows_no_lane() -> None:
    """engine/server runs whatever lanes its caller passes (docs/architecture.md#the-host-and-its-lanes)."""
    offenders = []
    for path in sorted((ROOT / "engine/server").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        bad = {n for n in _imports(path) if _in(n, LANES)}
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert offenders == []


def test_lanes_use_only_the_hosts_contract() -> None:
    """A lane imports nothing of the host but its keys and the lane protocol, so no import goes back
    through the host."""
    contract = {"engine.server.keys", "engine.server.lane"}
    offenders = []
    for package in sorted(LANES):
        for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
            bad = {n for n in _imports(path) if _in(n, {"engine.server"}) and n not in contract}
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert offenders == []


# Every protocol module of the engine is sans-I/O, found by a rule rather than listed by hand, so that a new
# codec or session is covered the day it is added: every module of the packages that are protocol or pure
# data by design (engine/sync: the automerge-repo protocol; engine/ride: the ride documents and their
# policy; engine/export: the file formats), and anywhere else in engine/ a module named for a protocol job.
SANS_IO_PACKAGES = ("engine/sync", "engine/ride", "engine/export")
SANS_IO_NAMES = (
    "*wire*.py",  # wire formats
    "*codec*.py",
    "*session*.py",  # protocol state machines
    "syncmsg.py",
    "docid.py",
    "ids.py",  # the id grammar
    "policy.py",
    "schema.py",
    "model.py",
    "samples.py",
    "readings.py",
    "backoff.py",  # retry policy
    "roles.py",
    "rfc6455.py",
    "*_state.py",
    "slots.py",
    "fanout.py",
    "leaderboard.py",
    "flush_control.py",
)
# Modules the rule matches that are not protocols; each says why.
NOT_PROTOCOLS = {
    "engine/demo/session.py": "the demo's runner (servers, simulated rigs, browsers), not a protocol session",
    "engine/campaign/security_wire.py": "the security campaign's attacks over real sockets, not a codec",
}
# Protocol modules that still do I/O, each with the reason. An entry whose module is gone or has become
# sans-I/O fails the test below, so this list can only shrink.
SANS_IO_DEBT: dict[str, str] = {}
IO_IMPORTS = {
    "asyncio",
    "selectors",
    "select",
    "socket",
    "ssl",
    "os",
    "subprocess",
    "threading",
    "sqlite3",
    "serial",
    "serial_asyncio_fast",
    "bleak",
    "bumble",
    "aiohttp",
    "websockets",
    "redis",
    "http.client",
    "http.server",
    "urllib.request",
}


def _is_io(name: str) -> bool:
    return any(name == io or name.startswith(io + ".") for io in IO_IMPORTS)


def engine_protocol_modules() -> list[str]:
    found: set[str] = set()
    for path in (ROOT / "engine").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        in_package = any(rel.startswith(p + "/") for p in SANS_IO_PACKAGES)
        if in_package or any(fnmatch.fnmatch(path.name, pattern) for pattern in SANS_IO_NAMES):
            found.add(rel)
    return sorted(found - set(NOT_PROTOCOLS))


def test_every_engine_protocol_module_is_sans_io() -> None:
    """Wire codecs, sync messages, session state machines, parsers, the policy and the id grammar import
    no event loop, socket, HTTP library, serial port, radio or database, not even inside a function:
    they are driven by bytes and events in, effects out (docs/architecture.md#ports-and-adapters)."""
    modules = engine_protocol_modules()
    # The rule must keep finding the protocol layer; a rename that hid it from the rule fails here.
    expected_modules = (
        "engine/sync/wire.py",
        "engine/sync/server_session.py",
        "engine/sync/client_session.py",
    )
    for expected in (*expected_modules, "engine/live/wire.py", "engine/ids.py", "engine/roles.py"):
        assert expected in modules, f"the sans-I/O rule no longer finds {expected}: update SANS_IO_NAMES"
    offenders: list[str] = []
    for rel in modules:
        bad = sorted(n for n in _imports(ROOT / rel) if _is_io(n))
        if bad and rel not in SANS_IO_DEBT:
            offenders.append(f"  {rel} imports {', '.join(bad)}")
    assert not offenders, (
        "protocol modules must stay sans-I/O (move the I/O to the module that drives them):\n"
        + "\n".join(offenders)
    )
    stale = [
        rel for rel in SANS_IO_DEBT if rel not in modules or not any(_is_io(n) for n in _imports(ROOT / rel))
    ]
    assert not stale, f"no longer I/O or no longer there, delete from SANS_IO_DEBT: {stale}"
