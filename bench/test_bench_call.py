"""The cost of one call: ``fastpid.pid`` of one problem a call, as a training loop or a monitor
calls it, against CVXPY + Clarabel one problem a call in the same run.

Run with ``OMP_NUM_THREADS=1 python -m pytest bench/test_bench_call.py -q --bench-threads 1``
(the options of ``bench/conftest.py``); saved to ``bench/results/solver_call.{json,md}``.
Rows, for each method (``exact``, ``fast`` with its default steps, ``proxy``):

- ``numpy float64``: ``fastpid.pid(P[b], method=...)``, no gradient;
- ``torch float32``: the same problem as a float32 tensor (results in float32, their rounding
  in the gap): the joints ``fastpid.joint`` builds from float32 probability rows;
- ``torch float64, backward``: a tensor that requires a gradient, and the backward pass of its
  synergy in the same call, as a loss would take it.

Errors are ``max |V - V*|`` against the certified ``tol=1e-10`` reference, each checked
against the row's own gap plus the reference's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastpid
from bench import problems
from bench.test_bench_solver import _check_certificate, _row, _timed, cvxpy_row

FAMILIES = ["dense_8x8x8", "digits_20x20x10"]
METHODS = {"exact": 0.0, "fast": 1.0, "proxy": 2.0}  # each method's place in the table
INPUTS = {"numpy float64": 0.0, "torch float32": 0.1, "torch float64, backward": 0.2}


def _solve(P, method: str, inputs: str):
    """``fastpid.pid`` of one problem ``P`` (numpy float64) given as ``inputs`` says."""
    if inputs == "numpy float64":
        return fastpid.pid(P, method=method)
    if inputs == "torch float32":
        return fastpid.pid(torch.from_numpy(P).float(), method=method)
    X = torch.from_numpy(P).requires_grad_()
    res = fastpid.pid(X, method=method)
    res.synergy.backward()
    return res


@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_one_problem_per_call(benchmark, family, method, inputs, bench_settings, record, reference):
    n = problems.count(family, bench_settings["problems_per_family"])
    P = problems.family(family, n)
    benchmark.group = family
    out, times = _timed(benchmark, lambda: [_solve(P[b], method, inputs) for b in range(n)],
                        bench_settings["timed_rounds"])
    V = np.array([float((r.mi - r.synergy).detach()) if isinstance(r.mi, torch.Tensor) else float(r.mi - r.synergy)
                  for r in out])
    gap = np.array([float(r.gap) for r in out])
    err, gref = _row(record, reference, family=family, key=f"{method}_{inputs}",
                     method=f"fastpid {method}, 1/call, {inputs}", order=METHODS[method] + INPUTS[inputs],
                     n=n, seconds=times, V=V, own_gap=gap, notes=f"backend {out[0].backend}")
    _check_certificate(err, gap, gref)


@pytest.mark.parametrize("family", FAMILIES)
def test_cvxpy_clarabel(benchmark, family, bench_settings, record, reference, cvx_warm):
    cvxpy_row(benchmark, family, bench_settings, record, reference)
