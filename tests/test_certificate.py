"""Certificate integrity: every reported gap bounds the error of every term, whatever the
input's masses, scale and dtype, and a broken solver bracket is never reported as one."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import fastpid
from fastpid import _certify, _cpu_route, api, cpp, solver
from fastpid.exceptions import ConvergenceWarning

BACKENDS = ["cpp", "torch"]


def and_gate() -> np.ndarray:
    P = np.zeros((2, 2, 2))
    for a in range(2):
        for b in range(2):
            P[a, b, a & b] = 0.25
    return P


def _and_reference():
    res = fastpid.pid(and_gate(), base=2)
    return {k: float(getattr(res, k)) for k in ("redundancy", "unique1", "unique2", "synergy")}


def test_and_gate_reference_values():
    ref = _and_reference()
    hy = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert ref["synergy"] == pytest.approx(0.5, abs=1e-8)
    assert ref["redundancy"] == pytest.approx(hy - 0.5, abs=1e-8)  # 0.311 bits
    assert ref["unique1"] == pytest.approx(0.0, abs=1e-8)


def _with_tiny_outcome(mass: float, where: str) -> np.ndarray:
    """AND on a 3x3x3 alphabet with one extra outcome of probability ``mass`` that uses a
    new target value, a new source value, or both."""
    P = np.zeros((3, 3, 3))
    P[:2, :2, :2] = and_gate()
    cell = {"new_y": (0, 1, 2), "new_x1": (2, 0, 1), "new_all": (2, 2, 2)}[where]
    P[cell] = mass
    return P


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mass", [1e-170, 1e-300, 2.2250738585072014e-308, 1e-320, 5e-324])
@pytest.mark.parametrize("where", ["new_y", "new_x1", "new_all"])
def test_tiny_outcomes_keep_the_certificate(backend, mass, where):
    """Masses far below the range of products of two masses: the answer must be AND's, with
    an honest gap (the old solver reported wrong terms with gap 0, or NaN)."""
    res = fastpid.pid(_with_tiny_outcome(mass, where), backend=backend, base=2)
    ref = _and_reference()
    assert bool(res.converged) and float(res.gap) <= 1e-8 / np.log(2)  # tol 1e-8 nats, in bits
    for k, v in ref.items():
        got = float(getattr(res, k))
        assert np.isfinite(got)
        assert abs(got - v) <= float(res.gap) + 1e-9, (k, got, v)


def test_drop_bound_is_tiny_but_counted():
    P = torch.from_numpy(_with_tiny_outcome(1e-200, "new_y") / 1.0)[None]
    kept, bound = _certify.drop_negligible(P)
    assert float(kept[0, 0, 1, 2]) == 0.0 and float(kept.sum()) == pytest.approx(1.0, abs=1e-15)
    assert 0 < float(bound[0]) < 1e-190
    clean = torch.from_numpy(and_gate())[None]
    assert float(_certify.drop_negligible(clean)[1][0]) == 0.0


def test_drop_bound_covers_a_real_change():
    """The bound is a theorem about any mass eps, checked where the change is measurable:
    mixing AND with a 1e-3 share of another joint moves every term by less than it."""
    rng = np.random.default_rng(3)
    E = rng.dirichlet(np.ones(8)).reshape(2, 2, 2)
    for eps in (1e-3, 1e-5):
        mix = (1 - eps) * and_gate() + eps * E
        a, b = fastpid.pid(and_gate()), fastpid.pid(mix)
        T = 3 * eps / (1 - eps)
        bound = 9 * (T * math.log(8) + (-T * math.log(T) - (1 - T) * math.log1p(-T)))
        for k in ("redundancy", "unique1", "unique2", "synergy"):
            assert abs(float(getattr(a, k)) - float(getattr(b, k))) <= bound


def _crossed_closed_forms(rng, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` joints with X2 independent of (X1, Y) whose C++ closed-form bracket rounding
    crossed (I_Q0 = I(X1;Y) = max(I1, I2) but for an ulp; about half of such joints), as the
    routes normalise them (integer masses over a power of two: each route's division by the
    total is then the one rounding of mass / sum), and those normalised joints."""
    given, normalised = [], []
    for _ in range(50 * count):  # about half cross; a bounded search fails below, never hangs
        if len(given) == count:
            break
        a, b = rng.integers(1, 8, (6, 4)).astype(float), rng.integers(1, 8, 5).astype(float)
        counts = np.einsum("ay,b->aby", a, b)
        P = counts / counts.sum()
        lo0, up0 = solver.closed_form_bracket(torch.from_numpy(P[None]), closed_forms=cpp.closed_forms)[3:]
        if float(lo0[0]) > float(up0[0]):
            given.append(counts / 2.0 ** np.ceil(np.log2(counts.sum())))
            normalised.append(P)
    assert len(given) == count, "no joints whose closed-form bracket rounding crosses"
    return np.stack(given), np.stack(normalised)


