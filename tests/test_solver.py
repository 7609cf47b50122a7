"""The exact solver: certified gap, PID identities and invariances on random problems.

The identities and signs of the terms hold for any value of ``V`` (the terms are built from
it and clamped to the closed-form bracket), so each solve's value is also checked against
what fastpid does not compute: ``I_Q`` of its returned coupling, computed here in numpy
(exactly feasible, so ``I_Q >= V*``; within the gap of ``V`` where ``V`` is right), and,
on problems of up to 600 cells, CVXPY + Clarabel at its tightest settings (within 4e-9 nats
of these joints' brackets, 2e-7 allowed; a ``V`` off by 1e-5 had passed every test of this file).
"""
from __future__ import annotations

import math
import warnings
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastpid
from fastpid import _certify, solver
from fastpid.cvx import TIGHT_CLARABEL, solve_cvx

from helpers import random_joint

TOL = 1e-8
IDENTITY_TOL = 1e-10


def mi_numpy(P):
    """``I(X1,X2;Y)``, ``I(X1;Y)``, ``I(X2;Y)`` in nats, written independently of fastpid."""

    def mi(pxy):
        px, py = pxy.sum(1, keepdims=True), pxy.sum(0, keepdims=True)
        nz = pxy > 0
        return float((pxy[nz] * np.log(pxy[nz] / (px @ py)[nz])).sum())

    n1, n2, ny = P.shape
    return mi(P.reshape(n1 * n2, ny)), mi(P.sum(1)), mi(P.sum(0))


#: CVXPY's own error at its tightest settings: 4.0e-9 at most on the joints here (three runs),
#: 5.2e-8 on 1,260 other draws of these kinds, 1.9e-7 on 600 of tests/test_certificate_fuzz.py.
CVX_ERROR = 2e-7


def assert_value_independently(res, P, backend="auto"):
    """``V = I(X1,X2;Y) - S`` of ``res`` against the coupling a solve returns (``I_Q`` in
    numpy, marginals checked) and, for up to 600 cells, CVXPY's value."""
    V, gap = float(res.mi) - float(res.synergy), float(res.gap)
    rc = fastpid.pid(P, backend=backend, return_coupling=True)
    Q = np.asarray(rc.coupling, dtype=np.float64)
    np.testing.assert_allclose(Q.sum(1), P.sum(1) / P.sum(), atol=1e-14)
    np.testing.assert_allclose(Q.sum(0), P.sum(0) / P.sum(), atol=1e-14)
    assert abs(mi_numpy(Q)[0] - V) <= gap + float(rc.gap) + 1e-12
    if P.size <= 600:  # cvxpy and clarabel are test requirements
        V_cvx = float(solve_cvx(P[None], solver_opts=TIGHT_CLARABEL)[0][0])
        assert abs(V - V_cvx) <= gap + CVX_ERROR, (V, V_cvx, gap)


def assert_identities(res, P):
    mi, mi1, mi2 = mi_numpy(P)
    R, U1, U2, S = (float(getattr(res, k)) for k in ("redundancy", "unique1", "unique2", "synergy"))
    assert abs(float(res.mi) - mi) <= IDENTITY_TOL
    assert abs(float(res.mi1) - mi1) <= IDENTITY_TOL
    assert abs(float(res.mi2) - mi2) <= IDENTITY_TOL
    assert abs(R + U1 + U2 + S - mi) <= IDENTITY_TOL
    assert abs(R + U1 - mi1) <= IDENTITY_TOL
    assert abs(R + U2 - mi2) <= IDENTITY_TOL
    assert min(R, U1, U2, S) >= 0.0


SHAPES = [(2, 2, 2), (2, 3, 4), (5, 3, 2), (3, 7, 5), (8, 8, 8), (11, 6, 9), (16, 16, 16),
          (20, 20, 10), (1, 4, 3), (4, 1, 3), (3, 3, 1)]
