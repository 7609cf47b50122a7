"""The three eliminations of the Newton system (dense Schur complement, per-target blocks with
a low-rank correction, Hessian over the admissible potentials only) solve the same equations,
and each gives the certified answer end to end."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fastpid
from fastpid import cpp, solver
from fastpid.solver import Problem

from helpers import random_joint

STRUCTURES = ("schur", "lowrank", "sparse")
SHAPES = [(1, 3, 2), (3, 2, 5), (4, 4, 3), (6, 5, 7), (2, 2, 9), (8, 8, 8), (3, 17, 4)]


def _barrier_point(P: torch.Tensor, mu: float):
    """A strictly feasible barrier iterate after the solver's warm start."""
    prob = Problem.from_joint(P)
    f, g, _ = solver.alternation_steps(prob, solver.proxy_log_r(prob), None, 10)
    mx = solver._lse(solver._log_weights(prob, f, g), -1).amax((1, 2))
    f = torch.where(prob.m1, f - mx[:, None, None] - 1e-3, 0.0)
    g = torch.where(prob.m2, g, 0.0)
    fixed_f, fixed_g = solver._gauge_fixed(prob)
    return prob, f, g, torch.full((P.shape[0],), mu, dtype=P.dtype), fixed_f, fixed_g


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["dense", "sparse", "tiny"])
@pytest.mark.parametrize("mu", [1e-2, 1e-6])
@pytest.mark.parametrize("multipliers", ["barrier", "off-centre"])
def test_eliminations_agree(shape, kind, mu, multipliers):
    rng = np.random.default_rng(sum(shape))
    kw = dict(dense={}, sparse=dict(sparsity=0.6), tiny=dict(tiny=1e-13))[kind]
    P = torch.from_numpy(np.stack([random_joint(rng, shape, alpha=0.5, **kw) for _ in range(3)]))
    if P.shape[2] > P.shape[1]:
        P = P.transpose(1, 2).contiguous()  # the solvers' orientation
    args = _barrier_point(P, mu)
    R = None
    if multipliers == "off-centre":  # primal–dual weights up to 10x from the barrier's
        prob, f, g = args[:3]
        centre = mu / -torch.expm1(solver._lse(solver._log_weights(prob, f, g), -1))
        R = centre * torch.from_numpy(10.0 ** rng.uniform(-1, 1, centre.shape))
    # A target per cell (the corrector's), solved with the system factorised once.
    f, g = args[1:3]
    target = mu * torch.from_numpy(rng.uniform(-1, 2, (f.shape[0], f.shape[1], g.shape[1])))
    df, dg, dec2 = solver._newton_direction(*args, structure="schur", R=R)
    tf, tg, tdec2 = solver._newton_system(*args, structure="schur", R=R)(target)
    for structure, dec2_rtol in (("sparse", 1e-10), ("lowrank", 1e-8)):
        gf, gg, gdec2 = solver._newton_direction(*args, structure=structure, R=R)
        sf, sg, sdec2 = solver._newton_system(*args, structure=structure, R=R)(target)
        torch.testing.assert_close(sdec2, tdec2, rtol=dec2_rtol, atol=0)
        assert torch.isfinite(gf).all() and torch.isfinite(gg).all()
        # The decrement (the gradient's norm in the inverse Hessian) is well conditioned and
        # must agree (the Woodbury form with its one step of refinement to ~1e-11).
        torch.testing.assert_close(gdec2, dec2, rtol=dec2_rtol, atol=0)
        if kind != "tiny":
            # The directions themselves, where masses of 1e-13 do not leave directions the
            # Hessian barely sees (there any of them is as good for the line search).
            for a, b in ((df, gf), (dg, gg), (tf, sf), (tg, sg)):
                assert float((a - b).abs().max()) <= 1e-6 * (1.0 + float(a.abs().max())), structure


