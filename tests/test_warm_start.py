"""The alternation before Newton (fastpid.solver.warm_start): WARM_STEPS steps, then WARM_BLOCK
more at a time where it would certify by itself, in the reference and the C++ solver alike."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastpid import cpp, solver
from fastpid.solver import WARM_BLOCK, WARM_MOST, WARM_STEPS, Problem

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
    f, g, logR, taken = solver.warm_start(prob, 1e-8)
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