KINDS = {
    "dense": dict(alpha=1.0),
    "peaked": dict(alpha=0.1),
    "sparse": dict(alpha=0.5, sparsity=0.8),
    "tiny": dict(alpha=1.0, tiny=1e-13),
    "sparse_tiny": dict(alpha=0.3, sparsity=0.6, tiny=1e-13),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_random_problem_certified(shape, kind):
    rng = np.random.default_rng(zlib.crc32(repr((shape, kind)).encode()))  # hash() of a str varies by process
    P = random_joint(rng, shape, **KINDS[kind])
    res = fastpid.pid(P)
    assert bool(res.converged) and float(res.gap) <= TOL
    assert_identities(res, P)
    assert_value_independently(res, P)


@pytest.mark.parametrize("kind", ["dense", "sparse", "sparse_tiny"])
@pytest.mark.parametrize("shape", [(32, 32, 32), (20, 20, 28), (32, 17, 9)], ids=lambda s: "x".join(map(str, s)))
def test_large_problem_certified(shape, kind):
    rng = np.random.default_rng(7)
    P = random_joint(rng, shape, **KINDS[kind])
    res = fastpid.pid(P)
    assert bool(res.converged) and float(res.gap) <= TOL
    assert_identities(res, P)
    assert_value_independently(res, P)


def test_sparse_20x20x28():
    P = random_joint(np.random.default_rng(3), (20, 20, 28), alpha=0.3, sparsity=0.85)
    res = fastpid.pid(P)
    assert bool(res.converged) and float(res.gap) <= TOL
    assert_identities(res, P)
    assert_value_independently(res, P)


def test_clustered_real_features(digits_joint):
    assert (digits_joint == 0).mean() > 0.8  # really sparse
    res = fastpid.pid(digits_joint)
    assert bool(res.converged) and float(res.gap) <= TOL
    assert_identities(res, digits_joint)
    assert_value_independently(res, digits_joint)


@given(seed=st.integers(0, 2**32 - 1), n1=st.integers(1, 6), n2=st.integers(1, 6), ny=st.integers(1, 6),
       sparsity=st.sampled_from([0.0, 0.5, 0.9]))
def test_identities_hypothesis(seed, n1, n2, ny, sparsity):
    P = random_joint(np.random.default_rng(seed), (n1, n2, ny), alpha=0.5, sparsity=sparsity)
    res = fastpid.pid(P)
    assert bool(res.converged) and float(res.gap) <= TOL
    assert_identities(res, P)
    assert_value_independently(res, P)


def _feasible_couplings(P):
    """Couplings with P's pair marginals: P itself, Q0, and a mixture of the two."""
    p1y, p2y, py = P.sum(1), P.sum(0), P.sum((0, 1))
    Q0 = np.einsum("iy,jy,y->ijy", p1y, p2y, np.divide(1.0, py, out=np.zeros_like(py), where=py > 0))
    return [P, Q0, 0.3 * P + 0.7 * Q0]


def _random_potentials(rng, shape, scale):
    """A sparse random joint of ``shape`` with its Problem, and potentials of scale ``scale``."""
    n1, n2, ny = shape
    P = random_joint(rng, shape, alpha=0.5, sparsity=0.3)
    prob = solver.Problem.from_joint(torch.from_numpy(P)[None])
    f = torch.from_numpy(scale * rng.standard_normal((1, n1, ny)))
    g = torch.from_numpy(scale * rng.standard_normal((1, n2, ny)))
    return P, prob, f, g


@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.0, 3.0))
def test_dual_bound_is_a_lower_bound(seed, scale):
    """Any potentials give a lower bound on I_Q for every feasible Q (weak duality)."""
    P, prob, f, g = _random_potentials(np.random.default_rng(seed), (3, 4, 3), scale)
    lower = float(solver.dual_bound(prob, f, g)[0])
    for Q in _feasible_couplings(P):
        assert lower <= mi_numpy(Q)[0] + 1e-12


def _plain_dual_bound(prob, f, g):
    """The bound without dual_bound's shifts: sum P f + sum P g - log max s."""
    logs = torch.logsumexp(solver._log_weights(prob, f, g), dim=-1)
    return solver._dual_objective(prob, f, g) - logs.amax((1, 2))


@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.0, 3.0))
def test_dual_bound_shifts_rows_and_columns_to_their_tightest(seed, scale):
    """The shifted bound is never below the plain one, and a constant added to each x1's
    potentials (a row of cells) does not change it."""
    rng = np.random.default_rng(seed)
    _, prob, f, g = _random_potentials(rng, (4, 5, 3), scale)
    bound = float(solver.dual_bound(prob, f, g)[0])
    assert bound >= float(_plain_dual_bound(prob, f, g)[0]) - 1e-12
    rows = torch.from_numpy(rng.uniform(-2.0, 2.0, (1, 4, 1)))
    assert float(solver.dual_bound(prob, f + rows, g)[0]) == pytest.approx(bound, abs=1e-12)