def _clustered(n1, n2, ny, N, seed):
    """Codes where each class occupies a few clusters of each source, with noise and a
    shared latent (so that every PID term is non-zero)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, ny, N)
    z = rng.integers(0, 3, N)
    c1 = (y * 5 + z + rng.integers(0, 2, N) * (rng.random(N) < 0.3)) % n1
    c2 = (y * 3 + (z + y) % 3 + rng.integers(0, 3, N) * (rng.random(N) < 0.2)) % n2
    return fastpid.joint(c1, c2, y, sizes=(n1, n2, ny))


@pytest.mark.parametrize("shape,native,reference", [
    ((2, 3, 3000), "lowrank", "lowrank"),  # tiny sources, many classes
    ((8, 8, 8), "schur", "schur"),  # dense
    # Small systems where the low-rank elimination takes fewer flops: the C++ solver's Schur
    # complement (its f-blocks in product form) is the faster (2x16x30 0.87x, 24x3x50
    # 0.84-0.90x the time), the reference's batched low-rank elimination the faster there
    # (6x6x20 0.73x).
    ((2, 16, 30), "schur", "lowrank"),
    ((24, 3, 50), "schur", "lowrank"),
    # The C++ low-rank elimination at 0.32-0.38x (4x4x60), 0.58-0.61x (4x4x30, 24x2x150),
    # 0.76-0.79x (6x6x20, 16x2x50) and 0.93-0.99x (4x4x12) the Schur complement's time since
    # its loops run over the target values and it takes the predictor.
    ((4, 4, 60), "lowrank", "lowrank"),
    ((4, 4, 30), "lowrank", "lowrank"),
    ((24, 2, 150), "lowrank", "lowrank"),
    ((6, 6, 20), "lowrank", "lowrank"),
    ((16, 2, 50), "lowrank", "lowrank"),
    ((4, 4, 12), "lowrank", "lowrank"),
])
def test_plan_by_shape(shape, native, reference):
    P = torch.from_numpy(np.random.default_rng(0).dirichlet(np.ones(int(np.prod(shape)))).reshape(1, *shape))
    assert solver.newton_plan(P).structure == native
    assert cpp.elimination(P) == native
    assert solver.newton_plan(P, native=False).structure == reference


@pytest.mark.parametrize("shape,most1,most2,native", [
    # Sparse clustered joints of 25,000 (20,000) samples: the C++ Schur complement, over the
    # admissible potentials of g only, took 0.56x (32x32x50, 1,258 of 1,600 admissible),
    # 0.55-0.79x (32x32x60, 1,268-1,430 of 1,920) the low-rank elimination's time, which the
    # plan chose while it counted all n2 ny; the low-rank elimination stays the faster on
    # 28x28x60 (0.83x, 1,366 of 1,680) and 24x24x80 (0.59x, 1,265 of 1,920).
    ((32, 32, 50), 1447, 1258, "schur"),
    ((32, 32, 60), 1762, 1430, "schur"),
    ((28, 28, 60), 1511, 1366, "lowrank"),
    ((24, 24, 80), 1725, 1265, "lowrank"),
    # A Schur side of 2,010 admissible potentials is beyond where that count was fitted
    # (ADMISSIBLE_COST_MAX): counting them there sent a 38x38x60 joint to the PyTorch solver at
    # 4x the time while the C++ route ended at 1,800, and in C++ its Schur complement takes
    # 0.92 s against the low-rank elimination's 0.76 s.
    ((38, 38, 60), 2046, 2010, "lowrank"),
])
def test_native_plan_weighs_the_schur_complement_over_admissible_potentials(shape, most1, most2, native):
    assert solver.plan_for_counts(*shape, most1, most2).structure == native
    # Between sources of one size the solver puts the smaller count on the Schur side: the
    # same plan either way round (32x32x60 with counts 1,817 / 1,378 went low-rank at 1.4x the
    # time when given in the other order).
    assert solver.plan_for_counts(*shape, most2, most1).structure == native
    from fastpid import api
    if cpp.available()[0]:
        assert api.cpp_suits(*shape, solver.plan_for_counts(*shape, most1, most2))
    # Every potential admissible (dense joints, where the constants were fitted): as before.
    n1, n2, ny = shape
    dense = solver.plan_for_counts(n1, n2, ny, n1 * ny, n2 * ny).structure
    cost = solver.newton_cost(n1, n2, ny, n1 * ny, n2 * ny, native=True)
    penalty = max(solver.LOWRANK_PENALTY_FLOOR,
                  (solver.LOWRANK_PENALTY_AT / cost["schur"]) ** solver.LOWRANK_PENALTY_POWER)
    other = min((k for k in cost if k != "lowrank"), key=cost.get)
    assert dense == ("lowrank" if cost["lowrank"] * penalty < cost[other] else other)


def test_plan_exploits_empty_pairs():
    P = torch.from_numpy(_clustered(20, 20, 28, 20000, seed=1))[None]
    plan = solver.newton_plan(P)
    assert plan.structure == "sparse"
    assert plan.flops < solver.newton_cost(20, 20, 28)["schur"] / 5


@pytest.mark.parametrize("structure", STRUCTURES)
def test_each_elimination_certifies(monkeypatch, structure):
    P = np.stack([_clustered(6, 5, 7, 3000, seed=s) for s in range(3)])
    ref = fastpid.pid(P, backend="cpp")
    monkeypatch.setattr(solver, "newton_plan", lambda P, native=True: solver.NewtonPlan(structure, 1.0, 1))
    res = fastpid.pid(P, backend="torch")
    assert np.all(res.converged) and np.all(res.gap <= 1e-8)
    assert np.all(np.abs(res.synergy - ref.synergy) <= res.gap + ref.gap)
    assert np.all(res.synergy > 1e-3) and np.all(res.redundancy > 1e-3)  # a non-trivial case


def test_the_sparse_elimination_certifies_a_tight_tol_where_its_system_is_singular_to_rounding():
    """A sparse 6x6x12 joint of 23 entries (2,000 samples): near the optimum its system over the
    admissible potentials is singular to rounding, and the ridge _cholesky adds made the
    directions inexact; the PyTorch solver's sparse elimination took 510 Newton steps at
    tol=1e-10 without certifying it (70 at 1e-9), the Schur complement 36. Refined as the
    low-rank system's solves are: 80 (26)."""
    counts = {(0, 1, 4): 1, (0, 1, 8): 20, (0, 2, 7): 176, (0, 2, 11): 1, (0, 3, 10): 314, (1, 0, 9): 3,
              (1, 1, 7): 171, (1, 5, 1): 307, (2, 0, 2): 93, (2, 1, 0): 87, (2, 1, 3): 17, (3, 0, 9): 1,
              (3, 1, 3): 24, (3, 1, 5): 1, (3, 1, 11): 2, (3, 2, 0): 61, (3, 4, 1): 294, (3, 5, 6): 2,
              (4, 0, 8): 24, (4, 1, 10): 287, (4, 5, 9): 1, (5, 0, 6): 5, (5, 1, 2): 108}
    P = torch.zeros(1, 6, 6, 12, dtype=torch.float64)
    for cell, n in counts.items():
        P[(0, *cell)] = n / 2000
    assert solver.newton_plan(P, native=False).structure == "sparse"
    ref = solver.solve_exact(P, 1e-12)
    for tol, most in ((1e-9, 40), (1e-10, 120)):
        sol = solver.solve_exact(P, tol)
        assert float(sol.upper - sol.lower) <= tol and int(sol.iterations) <= most
        assert abs(float(sol.upper - ref.upper)) <= tol + float(ref.upper - ref.lower)