@pytest.mark.parametrize("joints", ["dirichlet", "crossed_closed_forms"])
@pytest.mark.parametrize("method,route", [("exact", "general"), ("fast", "general"), ("exact", "cpu"),
                                          ("fast", "cpu")])
def test_broken_bracket_falls_back_with_a_warning(monkeypatch, method, route, joints):
    """A solver bracket that is not finite, or crossed, must never be clamped into gap 0, on
    either route of pid() (the general one, and fastpid._cpu_route's for C++ solves of CPU
    inputs). Where the closed-form bracket it falls back on is itself crossed by rounding
    (X2 independent of (X1, Y)), the gap is by how much, not the negative width."""
    if joints == "crossed_closed_forms" and not cpp.available()[0]:
        pytest.skip("the crossed brackets are the C++ closed forms'")
    def cross(lower, upper):
        lower[0] = math.inf
        upper[1] = lower[1] - 0.1

    if route == "general":
        real = api._solve_oriented

        def broken(*args, **kwargs):
            sol = real(*args, **kwargs)
            sol.lower, sol.upper = sol.lower.clone(), sol.upper.clone()
            cross(sol.lower, sol.upper)
            return sol

        monkeypatch.setattr(_cpu_route, "native_pid", lambda *a, **k: None)
        monkeypatch.setattr(api, "_solve_oriented", broken)
    else:
        ext = _cpu_route._extension()

        class Crossed:
            """The extension, whose fused solve_pid crosses the solver's bounds before the
            native finishing step (pid_terms, the same step solve_pid ends with)."""

            def __getattr__(self, name):
                return getattr(ext, name)

            def solve_pid(self, P, swap, opt, scale):
                lower, upper, _, _, iterations = ext.solve(P, opt)
                if len(lower) == 3:  # the batch; not a retry of its stalled problems
                    cross(lower, upper)
                terms, gap, broken = ext.pid_terms(P, lower, upper, scale, at_upper=not opt.newton)
                converged = gap <= opt.tol
                return terms, gap, converged, broken, iterations, bool(converged.all() and not broken.any())

        monkeypatch.setattr(_cpu_route, "_extension", Crossed)
    rng = np.random.default_rng(0)
    if joints == "crossed_closed_forms":
        P, normalised = _crossed_closed_forms(rng, 3)
        with pytest.warns(ConvergenceWarning, match="no valid bracket"):
            res = fastpid.pid(P, method=method)
        lo0, up0 = (x.numpy() for x in solver.closed_form_bracket(torch.from_numpy(normalised),
                                                                  closed_forms=cpp.closed_forms)[3:])
        floor = float(_certify.rounding(np.zeros(1), torch.float64, normalised[0].size)[0])
        for b in (0, 1):
            assert lo0[b] - up0[b] > 0 and res.gap[b] == lo0[b] - up0[b] + floor  # was up0 - lo0, negative
        return
    P = rng.dirichlet(np.ones(27), size=3).reshape(3, 3, 3, 3)
    with pytest.warns(ConvergenceWarning, match="no valid bracket"):
        res = fastpid.pid(P, method=method)
    mi, mi1, mi2, lo0, up0 = (x.numpy() for x in solver.closed_form_bracket(torch.from_numpy(P)))
    for b in (0, 1):
        assert not res.converged[b]
        assert res.gap[b] == pytest.approx(up0[b] - lo0[b], rel=1e-12)
        assert res.gap[b] > 0
    assert np.all(np.isfinite(res.synergy))
    if method == "exact":  # the third problem, stopped short, is told its own reason beside them
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = fastpid.pid(P, method=method, max_iter=1)
        messages = sorted(str(w.message) for w in caught)
        assert not res.converged[2]
        assert len(messages) == 2 and messages[0].startswith("1 of 3 problem(s) stopped"), messages
        assert messages[1].startswith("2 problem(s) got no valid bracket"), messages


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_primal_bound_of_a_non_finite_coupling_is_infinite(bad):
    """A coupling estimate with a NaN or infinite entry has no feasible rounding: its bound is
    +inf (always valid), never a finite number (NaN entries were skipped by the sums as if
    they were no mass, and a singular joint's "bound" then fell below V), and it is not kept
    as the best coupling."""
    rng = np.random.default_rng(2)
    P = torch.from_numpy(rng.dirichlet(np.ones(27), size=2).reshape(2, 3, 3, 3))
    prob = solver.Problem.from_joint(P)
    Q = P.clone()
    Q[0, 1, 2, 0] = bad
    best = solver.BestCoupling(P, prob)
    before = best.value.clone()
    value = solver.primal_bound(prob, Q, best)
    assert value[0] == math.inf
    assert value[1] == pytest.approx(float(solver.coupling_mi(P[1:])[0]), rel=1e-12)  # P is feasible
    assert best.value[0] == before[0] and torch.isfinite(best.coupling).all()


