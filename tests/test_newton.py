"""The three eliminations of the Newton system (dense Schur complement, per-target blocks with
a low-rank correction, Hessian over the admissible potentials only) solve the same equations,
and each gives the certified answer end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastpid
from fastpid import solver
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
    df, dg, dec2 = solver._newton_direction(*args, structure="schur", R=R)
    for structure, dec2_rtol in (("sparse", 1e-10), ("lowrank", 1e-8)):
        gf, gg, gdec2 = solver._newton_direction(*args, structure=structure, R=R)
        assert torch.isfinite(gf).all() and torch.isfinite(gg).all()
        # The decrement (the gradient's norm in the inverse Hessian) is well conditioned and
        # must agree (the Woodbury form with its one step of refinement to ~1e-11).
        torch.testing.assert_close(gdec2, dec2, rtol=dec2_rtol, atol=0)
        if kind != "tiny":
            # The directions themselves, where masses of 1e-13 do not leave directions the
            # Hessian barely sees (there any of them is as good for the line search).
            for a, b in ((df, gf), (dg, gg)):
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


@pytest.mark.parametrize("shape,expected", [
    ((2, 3, 3000), "lowrank"),  # tiny sources, many classes
    ((8, 8, 8), "schur"),  # dense
])
def test_plan_by_shape(shape, expected):
    P = torch.from_numpy(np.random.default_rng(0).dirichlet(np.ones(int(np.prod(shape)))).reshape(1, *shape))
    assert solver.newton_plan(P).structure == expected


def test_plan_exploits_empty_pairs():
    P = torch.from_numpy(_clustered(20, 20, 28, 20000, seed=1))[None]
    plan = solver.newton_plan(P)
    assert plan.structure == "sparse"
    assert plan.flops < solver.newton_cost(20, 20, 28)["schur"] / 5


@pytest.mark.parametrize("structure", STRUCTURES)
def test_each_elimination_certifies(monkeypatch, structure):
    P = np.stack([_clustered(6, 5, 7, 3000, seed=s) for s in range(3)])
    ref = fastpid.pid(P, backend="cpp")
    monkeypatch.setattr(solver, "newton_plan", lambda P: solver.NewtonPlan(structure, 1.0, 1))
    res = fastpid.pid(P, backend="torch")
    assert np.all(res.converged) and np.all(res.gap <= 1e-8)
    assert np.all(np.abs(res.synergy - ref.synergy) <= res.gap + ref.gap)
    assert np.all(res.synergy > 1e-3) and np.all(res.redundancy > 1e-3)  # a non-trivial case


def test_many_classes_small_sources_quickly():
    P = np.random.default_rng(3).dirichlet(np.ones(2 * 3 * 3000)).reshape(2, 3, 3000)
    # A dense Schur complement over 6000 unknowns took minutes and 3 GB; both solvers
    # eliminate low-rank here (the C++ one is the automatic choice where it is built).
    res = fastpid.pid(P)
    assert res.backend == ("cpp" if fastpid.cpp.available()[0] else "torch") and bool(res.converged)
    ref = fastpid.pid(P, backend="torch")
    assert bool(ref.converged) and abs(float(res.synergy) - float(ref.synergy)) <= 2e-8


def test_multiplier_step_keeps_a_centre_and_moves_towards_it():
    """At a barrier centre with a zero direction the multipliers stay ``mu / (1 - s)``; from
    off-centre values one full step lands on ``mu / (1 - s)`` (the linearised condition is
    exact when ``s`` does not move); every result is positive, finite and within the KAPPA
    band; a rejected step resets them to ``mu / (1 - s)``."""
    rng = np.random.default_rng(3)
    P = torch.from_numpy(np.stack([random_joint(rng, (5, 4, 3), alpha=0.5) for _ in range(2)]))
    prob, f, g, mu, _, _ = _barrier_point(P, 1e-4)
    logs = solver._lse(solver._log_weights(prob, f, g), -1)
    centre = mu[:, None, None] / -torch.expm1(logs)
    zero_f, zero_g = torch.zeros_like(f), torch.zeros_like(g)
    for R in (centre, centre * torch.from_numpy(10.0 ** rng.uniform(-1, 1, centre.shape))):
        got = solver._multiplier_step(prob, f, g, zero_f, zero_g, mu, R, torch.ones_like(mu), logs)
        torch.testing.assert_close(got, centre, rtol=1e-12, atol=0)
    df, dg, _ = solver._newton_direction(prob, f, g, mu, *_barrier_point(P, 1e-4)[4:], R=centre)
    got = solver._multiplier_step(prob, f, g, df, dg, mu, centre, torch.ones_like(mu), logs)
    assert torch.isfinite(got).all() and bool((got > 0).all())
    assert bool((got <= solver.KAPPA * centre * (1 + 1e-12)).all())
    assert bool((got >= centre / solver.KAPPA * (1 - 1e-12)).all())
    # A rejected step resets to the barrier values.
    rejected = solver._multiplier_step(prob, f, g, df, dg, mu, 5 * centre, torch.zeros_like(mu), logs)
    torch.testing.assert_close(rejected, centre, rtol=0, atol=0)


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
    """Centres get a primal bound only once the barrier's gap ``mu * ncells`` is within
    PRIMAL_BOUND_RANGE of tol; near the floor of ``mu``, near-centred iterates always do (a
    tol below float64's reach must still get its best bound)."""
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    tol, ncells, floor = 1e-8, t(100.0), t(0.05 * 1e-8 / 100)
    reach = solver.PRIMAL_BOUND_RANGE * tol  # the largest barrier gap mu * ncells that is bounded
    far = t(2 * reach / 100)
    near = t(0.5 * reach / 100)
    centred, dec2 = torch.tensor([True]), t(0.0)
    assert not bool(solver._primal_bound_due(centred, dec2, far, floor, ncells, tol))
    assert bool(solver._primal_bound_due(centred, dec2, near, floor, ncells, tol))
    assert not bool(solver._primal_bound_due(torch.tensor([False]), 20 * near, near, floor, ncells, tol))
    tiny_tol, floor13 = 1e-15, t(1e-13)  # floor at _MU_MIN, far above tol / ncells
    at_floor = torch.tensor([False])
    assert bool(solver._primal_bound_due(at_floor, 5 * floor13, floor13, floor13, ncells, tiny_tol))
    assert not bool(solver._primal_bound_due(at_floor, 50 * floor13, floor13, floor13, ncells, tiny_tol))


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


def test_slow_centring_shrinks_mu_less(monkeypatch):
    """A clustered joint whose central path bends (KMeans(16) codes of two views of 3000
    points, 6 classes; tests/data/clustered_16x16x6.npy): after a centring of more than
    SLOW_CENTRING_STEPS Newton steps, mu shrinks by MU_FACTOR_SLOW instead of MU_FACTOR.
    Without that rule the same certified solve takes 74 steps instead of 53; the C++ port
    takes the same steps as the reference."""
    from pathlib import Path

    from fastpid import cpp

    P = torch.from_numpy(np.load(Path(__file__).parent / "data" / "clustered_16x16x6.npy"))[None]
    ref = solver.solve_exact(P, 1e-8)
    assert float(ref.upper[0] - ref.lower[0]) <= 1e-8
    if cpp.available()[0]:
        assert torch.equal(cpp.solve(P, 1e-8).iterations, ref.iterations)
    monkeypatch.setattr(solver, "SLOW_CENTRING_STEPS", 10**9)
    without = solver.solve_exact(P, 1e-8)
    assert float(without.upper[0] - without.lower[0]) <= 1e-8
    assert int(ref.iterations[0]) + 10 <= int(without.iterations[0])


def test_short_steps_raise_mu(monkeypatch):
    """A sparse clustered joint (KMeans(28) codes of two views of 5000 points, 5 classes;
    tests/data/clustered_28x28x5.npy) where a cut of mu leaves the iterate far from the new
    centre: steps shorter than RAISE_BELOW_STEP raise mu again. Without that rule the same
    certified solve takes 205 steps instead of 105; the C++ port takes the same steps as the
    reference."""
    from pathlib import Path

    from fastpid import cpp

    P = torch.from_numpy(np.load(Path(__file__).parent / "data" / "clustered_28x28x5.npy"))[None]
    ref = solver.solve_exact(P, 1e-8)
    assert float(ref.upper[0] - ref.lower[0]) <= 1e-8
    if cpp.available()[0]:
        assert torch.equal(cpp.solve(P, 1e-8).iterations, ref.iterations)
    monkeypatch.setattr(solver, "RAISE_BELOW_STEP", 0.0)
    without = solver.solve_exact(P, 1e-8)
    assert float(without.upper[0] - without.lower[0]) <= 1e-8
    assert float(ref.lower[0]) <= float(without.upper[0]) and float(without.lower[0]) <= float(ref.upper[0])
    assert 1.5 * int(ref.iterations[0]) <= int(without.iterations[0])
