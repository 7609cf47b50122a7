"""fastpid benchmarks (pytest-benchmark).  Run one suite a run, e.g.
``python -m pytest bench/test_bench_solver.py --bench-threads 1``: a run of several suites,
or with tests deselected, prints its tables but saves nothing (``bench/conftest.py``).

Not part of the installed package and not collected by the default ``pytest`` run
(``testpaths = ["tests"]``).
"""
