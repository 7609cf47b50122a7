"""Agreement with the CVXPY exponential-cone program (backend="cvx").

CVXPY+Clarabel is only accurate to its own tolerances (1e-8..1e-6 nats on sparse
problems), so the tests check that fastpid's certificate brackets its answer within
that tolerance, and, more strictly, that the I of CVXPY's coupling, made exactly
feasible, never falls below fastpid's certified lower bound.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("cvxpy")

import fastpid  # noqa: E402
from fastpid import solver  # noqa: E402
from fastpid.cvx import TIGHT_CLARABEL, solve_cvx, solve_cvx_q  # noqa: E402

from bench import peers  # noqa: E402
from helpers import random_joint  # noqa: E402

CVX_TOL = 1e-6   # Clarabel's default settings
#: At TIGHT_CLARABEL CVXPY lands within about 3e-8 of the certified value on small joints
#: (1e-6 here had let a value off by 5e-7 pass).
TIGHT_TOL = 1e-7

PROBLEMS = {
    "dense_3x4x3": dict(shape=(3, 4, 3), alpha=1.0),
    "peaked_4x4x4": dict(shape=(4, 4, 4), alpha=0.2),
    "sparse_6x5x4": dict(shape=(6, 5, 4), alpha=0.5, sparsity=0.6),
    "tiny_5x5x3": dict(shape=(5, 5, 3), alpha=1.0, tiny=1e-13),
}


def _problem(name):
    kw = dict(PROBLEMS[name])
    return random_joint(np.random.default_rng(len(name)), kw.pop("shape"), **kw)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_certificate_brackets_cvxpy(name):
    P = _problem(name)
    Pt = torch.from_numpy(P)[None]
    sol = solver.solve_exact(Pt, 1e-9)
    lower, upper = float(sol.lower[0]), float(sol.upper[0])
    V, status, Q = solve_cvx_q(P, solver_opts=TIGHT_CLARABEL)
    assert status[0] in ("optimal", "optimal_inaccurate")
    assert lower - TIGHT_TOL <= float(V) <= upper + TIGHT_TOL
    # CVXPY's coupling, rounded onto the constraint set, is a feasible point: its I can
    # never beat the certified lower bound.
    prob = solver.Problem.from_joint(Pt)
    feasible_i = float(solver.primal_bound(prob, torch.from_numpy(np.clip(Q, 0, None))[None])[0])
    assert feasible_i >= lower - 1e-12


def test_cvx_backend_returns_the_same_result_type():
    P = _problem("dense_3x4x3")
    res = fastpid.pid(np.stack([P, P]), backend="cvx")
    ref = fastpid.pid(P)
    assert res.backend == "cvx" and len(res.status) == 2 and res.synergy.shape == (2,)
    assert np.all(np.abs(res.synergy - float(ref.synergy)) <= CVX_TOL)
    assert np.all(res.gap >= 0)
    # The cvx gap is the honest closed-form bracket around CVXPY's value.
    assert np.all(np.abs(res.synergy - float(ref.synergy)) <= res.gap + 1e-12)


def test_cvx_backend_rejects_other_methods():
    with pytest.raises(ValueError, match="cvx"):
        fastpid.pid(_problem("dense_3x4x3"), backend="cvx", method="proxy")


def test_cvx_backend_takes_progress_and_refuses_max_iter(monkeypatch):
    """progress= never reached CVXPY's loop (its bar showed with progress=False on a
    terminal), and max_iter=1 was accepted and ignored."""
    from fastpid import cvx

    seen = []
    real = cvx.solve_cvx
    monkeypatch.setattr(cvx, "solve_cvx", lambda P, **kw: seen.append(kw.get("progress")) or real(P, **kw))
    for progress in (False, True):
        fastpid.pid(_problem("dense_3x4x3"), backend="cvx", progress=progress)
    assert seen == [False, True]
    with pytest.raises(ValueError, match="max_iter caps fastpid's Newton steps; backend='cvx'"):
        fastpid.pid(_problem("dense_3x4x3"), backend="cvx", max_iter=1)


def test_solve_cvx_xor():
    P = np.zeros((2, 2, 2))
    for a in range(2):
        for b in range(2):
            P[a, b, a ^ b] = 0.25
    V, status = solve_cvx(P)
    assert status == ["optimal"] or status[0].startswith("optimal")
    assert abs(float(V)) <= 1e-7  # XOR: V = max(I1, I2) = 0, all synergy


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_dense_program_peer_agrees(name):
    # The benchmark's second CVXPY peer (bench/peers.py) writes the program over every entry
    # of Q, the admissible or not; at Clarabel's default settings it must still land within
    # its own accuracy of the certified value, or its row in the benchmark means nothing.
    P = _problem(name)
    res = fastpid.pid(P, tol=1e-10)
    V, status = peers.cvxpy_dense(P[None])
    assert status[0] in ("optimal", "optimal_inaccurate")
    assert abs(float(V[0]) - float(res.mi - res.synergy)) <= CVX_TOL


def test_solve_cvx_takes_counts_up_to_the_float64_limit_and_refuses_non_real_input():
    """Counts whose total overflows had summed to inf: P / inf was a joint of zeros, solved as
    V = 0 with status "optimal" (X1 = X2 = Y, one fair bit: V = log 2). Complex input lost its
    imaginary part with only numpy's warning."""
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[1, 1, 1] = 1.0
    for scale in (1.0, 1e308, 1e-320):
        V, status = solve_cvx(P * scale)
        assert float(V) == pytest.approx(np.log(2), abs=1e-7) and status == ["optimal"]
    for bad in (P.astype(complex), P.astype(bool), P.astype(str), P.astype(bool).astype(object)):
        with pytest.raises(TypeError, match="real numbers"):
            solve_cvx(bad)
    # Exact counts as Python integers past int64 (an object array) are still counts.
    counts = np.zeros((2, 2, 2), dtype=object)
    counts[0, 0, 0] = counts[1, 1, 1] = 2**80
    V, _ = solve_cvx(counts)
    assert float(V) == pytest.approx(np.log(2), abs=1e-7)


def test_cvx_backend_is_available_only_with_clarabel(monkeypatch):
    """backends() said "cvx" was available with CVXPY but without Clarabel, whose absence
    then failed the solve."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "clarabel" else real(name, *a))
    assert fastpid.backends()["cvx"] == {"available": False,
                                         "reason": "Clarabel is not installed (pip install 'fastpid[cvx]')"}
