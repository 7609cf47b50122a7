"""The C++ CPU solver (backend="cpp") against the PyTorch reference, problem by problem."""
from __future__ import annotations

import os
import subprocess
import sys

import mpmath
import numpy as np
import pytest
import torch

import fastpid
from fastpid import _certify, cpp, solver

from helpers import random_joint

pytestmark = pytest.mark.skipif(not cpp.available()[0], reason=cpp.available()[1] or "no C++ solver")

# Dense (20, 20, 10) has a Schur complement over 190 free unknowns (200 less one gauge entry
# per target value), factorised by blocks of 16 columns with a partial last block.
SHAPES = [(1, 1, 1), (1, 3, 2), (3, 1, 4), (2, 2, 1), (3, 3, 3), (17, 3, 5), (5, 17, 3), (7, 9, 11),
          (33, 4, 2), (8, 8, 8), (13, 12, 11), (20, 20, 10), (9, 5, 7), (12, 12, 6), (6, 7, 12)]
KINDS = {
    "dense": dict(alpha=1.0),
    "sparse": dict(alpha=0.4, sparsity=0.7),
    "tiny": dict(alpha=0.5, sparsity=0.3, tiny=1e-13),
    # Masses at the float64 floor and a class of tiny mass, as the Triton and CUDA tests have.
    "floor": dict(alpha=0.5, sparsity=0.3, tiny=1e-300),
    "tiny_class": dict(alpha=1.0, tiny_class=1e-9),
}


def _batch(shape, kind, B, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([random_joint(rng, shape, **KINDS[kind]) for _ in range(B)])


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_exact_matches_reference(shape, kind):
    P = torch.from_numpy(_batch(shape, kind, 3, seed=sum(shape)))
    ref = solver.solve_exact(P, 1e-8)
    got = cpp.solve(P, 1e-8)
    assert torch.all(got.upper - got.lower <= 1e-8)
    torch.testing.assert_close(0.5 * (got.lower + got.upper), 0.5 * (ref.lower + ref.upper), atol=1e-9, rtol=0)
    if kind in ("tiny", "floor", "tiny_class"):
        # A 1e-8 certificate pins potentials of tiny masses down only to ~1e-3 (1e-13) or not
        # at all: V agrees, their envelope gradients need not.
        return
    # Same potentials where they matter: the envelope gradient f + g on admissible cells.
    mask = torch.isfinite(ref.f[:, :, None, :] + ref.g[:, None, :, :])
    assert torch.equal(mask, torch.isfinite(got.f[:, :, None, :] + got.g[:, None, :, :]))
    grad_ref = (ref.f[:, :, None, :] + ref.g[:, None, :, :])[mask]
    grad_got = (got.f[:, :, None, :] + got.g[:, None, :, :])[mask]
    # Measured within 1e-9 (atol 1e-5 had left room for potentials off by 1e-6).
    torch.testing.assert_close(grad_got, grad_ref, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_closed_forms_match_reference(shape, kind):
    """The native closed forms (what pid() uses on the C++ backend without gradients) against
    the torch ones, entry by entry, including all-zero rows and 1e-13 masses."""
    P = torch.from_numpy(_batch(shape, kind, 5, seed=3 + sum(shape)))
    P[0] = 0.0
    P[0, ..., 0] = 1.0 / (shape[0] * shape[1])  # one target value: every information is zero
    mi, mi1, mi2 = fastpid.info.mutual_informations(P)
    want = torch.stack([mi, mi1, mi2, fastpid.info.proxy_coupling_mi(P)], 1)
    got = torch.stack(cpp.closed_forms(P), 1)
    torch.testing.assert_close(got, want, atol=1e-13, rtol=1e-12)
    assert torch.all(got[0].abs() <= 1e-13)  # entropies of ~5 nats cancel to rounding


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 2), (7, 3, 5), (8, 8, 8), (12, 12, 6), (6, 7, 12)],
                         ids=lambda s: "x".join(map(str, s)))
def test_primal_bound_matches_reference(shape, kind):
    """The CPU solver's upper bound from a coupling that misses the marginals (rows above and
    below them, mass on inadmissible entries too) equals the reference's primal_bound; a
    coupling with a NaN or infinite admissible entry gets +inf in both."""
    from fastpid import _C
    rng = np.random.default_rng(sum(shape))
    P = _batch(shape, kind, B=5, seed=len(shape) + sum(shape))
    Q = P * rng.uniform(0.5, 1.5, P.shape) + rng.uniform(0, 1e-3, P.shape)
    for b, bad in ((3, np.nan), (4, np.inf)):
        Q[b].flat[np.argmax(P[b])] = bad  # an admissible entry: P has mass there
    kept = Q.copy()
    got = _C._primal_bound(P, Q)
    ref = solver.primal_bound(solver.Problem.from_joint(torch.from_numpy(P)), torch.from_numpy(Q)).numpy()
    np.testing.assert_array_equal(Q, kept)
    assert np.all(np.isposinf(got[3:])) and np.all(np.isposinf(ref[3:]))
    np.testing.assert_allclose(got[:3], ref[:3], rtol=0, atol=1e-13)