def test_rounding_level_crossing_is_not_a_break():
    lo = torch.tensor([0.5 + 1e-15])
    up = torch.tensor([0.5])
    lower, upper, broken = _certify.checked_bracket(lo, up, torch.tensor([0.4]), torch.tensor([0.6]))
    assert not bool(broken[0])
    assert float(upper - lower) == pytest.approx(1e-15, rel=0.2)


def _gates_with_known_terms():
    """Joints whose PID is known exactly (nats): XOR (synergy log 2), COPY of two bits (each
    unique log 2), a shared bit (redundancy log 2)."""
    xor, copy, rdn = np.zeros((2, 2, 2)), np.zeros((2, 2, 4)), np.zeros((2, 2, 2))
    for a in range(2):
        for b in range(2):
            xor[a, b, a ^ b] = copy[a, b, 2 * a + b] = 0.25
        rdn[a, a, a] = 0.5
    log2 = math.log(2.0)
    return [(xor, dict(redundancy=0.0, unique1=0.0, unique2=0.0, synergy=log2)),
            (copy, dict(redundancy=0.0, unique1=log2, unique2=log2, synergy=0.0)),
            (rdn, dict(redundancy=log2, unique1=0.0, unique2=0.0, synergy=0.0))]


@pytest.mark.parametrize("method", ["exact", "fast", "proxy"])
@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_the_gap_covers_the_rounding_of_the_terms(method, backend):
    """Every term within the gap of its exact value, float64's own rounding included: XOR's
    synergy came out log 2 - 1.1e-16 with a gap of 0 (the closed forms' rounding, which the gap
    left out), so |S - log 2| <= gap failed on the textbook case."""
    for P, exact in _gates_with_known_terms():
        for base, dtype in ((None, torch.float64), (2, torch.float64), (None, torch.float32)):
            res = fastpid.pid(torch.from_numpy(P).to(dtype), method=method, backend=backend, base=base)
            unit = 1.0 if base is None else math.log(base)
            for term, value in exact.items():
                assert abs(float(getattr(res, term)) - value / unit) <= float(res.gap), (term, base, dtype)
            assert bool(res.converged) or method == "proxy"  # the proxy's bracket on COPY is log 2 wide