def test_dual_bound_recovers_slack_left_in_single_rows():
    """At near-optimal potentials whose rows of cells were pushed inside s < 1 by different
    amounts, the shifted bound stays at V (within the solve's gap), the plain one does not."""
    P = random_joint(np.random.default_rng(3), (6, 5, 4), alpha=0.7)
    Pt = torch.from_numpy(P)[None]
    sol = solver.solve_exact(Pt, 1e-11, 200)
    assert float(sol.upper - sol.lower) <= 1e-11
    prob = solver.Problem.from_joint(Pt)
    f = torch.where(prob.m1, sol.f, 0.0) - torch.linspace(0.0, 1e-3, 6, dtype=torch.float64)[None, :, None]
    g = torch.where(prob.m2, sol.g, 0.0)
    V = float(sol.upper)
    assert float(solver.dual_bound(prob, f, g)[0]) >= V - 2e-11
    assert float(_plain_dual_bound(prob, f, g)[0]) <= V - 1e-4


@given(seed=st.integers(0, 2**32 - 1), noise=st.floats(0.0, 1.0))
def test_rounding_is_exactly_feasible(seed, noise):
    """The upper bound's coupling meets both pair marginals exactly and is non-negative."""
    rng = np.random.default_rng(seed)
    P = random_joint(rng, (4, 3, 5), alpha=0.5, sparsity=0.4)
    Q = _feasible_couplings(P)[1] * np.exp(noise * rng.standard_normal(P.shape))
    Pt = torch.from_numpy(P)[None]
    R = solver.round_to_feasible(solver.Problem.from_joint(Pt), torch.from_numpy(Q)[None])[0].numpy()
    assert R.min() >= 0.0
    np.testing.assert_allclose(R.sum(1), P.sum(1), atol=1e-15)
    np.testing.assert_allclose(R.sum(0), P.sum(0), atol=1e-15)


def test_solver_bounds_bracket_feasible_couplings():
    rng = np.random.default_rng(11)
    P = random_joint(rng, (6, 5, 4), alpha=0.4, sparsity=0.5)
    sol = solver.solve_exact(torch.from_numpy(P)[None], TOL)
    best = min(mi_numpy(Q)[0] for Q in _feasible_couplings(P))
    assert float(sol.lower[0]) <= best + 1e-12
    assert float(sol.upper[0] - sol.lower[0]) <= TOL


def test_swap_sources_swaps_unique_terms():
    P = random_joint(np.random.default_rng(5), (4, 6, 3), alpha=0.5)
    a, b = fastpid.pid(P), fastpid.pid(P.transpose(1, 0, 2))
    for x, y in (("redundancy", "redundancy"), ("unique1", "unique2"), ("unique2", "unique1"), ("synergy", "synergy")):
        assert abs(float(getattr(a, x)) - float(getattr(b, y))) <= 2 * TOL


def test_relabelling_values_changes_nothing():
    rng = np.random.default_rng(6)
    P = random_joint(rng, (5, 4, 3), alpha=0.5, sparsity=0.3)
    Pp = P[rng.permutation(5)][:, rng.permutation(4)][:, :, rng.permutation(3)]
    a, b = fastpid.pid(P), fastpid.pid(Pp)
    assert abs(float(a.synergy) - float(b.synergy)) <= 2 * TOL
    assert abs(float(a.redundancy) - float(b.redundancy)) <= 2 * TOL


def test_zero_rows_and_classes_equal_the_reduced_problem():
    rng = np.random.default_rng(8)
    small = random_joint(rng, (3, 4, 3), alpha=0.5)
    big = np.zeros((5, 6, 4))
    big[np.ix_([0, 2, 4], [1, 2, 3, 5], [0, 1, 3])] = small
    a, b = fastpid.pid(small), fastpid.pid(big)
    for k in ("redundancy", "unique1", "unique2", "synergy"):
        assert abs(float(getattr(a, k)) - float(getattr(b, k))) <= 2 * TOL