def test_many_classes_small_sources_quickly():
    P = np.random.default_rng(3).dirichlet(np.ones(2 * 3 * 3000)).reshape(2, 3, 3000)
    # A dense Schur complement over 6000 unknowns took minutes and 3 GB; both solvers
    # eliminate low-rank here (the C++ one is the automatic choice where it is built).
    res = fastpid.pid(P)
    assert res.backend == ("cpp" if fastpid.cpp.available()[0] else "torch") and bool(res.converged)
    ref = fastpid.pid(P, backend="torch")
    assert bool(ref.converged) and abs(float(res.synergy) - float(ref.synergy)) <= 2e-8


def test_primal_dual_step_keeps_a_centre_and_moves_towards_it():
    """At a centre (slacks ``1 - s``, multipliers ``mu / (1 - s)``) a zero direction moves
    nothing; from off-centre multipliers one full step lands on ``R tau = mu`` (the
    linearised condition is exact when ``s`` does not move); a Newton step keeps slacks and
    multipliers positive and finite; a direction without ascent hands over to a barrier
    step; one that is not finite moves nothing."""
    rng = np.random.default_rng(3)
    P = torch.from_numpy(np.stack([random_joint(rng, (5, 4, 3), alpha=0.5) for _ in range(2)]))
    # mu of the order of the warm start's gap per cell, as the solver starts it
    prob, f, g, mu, fixed_f, fixed_g = _barrier_point(P, 1e-2)
    cells = prob.mask.any(-1)
    tau = torch.where(cells, -torch.expm1(solver._lse(solver._log_weights(prob, f, g), -1)), 1.0)
    centre = mu[:, None, None] / tau
    zero_f, zero_g, ascent = torch.zeros_like(f), torch.zeros_like(g), torch.ones_like(mu)
    for R in (centre, centre * torch.from_numpy(10.0 ** rng.uniform(-1, 1, centre.shape))):
        alpha, f1, g1, _, R1, tau1, barrier = solver._primal_dual_step(
            prob, f, g, zero_f, zero_g, mu, R, tau, ascent)
        assert bool((alpha == 1).all()) and not bool(barrier.any())
        assert torch.equal(f1, f) and torch.equal(g1, g)
        torch.testing.assert_close(tau1, tau, rtol=1e-12, atol=0)
        torch.testing.assert_close(torch.where(cells, R1 * tau1, mu[:, None, None]),
                                   mu[:, None, None].expand_as(R1), rtol=1e-12, atol=0)
    df, dg, dec2 = solver._newton_direction(prob, f, g, mu / 10, fixed_f, fixed_g, R=centre, tau=tau)
    alpha, _, _, _, R1, tau1, barrier = solver._primal_dual_step(prob, f, g, df, dg, mu / 10, centre, tau, dec2)
    assert bool((alpha >= solver.MIN_STEP).all()) and bool((alpha <= 1).all()) and not bool(barrier.any())
    assert bool((R1[cells] > 0).all()) and bool((tau1[cells] > 0).all())
    assert torch.isfinite(R1).all() and torch.isfinite(tau1).all()
    alpha, f1, _, _, R1, _, barrier = solver._primal_dual_step(prob, f, g, df, dg, mu / 10, centre, tau, -dec2)
    assert bool(barrier.all()) and bool((alpha == 0).all()) and torch.equal(f1, f) and torch.equal(R1, centre)
    nan = torch.full_like(df, float("nan"))
    alpha, f1, g1, _, R1, tau1, barrier = solver._primal_dual_step(
        prob, f, g, nan, dg, mu, centre, tau, dec2 * np.nan)
    assert bool((alpha == 0).all()) and not bool(barrier.any())
    assert torch.equal(f1, f) and torch.equal(R1, centre) and torch.equal(tau1, tau)


