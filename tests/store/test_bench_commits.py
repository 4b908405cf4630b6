"""`ridesync bench commits` runs its configurations side by side and reports what it counted (no timing
is asserted: the figures are for the benchmark's reader)."""

from __future__ import annotations

import argparse

from engine.bench import commits


def test_bench_commits_reports_sqlite_beside_postgresql_on_one_and_n_nodes(pg_url: str) -> None:
    parser = argparse.ArgumentParser()
    commits.add_arguments(parser)
    args = parser.parse_args(["--seconds", "0.3", "--connections", "2", "--nodes", "2", "--store", pg_url])
    result = commits.run(args)
    assert result["postgresql"] == "given"
    for name, nodes in (("sqlite_1_node", 1), ("postgresql_1_node", 1), ("postgresql_2_nodes", 2)):
        figures = result[name]
        assert figures["nodes"] == nodes and figures["connections"] == 2 * nodes
        assert figures["acks"] > 0 and figures["jobs_per_commit"] >= 1
        assert figures["ack_ms_p50"] <= figures["ack_ms_p99"]