def test_degenerate_sources_and_target():
    rng = np.random.default_rng(9)
    # One value of X1: nothing from X1, everything X2 knows is unique to it.
    P = random_joint(rng, (1, 4, 3), alpha=0.5)
    res = fastpid.pid(P)
    mi, _, mi2 = mi_numpy(P)
    assert float(res.redundancy) == pytest.approx(0.0, abs=TOL)
    assert float(res.unique1) == pytest.approx(0.0, abs=TOL)
    assert float(res.unique2) == pytest.approx(mi2, abs=TOL)
    assert float(res.synergy) == pytest.approx(mi - mi2, abs=TOL)
    # A single target class: no information at all.
    res = fastpid.pid(random_joint(rng, (4, 3, 1)))
    for k in ("redundancy", "unique1", "unique2", "synergy", "mi"):
        assert float(getattr(res, k)) == 0.0
    # Bounds crossed by rounding are reported, not hidden; the gap adds the terms' own rounding.
    assert 0.0 <= float(res.gap) - _certify.FLOAT64_ROUNDING * (1 + math.log(12)) <= 1e-15
    # A point mass.
    P = np.zeros((3, 3, 3))
    P[1, 2, 0] = 5.0
    res = fastpid.pid(P)
    assert not np.isnan(res.synergy) and float(res.mi) == 0.0


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_one_cell_joint_has_no_information_on_any_route(backend):
    """All mass in one (x1, x2) cell: every information is 0, but its differences of
    entropies round to either side of 0 (I1 = I2 = -8.7e-19 and I_Q0 = -1.7e-18 on one
    route), which crossed the closed-form bracket and put 1.7e-18 of synergy above
    I(X1,X2;Y) = 0 (a case the certificate fuzz found). With the closed forms clamped at 0:
    every term within rounding of 0, none above I(X1,X2;Y), and the four summing to it, from
    float32 and float64, torch and numpy."""
    P = np.array([[[0.0, 0.0, 0.0], [9.9943871e01, 5.6131385e-02, 0.0]]], dtype=np.float32)
    for given in (P, P.astype(np.float64), torch.from_numpy(P)):
        res = fastpid.pid(given, backend=backend)
        terms = {k: float(getattr(res, k)) for k in ("redundancy", "unique1", "unique2", "synergy",
                                                       "mi", "mi1", "mi2")}
        assert all(0.0 <= v <= 1e-15 for v in terms.values()), terms
        assert max(terms["synergy"], terms["redundancy"] + terms["unique1"]) <= terms["mi"], terms
        parts = terms["redundancy"] + terms["unique1"] + terms["unique2"] + terms["synergy"]
        assert parts == pytest.approx(terms["mi"], abs=1e-18), terms


def test_batched_equals_one_at_a_time():
    rng = np.random.default_rng(10)
    P = np.stack([random_joint(rng, (4, 5, 3), alpha=a, sparsity=s) for a, s in [(1, 0), (0.2, 0.5), (0.5, 0.9)]])
    batch = fastpid.pid(P.reshape(3, 1, 4, 5, 3))
    assert batch.synergy.shape == (3, 1)
    for b in range(3):
        one = fastpid.pid(P[b])
        assert one.synergy.shape == ()
        assert abs(float(one.synergy) - float(batch.synergy[b, 0])) <= 2 * TOL


def test_counts_are_normalised_per_problem():
    rng = np.random.default_rng(12)
    P = random_joint(rng, (3, 3, 2))
    a = fastpid.pid(np.stack([P, 1000 * P]))
    assert abs(a.synergy[0] - a.synergy[1]) <= 2 * TOL


