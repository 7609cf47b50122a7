"""fastpid benchmarks (pytest-benchmark).  Run one suite a run, e.g.
``python -m pytest bench/test_bench_solver.py --bench-threads 1``: a run of several suites,
with tests deselected or picked by id, cut short or without a family's data prints its tables
but saves nothing, saying why (``bench/conftest.py``).

Not part of the installed package and not collected by the default ``pytest`` run
(``testpaths = ["tests"]``).
"""
