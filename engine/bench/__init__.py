"""Benchmarks run by `ridesync bench NAME`, one module or package each (see engine.cli.commands.bench), and
the baselines they measure against (naive_hub.py: the naive class hub, behind the live lane's `LiveHub`
port)."""