def test_float32_and_torch_outputs():
    P = random_joint(np.random.default_rng(13), (5, 4, 3), alpha=0.5)
    ref = fastpid.pid(P)
    assert isinstance(ref.synergy, np.ndarray) and ref.synergy.dtype == np.float64
    for dtype, tol in ((torch.float64, 1e-8), (torch.float32, 1e-5)):
        res = fastpid.pid(torch.tensor(P, dtype=dtype))
        assert isinstance(res.synergy, torch.Tensor) and res.synergy.dtype == dtype
        assert bool(res.converged) and float(res.gap) <= tol
        assert abs(float(res.synergy) - float(ref.synergy)) <= tol + 1e-6 * (dtype == torch.float32)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_peaked_joints_certify(backend):
    """Very peaked joints (Dirichlet(0.05) over the cells: masses down to 1e-112, some 0) all
    certify to 1e-8. (While the first step's target could exceed the starting mu, 6 of these
    2x2x2 joints and 1 of the 2x3x4 ones stalled at gaps up to 7e-7.)"""
    rng = np.random.default_rng(5)
    for shape in [(2, 2, 2), (3, 3, 3), (2, 3, 4)]:
        P = rng.dirichlet(np.full(int(np.prod(shape)), 0.05), size=200).reshape(200, *shape)
        res = fastpid.pid(P, backend=backend)
        assert bool(np.all(res.converged)) and float(np.max(res.gap)) <= 1e-8, shape


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_peaked_joint_stepping_far_outside_certifies(backend):
    """A very peaked 4x4x4 joint (masses down to 1e-107, tests/data) whose primal-dual step
    reached s = 1.7 on a cell while steps up to log s = 1 were taken: the barrier step after it
    shifted f down by log s and crawled (C++: 500 Newton steps, gap 2.2e-3; PyTorch: 168 to
    certify). With MAX_LOG_S = 0.3 it certifies in tens of steps."""
    from pathlib import Path

    P = np.load(Path(__file__).parent / "data" / "peaked_4x4x4_stall.npy")
    res = fastpid.pid(P, backend=backend)
    assert bool(res.converged) and float(res.gap) <= 1e-8 and int(res.iterations) <= 100


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_short_barrier_steps_keep_mu_off_its_floor_on_a_peaked_joint(backend):
    """A Dirichlet(0.02) 8x8x8 joint (tests/data/peaked_8x8x8_stall.npy) whose primal-dual
    steps give way to barrier steps early: while they were 0.001 long, mu kept falling to its
    floor and both solvers stopped at max_iter with a gap of 5.8e-3 at tol 1e-10 (and took
    166-174 iterations to 1e-8). With mu held after such steps, 54-55; raised threefold
    (MU_RAISE), 33-34."""
    from pathlib import Path

    P = np.load(Path(__file__).parent / "data" / "peaked_8x8x8_stall.npy")
    for tol in (1e-8, 1e-10):
        res = fastpid.pid(P, tol=tol, backend=backend)
        assert bool(res.converged) and float(res.gap) <= tol and int(res.iterations) <= 100


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_short_barrier_steps_raise_mu_on_wide_range_joints(backend):
    """Five joints whose masses span 20-60 decades (tests/data/short_barrier_steps.npz) whose
    primal-dual steps leave the domain, after which barrier steps crawled (Newton decrements
    of 1e3-1e4 at mu ~ 1e-8) while mu was held: 28-122 iterations to 1e-8, and up to 459 or
    max_iter at 1e-10, depending on the machine (next test; before dual_bound's shifts changed
    the path, the first four took 29-211 and wr9x5x4_30 stalled). With mu raised threefold after
    each barrier step shorter than MU_RAISE_STEP, both solvers certify either tol in 24-79."""
    from pathlib import Path

    data = np.load(Path(__file__).parent / "data" / "short_barrier_steps.npz")
    for name in data.files:
        for tol in (1e-8, 1e-10):
            res = fastpid.pid(data[name], tol=tol, backend=backend)
            assert bool(res.converged) and float(res.gap) <= tol, (name, tol)
            assert int(res.iterations) <= 100, (name, tol, int(res.iterations))


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_a_wide_range_joint_whose_slack_vanished_certifies(backend):
    """A joint whose masses span 20-60 decades (tests/data/vanishing_slack_6x6x9.npy) where,
    with the corrector's second-order term of s alone, a short step left a cell's slack near
    1e-235: the predictor's terms, divided by it, overflowed, every direction after it was
    NaN, and both solvers stopped after 22 iterations with a gap of 3.6e-4. The corrector is
    now solved again without those terms where its direction is not finite (38 iterations;
    tests/test_newton.py checks that retry directly), and with the slacks' start cut towards
    their centre this joint no longer gets there (24 iterations)."""
    from pathlib import Path

    P = np.load(Path(__file__).parent / "data" / "vanishing_slack_6x6x9.npy")
    res = fastpid.pid(P, backend=backend)
    assert bool(res.converged) and float(res.gap) <= 1e-8 and int(res.iterations) <= 100