@pytest.mark.parametrize("method", ["exact", "proxy"])
@pytest.mark.parametrize("shape", [(2, 2, 50_000), (4, 4, 50_000)])
def test_the_gap_covers_the_rounding_of_long_sums(method, shape):
    """Independent uniform joints, every term 0: the terms' rounding over 2 * 10^5 cells reached
    12.7 eps (1 + log cells) (3.7e-14 nats), the most measured, which the gap must cover."""
    P = np.full(shape, 1.0 / math.prod(shape))
    res = fastpid.pid(P, method=method)
    for term in ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2"):
        assert abs(float(getattr(res, term))) <= float(res.gap), term


def _float32_problem(seed: int, shape=(3, 4, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(int(np.prod(shape)), 0.5)).reshape(shape)
    return (P * rng.uniform(0.3, 3.0)).astype(np.float32)  # does not sum to 1 in float32


@pytest.mark.parametrize("seed", range(6))
def test_float32_gap_bounds_the_error_against_float64(seed):
    P32 = _float32_problem(seed)
    res = fastpid.pid(torch.from_numpy(P32))
    truth = fastpid.pid(P32.astype(np.float64), tol=1e-10)
    assert res.synergy.dtype == torch.float32
    for k in ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2"):
        err = abs(float(getattr(res, k)) - float(getattr(truth, k)))
        assert err <= float(res.gap) + float(truth.gap), (k, err, float(res.gap))
    assert float(res.mi) >= 0 and float(res.mi1) >= 0 and float(res.mi2) >= 0


def test_float32_rounding_keeps_a_converged_solve_converged():
    """A joint (found by fuzzing float32 inputs) whose float64 solve at tol=1e-5 stops at a
    gap of 9.99e-6: float32 rounding (2^-23 I(X1,X2;Y) = 1.6e-7 nats) took the reported gap
    to 1.01e-5, and the problem was reported unconverged. The solvers now aim below tol by
    the rounding, so the reported gap is within tol."""
    P = torch.from_numpy(np.load(Path(__file__).parent / "data" / "float32_gap_at_tol_10x13x5.npy"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        res = fastpid.pid(P)
    assert res.synergy.dtype == torch.float32
    assert bool(res.converged) and float(res.gap) <= 1e-5
    truth = fastpid.pid(P.double(), tol=1e-10)
    err = abs(float(res.synergy) - float(truth.synergy))
    assert err <= float(res.gap) + float(truth.gap)


def test_float32_problems_converge_at_the_default_tol():
    rng = np.random.default_rng(11)
    for _ in range(60):
        shape = tuple(int(v) for v in rng.integers(1, 12, size=3))
        P = rng.dirichlet(np.full(int(np.prod(shape)), 10 ** rng.uniform(-2, 1))).reshape(shape)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            res = fastpid.pid(torch.from_numpy(P.astype(np.float32)))
        assert bool(res.converged) and float(res.gap) <= 1e-5, (shape, float(res.gap))


@pytest.mark.parametrize("tol, mi", [(1e-5, 1.3), (1e-5, 20.0), (1e-6, 7.0), (3e-7, 2.0)])
def test_solver_tol_leaves_room_for_the_float32_rounding(tol, mi):
    cells = 8 * 8 * 8
    rounded = _certify.rounding(torch.tensor([0.1, mi], dtype=torch.float64), torch.float32, cells)
    target = _certify.solver_tol(tol, rounded)
    assert 0 < target < tol
    # A solve that stops exactly at the target is reported within tol.
    reported = _certify.output_gap(torch.tensor([target], dtype=torch.float64), torch.tensor([mi], dtype=torch.float64),
                                   torch.float32, 1.0, cells)
    assert float(reported) <= tol
    # float64 results: only the computation's own rounding, the same for every problem.
    float64 = _certify.rounding(torch.tensor([0.1, mi], dtype=torch.float64), torch.float64, cells)
    assert float64.tolist() == [_certify.FLOAT64_ROUNDING * (1 + math.log(cells))] * 2
    target = _certify.solver_tol(tol, float64)
    assert target < tol and float(_certify.output_gap(torch.tensor([target], dtype=torch.float64),
                                                      torch.tensor([mi], dtype=torch.float64), torch.float64, 1.0,
                                                      cells)) <= tol


def test_a_problem_lost_to_rounding_sets_no_target_for_the_others():
    """In one float32 batch, a problem whose rounding alone reaches tol (it can never be reported
    converged) must not take the others' room away: they still aim below tol by their rounding."""
    tol = 1e-7
    rounded = _certify.rounding(torch.tensor([math.log(4.0), 0.05], dtype=torch.float64), torch.float32, 16)
    assert float(rounded[0]) >= tol > float(rounded[1])
    target = _certify.solver_tol(tol, rounded)
    assert target <= tol - float(rounded[1])


def test_mixed_float32_batch_blames_rounding_only_where_it_reaches_tol():
    """Y = (X1, X2) on 2x2x4 has I(X1,X2;Y) = log 4, whose float32 rounding (1.65e-7) exceeds
    tol = 1e-7; the weakly dependent problem beside it (I = 0.008) has room, but two steps do
    not certify it: each is told its own reason."""
    copy = torch.zeros(2, 2, 4)
    for a in range(2):
        for b in range(2):
            copy[a, b, 2 * a + b] = 0.25
    weak = torch.full((2, 2, 4), 1.0 / 16)
    weak[0, 0, 0] += 0.03
    weak[1, 1, 3] -= 0.03
    batch = torch.stack([copy, weak])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fastpid.pid(batch, tol=1e-7, max_iter=2)
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning))
    assert len(messages) == 2, messages
    assert messages[0].startswith("1 of 2 problem(s) report gap > tol") and "float32" in messages[0]
    assert messages[1].startswith("1 of 2 problem(s) stopped with gap > tol") and "max_iter" in messages[1]
    assert res.converged.tolist() == [False, False]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert bool(fastpid.pid(weak, tol=1e-7).converged)


def test_float32_tol_below_the_rounding_says_so():
    P = torch.from_numpy(_float32_problem(0, shape=(4, 4, 4)))
    with pytest.warns(ConvergenceWarning, match="terms carry up to .* float32"):
        res = fastpid.pid(P, tol=1e-9)
    assert 2.0**-23 * float(res.mi) > 1e-9 and not bool(res.converged)
    truth = fastpid.pid(P.double(), tol=1e-10)
    assert abs(float(res.synergy) - float(truth.synergy)) <= float(res.gap) + float(truth.gap)


def test_float32_single_target_value_is_exactly_zero():
    P = np.random.default_rng(1).random((4, 5, 1)).astype(np.float32) * 7.3
    res = fastpid.pid(torch.from_numpy(P))
    for k in ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2"):
        assert float(getattr(res, k)) == 0.0


def test_mutual_informations_are_never_negative():
    rng = np.random.default_rng(5)
    # Near-independent problems: MI is a difference of nearly equal entropies.
    a, b, c = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(3))
    P = np.einsum("i,j,k->ijk", a, b, c)[None] * (1 + 1e-15 * rng.standard_normal((20, 4, 5, 3)))
    res = fastpid.pid(P)
    for k in ("mi", "mi1", "mi2", "redundancy", "unique1", "unique2", "synergy"):
        assert np.all(getattr(res, k) >= 0.0), k


