"""fastpid benchmarks (pytest-benchmark).  Run with ``python -m pytest bench -q``.

Not part of the installed package and not collected by the default ``pytest`` run
(``testpaths = ["tests"]``).
"""
