"""The sync protocol modules stay sans-I/O: no event loop, sockets or HTTP library at import time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SYNC = Path(__file__).resolve().parents[2] / "engine" / "sync"
IO_MODULES = {"asyncio", "socket", "aiohttp", "select", "os", "websockets", "sqlite3"}


def top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("name", ["wire.py", "session.py", "docid.py", "backoff.py"])
def test_module_is_sans_io(name: str) -> None:
    assert top_level_imports(SYNC / name) & IO_MODULES == set()