def test_pid_uses_native_closed_forms_without_gradients():
    """Without gradients the C++ backend's closed forms are native; the terms agree with the
    torch path (taken when P requires a gradient) to rounding."""
    P = torch.from_numpy(_batch((6, 5, 4), "sparse", 4, seed=11))
    plain = fastpid.pid(P)
    graded = fastpid.pid(P.clone().requires_grad_(True))
    assert plain.backend == graded.backend == "cpp"
    for name in ("mi", "mi1", "mi2", "redundancy", "unique1", "unique2", "synergy"):
        torch.testing.assert_close(getattr(plain, name), getattr(graded, name).detach(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("steps", [1, 7, 20])
@pytest.mark.parametrize("shape", [(3, 5, 2), (8, 8, 8), (17, 3, 5)], ids=lambda s: "x".join(map(str, s)))
def test_fast_matches_reference(shape, steps):
    P = torch.from_numpy(_batch(shape, "sparse", 4, seed=steps))
    ref = solver.solve_fast(P, steps)
    got = cpp.solve(P, 1e-8, steps=steps)
    torch.testing.assert_close(got.lower, ref.lower, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(got.upper, ref.upper, atol=1e-12, rtol=1e-10)
    assert torch.equal(got.iterations, ref.iterations)


def test_large_batch_through_the_api():
    P = _batch((8, 8, 8), "dense", 256, seed=3)
    a = fastpid.pid(P, backend="cpp")
    b = fastpid.pid(P, backend="torch")
    assert a.backend == "cpp" and b.backend == "torch"
    assert np.all(a.gap <= 1e-8) and np.all(a.converged)
    np.testing.assert_allclose(a.synergy, b.synergy, atol=2e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_and_gradients(dtype):
    P = torch.tensor(_batch((4, 3, 5), "dense", 2, seed=4), dtype=dtype, requires_grad=True)
    a = fastpid.pid(P, backend="cpp")
    a.synergy.sum().backward()
    grad_cpp = P.grad.clone()
    P.grad = None
    b = fastpid.pid(P, backend="torch")
    b.synergy.sum().backward()
    assert a.synergy.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-8
    torch.testing.assert_close(a.synergy, b.synergy, atol=2 * tol, rtol=0)
    # float64 gradients agree to 4e-13 (1e-4 had been allowed); float32 ones to their rounding.
    gtol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(grad_cpp, P.grad, atol=gtol, rtol=gtol)


def test_orientation_does_not_matter():
    """Sources are swapped internally so the smaller one carries the Schur complement."""
    P = _batch((3, 11, 4), "sparse", 2, seed=5)
    a, b = fastpid.pid(P), fastpid.pid(P.transpose(0, 2, 1, 3))
    np.testing.assert_allclose(a.unique1, b.unique2, atol=2e-8)
    np.testing.assert_allclose(a.synergy, b.synergy, atol=2e-8)


def test_results_do_not_depend_on_earlier_solves():
    """Each thread keeps its scratch from one call to the next (csrc/solver_cpu.cpp), with
    whatever an earlier problem left in it: a joint solved after others of other shapes and
    kinds (and in a batch behind others of its shape) gets the same bounds, potentials,
    iterations and coupling, bit for bit, as before them."""
    from fastpid._build_info import load_extension

    ext = load_extension()[0]
    A = _batch((7, 9, 11), "sparse", 1, seed=4)
    others = [_batch((20, 20, 10), "dense", 2, seed=1), _batch((13, 12, 11), "tiny", 2, seed=2),
              _batch((8, 8, 8), "dense", 3, seed=3)]

    def solve(P, lowrank=False):
        return ext.solve(P, cpp.options(1e-8, 500, lowrank=lowrank), True)

    first = solve(A)
    for P in others:
        solve(P)
        solve(P, lowrank=True)
    again = solve(A)
    behind = solve(np.concatenate([_batch((7, 9, 11), "tiny", 3, seed=6), A]))
    for x, y, z in zip(first, again, behind):
        assert np.array_equal(x, y) and np.array_equal(x, z[-1:])


def test_equal_sources_put_the_fewer_free_potentials_on_the_schur_side():
    """Between sources of equal size, the one with fewer pairs (x, y) of positive mass carries
    the Schur complement, problem by problem, whichever way round the joint comes: the same
    Newton steps either way, also in a batch that mixes both ways round."""
    from fastpid import api

    P = _batch((9, 9, 5), "sparse", 3, seed=2)
    P[:, :4] = 0.0  # x1 = 0..3 never occur: X1 has fewer free potentials
    P /= P.sum((1, 2, 3), keepdims=True)
    T = np.ascontiguousarray(P.transpose(0, 2, 1, 3))
    mixed = np.stack([P[0], T[1], P[2], T[0]])
    assert api._swap_sources(torch.from_numpy(mixed)).tolist() == [True, False, True, False]
    a, b, m = fastpid.pid(P), fastpid.pid(T), fastpid.pid(mixed)
    assert np.array_equal(a.iterations, b.iterations)
    assert np.array_equal(m.iterations, [a.iterations[0], a.iterations[1], a.iterations[2], a.iterations[0]])
    np.testing.assert_allclose(a.unique1, b.unique2, atol=2e-8)
    np.testing.assert_allclose(a.synergy, b.synergy, atol=2e-8)
    np.testing.assert_allclose(m.unique1, [a.unique1[0], a.unique2[1], a.unique1[2], a.unique2[0]], atol=2e-8)
    # The feasible couplings come back in each problem's own orientation.
    c = fastpid.pid(mixed, return_coupling=True).coupling
    np.testing.assert_allclose(c.sum(2), mixed.sum(2), atol=1e-12)
    np.testing.assert_allclose(c.sum(1), mixed.sum(1), atol=1e-12)
    # Unequal sizes: the smaller source second, for every problem.
    assert api._swap_sources(torch.ones(2, 3, 4, 2)).all() and not api._swap_sources(torch.ones(2, 4, 3, 2)).any()


def test_the_lowrank_elimination_has_the_smaller_source_second(monkeypatch):
    """The C++ solver's low-rank elimination solves each problem with the smaller source
    second, as the Schur complement does, on the native route and on the general one (a
    coupling asked for): the same Newton steps as the problem given that way round, the same
    terms mirrored, and the coupling back in the caller's orientation."""
    from fastpid import api
    from fastpid._build_info import load_extension

    assert not api.swap_rule(8, 3, None, None) and api.swap_rule(3, 8, None, None)
    free1, free2 = np.array([3, 5]), np.array([4, 4])  # equal sizes: the free counts decide
    assert api.swap_rule(6, 6, free1, free2).tolist() == [True, False]
    assert api._swap_sources(torch.ones(2, 3, 4, 40)).all()

    P = _batch((3, 8, 100), "dense", 3, seed=9)
    T = np.ascontiguousarray(P.transpose(0, 2, 1, 3))
    assert solver.newton_plan(torch.from_numpy(P)).structure == "lowrank"
    # The solver's bounds and coupling with the smaller source first, directly (of P as pid()
    # normalises it): the two orientations' differ in their last digits, so bitwise equality
    # shows which one ran.
    ext = load_extension()[0]
    Tn = np.ascontiguousarray(ext.prepare(P, 1e-60)[0].transpose(0, 2, 1, 3))
    floor = _certify.rounding(np.zeros(3), torch.float64, 3 * 8 * 100)  # what the gap adds for rounding
    lower, upper, _, _, its, _ = ext.solve(Tn, cpp.options(_certify.solver_tol(1e-8, floor), lowrank=True), True)
    a, b = fastpid.pid(P), fastpid.pid(T)
    assert a.backend == b.backend == "cpp"
    assert a.iterations.tolist() == b.iterations.tolist() == its.tolist()
    assert np.array_equal(a.gap, upper - lower + floor)
    np.testing.assert_allclose(a.unique1, b.unique2, atol=2e-8)
    np.testing.assert_allclose(a.synergy, b.synergy, atol=2e-8)
    # The general route (a coupling asked for) passes the solver the transposed problems.
    passed = []  # the joints the general route passes the solver
    solve = cpp.solve
    monkeypatch.setattr(cpp, "solve", lambda Q, *args, **kw: passed.append(Q.numpy().copy()) or solve(Q, *args, **kw))
    c = fastpid.pid(P, return_coupling=True)
    assert [Q.shape for Q in passed] == [(3, 8, 3, 100)] and c.iterations.tolist() == its.tolist()
    # The general route normalises P in torch, the native one in C++: their joints may differ
    # in the last bit (by the order of the sums, which depends on the host's vector units), so
    # the orientation is checked against the solver's own coupling of the joint it was given.
    Q = passed[0]
    np.testing.assert_allclose(Q, Tn, rtol=4 * np.finfo(float).eps, atol=0)
    coupling_q = ext.solve(Q, cpp.options(1e-8, lowrank=True), True)[5]
    np.testing.assert_allclose(c.coupling, coupling_q.transpose(0, 2, 1, 3), rtol=0, atol=1e-12)
    np.testing.assert_allclose(c.coupling.sum(2), P.sum(2), atol=1e-12)
    np.testing.assert_allclose(c.coupling.sum(1), P.sum(1), atol=1e-12)


def test_auto_picks_cpp_for_small_cpu_problems_and_torch_for_large(monkeypatch):
    from fastpid import _resources

    # One problem on two threads (the limits where every thread has a problem: the next test).
    monkeypatch.setattr(_resources, "_cpus", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert fastpid.pid(_batch((4, 4, 4), "dense", 1)[0]).backend == "cpp"
    # The limit is on the system the C++ solver factorises: the Schur side's free potentials,
    # at most min(n1, n2) * ny (96 * 32 is at it, 97 * 32 beyond; it was 1800, where the C++
    # solver was 2-6x faster than PyTorch on dense 64x64x32 to 80x80x32), or the n1 * n2
    # cells of the low-rank elimination (64 * 64; it was 1800).
    assert cpp.auto_max("schur") == 96 * 32 and cpp.auto_max("lowrank") == 64 * 64
    assert fastpid.pid(_batch((100, 96, 32), "dense", 1)[0], method="fast").backend == "cpp"
    assert fastpid.pid(_batch((100, 97, 32), "dense", 1)[0], method="fast").backend == "torch"
    assert fastpid.pid(_batch((64, 64, 32), "dense", 1)[0], method="fast").backend == "cpp"
    assert fastpid.pid(_batch((2, 3, 3000), "dense", 1)[0], method="fast").backend == "cpp"
    # Past the limit in size, within it in free potentials: a third of the pairs (x2, y)
    # empty on both sides (as in clustered joints) leaves 2,130 of 3,200.
    P = _batch((100, 100, 32), "dense", 1)[0]
    empty1, empty2 = np.random.default_rng(0).random((2, 100, 32)) < 1 / 3
    P[empty1[:, None, :] | empty2[None, :, :]] = 0.0
    P /= P.sum()
    plan = solver.newton_plan(torch.from_numpy(P[None]))
    assert plan.structure == "schur" and plan.schur_free <= cpp.auto_max("schur") < 100 * 32
    assert fastpid.pid(P, method="fast").backend == "cpp"


def test_auto_takes_larger_schur_systems_to_cpp_where_every_thread_has_a_problem(monkeypatch):
    """Past 3072 free potentials on the Schur side the PyTorch solver is the faster for one
    problem on two threads (they share its factorisations: dense 96x96x48 11.2 s against 15.4 s
    in C++), not where every thread has a problem of its own (one thread: 18.7 s against 15.4 s;
    clustered 60x60x55, 3269 free, 6.8 s against 3.9 s): there C++ takes them up to 6144."""
    from fastpid import _resources

    monkeypatch.setattr(_resources, "_cpus", lambda: 2)
    P = _batch((64, 64, 60), "dense", 1)[0]                       # 3840 free on the Schur side
    plan = solver.newton_plan(torch.from_numpy(P[None]))
    assert plan.structure == "schur" and cpp.auto_max("schur") < plan.schur_free <= cpp.auto_max("schur", True)
    with _resources.threads(1):
        assert fastpid.pid(P, method="fast").backend == "cpp"
    with _resources.threads(2):
        assert fastpid.pid(P, method="fast").backend == "torch"               # one problem, two threads
        assert fastpid.pid(np.stack([P, P]), method="fast").backend == "cpp"  # a problem each
    big = _batch((100, 100, 64), "dense", 1)[0]                   # 6400 free: beyond either
    with _resources.threads(1):
        assert fastpid.pid(big, method="fast").backend == "torch"


def test_auto_takes_the_schur_complement_where_the_low_rank_system_is_beyond_the_cpp_route(monkeypatch):
    """Where the native plan would choose the low-rank elimination past the C++ route's cells
    and the Schur complement is within its free potentials, the Schur complement: a 44x44x70
    joint (2,161 free potentials, 1,936 cells, then past the route's 1,800) had gone to the
    PyTorch solver (4.1 s) where the C++ Schur complement took 0.95 s. Within the route's 4,096
    cells the plan's own choice stands (clustered 44x44x70, one thread: low-rank 1.58 s, Schur
    complement 1.93 s)."""
    from fastpid import api

    plan = solver.plan_for_counts(135, 32, 320, 12960, 3072)          # 4,320 cells, 3,072 free
    assert plan.structure == "schur" and api.cpp_suits(135, 32, 320, plan)
    assert solver.plan_for_counts(44, 44, 70, 2200, 2161).structure == "lowrank"     # 1,936 cells: within
    monkeypatch.setattr(cpp, "AUTO_MAX_SCHUR", 0)              # no Schur complement within the route ...
    assert solver.plan_for_counts(135, 32, 320, 12960, 3072).structure == "lowrank"  # ... the plan's own


def test_auto_picks_cpp_where_the_reference_would_eliminate_over_admissible_potentials():
    """Joints whose pairs (x, y) are mostly empty (a class in a few clusters): the PyTorch
    solver's cheapest elimination is over the admissible potentials only, but the C++ Schur
    complement is over the free ones already, so auto takes C++ (with the same answer)."""
    rng = np.random.default_rng(8)
    n, k, ny = 400, 20, 10
    y = rng.integers(0, ny, n)
    # Each class spreads over ~3 of the 20 clusters of each source.
    x1 = (3 * y + rng.integers(0, 3, n)) % k
    x2 = (7 * y + rng.integers(0, 3, n)) % k
    P = np.zeros((k, k, ny))
    np.add.at(P, (x1, x2, y), 1.0)
    P /= P.sum()
    assert solver.newton_plan(torch.from_numpy(P[None])).structure == "sparse"
    auto, ref = fastpid.pid(P), fastpid.pid(P, backend="torch")
    assert auto.backend == "cpp" and ref.backend == "torch"
    assert bool(auto.converged) and bool(ref.converged)
    assert abs(float(auto.synergy) - float(ref.synergy)) <= float(auto.gap) + float(ref.gap)


# Few cells and many target values: newton_plan picks the low-rank elimination. Both ways
# round (the smaller source first, as pid() gives it the C++ solver, and second), and target
# counts that leave the last group of kLanes = 8 blocks D_y part-filled (211, 150).
LOWRANK_SHAPES = [(2, 3, 300), (3, 2, 211), (1, 4, 150), (5, 4, 400)]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", LOWRANK_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_lowrank_elimination_matches_reference_and_schur(shape, kind):
    """The C++ low-rank Newton directions: the same certified values as the PyTorch solver
    (which also eliminates low-rank here) and as the C++ Schur elimination."""
    from fastpid import _C

    P = torch.from_numpy(_batch(shape, kind, 2, seed=sum(shape)))
    assert solver.newton_plan(P).structure == "lowrank" and cpp.elimination(P) == "lowrank"
    ref = solver.solve_exact(P, 1e-8)
    got = cpp.solve(P, 1e-8)
    arr = P.numpy()
    schur = _C.solve(arr, cpp.options(1e-8, lowrank=False))
    schur_lower, schur_upper = torch.from_numpy(schur[0]), torch.from_numpy(schur[1])
    brackets = [(got.lower, got.upper), (ref.lower, ref.upper), (schur_lower, schur_upper)]
    for lower, upper in brackets:
        assert torch.all(upper - lower <= 1e-8)
    # Each bracket holds V: every two overlap (up to the rounding of the entropy sums).
    for lo_a, _ in brackets:
        for _, up_b in brackets:
            assert torch.all(lo_a <= up_b + 1e-12)
    if kind != "tiny":
        assert torch.equal(got.iterations, ref.iterations)
    else:  # rounding parts the paths, but the Newton directions must stay as good
        assert torch.all(got.iterations <= ref.iterations + 5)


# Shapes for the two assemblies of the Schur complement: Gram blocks flushed part-way (more
# than 128 rows of G: 20x20x10, 33x4x2, 19x11x9), free counts that are not a multiple of the
# tiles' rows (8 or 6, by instruction set) or columns (16, 8 or 4), one target value, and ny
# above the automatic choice's 10.
GRAM_SHAPES = [(1, 3, 2), (3, 3, 3), (17, 3, 5), (33, 4, 2), (8, 8, 8), (19, 11, 9), (20, 20, 10),
               (6, 13, 1), (7, 9, 11)]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", GRAM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gram_assembly_matches_the_rank_structured_one(shape, kind):
    """The Schur complement assembled as S -= G^T G (G_i = L_i^-1 C_i; the right-hand side
    and the f part of each direction then also taken from the kept rows of G) and from C_i's
    rank structure: the same system up to rounding, so the same certified values and, away
    from 1e-13 masses, the same Newton steps and potentials."""
    from fastpid import _C

    arr = _batch(shape, kind, 3, seed=sum(shape) + 1)
    opt = cpp.options(1e-8)
    gram, ranked = _C.solve(arr, opt, False, gram=True), _C.solve(arr, opt, False, gram=False)
    for lower, upper in (gram[:2], ranked[:2]):
        assert np.all(upper - lower <= 1e-8)
    assert np.all(gram[0] <= ranked[1] + 1e-12) and np.all(ranked[0] <= gram[1] + 1e-12)
    if kind == "tiny":
        assert np.all(gram[4] <= ranked[4] + 5)
        return
    assert np.array_equal(gram[4], ranked[4])
    for a, b in zip(gram[2:4], ranked[2:4]):
        assert np.array_equal(np.isfinite(a), np.isfinite(b))
        np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], atol=1e-6, rtol=0)


def test_gram_assembly_is_the_cpu_default_up_to_ten_target_values():
    """The automatic choice: the Gram assembly up to ny = 10, the rank-structured one above
    (bit for bit the results of forcing each)."""
    from fastpid import _C

    opt = cpp.options(1e-8)
    for ny, gram in ((10, True), (11, False)):
        arr = _batch((9, 7, ny), "dense", 2, seed=3)
        default, forced = _C.solve(arr, opt), _C.solve(arr, opt, False, gram=gram)
        for a, b in zip(default, forced):
            assert np.array_equal(a, b)


# Shapes for the f-blocks' two factorisations (product form and Cholesky): one to five x2
# values, odd ny, y's from the fewest where the product form fits (ny = 2 n2 + 1) to 61.
PRODUCT_FORM_SHAPES = [(5, 1, 7), (4, 1, 3), (6, 2, 5), (16, 2, 30), (3, 2, 13), (7, 3, 12), (1, 2, 19),
                       (9, 5, 23), (4, 4, 61)]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", PRODUCT_FORM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_product_form_matches_cholesky(shape, kind):
    """The f-blocks H_i (a diagonal plus one rank-one term per x2) solved in product form and
    by their Cholesky factor: the same system up to rounding, so certified brackets that
    overlap each other's and the PyTorch reference's, Newton steps within one (rounding can
    move a step's length past a threshold), also at 1e-10 on peaked joints (cubed masses),
    where slacks near 0 make H_i ill-conditioned (multiplying by H_i^-1 instead of solving had
    taken 34 and 78 steps for 19 and 17 there), and, away from 1e-13 masses, the same envelope
    gradients f + g (a 1e-8 certificate pins the potentials down to ~1e-6, as in
    test_exact_matches_reference)."""
    from fastpid import _C

    arr = _batch(shape, kind, 4, seed=sum(shape) + 2)
    peaked = arr**3 / (arr**3).sum((1, 2, 3), keepdims=True)
    for P, tol in ((arr, 1e-8), (arr, 1e-10), (peaked, 1e-10)):
        opt = cpp.options(tol)
        pf = _C.solve(P, opt, False, gram=False, product_form=True)
        ch = _C.solve(P, opt, False, gram=False, product_form=False)
        ref = solver.solve_exact(torch.from_numpy(P), tol)
        brackets = [pf[:2], ch[:2], (ref.lower.numpy(), ref.upper.numpy())]
        for lower, upper in brackets:
            assert np.all(upper - lower <= tol)
        for lower, _ in brackets:
            for _, upper in brackets:
                assert np.all(lower <= upper + 1e-12)
        if kind == "tiny":
            assert np.all(pf[4] <= ch[4] + 5)
            continue
        assert np.all(np.abs(pf[4] - ch[4]) <= 1), (tol, pf[4], ch[4])
        if tol == 1e-8 and P is arr:
            grad_pf, grad_ch = (f[:, :, None, :] + g[:, None, :, :] for f, g in (pf[2:4], ch[2:4]))
            assert np.array_equal(np.isfinite(grad_pf), np.isfinite(grad_ch))
            finite = np.isfinite(grad_ch)
            np.testing.assert_allclose(grad_pf[finite], grad_ch[finite], atol=1e-5, rtol=1e-5)


def test_product_form_is_the_cpu_default_where_x2_has_a_quarter_of_ys_values_or_fewer():
    """The automatic choice (bit for bit the results of forcing it): the product form at
    4 n2 <= ny, Cholesky above; and in solve_pid, per orientation: a swapped 2 x 16 x 30
    problem is solved as 16 x 2 x 30, in product form."""
    from fastpid import _C

    opt = cpp.options(1e-8)
    for shape, pf in (((9, 3, 12), True), ((9, 4, 15), False), ((9, 3, 11), False), ((9, 2, 8), False)):
        arr = _batch(shape, "dense", 2, seed=5)
        default, forced = _C.solve(arr, opt), _C.solve(arr, opt, False, product_form=pf)
        for a, b in zip(default, forced):
            assert np.array_equal(a, b)
        assert solver.native_product_form(shape[1], shape[2]) == pf  # the plan's flop count
    arr = _batch((2, 16, 30), "dense", 2, seed=6)
    _, gap, _, _, iterations, _ = _C.solve_pid(arr, np.ones(2, bool), opt, 1.0)
    lower, upper, _, _, its = _C.solve(np.ascontiguousarray(arr.transpose(0, 2, 1, 3)), opt, False,
                                       product_form=True)
    assert np.array_equal(iterations, its)
    np.testing.assert_array_equal(gap, np.maximum(upper - lower, 0.0))


def test_product_form_refuses_what_it_cannot_factorise():
    """Forcing the product form where it does not apply is an error that says why: with the
    Gram assembly (ny <= 10 picks it) or where its factors would not fit (ny < 2 n2 + 1)."""
    from fastpid import _C

    opt = cpp.options(1e-8)
    with pytest.raises(ValueError, match="product_form needs"):
        _C.solve(_batch((4, 2, 8), "dense", 1), opt, False, product_form=True)
    with pytest.raises(ValueError, match="n2=6, ny=12"):
        _C.solve(_batch((4, 6, 12), "dense", 1), opt, False, product_form=True)


def test_lowrank_workspace_is_far_smaller_than_the_schur_one():
    from fastpid import _C

    lowrank, schur = _C.workspace_doubles(3, 2, 3000, True), _C.workspace_doubles(3, 2, 3000, False)
    assert lowrank < 40 * 3 * 2 * 3000 and 100 * lowrank < schur  # S alone is (2 * 3000)^2
    # Method "fast" takes no Newton arrays at all.
    assert _C.workspace_doubles(3, 2, 3000, False, False) < 20 * 3 * 2 * 3000


def test_backends_reports_availability():
    info = fastpid.backends()
    assert set(info) == {"torch", "cpp", "cuda", "triton", "cvx"}
    assert info["torch"]["available"] and info["cpp"]["available"]
    assert all(isinstance(v["reason"], str) for v in info.values())


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        fastpid.pid(np.ones((2, 2, 2)), backend="fortran")


@pytest.mark.parametrize("shape, seed",
                         [((13, 7, 11), s) for s in range(12)] + [((8, 8, 8), 3), ((10, 10, 10), 7)])
def test_singular_newton_systems_still_certify(shape, seed):
    """Very peaked sparse joints (masses down to ~1e-45) make the Schur complement singular
    to rounding; both solvers regularise it with a 1e-12 ridge, their paths may part, and
    both still certify tol. On 8x8x8 seed 3 and 10x10x10 seed 7 the C++ solver's first
    factorisation of some Newton system fails (counted in an instrumented build), so the
    matrix is built again with the ridge. With the gauge potential of a y fixed at an x2 of
    tiny mass (before solver._gauge_fixed chose one of large mass), 13x7x11 seed 2 stalled at
    gaps of 1e-9 to 3.5e-7 depending on rounding (CPU and build), both bounds off V by 1e-7
    to 2e-7."""
    rng = np.random.default_rng(seed)
    P = torch.from_numpy(np.stack([random_joint(rng, shape, alpha=0.05, sparsity=0.9)]))
    ref = solver.solve_exact(P, 1e-8)
    got = cpp.solve(P, 1e-8)
    for sol in (ref, got):
        assert float(sol.upper[0] - sol.lower[0]) <= 1e-8
    assert float(got.lower[0]) <= float(ref.upper[0]) + 1e-15
    assert float(ref.lower[0]) <= float(got.upper[0]) + 1e-15


def test_results_do_not_depend_on_the_problems_solved_before():
    """Each thread reuses one workspace for all its problems, with whatever the previous
    problem left in it: dense, sparse and tiny problems, solved in one batch, in reverse
    order and one at a time, must give bitwise the same results."""
    rng = np.random.default_rng(7)
    kinds = list(KINDS.values())
    P = torch.from_numpy(np.stack([random_joint(rng, (6, 5, 4), **kinds[b % len(kinds)]) for b in range(12)]))
    forwards = cpp.solve(P, 1e-8)
    backwards = cpp.solve(P.flip(0), 1e-8)
    alone = [cpp.solve(P[b : b + 1], 1e-8) for b in range(len(P))]
    for name in ("lower", "upper", "f", "g", "iterations"):
        one_by_one = torch.cat([getattr(sol, name) for sol in alone])
        assert torch.equal(getattr(forwards, name), one_by_one)
        assert torch.equal(getattr(backwards, name).flip(0), one_by_one)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", [(2, 2, 1), (3, 2, 7), (2, 5, 9), (4, 3, 17), (6, 5, 33)],
                         ids=lambda s: "x".join(map(str, s)))
def test_forced_lowrank_elimination_certifies_odd_sizes(shape, kind):
    """The C++ low-rank elimination on shapes its plan would not give it: target counts below,
    between and past the widths its loops over y take at a time (8 and 16), and 30 cells,
    where K's factorisation is the blocked one. Every solve certified, its bracket overlapping
    the Schur complement's."""
    from fastpid import _C

    P = np.ascontiguousarray(_batch(shape, kind, 3, seed=7 + sum(shape)))
    P /= P.sum((1, 2, 3), keepdims=True)
    lr = _C.solve(P, cpp.options(1e-8, lowrank=True))
    sc = _C.solve(P, cpp.options(1e-8, lowrank=False))
    assert np.all(lr[1] - lr[0] <= 1e-8) and np.all(sc[1] - sc[0] <= 1e-8)
    assert np.all(lr[0] <= sc[1] + 1e-12) and np.all(sc[0] <= lr[1] + 1e-12)


def test_lowrank_directions_refined_where_woodbury_loses_digits():
    """Few cells, many classes and masses of 1e-13 next to O(1) ones: near mu's floor the
    Woodbury solve of the low-rank elimination leaves relative residuals of 1e2 and Newton
    "directions" of negative decrement, which every line search rejected (9 of these 30
    problems stopped short of 1e-8 in the reference, 5 in the C++ port). More refinement steps
    where the residual stays above REFINE_RESIDUAL certify all of them in both solvers."""
    for shape in [(2, 3, 300), (3, 2, 211), (5, 4, 400)]:
        for seed in range(1001, 1006):
            rng = np.random.default_rng(seed)
            P = np.stack([random_joint(rng, shape, alpha=0.5, sparsity=0.3, tiny=1e-13) for _ in range(2)])
            P = torch.from_numpy(P).transpose(1, 2).contiguous()
            assert solver.newton_plan(P).structure == "lowrank" and cpp.elimination(P) == "lowrank"
            for res in (solver.solve_exact(P, 1e-8), cpp.solve(P, 1e-8)):
                assert torch.all(res.upper - res.lower <= 1e-8), (shape, seed, res.upper - res.lower)


def _ulps(got, exact):
    """|got - exact| in units of the last place of the double nearest to exact (mpmath)."""
    ref = np.array([float(v) for v in exact])
    err = np.array([abs(mpmath.mpf(g) - v) for g, v in zip(got, exact)], dtype=float)
    return err / np.spacing(np.abs(ref))


def test_own_exp_and_log_are_within_one_ulp():
    """The solver's vectorisable exp and log (csrc/vector_math.hpp) against 60-digit values:
    within 1 ulp over their whole range, subnormal inputs and results included."""
    from fastpid import _C
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-708, 709.7, 3000), rng.uniform(-40, 40, 3000),
                        rng.uniform(-1e-3, 1e-3, 1000), rng.uniform(-745, -708.5, 500)])
    y = np.concatenate([np.ldexp(rng.uniform(0.5, 1, 4000), rng.integers(-1074, 1024, 4000)),
                        1 + rng.uniform(-0.3, 0.45, 2000), 1 + rng.uniform(-1e-6, 1e-6, 1000)])
    e = _C._exp_log(x)[0]
    l = _C._exp_log(y)[1]
    with mpmath.workdps(60):
        ex = [mpmath.exp(mpmath.mpf(v)) for v in x]
        normal = np.array([v >= np.finfo(float).tiny for v in ex])
        assert _ulps(e[normal], [v for v, n in zip(ex, normal) if n]).max() <= 1.0
        # Subnormal results: within one subnormal step of the exact value.
        sub_err = [abs(mpmath.mpf(g) - v) for g, v, n in zip(e, ex, normal) if not n]
        assert len(sub_err) > 100 and max(sub_err) <= np.finfo(float).smallest_subnormal
        assert _ulps(l, [mpmath.log(mpmath.mpf(v)) for v in y]).max() <= 1.0