def test_cvx_backend_refuses_gradients():
    pytest.importorskip("cvxpy")
    P = torch.rand(2, 2, 2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="no gradient"):
        fastpid.pid(P, backend="cvx")
    res = fastpid.pid(P.detach(), backend="cvx")
    assert not res.synergy.requires_grad


@pytest.mark.parametrize("base", [1, 1.0, 0.5, 0, -2, math.inf])
def test_bad_bases_are_refused(base):
    with pytest.raises(ValueError, match="base must be"):
        fastpid.pid(and_gate(), base=base)
    with pytest.raises(ValueError, match="base must be"):
        fastpid.pid(and_gate()).in_base(base)


@pytest.mark.parametrize("name", ["max_iter", "steps"])
def test_iteration_counts_beyond_int32_are_refused_clearly(name):
    method = "exact" if name == "max_iter" else "fast"
    with pytest.raises(ValueError, match=f"{name} must be at most 2147483647"):
        fastpid.pid(and_gate(), method=method, **{name: 2**31})


def test_scale_invariance_up_to_huge_counts():
    P = np.random.default_rng(2).dirichlet(np.ones(27)).reshape(3, 3, 3)
    ref = fastpid.pid(P)
    for scale in (1e-300, 1e300):
        res = fastpid.pid(P * scale)
        assert float(res.synergy) == pytest.approx(float(ref.synergy), abs=float(ref.gap) + float(res.gap))


