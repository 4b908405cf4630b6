"""The group-class demo: a backend with the class hub and dashboard, and N simulated riders streaming to it.

The sensors are injected (engine code never imports the adapters, docs/architecture.md#ports-and-adapters):
the composition root,
`engine/cli/commands/demo.py`, opens the simulated straps and bikes and hands them to `running_demo`.
"""
