"""docs/api.md runs as written: its ```python blocks, in order, in one namespace, against simulated
straps and bikes and a real `ridesync serve` on loopback (the plugin's `ridesync_backend`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import engine
import engine.api
from engine.testing import RidesyncBackend

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text())


def test_the_doc_has_an_example_per_task() -> None:
    text = DOC.read_text()
    for heading in (
        "Open sensor sources",
        "Record a ride into a replica",
        "Read the resolved view",
        "Publish live",
    ):
        assert f"## {heading}" in text
    assert len(blocks()) >= 7


def test_public_names_are_one_list() -> None:
    assert sorted(engine.__all__) == sorted(engine.api.__all__)
    for name in engine.__all__:
        assert getattr(engine, name) is getattr(engine.api, name)
    with pytest.raises(AttributeError):
        _ = engine.not_public


def test_import_engine_loads_neither_the_api_nor_a_radio() -> None:
    """`import engine` knows the public names (read from engine/api.py's source) without importing them."""
    code = (
        "import sys, engine; print(len(engine.__all__), 'engine.api' in sys.modules, 'bleak' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(len(engine.api.__all__)), "False", "False"]


@pytest.mark.slow
def test_api_doc_examples_run(
    ridesync_backend: RidesyncBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the doc's first block reads: the backend and tokens the doc tells a reader to make.
    monkeypatch.setenv("RIDESYNC_BACKEND", ridesync_backend.url)
    bike = ridesync_backend.token("bike", "bike-1", rider="alice", classes=["spin-6am"])
    monkeypatch.setenv("BIKE_TOKEN", bike)
    monkeypatch.setenv("VIEWER_TOKEN", ridesync_backend.token("viewer", "dash-1", classes=["spin-6am"]))
    monkeypatch.setenv("RIDESYNC_EXAMPLE_DATA", str(tmp_path / "data"))
    namespace: dict[str, object] = {"__name__": "api_md"}
    for n, code in enumerate(blocks(), start=1):
        try:
            exec(compile(code, f"docs/api.md block {n}", "exec"), namespace)
        except BaseException as exc:
            raise AssertionError(f"docs/api.md block {n} failed: {exc!r}\n{code}") from exc
