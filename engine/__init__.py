"""ridesync engine: the core that never imports a radio or a serial port.

Sensors reach it as typed `engine.readings.Reading` values from adapters; rides live in Automerge
documents behind `engine.crdt`; the backend and the class hub are aiohttp applications.
"""

# The public API (docs/api.md): every name in engine.api, loaded on first use, so that `import engine`
# (and so every ridesync command) does not load bleak, bumble and pyserial. The names are engine.api's
# own `__all__`, read from its source rather than listed twice.
import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.api import *  # noqa: F403


def _api_names() -> list[str]:
    """engine/api.py's `__all__` (its list, and any `__all__ += [...]`), without importing the module."""
    names: list[str] = []
    for node in ast.parse(Path(__file__).with_name("api.py").read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(node, ast.AugAssign):
            target = node.target
        if isinstance(target, ast.Name) and target.id == "__all__":
            names += ast.literal_eval(node.value)  # type: ignore[attr-defined]
    return names


__all__ = _api_names()  # noqa: PLE0605 (computed on purpose: engine/api.py holds the one list)


def __getattr__(name: str) -> Any:
    if name in __all__:
        import engine.api

        return getattr(engine.api, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