def test_own_expm1_is_within_one_and_a_half_ulps():
    """The solver's vectorisable expm1 (csrc/vector_math.hpp) against 60-digit values, over its
    whole range: the series near 0, both sides of its switch at |x| = 1, the reduced argument's
    cancellation-prone ends (x near ln 2 multiples), tiny and subnormal inputs."""
    from fastpid import _C
    rng = np.random.default_rng(1)
    edges = np.concatenate([k * np.log(2) + rng.uniform(-0.36, 0.36, 300) for k in (-2, -1, 1, 2)])
    x = np.concatenate([rng.uniform(-745, 709.7, 2000), rng.uniform(-40, 40, 2000),
                        rng.uniform(-1.05, 1.05, 2000), edges, rng.uniform(-1e-3, 1e-3, 500),
                        -np.exp(rng.uniform(-740, 0, 500)), np.exp(rng.uniform(-740, 0, 500))])
    em = _C._exp_log(x)[2]
    with mpmath.workdps(60):
        assert _ulps(em, [mpmath.expm1(mpmath.mpf(v)) for v in x]).max() <= 1.5


def test_own_exp_and_log_special_values():
    from fastpid import _C
    inf, nan, tiny = np.inf, np.nan, np.finfo(float).smallest_subnormal
    x = np.array([-inf, inf, nan, -746.0, -745.2, -745.1, 709.78, 709.79, 710.5, 0.0, -0.0, 1.0])
    e = _C._exp_log(x)[0]
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(e, np.exp(x))
    y = np.array([0.0, -0.0, -1.0, -inf, inf, nan, tiny, 1e-310, 1.0, np.finfo(float).max])
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.log(y)
    _, l, _ = _C._exp_log(y)
    np.testing.assert_array_equal(l, expected)
    z = np.array([-inf, inf, nan, -746.0, -745.2, 709.79, 710.5, 0.0, 1e-320, -1e-320, tiny])
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(_C._exp_log(z)[2], np.expm1(z))


