"""The fitness-profile parsers are fuzz campaign targets: seeded mutations of valid values either decode to a
value that re-encodes to the same bytes or fail with the profile's own typed error, nothing else."""

from __future__ import annotations

import pytest

from engine.campaign.fuzz import run_target
from engine.cli.fuzz_targets import adapter_targets

TARGETS = {t.name: t for t in adapter_targets() if t.name in {"ble-ftms", "ble-cps", "ble-csc"}}


def test_the_three_profiles_are_registered() -> None:
    assert set(TARGETS) == {"ble-ftms", "ble-cps", "ble-csc"}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_campaign_finds_nothing_and_exercises_both_outcomes(name: str) -> None:
    result = run_target(TARGETS[name], 3000, seed=7)
    assert result["unexpected"] == 0, result["crashes"]
    assert result["ok"] > 50 and result["typed_error"] > 50


def test_a_parser_that_decodes_non_canonically_is_a_finding() -> None:
    """The round-trip check inside the target can fail: a decoder that drops a field is reported."""
    from adapters.ble import csc
    from engine.cli.fuzz_targets import _canonical

    def lossy(data: bytes) -> csc.CscMeasurement:
        return csc.CscMeasurement(None, csc.parse_csc(data).crank)

    target = TARGETS["ble-csc"]
    broken = type(target)("lossy", _canonical(lossy, csc.encode_csc), target.allowed, target.seeds)
    assert run_target(broken, 200, seed=7)["unexpected"] > 0
