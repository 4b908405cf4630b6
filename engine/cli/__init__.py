"""The `ridesync` command line: the composition root, the one place that wires adapters into the engine."""