_FORK_SCRIPT = """
import multiprocessing as mp, sys
import numpy as np, fastpid
P = np.random.default_rng(0).dirichlet(np.ones(8 * 8 * 5), size=64).reshape(64, 8, 8, 5)

def child(_):
    import torch
    # The native solve, then torch's own parallel regions (method "fast" checks P in torch,
    # and a large reduction), which share libgomp with the solver.
    return (float(fastpid.pid(P).synergy.sum()), float(fastpid.pid(P, method="fast").synergy.sum()),
            float(torch.ones(4_000_000, dtype=torch.float64).sum()))

if __name__ == "__main__":
    ref = float(fastpid.pid(P).synergy.sum())    # the solver's OpenMP threads have run
    with mp.get_context("fork").Pool(1) as pool:
        got = pool.map_async(child, [0]).get(timeout=60)[0]
    # The torch work's references after the child's: here it makes a pool of its own.
    sys.exit(0 if got == (ref, float(fastpid.pid(P, method="fast").synergy.sum()), 4e6) else 3)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_after_a_batched_solve_solves(tmp_path):
    """GNU libgomp's thread pool cannot be used in a forked child: a multiprocessing worker
    forked after a batched solve hung for good in its first batched solve, and then (the
    solver's loops kept off OpenMP there) in its first large torch operation, whose parallel
    region met the pool the solver's team had made."""
    script = tmp_path / "fork_after_solve.py"
    script.write_text(_FORK_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]


_FORK_MKL_SCRIPT = """
import multiprocessing as mp, sys
import numpy as np, torch, fastpid
torch.set_num_threads(2)   # torch gives MKL the count too
P = np.random.default_rng(0).dirichlet(np.ones(8 * 8 * 5), size=64).reshape(64, 8, 8, 5)

def child(_):
    a = torch.rand(300, 300, dtype=torch.float64)
    return (bool(torch.log(torch.rand(200_000, dtype=torch.float64) + 0.5).isfinite().all()),
            bool((a @ a).trace() > 0), torch.get_num_threads())

if __name__ == "__main__":
    fastpid.pid(P, backend="cpp")   # a team of two in this thread
    with mp.get_context("fork").Pool(1) as pool:
        print(pool.map_async(child, [0]).get(timeout=60)[0])
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_after_a_batched_solve_runs_mkl(tmp_path):
    """The fork handler set OpenMP's threads to 1 in the child, but MKL kept the 2 that
    torch.set_num_threads had given it: the child's first torch.log of 200,000 entries (or a
    matmul) opened a region of two threads on the pool that cannot serve it, and hung."""
    script = tmp_path / "fork_mkl.py"
    script.write_text(_FORK_MKL_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["(True,", "True,", "1)"]


_FORK_FROM_MAIN_SCRIPT = """
import multiprocessing as mp, sys, threading
import numpy as np, torch, fastpid
torch.set_num_threads(2)
P = np.random.default_rng(0).dirichlet(np.ones(8 * 8 * 5), size=64).reshape(64, 8, 8, 5)

