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
    """Only the composition root (engine/cli, engine/bench, engine/lab) may wire adapters in."""
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[1] in {"cli", "bench", "lab"}:
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
    protocol_files += [serial / "line_protocol.py", serial / "cadence.py", serial / "peloton_readings.py"]
    protocol_files += sorted((serial / "peloton").glob("*.py"))
    offenders = []
    for path in protocol_files:
        bad = {n for n in _imports(path) if _top(n) in io_modules}
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert offenders == []
    assert all(p.exists() for p in protocol_files)
