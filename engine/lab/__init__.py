"""The lab kit behind `ridesync lab`: scenarios a lab engineer runs against real straps and bikes (or the
simulator) with one command, and their one JSON report. See hw_tests/README.md."""