def child(_):
    return torch.get_num_threads()

if __name__ == "__main__":
    thread = threading.Thread(target=fastpid.pid, args=(P,))   # the team runs in this thread
    thread.start()
    thread.join()
    with mp.get_context("fork").Pool(1) as pool:
        print(pool.map_async(child, [0]).get(timeout=60)[0])
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_fork_by_a_thread_that_ran_no_team_keeps_its_threads(tmp_path):
    """libgomp keeps a pool per thread that starts teams: a batched solve in a worker thread
    leaves the main thread none, and a child it forks keeps torch's threads (the handler had
    set them to 1 for any team anywhere in the process)."""
    script = tmp_path / "fork_from_main.py"
    script.write_text(_FORK_FROM_MAIN_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2"]


_THREAD_SCRIPT = """
import threading
import numpy as np, torch, fastpid
from fastpid import _C
torch.set_num_threads(1)
P = np.random.default_rng(0).dirichlet(np.ones(6 ** 3), size=8).reshape(8, 6, 6, 6)
seen = []
def solve():
    fastpid.pid(P, backend="cpp")
    seen.append(_C.build_info()["openmp_max_threads"])   # this thread's team size
thread = threading.Thread(target=solve)
thread.start()
thread.join()
print(seen[0])
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every default is one thread")
def test_native_solves_in_a_new_thread_follow_torchs_thread_setting(tmp_path):
    """A thread that had made no torch call ran the C++ solver's team on every core (OpenMP's
    default there) after torch.set_num_threads(1) in the main thread."""
    script = tmp_path / "thread_solve.py"
    script.write_text(_THREAD_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1"]


_OUT_OF_MEMORY_BATCH = """
import resource, torch, numpy as np, fastpid
torch.set_num_threads(2)
P = torch.tensor(np.random.default_rng(0).dirichlet(np.ones(4 * 64 * 64 * 32))).reshape(4, 64, 64, 32)
fastpid.pid(P[:1])  # the process's own memory first
size = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + {headroom} * 2**20,) * 2)
try:
    fastpid.pid(P)
    print("solved")
