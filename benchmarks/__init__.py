"""Speed benchmarks: collapselab against the peers a user would otherwise use (``python -m
benchmarks.run``). Separate from the test suite; see ``benchmarks/run.py``."""