def test_holding_mu_after_short_barrier_steps_crawls_on_wide_range_joints(monkeypatch):
    """What the previous test guards against: with mu held after short barrier steps
    (MU_RAISE = 1) the PyTorch solver crawls on joints whose masses span 20-60 decades. Since
    the corrector's second-order term of s and the slacks' start cut towards their centre
    (solver._predict, SLACK_START_CUT) the previous test's joints no longer show it, and over
    300 random such joints (3x3x3 to 9x9x9, seeds 0-299: each entry uniform times 10 to a power
    uniform over 20-60 decades, the shape and the decades drawn first) holding mu costs 6-8 %
    more iterations (6,032 -> 6,395 to 1e-8, 6,711 -> 7,249 to 1e-10, AMD EPYC, since Newton's
    mu starts from the alternation's stationarity); these are the five where it cost the most
    (tests/data/held_mu_crawls.npz, named by shape and seed). Which joint crawls worst depends
    on the machine's rounding (an earlier set had one reach max_iter on an Intel Xeon and take
    459 iterations on an AMD EPYC), so the test asserts on the set: held, the ten solves (five
    joints, two tolerances) take at least 1.5 times the raised solver's iterations in all (AMD
    EPYC: 700 against 315), and the worst at least twice its raised count (3.6)."""
    from pathlib import Path

    data = np.load(Path(__file__).parent / "data" / "held_mu_crawls.npz")

    def iterations():
        counts = []
        for name in data.files:
            for tol in (1e-8, 1e-10):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", fastpid.ConvergenceWarning)
                    counts.append(int(fastpid.pid(data[name], tol=tol, backend="torch").iterations))
        return np.array(counts)

    raised = iterations()
    monkeypatch.setattr(solver, "MU_RAISE", 1.0)
    held = iterations()
    assert held.sum() >= 1.5 * raised.sum(), (held, raised)
    assert (held / raised).max() >= 2, (held, raised)


def test_joints_with_masses_over_sixty_decades_certify():
    """Four random joints whose masses spread over 50 to 300 decades (60 after the drop of
    negligible masses; tests/data/wide_range_masses.npz): the Newton steps of their tiniest
    potentials reached 1e30 to 1e67 nats, every trial of the line search from 1 was rejected,
    and both solvers stopped with gaps of 1.8e-7 to 1.1e-4. With the first trial capped at
    MAX_POTENTIAL_STEP nats both certify, and they agree within their gaps."""
    from pathlib import Path

    data = np.load(Path(__file__).parent / "data" / "wide_range_masses.npz")
    for name in data.files:
        res = [fastpid.pid(data[name], backend=backend) for backend in ("torch", "cpp")]
        for r in res:
            assert bool(r.converged) and float(r.gap) <= 1e-8 and int(r.iterations) <= 100, name
        for term in ("redundancy", "unique1", "unique2", "synergy"):
            diff = abs(float(getattr(res[0], term)) - float(getattr(res[1], term)))
            assert diff <= float(res[0].gap + res[1].gap), (name, term)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_support_bound_certifies_a_large_clustered_joint(backend):
    """1e-10 on a clustered 40x40x6 joint (tests/data/clustered_40x40x6.npy, 1,349 cells with
    mass): at mu's floor the multipliers of the cells off the optimal support (~mu each) held
    the projected bound ~ncells mu above V, and both solvers stopped at gap 1.5e-10 (31
    iterations in the reference). The bound with them scaled down (SUPPORT_FACTOR) certifies."""
    from pathlib import Path

    P = np.load(Path(__file__).parent / "data" / "clustered_40x40x6.npy")
    res = fastpid.pid(P, tol=1e-10, backend=backend, return_coupling=True)
    assert bool(res.converged) and float(res.gap) <= 1e-10
    # The coupling behind the bound is exactly feasible.
    Q = np.asarray(res.coupling)
    assert np.allclose(Q.sum(1), P.sum(1), rtol=0, atol=1e-15) and np.allclose(Q.sum(0), P.sum(0), rtol=0, atol=1e-15)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_tight_tolerance_certifies_dense_joints(backend):
    """1e-10 is within float64's reach on dense 8x8x8 joints: every one certifies. (With ten
    Sinkhorn sweeps behind each primal bound instead of twenty, 9 of these 64 stopped at gaps
    up to ~1e-9.)"""
    rng = np.random.default_rng(7)
    P = np.stack([rng.dirichlet(np.ones(512)).reshape(8, 8, 8) for _ in range(64)])
    res = fastpid.pid(P, tol=1e-10, backend=backend)
    assert bool(np.all(res.converged)) and float(np.max(res.gap)) <= 1e-10


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_tight_tolerance_certifies_clustered_joints(backend):
    """1e-10 on two sparse clustered joints (tests/data): the primal bound at mu's floor gets
    FLOOR_POLISH_SWEEPS Sinkhorn sweeps, and both certify (with the 20 every bound then had,
    they stopped at gaps of 4.1e-10 in the reference)."""
    from pathlib import Path

    for name in ("clustered_16x16x6", "clustered_28x28x5"):
        P = np.load(Path(__file__).parent / "data" / f"{name}.npy")
        res = fastpid.pid(P, tol=1e-10, backend=backend)
        assert bool(res.converged) and float(res.gap) <= 1e-10, (name, float(res.gap))


