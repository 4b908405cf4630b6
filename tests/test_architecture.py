"""The folder tree is the architecture: these checks keep the dependency rules of
docs/architecture.md#ports-and-adapters true."""

from __future__ import annotations

import ast
from pathlib import Path

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


def test_protocol_modules_are_sans_io() -> None:
    """Parsers and framers are pure: no asyncio, sockets, serial ports or radios."""
    io_modules = {"asyncio", "socket", "serial", "bleak", "bumble", "aiohttp", "os", "select"}
    serial = ROOT / "adapters/serial"
    protocol_files = [ROOT / "adapters/ble/hrm.py", ROOT / "adapters/ble/link_state.py"]
    protocol_files += [
        ROOT / f"adapters/ble/{m}.py" for m in ("gatt_fields", "revolutions", "ftms", "cps", "csc")
    ]
    # What a bike's measurement means as readings, and what a simulated bike notifies: bytes only.
    protocol_files += [ROOT / "adapters/ble/bike_services.py", ROOT / "adapters/ble/sim/bike_model.py"]
    protocol_files += [serial / "line_protocol.py", serial / "cadence.py", serial / "peloton_readings.py"]
    protocol_files += sorted((serial / "peloton").glob("*.py"))
    offenders = []
    for path in protocol_files:
        bad = {n for n in _imports(path) if _top(n) in io_modules}
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert offenders == []
    assert all(p.exists() for p in protocol_files)


LANES = {"engine.live", "engine.backend", "engine.dashboard"}
# The one exception, to be deleted with it: the deprecated `ServerConfig.hub` (its type, and the live lane
# `build_app` adds for it), kept for engine/bench/live.py's hub processes until they pass `live_lane`.
DEPRECATED_HOST_IMPORTS = {
    "engine/server/app.py": {"engine.live.lane"},
    "engine/server/config.py": {"engine.live.config"},
}


def _in(name: str, packages: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_host_knows_no_lane() -> None:
    """engine/server runs whatever lanes its caller passes (docs/architecture.md#the-host-and-its-lanes)."""
    offenders = []
    for path in sorted((ROOT / "engine/server").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        allowed = DEPRECATED_HOST_IMPORTS.get(rel, set())
        bad = {n for n in _imports(path) if _in(n, LANES) and n not in allowed}
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