def test_memory_estimate_refuses_oversized_solves(monkeypatch):
    from fastpid import _resources

    monkeypatch.setattr(_resources, "available_bytes", lambda device: 1 << 30)
    P = np.random.default_rng(0).random((40, 40, 200))
    with pytest.raises(MemoryError, match=r"needs about \d+\.\d+ GiB, but 1 GiB is free"):
        fastpid.pid(P, backend="torch")


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("kw", [{}, {"backend": "torch"}, {"method": "fast"}, {"method": "proxy"}])
def test_a_broadcast_view_too_large_to_copy_is_refused_up_front(monkeypatch, kind, kw):
    """600 problems of 64x64x64 as a view of one (expand, broadcast_to) store 2 MB but their
    float64 copy needs 1.2 GiB: a TypeError of 22,000 characters (the extension's argument
    conversion) or torch's allocator error before; a MemoryError with the numbers now."""
    from fastpid import _resources

    monkeypatch.setattr(_resources, "available_bytes", lambda device: 1 << 30)
    one = np.random.default_rng(1).random((64, 64, 64))
    P = (np.broadcast_to(one, (600, 64, 64, 64)) if kind == "numpy"
         else torch.from_numpy(one)[None].expand(600, 64, 64, 64))
    with pytest.raises(MemoryError, match=r"shape \(600, 64, 64, 64\) .* needs 1\.17 GiB .* 1 GiB is free"):
        fastpid.pid(P, **kw)


def test_the_general_route_asks_for_its_copies_before_making_them(monkeypatch):
    """The general route holds about four input-sized float64 arrays before its solve's own
    estimate: a broadcast input whose one copy fitted grew the process by 4 GB (on a 1 GB
    copy) before that estimate refused it."""
    from fastpid import _resources

    monkeypatch.setattr(_resources, "available_bytes", lambda device: 2 << 30)
    P = np.broadcast_to(np.random.default_rng(1).random((64, 64, 64)), (600, 64, 64, 64))   # 1.2 GiB a copy
    with pytest.raises(MemoryError, match=r"needs 4\.69 GiB as the 4 float64 copies the solve makes, but 2 GiB"):
        fastpid.pid(P, backend="torch")


def test_a_huge_meta_tensor_is_named_as_such():
    with pytest.raises(TypeError, match="meta tensor"):
        fastpid.pid(torch.empty(1, 2, 2, 2, device="meta").expand(10**9, 2, 2, 2))


def test_a_small_source_with_a_large_one_is_not_refused(monkeypatch):
    """The PyTorch solver's Schur complement is over the smaller source's potentials; the
    estimate counted the whole Hessian, ((n1 + n2) ny)^2, and refused 2x2000x50 for 112 GiB
    (it peaks at 0.4 GB), and 4x300x460 with backend='auto' for 218 GiB."""
    from fastpid import _resources

    monkeypatch.setattr(_resources, "available_bytes", lambda device: 1 << 30)
    res = fastpid.pid(np.random.default_rng(0).random((2, 2000, 50)), backend="torch")
    assert bool(res.converged)
    flat = torch.ones(1, 4, 300, 460, dtype=torch.float64)
    assert _resources.estimate_bytes(flat, "exact", "torch") < 20 * 2**30