def test_tolerance_below_float64_reach_is_honest():
    P = random_joint(np.random.default_rng(14), (6, 6, 6))
    with pytest.warns(fastpid.ConvergenceWarning, match="stalled"):  # above the gap's 4.5e-14 of rounding
        res = fastpid.pid(P, tol=1e-13)
    assert float(res.gap) > 1e-13 and not bool(res.converged)
    assert float(res.gap) <= 1e-9  # still as good as float64 allows
    assert_identities(res, P)


def test_max_iter_gives_honest_unconverged_result():
    P = random_joint(np.random.default_rng(15), (8, 8, 8), alpha=0.3)
    with pytest.warns(fastpid.ConvergenceWarning, match="raise max_iter"):
        res = fastpid.pid(P, max_iter=2)
    exact = fastpid.pid(P)
    assert not bool(res.converged) and float(res.gap) > TOL
    assert abs(float(res.synergy) - float(exact.synergy)) <= float(res.gap) / 2 + TOL


def test_base_two_and_unit_conversion():
    P = random_joint(np.random.default_rng(16), (3, 3, 3))
    nats, bits = fastpid.pid(P), fastpid.pid(P, base=2)
    assert float(bits.synergy) == pytest.approx(float(nats.synergy) / np.log(2), rel=1e-12)
    assert float(nats.to_bits().synergy) == pytest.approx(float(bits.synergy), rel=1e-12)
    assert bits.units == "bits" and nats.units == "nats"


def test_rounding_with_subnormal_deficits_stays_finite():
    """Deficits whose total is subnormal must not overflow 1 / total into inf or NaN."""
    P = np.zeros((2, 2, 1))
    P[0, 0, 0], P[1, 1, 0] = 1.0, 4e-310
    Pt = torch.from_numpy(P)[None]
    Q = torch.from_numpy(P.copy())[None]
    Q[0, 1, 1, 0] = 0.0  # the tiny cell missing: deficits of 4e-310 in row 1 and column 1
    R = solver.round_to_feasible(solver.Problem.from_joint(Pt), Q)[0].numpy()
    assert np.isfinite(R).all()
    np.testing.assert_allclose(R.sum(1), P.sum(1), atol=1e-320)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_masses_near_the_float64_floor(backend):
    rng = np.random.default_rng(31)
    for shape in [(1, 10, 11), (5, 4, 3), (9, 2, 7)]:
        P = random_joint(rng, shape, alpha=0.5, tiny=1e-300)
        res = fastpid.pid(P, backend=backend)
        assert bool(res.converged) and float(res.gap) <= TOL
        assert_identities(res, P)
        assert_value_independently(res, P, backend)


