"""Benchmarks run by `ridesync bench NAME`; one module each (see engine.cli.commands.bench)."""
