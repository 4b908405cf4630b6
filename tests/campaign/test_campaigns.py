"""The short version of every `ridesync campaign`, run as the CLI runs it: one JSON report on stdout, exit 0
only if everything held. Each takes well under a minute on a 2-core machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.campaign import fuzz
from engine.campaign.report import CampaignReport, check_ride

ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 180


def campaign(name: str, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    cmd = [sys.executable, "-m", "engine.cli.main", "campaign", name, "--json", "--workdir", str(tmp_path)]
    proc = subprocess.run(
        [*cmd, *extra], cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False,
    )  # fmt: skip
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["campaign"] == name and report["version"] == "short"
    assert {"seed", "injected", "held", "lost", "duplicated", "pass"} <= set(report)
    # Everything it started is gone: the work dir it made under tmp_path was removed.
    assert list(tmp_path.iterdir()) == []
    return proc.returncode, report


def held_all(code: int, report: dict[str, Any]) -> None:
    not_held = [c for c in report["cases"] if not c["held"]]
    assert not_held == [], json.dumps(not_held, indent=1)
    assert report["failures"] == []
    assert report["lost"] == 0 and report["duplicated"] == 0
    assert report["pass"] is True and code == 0


@pytest.mark.slow
def test_security_every_attack_is_refused_and_the_honest_ride_is_whole(tmp_path: Path) -> None:
    code, report = campaign("security", tmp_path, "--seed", "14")
    assert report["seed"] == 14
    assert report["injected"] >= 35
    assert report["honest_ride"]["ok"] is True, report["honest_ride"]
    assert {"before", "after"} <= set(report["server"])
    names = [c["case"] for c in report["cases"]]
    # The close code every hostile /v1/sync peer reads (not 1006), and the quiet over-long requests.
    wanted = {"1002", "1008", "1009", "4401", "4413"}
    assert {w for n in names if n.startswith("close code:") for w in wanted if w in n} == wanted, names
    assert any(n.startswith("over-long URL and header") for n in names), names
    assert sum("live segment" in n for n in names) == 5, names
    held_all(code, report)


@pytest.mark.slow
def test_crash_kills_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    code, report = campaign("crash", tmp_path)
    assert report["kills"]["total"] >= 10 and report["kills"]["backend"] >= 1
    assert report["sqlite_not_ok"] == {} and report["sqlite_files_checked"] >= 3
    held_all(code, report)


@pytest.mark.slow
def test_network_every_proxy_mode_heals_and_the_ride_reconciles(tmp_path: Path) -> None:
    code, report = campaign("network", tmp_path)
    faults = set(report["proxy_events"]["bike"])
    assert {"drop", "reset", "cut", "partition", "heal"} <= faults, faults
    assert report["ride"]["ok"] is True
    held_all(code, report)


@pytest.mark.slow
def test_soak_short_holds_memory_and_files(tmp_path: Path) -> None:
    code, report = campaign("soak", tmp_path)
    classes = report["classes"]
    assert len(classes) >= 3 and report["riders"] >= 3
    assert report["rides_ok"] == report["rides"] == report["riders"] * len(classes)
    # The same phase of every class: its rides ended, reconciled and released from the server's memory.
    assert [c["rides_in_memory"] for c in classes] == [0] * len(classes)
    assert all(c["samples"] > 0 and c["rss_kb"] > 0 and c["fds"] > 0 for c in classes)
    held_all(code, report)


def test_fuzz_short_every_parser_fails_only_with_its_own_error(tmp_path: Path) -> None:
    code, report = campaign("fuzz", tmp_path)
    names = {t["target"] for t in report["targets"]}
    assert {"ble-hrm", "serial-peloton-framer", "serial-line-protocol", "sync-wire-cbor", "live-frames-json",
            "live-rfc6455", "store-sample-records", "store-sample-batches",
            "http-json-bodies"} <= names  # fmt: skip
    assert all(t["inputs"] >= 3000 for t in report["targets"])
    held_all(code, report)


def test_fuzz_reports_an_untyped_failure_with_its_input() -> None:
    def parse(data: bytes) -> object:
        if len(data) > 3:
            raise KeyError("not a typed error")
        if data[:1] == b"x":
            raise ValueError("typed")
        return data

    target = fuzz.FuzzTarget("toy", parse, (ValueError,), (b"x", b"ab"))
    result = fuzz.run_target(target, 500, seed=1)
    assert result["unexpected"] > 0 and result["typed_error"] > 0
    assert "KeyError" in result["crashes"][0]["error"] and result["crashes"][0]["input_hex"]
    assert fuzz.run_target(target, 500, seed=1) == result  # the seed reproduces the run


def test_report_and_ride_check() -> None:
    view = {"samples": {"b": 9}, "declared": {"b": {"count": 10}}, "missing_samples": {"b": [4]},
            "end_events_counted": 1, "phase": "finalized"}  # fmt: skip
    check = check_ride("r", view, "b", 10)
    assert (check.lost, check.duplicated, check.ok) == (1, 0, False)
    twice = check_ride("r", {**view, "samples": {"b": 11}, "missing_samples": {}}, "b", 10)
    assert (twice.lost, twice.duplicated) == (0, 1)
    report = CampaignReport("x", 3, "short")
    report.case("a", True)
    assert report.passed
    report.case("b", False, "why")
    assert not report.passed and report.to_json()["not_held"] == ["b"]