def test_primal_dual_step_moves_slacks_and_multipliers_by_their_own_lengths():
    """``(f, g)`` and the slacks go ``FRACTION_TO_BOUNDARY`` of the way to where a slack would
    reach zero, the multipliers that fraction of their own way (each at most 1), as
    :func:`solver._steps_to_target` gives the two limits; both stay positive. Multipliers far
    off their centre make the two lengths differ (checked, so that the test can fail)."""
    rng = np.random.default_rng(11)
    P = torch.from_numpy(np.stack([random_joint(rng, (6, 5, 4), alpha=0.5) for _ in range(6)]))
    prob, f, g, mu, fixed_f, fixed_g = _barrier_point(P, 1e-3)
    cells = prob.mask.any(-1)
    tau = torch.where(cells, -torch.expm1(solver._lse(solver._log_weights(prob, f, g), -1)), 1.0)
    R = mu[:, None, None] / tau * torch.from_numpy(10.0 ** rng.uniform(-1.5, 1.5, tau.shape))
    target = mu / 100
    df, dg, dec2 = solver._newton_direction(prob, f, g, target, fixed_f, fixed_g, R=R, tau=tau)
    _, dtau, dR, to_tau, to_R = solver._steps_to_target(prob, f, g, df, dg, target[:, None, None], R, tau)
    alpha, f1, _, _, R1, tau1, barrier = solver._primal_dual_step(prob, f, g, df, dg, target, R, tau, dec2)
    a = (solver.FRACTION_TO_BOUNDARY * to_tau).clamp_max(1.0)
    a_R = (solver.FRACTION_TO_BOUNDARY * to_R).clamp_max(1.0)
    moved = (alpha > 0) & ~barrier
    assert int(moved.sum()) >= 4 and bool((a != a_R)[moved].any())
    assert torch.equal(alpha[moved], a[moved])
    m = moved[:, None, None] & cells
    expect_tau = tau + a[:, None, None] * dtau
    expect_R = R + a_R[:, None, None] * dR
    torch.testing.assert_close(tau1[m], expect_tau[m], rtol=1e-15, atol=0)
    torch.testing.assert_close(R1[m], expect_R[m], rtol=1e-15, atol=0)
    torch.testing.assert_close(f1[moved], (f + a[:, None, None] * df)[moved], rtol=1e-15, atol=0)
    assert bool((R1[m] > 0).all()) and bool((tau1[m] > 0).all())


