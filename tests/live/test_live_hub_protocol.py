"""Every hub answers the routes through the `LiveHub` port: the coalescing hub and the benchmark's naive
baseline, which plugs into the same live lane. Production live code knows no baseline."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from engine.bench.naive_hub import NaiveHub
from engine.live.config import HubConfig
from engine.live.hub import Hub
from engine.live.port import LiveHub

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("make", [Hub, NaiveHub], ids=["coalescing", "naive"])
def test_a_fresh_hub_answers_the_routes_questions(make: type[Hub] | type[NaiveHub]) -> None:
    config = HubConfig(min_tick_s=0.002)
    hub: LiveHub = make(config)
    assert hub.config is config
    assert hub.impl == {Hub: "coalescing", NaiveHub: "naive"}[make]
    assert hub.snapshot("spin-6am") == ({}, None)
    assert hub.relay_stats() is None
    assert hub.connections() == {}
    hub.opened("sub")
    assert hub.connections() == {"sub": 1}


def test_the_coalescing_hub_reports_its_flush_delay() -> None:
    hub = Hub(HubConfig(min_tick_s=0.002))
    assert hub.stats_details() == {"classes": 0, "tick_interval_s": 0.002}
    assert hub.flush_delay() == 0.002


def test_the_baseline_reports_no_flush_delay() -> None:
    hub = NaiveHub()
    assert hub.stats_details() == {}
    assert hub.flush_delay() is None


def test_setup_live_refuses_a_hub_together_with_a_config() -> None:
    from aiohttp import web

    from engine.live.routes import setup_live

    with pytest.raises(ValueError, match="either a hub or its config"):
        setup_live(web.Application(), HubConfig(), hub=NaiveHub())


def _live_sources() -> list[Path]:
    return sorted((ROOT / "engine/live").rglob("*.py"))


@pytest.mark.parametrize("path", _live_sources(), ids=lambda p: p.name)
def test_production_live_code_has_no_baseline_switch(path: Path) -> None:
    """No import of the benchmark, no `naive` mode, no `isinstance(..., Hub)` that would bypass the port."""
    tree = ast.parse(path.read_text())
    imports = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert not {name for name in imports if name.startswith("engine.bench")}
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert "naive" not in strings
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            kinds = node.args[1]
            names = {
                getattr(k, "id", None) for k in (kinds.elts if isinstance(kinds, ast.Tuple) else [kinds])
            }
            assert not names & {"Hub", "NaiveHub", "HubBase"}, f"line {node.lineno}"