def test_tiny_sources_with_many_classes_need_little_memory():
    # 2x2x4000 took 3.2 GB with the dense Schur complement over 8000 unknowns; the low-rank
    # elimination holds a few arrays of the joint's size.
    flat = torch.ones(1, 2, 2, 4000, dtype=torch.float64)
    from fastpid import _resources

    assert _resources.estimate_bytes(flat, "exact", "torch") < 50 * 2**20


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tol_below_float64_reach_is_called_a_stall(backend):
    """A tol float64 cannot certify stops the solver early (a stall, not max_iter): the warning
    must say so, since more iterations would not help (here they give the same gap). (1e-13: above
    the 3.6e-14 the gap adds for the terms' rounding, below the ~4e-13 the solver reaches.)"""
    P = np.random.default_rng(11).dirichlet(np.ones(60)).reshape(3, 4, 5)
    with pytest.warns(ConvergenceWarning, match="stalled with gap > tol=1e-13") as caught:
        res = fastpid.pid(P, tol=1e-13, backend=backend)
    assert len(caught) == 1 and "max_iter=500" in str(caught[0].message)
    assert not res.converged and res.iterations < 500 and res.gap < 1e-10
    with pytest.warns(ConvergenceWarning, match="stalled .* before max_iter=5000"):
        more = fastpid.pid(P, tol=1e-13, backend=backend, max_iter=5000)
    assert more.gap == res.gap and more.iterations == res.iterations


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stall_within_max_iter_newton_steps_is_not_blamed_on_max_iter(backend):
    """max_iter caps the Newton steps, but the warning compared it with every iteration,
    alternation included: a solve that stalled after 16 Newton steps (26 iterations) under
    max_iter=20 was told to raise max_iter, though max_iter=500 gives the same gap."""
    P = np.random.default_rng(11).dirichlet(np.ones(60)).reshape(3, 4, 5)
    res = fastpid.pid(P, tol=1e-13, backend=backend)
    cap = int(res.iterations) - 2     # above its Newton steps, below all its iterations
    with pytest.warns(ConvergenceWarning, match=f"stalled .* before max_iter={cap}"):
        capped = fastpid.pid(P, tol=1e-13, backend=backend, max_iter=cap)
    assert capped.gap == res.gap


@pytest.mark.parametrize("backend", BACKENDS)
def test_too_few_iterations_are_called_so(backend):
    P = np.random.default_rng(11).dirichlet(np.ones(60)).reshape(3, 4, 5)
    with pytest.warns(ConvergenceWarning, match=r"stopped with gap > tol=1e-08 .*raise max_iter \(now 2\)"):
        res = fastpid.pid(P, max_iter=2, backend=backend)
    assert not res.converged


def _ulps_of_joint_entropy(P: np.ndarray, k: int) -> float:
    """k ulps of H(X1,X2,Y): the closed forms are differences of entropies of that size, so
    their float64 rounding (which the gap leaves out) is a few of its ulps."""
    p = P[P > 0] / P.sum()
    return k * float(np.spacing(-(p * np.log(p)).sum()))


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("n", [48, 64, 100])
def test_terms_within_the_gap_and_a_few_ulps_on_modular_sums(backend, n):
    """Y = (X1 + X2) mod n, uniform: R = U1 = U2 = 0 and S = log n exactly. The C++ closed
    forms summed their entropies in long running sums: terms off by up to 5.2e-14 nats where
    the gap was 0 (64x64x64 ... 100x100x100)."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    P = np.zeros((n, n, n))
    P[i, j, (i + j) % n] = 1.0
    slack = _ulps_of_joint_entropy(P, 4)
    for method in ("exact", "proxy"):
        res = fastpid.pid(P, method=method, backend=backend)
        errors = [float(res.redundancy), float(res.unique1), float(res.unique2),
                  float(res.synergy) - math.log(n)]
        assert max(abs(e) for e in errors) <= float(res.gap) + slack, (method, errors, float(res.gap))


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_closed_forms_of_a_large_joint_to_a_few_ulps(backend):
    """I(X1,X2;Y) of a Dirichlet 100x100x100 joint against exactly rounded sums: the C++
    closed forms were off by 1.95e-14 (the PyTorch ones by 5.3e-15)."""
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(10**6)).reshape(100, 100, 100)

    def entropy(a):
        a = a[a > 0]
        return -math.fsum((a * np.log(a)).tolist())

    exact = entropy(P.sum(2)) + entropy(P.sum((0, 1))) - entropy(P)
    mi = float(fastpid.pid(P, method="proxy", backend=backend).mi)
    assert abs(mi - exact) <= _ulps_of_joint_entropy(P, 4)
