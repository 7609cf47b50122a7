"""The alternation before Newton (fastpid.solver.warm_start): WARM_STEPS steps, then WARM_BLOCK
more at a time where it would certify by itself, in the reference and the C++ solver alike."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastpid import cpp, solver
from fastpid.solver import (OMEGA, STATIONARITY_PER_GAP, WARM_BLOCK, WARM_BOUND_RANGE, WARM_MOST, WARM_STEPS,
                            Problem)

from helpers import random_joint


def _joints(shape, alpha, B=4, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([random_joint(rng, shape, alpha=alpha) for _ in range(B)]))


def test_rule_goes_on_only_where_the_rate_reaches_tol_by_the_cap():
    tol = 1e-8
    end = torch.tensor([10, 10, 10, 10, 25, 10, 10])
    e = torch.tensor([1e-4, 1e-4, 1e-9, 1e-4, 1e-4, 1e-4, 1e-4], dtype=torch.float64)
    e_before = torch.tensor([1e-2, 2e-4, 1e-7, 1e-4, 1e-2, float("inf"), 2e-3], dtype=torch.float64)
    got = solver._warm_more(end, e, e_before, tol)
    # 1e-4 * 0.01^4 reaches tol; 1e-4 * 0.5^4 does not; at or below tol, or not falling, or
    # with no block behind it, no more steps; 25 + 5 is the cap, and 1e-4 * 0.01 (one block
    # left) is still above tol; 1e-4 * 0.05^4 reaches it.
    assert got.tolist() == [15, 10, 10, 10, 25, 10, 15]


@pytest.mark.parametrize("shape", [(3, 2, 60), (2, 3, 300)], ids=lambda s: "x".join(map(str, s)))
def test_tiny_sources_with_many_classes_certify_by_the_alternation(shape):
    P = _joints(shape, 0.2)
    prob = Problem.from_joint(P)
    f, g, logR, taken, _ = solver.warm_start(prob, 1e-8)
    assert bool((taken > WARM_STEPS).all()) and bool((taken <= WARM_MOST).all())
    # WARM_STEPS steps alone leave gaps above tol: Newton steps would have followed.
    f10, g10, logR10 = solver.alternation_steps(prob, solver.proxy_log_r(prob), None, WARM_STEPS)
    gap10 = solver.primal_bound(prob, solver.alternation_coupling(prob, f10, g10, logR10), None) \
        - solver.dual_bound(prob, f10, g10)
    assert int((gap10 > 1e-8).sum()) >= P.shape[0] // 2
    res = solver.solve_exact(P, 1e-8)
    assert bool((res.upper - res.lower <= 1e-8).all())
    assert torch.equal(res.iterations, taken)  # no Newton step
    if cpp.available()[0]:
        assert torch.equal(cpp.solve(P, 1e-8).iterations, res.iterations)


@pytest.mark.parametrize("shape, alpha", [((8, 8, 8), 1.0), ((12, 12, 6), 0.2), ((3, 1, 2), 1.0)],
                         ids=["8x8x8", "12x12x6", "3x1x2"])
def test_alternation_stops_where_it_would_not_certify_by_itself(shape, alpha):
    """Dense joints of larger sources converge too slowly; a joint with one value of X2 is
    stationary to rounding within WARM_STEPS (below tol, where its rate is rounding's, which
    parted the routes' step counts before the rule stopped there)."""
    P = _joints(shape, alpha)
    taken = solver.warm_start(Problem.from_joint(P), 1e-8)[3]
    assert taken.tolist() == [WARM_STEPS] * P.shape[0]
    if cpp.available()[0]:
        assert torch.equal(cpp.solve(P, 1e-8).iterations, solver.solve_exact(P, 1e-8).iterations)


def test_no_extension_from_a_single_block():
    P = _joints((3, 2, 60), 0.2)
    taken = solver.warm_start(Problem.from_joint(P), 1e-8, steps=WARM_BLOCK)[3]
    assert taken.tolist() == [WARM_BLOCK] * P.shape[0]


def test_warm_start_returns_the_stationarity_at_its_end():
    """The stationarity of the last step (before its mixture update), as the alternation's
    own probe measured it; NaN where nothing was probed (WARM_BLOCK steps or fewer)."""
    P = _joints((8, 8, 8), 1.0)  # WARM_STEPS steps each (see above)
    prob = Problem.from_joint(P)
    *_, taken, e = solver.warm_start(prob, 1e-8)
    assert taken.tolist() == [WARM_STEPS] * P.shape[0]
    logR = solver.proxy_log_r(prob)
    g = torch.where(prob.m2, 0.0, -math.inf)
    for _ in range(WARM_STEPS):
        g_next, logs, logR_next = solver._alternation_step(prob, logR, g, OMEGA)
        last = solver.stationarity(logR, logs)
        g, logR = g_next, logR_next
    assert torch.equal(e, last) and bool((e > 0).all())
    assert bool(solver.warm_start(prob, 1e-8, steps=WARM_BLOCK)[4].isnan().all())


def test_the_alternations_bound_is_due_only_near_tol():
    """Above WARM_BOUND_RANGE tol the alternation's own primal bound would not certify and is
    not computed; Newton's mu then starts from the stationarity over STATIONARITY_PER_GAP
    instead of the bounds' gap."""
    tol = 1e-8
    e = torch.tensor([math.nan, 0.5 * WARM_BOUND_RANGE * tol, 2 * WARM_BOUND_RANGE * tol, 1e-3],
                     dtype=torch.float64)
    assert solver._warm_bound_due(e, tol).tolist() == [True, True, False, False]
    lower, upper = torch.zeros(4, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64)
    assert solver._start_gap(e, tol, lower, upper).tolist() == [
        0.5, 0.5, 2 * WARM_BOUND_RANGE * tol / STATIONARITY_PER_GAP, 1e-3 / STATIONARITY_PER_GAP]


@pytest.mark.parametrize("max_iter", [0, 1, 3])
def test_a_solve_stopped_short_still_has_a_primal_bound(max_iter):
    """Joints whose alternation ends far from stationary skip its bound; stopped by max_iter,
    each still gets its last iterate's bound, well inside the closed forms' bracket, in the
    reference and the C++ solver alike."""
    P = _joints((8, 8, 8), 1.0)
    tol = 1e-8
    assert not bool(solver._warm_bound_due(solver.warm_start(Problem.from_joint(P), tol)[4], tol).any())
    closed_upper = solver.closed_form_bracket(P)[4]
    exact = solver.solve_exact(P, 1e-10)
    res = solver.solve_exact(P, tol, max_iter=max_iter)
    assert bool((res.upper - res.lower > tol).all())  # stopped short
    assert bool((res.upper < closed_upper - 1e-3).all())
    assert bool((res.upper >= exact.lower).all()) and bool((res.lower <= exact.upper).all())
    if cpp.available()[0]:
        got = cpp.solve(P, tol, max_iter=max_iter)
        assert torch.equal(got.iterations, res.iterations)
        torch.testing.assert_close(got.upper, res.upper, atol=1e-9, rtol=0)
        torch.testing.assert_close(got.lower, res.lower, atol=1e-9, rtol=0)
