"""Held-out benchmark: the exact C++ solver against CVXPY + Clarabel on other shapes and seeds.

Run with ``python -m pytest bench/test_bench_held_out.py -q --bench-name solver_held_out``
(the options of ``bench/conftest.py``; ``--bench-threads 1`` for one thread, as CVXPY runs).
The families (``bench.problems.HELD_OUT``) are of the same kinds as the main suite's (dense
and tiny-source Dirichlet joints, clustered features, the digits and UCI data) but of other
shapes, from another seed base: the solver's settings were measured on the main families,
and this suite checks that its speed and its certificate carry over to joints it was not
tuned on. Rows as in ``bench/test_bench_solver.py``: ``fastpid exact (cpp), 1/call`` (the
automatic backend on the ``scale`` families) and ``CVXPY+Clarabel``, in the same run, errors
against ``fastpid.pid(P, tol=1e-10)``.
"""

from __future__ import annotations

import pytest

from bench import problems
from bench.test_bench_solver import cvxpy_row, exact_loop_row

FAMILIES = [f for f in problems.HELD_OUT if problems.available(f)]


@pytest.mark.parametrize("family", FAMILIES)
def test_held_out_exact_one_per_call(benchmark, family, bench_settings, record, reference):
    backend = "auto" if problems.is_scale(family) else "cpp"
    exact_loop_row(benchmark, family, backend, bench_settings, record, reference)


@pytest.mark.parametrize("family", FAMILIES)
def test_held_out_cvxpy_clarabel(benchmark, family, bench_settings, record, reference, cvx_warm):
    cvxpy_row(benchmark, family, bench_settings, record, reference)
