"""`ridesync doctor` and `ridesync scan`: checks over a fake system tree, and the commands end to end."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from adapters.ble.doctor import check_bluez_version, ready, run_checks
from engine.cli.main import main


def fake_root(
    tmp_path: Path, *, bluez: bool, running: bool, adapter: bool, rfkill: str = "0 0", bus: bool = False
) -> Path:
    root = tmp_path / "root"
    (root / "proc/1").mkdir(parents=True)
    (root / "proc/1/comm").write_text("init\n")
    if bluez:
        (root / "usr/libexec/bluetooth").mkdir(parents=True)
        (root / "usr/libexec/bluetooth/bluetoothd").write_text("")
    if running:
        (root / "proc/42").mkdir()
        (root / "proc/42/comm").write_text("bluetoothd\n")
    if adapter:
        (root / "sys/class/bluetooth/hci0").mkdir(parents=True)
        soft, hard = rfkill.split()
        dev = root / "sys/class/rfkill/rfkill0"
        dev.mkdir(parents=True)
        (dev / "type").write_text("bluetooth\n")
        (dev / "soft").write_text(soft + "\n")
        (dev / "hard").write_text(hard + "\n")
    if bus:
        (root / "run/dbus").mkdir(parents=True)
    return root


def by_name(checks: list) -> dict:  # type: ignore[type-arg]
    return {c.name: c for c in checks}


async def test_bare_machine_says_bluez_is_missing(tmp_path: Path) -> None:
    checks = await run_checks(fake_root(tmp_path, bluez=False, running=False, adapter=False), env={})
    c = by_name(checks)
    assert not ready(checks)
    assert c["bluez installed"].ok is False and "apt-get install bluez" in c["bluez installed"].fix
    assert c["d-bus system bus"].ok is False
    assert c["bluetooth adapter"].ok is False
    assert c["rfkill"].ok is None and c["bluez access"].ok is None


@pytest.mark.parametrize(
    ("rfkill", "fix"), [("1 0", "sudo rfkill unblock bluetooth"), ("0 1", "hardware radio switch")]
)
async def test_rfkill_block_is_reported_with_its_fix(tmp_path: Path, rfkill: str, fix: str) -> None:
    checks = await run_checks(
        fake_root(tmp_path, bluez=True, running=True, adapter=True, rfkill=rfkill), env={}
    )
    c = by_name(checks)
    assert c["bluez installed"].ok and c["bluetoothd running"].ok and c["bluetooth adapter"].ok
    assert c["rfkill"].ok is False and fix in c["rfkill"].fix


async def test_a_bus_socket_that_is_not_bluez_fails_the_access_check(tmp_path: Path) -> None:
    root = fake_root(tmp_path, bluez=True, running=True, adapter=True, bus=True)
    # A real unix socket nobody answers D-Bus on: the probe must fail clearly, not hang.
    path = root / "run/dbus/system_bus_socket"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        checks = await run_checks(root, env={}, bus_timeout_s=0.5)
    finally:
        server.close()
    c = by_name(checks)
    assert c["d-bus system bus"].ok is True
    assert c["bluez access"].ok is False
    assert not ready(checks)


def test_doctor_command_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["doctor", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = lines[-1]["summary"]
    assert status == (0 if summary["ready"] else 1)
    assert {row["check"] for row in lines[:-1]} >= {
        "bluez installed",
        "d-bus system bus",
        "bluetooth adapter",
    }
    for row in lines[:-1]:
        assert row["status"] in ("ok", "fail", "skipped")
        if row["status"] == "fail":
            assert row["fix"], f"{row['check']} fails without saying what to do"


def test_scan_command_on_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--sim", "3", "--timeout", "1.5", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["name"] for r in rows) == [f"ridesync-sim-hr-{i}" for i in (1, 2, 3)]
    assert all(set(r) == {"name", "address", "rssi"} and isinstance(r["rssi"], int) for r in rows)


def test_scan_command_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--timeout", "-1"]) == 2
    assert "timeout" in json.loads(capsys.readouterr().err)["error"]


def test_bench_ble_reports_both_paths_and_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "ble", "--count", "100", "--burst", "50", "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "ble"
    assert result["params"] == {"count": 100, "burst": 50, "repeats": 1}
    for path in ("bleak_path", "baseline_raw_bumble"):
        assert 0 < result[path]["p50_us"] <= result[path]["p99_us"] <= result[path]["max_us"]
        assert result[path]["readings_per_s"] > 0
    assert set(result["ratios"]) == {
        "p50_latency_bleak_over_raw",
        "p99_latency_bleak_over_raw",
        "throughput_bleak_over_raw",
    }


def test_bluez_version_check() -> None:
    old = check_bluez_version("5.53")
    assert old.ok is False and "older than 5.55" in old.detail and "upgrade the bluez package" in old.fix
    assert check_bluez_version("5.66").ok is True
    assert check_bluez_version("5.55").ok is True
    assert check_bluez_version(None).ok is None


def test_bench_ble_bike_reports_three_paths_and_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "ble-bike", "--count", "100", "--burst", "50", "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "ble-bike"
    assert result["params"] == {"count": 100, "burst": 50, "repeats": 1}
    for path in ("bike_path", "strap_path", "baseline_raw_bumble"):
        assert 0 < result[path]["p50_us"] <= result[path]["p99_us"] <= result[path]["max_us"]
        assert result[path]["notifications_per_s"] > 0
    assert set(result["ratios"]) == {
        "p50_latency_bike_over_raw",
        "p99_latency_bike_over_raw",
        "p50_latency_bike_over_strap",
        "throughput_bike_over_raw",
    }