@pytest.mark.parametrize("which", ["step", "predictor"])
def test_rejected_step_with_a_nonfinite_direction_keeps_the_bounds_finite(monkeypatch, which):
    """A Newton direction that comes out NaN (as the low-rank elimination's did on tiny-mass
    problems before its extra refinement steps) is rejected, and the potentials stay where
    they were: 0 * NaN had turned them, and every later lower bound, into NaN. Here the
    second direction of that kind (toward a per-cell target: the step's; toward target 0:
    the predictor's affine one) of the batch's last active problem is NaN; both problems
    still certify."""
    rng = np.random.default_rng(1004)
    P = torch.from_numpy(np.stack([random_joint(rng, (6, 6, 6)) for _ in range(2)]))
    original = solver._newton_system
    calls = []

    def system(*args, **kwargs):
        solve = original(*args, **kwargs)

        def poisoned(target):
            df, dg, dec2 = solve(target)
            kind = "step" if target.dim() == 3 else "predictor" if not bool(target.any()) else "barrier"
            if kind == which:
                calls.append(1)
                if len(calls) == 2:
                    df, dg, dec2 = df.clone(), dg.clone(), dec2.clone()
                    df[-1], dg[-1], dec2[-1] = float("nan"), float("nan"), float("nan")
            return df, dg, dec2
        return poisoned

    monkeypatch.setattr(solver, "_newton_system", system)
    ref = solver.solve_exact(P, 1e-8)
    assert len(calls) > 2
    assert torch.isfinite(ref.lower).all() and torch.isfinite(ref.upper).all()
    assert torch.all(ref.upper - ref.lower <= 1e-8)
    assert torch.isfinite(ref.f[solver.Problem.from_joint(P).m1]).all()




def test_a_solve_stalled_one_way_round_is_tried_the_other_way():
    """A peaked 6x6x2 joint (three cells of 1/3, the others 1e-8 to 1e-11; tests/data): the
    C++ solver stalled at gap 8.4e-9 for tol=1e-9, where the PyTorch solver certifies 8e-10.
    A solve that stops short of tol is tried once more with the sources the other way round,
    keeping the narrower bracket (a Dirichlet(0.1) 150x150x3 joint: 1.0e-6 after 500 Newton
    steps one way, 9.6e-9 in 40 the other). Since a stalled step is extrapolated along its
    direction this joint certifies to 1e-10 either way, so a cap of 24 Newton steps stands in
    for the stall here: one way the solve stops at 1.27e-9, the other certifies 9.8e-10."""
    from pathlib import Path

    from fastpid import _cpu_route

    P = np.load(Path(__file__).parent / "data" / "peaked_6x6x2_one_way_stall.npy")
    tried = []
    retry = _cpu_route._other_way_where_short

    def spy(ext, flat, swap, options, scale, terms, gap, converged, broken, iterations):
        before = gap.copy()
        retry(ext, flat, swap, options, scale, terms, gap, converged, broken, iterations)
        tried.append((float(before[0]), float(gap[0])))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_cpu_route, "_other_way_where_short", spy)
        res = fastpid.pid(P, tol=1e-9, backend="cpp", max_iter=24)
    assert len(tried) == 1 and tried[0][0] > 1e-9 >= tried[0][1]
    assert bool(res.converged) and float(res.gap) <= 1e-9


def test_the_general_route_keeps_the_narrower_bracket_of_the_two_orientations():
    """The same retry in the general route (gradients, other backends), by a stand-in solver
    whose bracket is narrow for the problems the other way round: the narrower bracket is
    kept with its potentials and iterations, and problems that certified are not solved
    again."""
    from fastpid import api

    P = torch.rand(3, 2, 4, 2, dtype=torch.float64)
    calls = []

    def solve(Q, part):  # the first problem stalls as given; every problem certifies transposed
        calls.append(Q.shape[0])
        transposed = Q.shape[1] == 4
        width = torch.full((Q.shape[0],), 1e-10 if transposed else 1e-6, dtype=torch.float64)
        if not transposed:
            width[1:] = 1e-10
        f = torch.full((Q.shape[0], Q.shape[1], 2), 2.0 if transposed else 1.0)
        g = torch.full((Q.shape[0], Q.shape[2], 2), 2.0 if transposed else 1.0)
        return solver.Solution(torch.zeros(Q.shape[0], dtype=torch.float64), width, f, g, torch.full((Q.shape[0],), 7 if transposed else 9),
                               None)

    sol = api._per_orientation(P, solve, None, torch.zeros(3, dtype=torch.bool))
    sol = api._other_way_where_short(P, solve, None, torch.zeros(3, dtype=torch.bool), sol, 1e-8)
    assert calls == [3, 1]
    assert (sol.upper - sol.lower).tolist() == [1e-10, 1e-10, 1e-10]
    assert sol.iterations.tolist() == [7, 9, 9]
    assert sol.f[0].eq(2.0).all() and sol.f[1:].eq(1.0).all() and sol.g.shape == (3, 4, 2)