except MemoryError:
    print("MemoryError")
print(float(fastpid.pid(np.full((2, 2, 2), 1 / 8)).synergy) >= 0)  # still usable
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sets RLIMIT_AS")
@pytest.mark.parametrize("headroom", [20, 60])
def test_a_batch_whose_workspaces_do_not_fit_raises_memory_error(headroom):
    """A thread's workspace that could not be allocated inside the solver's OpenMP region
    terminated the process (std::bad_alloc cannot leave the region: exit 134) where one problem
    alone raised MemoryError; the up-front check reads the free memory, not a ulimit -v."""
    run = subprocess.run([sys.executable, "-c", _OUT_OF_MEMORY_BATCH.format(headroom=headroom)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    # 20 MB cannot hold a second 42 MB workspace; 60 MB may, after what the first solve freed
    assert run.stdout.split()[-2:] in ([["MemoryError", "True"]] if headroom == 20 else
                                       (["MemoryError", "True"], ["solved", "True"]))


def test_the_other_way_round_is_tried_only_within_the_automatic_routes_limit(monkeypatch):
    """A problem short of tol was solved again with the larger source on the Schur side
    whatever that side's size: 150x70x40 became a system of 6,000 potentials (1,177 MB a
    thread), and a call with max_iter=2 took 9.2 s where solving to tol took 4.6 s. The direct
    route (fastpid._cpu_route) asks the same cpp_retry_fits."""
    from fastpid import api

    assert api.cpp_retry_fits(150, 70, 40, False) and not api.cpp_retry_fits(70, 150, 40, False)
    assert api.cpp_retry_fits(70, 150, 40, True)  # the low-rank system is n1 * n2 either way
    P = _batch((12, 4, 6), "dense", 1)[0]
    solve = cpp.solve
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return solve(*args, **kwargs)

    monkeypatch.setattr(cpp, "solve", counted)
    for limit, tries in ((72, 2), (60, 1)):  # the other way round: 4x12x6, a Schur side of 72
        monkeypatch.setattr(cpp, "AUTO_MAX_SCHUR", limit)
        calls.clear()
        with pytest.warns(fastpid.ConvergenceWarning):
            fastpid.pid(P, backend="cpp", max_iter=1, return_coupling=True)  # the general route
        assert len(calls) == tries, limit