def test_barrier_step_stands_in_from_outside_the_domain():
    """A barrier step from a point with max s > 1 (where a primal-dual step may leave the
    iterate) first shifts f into the domain, then moves within it: the new point has
    max s < 1, slacks at its 1 - s and positive multipliers."""
    rng = np.random.default_rng(5)
    P = torch.from_numpy(np.stack([random_joint(rng, (6, 5, 4), alpha=0.5) for _ in range(2)]))
    prob, f, g, mu, fixed_f, fixed_g = _barrier_point(P, 1e-5)
    f = torch.where(prob.m1, f + 0.5, f)  # s rises by e^0.5: out of the domain
    cells = prob.mask.any(-1)
    assert bool((solver._lse(solver._log_weights(prob, f, g), -1)[cells] > 0).any())
    R = torch.full_like(prob.ncells[:, None, None].expand(-1, 6, 5), 1.0, dtype=P.dtype) * 1e-5
    alpha, f1, g1, logs, R1, tau1 = solver._barrier_step(prob, f, g, mu, R, fixed_f, fixed_g, "schur")
    assert bool((alpha > 0).all())
    assert bool((logs[cells] < 0).all()) and bool((R1[cells] > 0).all())
    torch.testing.assert_close(tau1[cells], -torch.expm1(logs[cells]), rtol=0, atol=0)
    torch.testing.assert_close(solver._lse(solver._log_weights(prob, f1, g1), -1), logs, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", [(4, 3, 1), (5, 4, 2), (3, 3, 21), (6, 4, 24), (2, 7, 30)])
@pytest.mark.parametrize("kind", ["dense", "sparse", "tiny"])
def test_schur_assemblies_agree(shape, kind, monkeypatch):
    """The two ways of summing ``C_i^T H_i^-1 C_i`` (one dense product; structured products
    for many classes) give the same Newton direction, with off-centre multipliers."""
    rng = np.random.default_rng(sum(shape) + len(kind))
    kw = dict(dense={}, sparse=dict(sparsity=0.6), tiny=dict(tiny=1e-13))[kind]
    P = torch.from_numpy(np.stack([random_joint(rng, shape, alpha=0.5, **kw) for _ in range(2)]))
    prob, f, g, mu, fixed_f, fixed_g = _barrier_point(P, 1e-5)
    centre = mu[:, None, None] / -torch.expm1(solver._lse(solver._log_weights(prob, f, g), -1))
    R = centre * torch.from_numpy(10.0 ** rng.uniform(-1, 1, centre.shape))
    got = {}
    for name, structured in (("dense", False), ("structured", True)):
        monkeypatch.setattr(solver, "_structured_schur", lambda n2, ny, use=structured: use)
        got[name] = solver._newton_direction(prob, f, g, mu, fixed_f, fixed_g, structure="schur", R=R)
    torch.testing.assert_close(got["structured"][2], got["dense"][2], rtol=1e-9, atol=0)
    if kind != "tiny":
        for a, b in zip(got["dense"][:2], got["structured"][:2]):
            assert float((a - b).abs().max()) <= 1e-6 * (1.0 + float(a.abs().max()))


def test_primal_bounds_are_due_near_the_tolerance_and_the_floor():
    """Iterates near enough their centre (dec2 <= PRIMAL_BOUND_CENTRING mu) or the optimum
    (dec2 <= PRIMAL_BOUND_DECREMENT tol) get a primal bound
    once the barrier's gap
    ``mu * ncells`` is within PRIMAL_BOUND_RANGE of tol, or near the floor of ``mu`` (a tol
    below float64's reach must still get its best bound); others do not."""
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    tol, ncells, floor = 1e-8, t(100.0), t(0.05 * 1e-8 / 100)
    reach = solver.PRIMAL_BOUND_RANGE * tol  # the largest barrier gap mu * ncells that is bounded
    far = t(2 * reach / 100)
    near = t(0.5 * reach / 100)
    centring = solver.PRIMAL_BOUND_CENTRING
    assert not bool(solver._primal_bound_due(t(0.0), far, floor, ncells, tol))
    assert bool(solver._primal_bound_due(0.5 * centring * near, near, floor, ncells, tol))
    off = t(2 * max(centring * float(near), solver.PRIMAL_BOUND_DECREMENT * tol))  # and not near the optimum
    assert not bool(solver._primal_bound_due(off, near, floor, ncells, tol))
    # Off centre but near the optimum (dec2 <= PRIMAL_BOUND_DECREMENT tol): due within range only.
    close = t(0.5 * solver.PRIMAL_BOUND_DECREMENT * tol)
    tiny_mu = t(0.1 * float(close) / centring)  # so that dec2 > PRIMAL_BOUND_CENTRING mu
    assert bool(solver._primal_bound_due(close, tiny_mu, floor, ncells, tol))
    assert not bool(solver._primal_bound_due(4 * close, tiny_mu, floor, ncells, tol))
    assert not bool(solver._primal_bound_due(close, far, floor, ncells, tol))
    tiny_tol, floor13 = 1e-15, t(1e-13)  # floor at _MU_MIN, far above tol / ncells
    assert bool(solver._primal_bound_due(0.5 * centring * floor13, floor13, floor13, ncells, tiny_tol))
    assert not bool(solver._primal_bound_due(2 * centring * floor13, floor13, floor13, ncells, tiny_tol))


def test_gauge_is_fixed_at_a_large_mass():
    """Per y, the fixed g is the first x2 with at least GAUGE_MASS_FRACTION of the largest
    P(x2, y), never one of tiny mass (there the step that moves mass into it is lost to
    rounding); masked entries are fixed too, f has no gauge."""
    P = torch.zeros(1, 2, 4, 3, dtype=torch.float64)
    P[0, 0, :, 0] = torch.tensor([1e-30, 0.3, 0.1, 0.3])  # y = 0: x2 = 1 (first of the two 0.3)
    P[0, 1, :, 1] = torch.tensor([0.05, 0.0, 0.25, 0.39])  # y = 1: x2 = 2 (0.25 >= 0.5 * 0.39), 1 masked
    P[0, 1, 1, 2] = 0.1  # y = 2: x2 = 1, the only admissible one
    P = P / P.sum()
    fixed_f, fixed_g = solver._gauge_fixed(Problem.from_joint(P))
    assert torch.equal(fixed_f, ~Problem.from_joint(P).m1)
    expected = torch.ones(4, 3, dtype=torch.bool)
    expected[[0, 2, 3], 0] = False
    expected[[0, 3], 1] = False
    assert torch.equal(fixed_g[0], expected)


def test_copy_with_many_target_values_is_solved_not_refused():
    """COPY, Y = (X1, X2) with 100 x 10 values: the elimination over admissible potentials
    holds about 1.5 GB at most; its memory estimate once counted an extra factor n1
    (123 GiB) and refused the solve."""
    n1, n2 = 100, 10
    p = np.random.default_rng(0).dirichlet(np.ones(n1 * n2)).reshape(n1, n2)
    P = np.zeros((n1, n2, n1 * n2))
    P[np.arange(n1)[:, None], np.arange(n2)[None, :], np.arange(n1 * n2).reshape(n1, n2)] = p
    assert solver.newton_plan(torch.from_numpy(P)[None]).floats < 2e8
    res = fastpid.pid(P)
    total = res.redundancy + res.unique1 + res.unique2 + res.synergy
    entropy = -float(np.sum(p * np.log(p)))  # I(Y; X1, X2) = H(X1, X2) for COPY
    assert bool(res.converged) and abs(float(total) - entropy) < 1e-8


@pytest.mark.parametrize("name,steps", [("clustered_16x16x6", 21), ("clustered_28x28x5", 27)])
def test_path_following_certifies_sparse_clustered_joints(name, steps):
    """Sparse clustered joints whose central path bends (KMeans codes of two views; 16x16x6:
    3000 points, 28x28x5: 5000 points, in tests/data). Centring at each level of mu (cut 50x
    per level, with rules for slow centrings and short steps) took 53 and 105 iterations,
    path following with mu cut 10x per step 35 and 47; with Mehrotra's predictor-corrector
    ``steps`` (measured: 22 and 28, then 21 and 27 with primal bounds also due at
    dec2 <= PRIMAL_BOUND_DECREMENT tol; guarded here within 10 %), its targets never rising
    and ending where the barrier's own gap mu * ncells is within PRIMAL_BOUND_RANGE of tol
    (the primal bound is due only there). The bounds are certified to 1e-8 and the C++ port takes the reference's
    steps."""
    from pathlib import Path

    from fastpid import cpp

    P = torch.from_numpy(np.load(Path(__file__).parent / "data" / f"{name}.npy"))[None]
    targets = []
    real = solver._primal_dual_step

    def record(prob, f, g, df, dg, mu, *args):
        targets.append(float(mu[0]))
        return real(prob, f, g, df, dg, mu, *args)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(solver, "_primal_dual_step", record)
        ref = solver.solve_exact(P, 1e-8)
    assert float(ref.upper[0] - ref.lower[0]) <= 1e-8
    assert int(ref.iterations[0]) <= 1.1 * steps
    if cpp.available()[0]:
        assert torch.equal(cpp.solve(P, 1e-8).iterations, ref.iterations)
    assert all(later <= earlier for earlier, later in zip(targets, targets[1:]))
    ncells = float(solver.Problem.from_joint(P).ncells[0])
    assert targets[-1] * ncells <= solver.PRIMAL_BOUND_RANGE * 1e-8


def test_corrector_target_follows_the_predicted_progress():
    """Mehrotra's centring: sigma = (what the affine step reaches / now)^3 within [0.01, 1],
    never below mu's floor."""
    now = torch.tensor([1e-4, 1e-4, 1e-4, 1e-4, 1e-9])
    ratio = torch.tensor([0.5, 0.0, 2.0, 0.1, 0.1])
    floor = torch.full_like(now, 1e-10)
    got = solver._corrector_mu(now, ratio, floor)
    want = torch.tensor([0.125e-4, 1e-6, 1e-4, 1e-6, 1e-10])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_predictor_gives_the_second_order_term_of_s():
    """``_predict``'s ``soc`` is the second-order term of each cell's ``s`` along the affine
    direction: ``s(t) - s - t ds - t^2 soc`` falls as ``t^3`` (an eighth per halving of ``t``;
    without ``soc`` the remainder falls as ``t^2``, a quarter, checked so that the test can
    fail), and ``soc`` is 0 on the cells without mass and at mu's floor."""
    rng = np.random.default_rng(5)
    P = np.stack([random_joint(rng, (5, 4, 3), alpha=0.5, sparsity=0.4) for _ in range(3)])
    # x1 = 0 only with y = 0 and x2 = 0 never with it: cell (0, 0) of the first joint has no
    # admissible entry.
    P[0, 0, :, 1:] = 0.0
    P[0, :, 0, 0] = 0.0
    P = torch.from_numpy(P / P.sum((1, 2, 3), keepdims=True))
    prob, f, g, mu, fixed_f, fixed_g = _barrier_point(P, 1e-4)
    cells = prob.mask.any(-1)
    assert not bool(cells[0, 0, 0])
    tau = torch.where(cells, -torch.expm1(solver._lse(solver._log_weights(prob, f, g), -1)), 1.0)
    R = mu[:, None, None] / tau
    solve = solver._newton_system(prob, f, g, mu, fixed_f, fixed_g, "schur", R, tau)
    floor = torch.full_like(mu, 1e-14)
    _, corr, soc = solver._predict(prob, f, g, solve, mu, mu, floor, R, tau)
    df, dg, _ = solve(torch.zeros_like(mu))

    def s(t):
        return torch.exp(solver._lse(solver._log_weights(prob, f + t * df, g + t * dg), -1))

    W = torch.where(prob.mask, torch.exp(solver._log_weights(prob, f, g)), 0.0)
    ds = (W * (df[:, :, None, :] + dg[:, None, :, :])).sum(-1)
    rest = [(s(t) - s(0.0) - t * ds - t * t * soc)[cells].abs().max() for t in (0.02, 0.01)]
    linear = [(s(t) - s(0.0) - t * ds)[cells].abs().max() for t in (0.02, 0.01)]
    assert 6 < float(rest[0] / rest[1]) < 10 and 3 < float(linear[0] / linear[1]) < 5
    assert bool((soc[cells] > 0).any()) and bool((soc[~cells] == 0).all())
    _, corr, soc = solver._predict(prob, f, g, solve, mu, mu, torch.ones_like(mu), R, tau)  # at the floor
    assert bool((soc == 0).all()) and bool((corr == 0).all())


def test_corrector_is_solved_again_without_its_terms_where_they_overflow(monkeypatch):
    """Where the predictor's second-order terms make the corrector's direction not finite (with
    the corrector's term of s alone, a step left one wide-range joint a slack near 1e-235, the
    terms overflowed, and every direction after was NaN), the direction is solved again
    without them. Terms forced to inf on the first active problem of every step: every
    problem still certifies (without the retry that one stalls on NaN directions)."""
    rng = np.random.default_rng(8)
    P = torch.from_numpy(np.stack([random_joint(rng, (5, 4, 3), alpha=0.5) for _ in range(3)]))
    real = solver._predict

    def overflowing(*args):
        mu, corr, soc = real(*args)
        soc[0] = math.inf
        return mu, corr, soc

    monkeypatch.setattr(solver, "_predict", overflowing)
    res = solver.solve_exact(P, 1e-8)
    assert bool((res.upper - res.lower <= 1e-8).all())


def test_barrier_steps_stand_in_on_wide_range_joints():
    """Joints whose masses span 20-60 decades (tests/data/short_barrier_steps.npz) where
    primal-dual steps are unfit now and then: the barrier step stands in (counted; since the
    corrector's second-order term of s the peaked joints of tests/data/peaked_5x5x5.npy no
    longer need it), every solve certifies to 1e-8, and the C++ port takes the reference's
    steps."""
    from pathlib import Path

    from fastpid import cpp

    data = np.load(Path(__file__).parent / "data" / "short_barrier_steps.npz")
    calls = []
    real = solver._barrier_step

    def counted(prob, *args):
        calls.append(prob.ncells.shape[0])
        return real(prob, *args)

    for name in data.files:
        P = torch.from_numpy(data[name] / data[name].sum())[None]
        with pytest.MonkeyPatch.context() as m:
            m.setattr(solver, "_barrier_step", counted)
            ref = solver.solve_exact(P, 1e-8)
        assert bool((ref.upper - ref.lower <= 1e-8).all()), name
        if cpp.available()[0]:
            assert torch.equal(cpp.solve(P, 1e-8).iterations, ref.iterations), name
    assert len(calls) >= 3


def test_a_stall_at_the_floor_is_extrapolated_along_the_last_step():
    """Y = (X1 + X2) mod 3 over uniform 4x4 sources plus noise of ~1e-6 on every cell
    (tests/data/noisy_mod3_4x4x3.npy): at mu's floor the Newton steps crept along one direction,
    the dual bound gaining 5e-11 a step, and both solvers stopped at gaps of 4.7e-8 at tol 1e-8
    (8.2e-8 at 1e-10). Extrapolated along that step, both certify; so do 12 more such joints, 3
    of which the PyTorch solver had left short of 1e-8."""
    from pathlib import Path

    P = torch.from_numpy(np.load(Path(__file__).parent / "data" / "noisy_mod3_4x4x3.npy"))
    P = (P / P.sum())[None]
    jumps = []
    real = solver._extrapolate

    def counted(*args):
        out = real(*args)
        jumps.append(int(out[0].sum()))
        return out

    for tol in (1e-8, 1e-10):
        jumps.clear()
        with pytest.MonkeyPatch.context() as m:
            m.setattr(solver, "_extrapolate", counted)
            ref = solver.solve_exact(P, tol)
        assert float(ref.upper - ref.lower) <= tol and sum(jumps) >= 1
        if cpp.available()[0]:
            native = cpp.solve(P, tol)
            assert float(native.upper - native.lower) <= tol
            assert native.lower <= ref.upper and ref.lower <= native.upper
    rng = np.random.default_rng(7)
    joints = []
    for n, ny in [(4, 3), (5, 3), (7, 3), (6, 4)] * 3:
        a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        Q = np.zeros((n, n, ny))
        Q[a, b, (a + b) % ny] = 1.0
        Q = Q / Q.sum() + 10 ** rng.uniform(-8, -5) * rng.uniform(size=Q.shape)
        joints.append(Q / Q.sum())
    for backend in ("torch", "cpp") if cpp.available()[0] else ("torch",):
        assert all(bool(fastpid.pid(Q, backend=backend).converged) for Q in joints), backend


def test_newton_cost_needs_both_admissible_counts():
    """mf alone used to fail with a TypeError on None."""
    assert set(solver.newton_cost(4, 4, 4, mf=3, mg=2)) == {"schur", "lowrank", "sparse"}
    with pytest.raises(ValueError, match="both mf and mg"):
        solver.newton_cost(4, 4, 4, mf=3)
