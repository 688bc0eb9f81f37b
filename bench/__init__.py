"""svcbridge benchmarks: each compares svcbridge against a baseline measured in the same run.

Run ``make bench`` or ``python -m bench NAME [...]``. Every benchmark prints a table and one JSON line
and writes the JSON to ``bench/results/``. Speed is measured here, never asserted in tests.
"""
