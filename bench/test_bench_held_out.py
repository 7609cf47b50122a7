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

import numpy as np
import pytest

import fastpid
from bench import problems
from bench.test_bench_solver import _check_certificate, _row, _solver_notes, _timed, _value
from fastpid.cvx import solve_cvx

FAMILIES = [f for f in problems.HELD_OUT if problems.available(f)]


@pytest.mark.parametrize("family", FAMILIES)
def test_held_out_exact_one_per_call(benchmark, family, bench_settings, record, reference):
    n = problems.count(family, bench_settings["problems_per_family"])
    P = problems.family(family, n)
    benchmark.group = family
    scale = problems.is_scale(family)
    backend = "auto" if scale else "cpp"
    out, t = _timed(benchmark, lambda: [fastpid.pid(P[b], backend=backend) for b in range(n)],
                    1 if scale else bench_settings["timed_rounds"], warmup=0 if scale else 1)
    gap = np.array([float(r.gap) for r in out])
    notes = _solver_notes([bool(r.converged) for r in out], [int(r.iterations) for r in out])
    err, gref = _row(record, reference, family=family, key=f"exact_loop_{backend}",
                     method=f"fastpid exact ({backend}), 1/call", order=0, n=n, seconds=t,
                     V=np.concatenate([_value(r) for r in out]), own_gap=gap, notes=notes)
    _check_certificate(err, gap, gref)


@pytest.mark.parametrize("family", FAMILIES)
def test_held_out_cvxpy_clarabel(benchmark, family, bench_settings, record, reference, cvx_warm):
    n = problems.count(family, bench_settings["cvx_problems_per_family"])
    P = problems.family(family, n)
    benchmark.group = family
    rounds = 1 if problems.is_scale(family) else 2
    (V, status), t = _timed(benchmark, lambda: solve_cvx(P, progress=False), rounds=rounds, warmup=0)
    counts = {s: status.count(s) for s in sorted(set(status))}
    _row(record, reference, family=family, key="cvxpy", method="CVXPY+Clarabel (defaults)",
         order=6, n=n, seconds=t, V=V,
         notes="1/call; status " + ", ".join(f"{k} {v}/{n}" for k, v in counts.items()))
