"""The automatic backend's C++ limit: the C++ and PyTorch exact solvers in one run.

Run with ``python -m pytest bench/test_bench_auto_route.py -q`` (the options of
``bench/conftest.py``; two torch threads by default, the C++ solver one thread a problem).
``backend="auto"`` gives the C++ solver Schur systems of up to ``fastpid.cpp.auto_max("schur")``
free potentials (3072; 6144 where every thread has a problem, as on one thread) and low-rank
systems of up to 4096 cells, the PyTorch solver larger ones; the families
(``bench.problems.ROUTE``) are dense joints past the old limit (1800), at 3072, past it (4608)
and a low-rank one of 2304 cells. Rows:
``fastpid exact (cpp)``, ``(torch)`` and ``(auto)``, one problem per call, errors against
``fastpid.pid(P, tol=1e-10)``; no CVXPY (minutes a problem here), so the ratio to read is the
PyTorch row's time over the C++ row's.
"""

from __future__ import annotations

import pytest

from bench import problems
from bench.test_bench_solver import exact_loop_row


@pytest.mark.parametrize("backend", ["cpp", "torch", "auto"])
@pytest.mark.parametrize("family", list(problems.ROUTE))
def test_route_exact_one_per_call(benchmark, family, backend, bench_settings, record, reference):
    exact_loop_row(benchmark, family, backend, bench_settings, record, reference)
