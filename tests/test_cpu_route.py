"""The native route of pid() for C++ solves of CPU inputs (fastpid._cpu_route; methods "exact",
"fast" and "proxy") against the general route: the same joint up to the rounding of its total
(summed natively here, by torch there), so the same iterations and convergence, and every term
and gap equal to 1e-13 nats."""
import warnings

import numpy as np
import pytest
import torch

import fastpid
from fastpid import _cpu_route, api, cpp
from fastpid._validate import result_dtype
from helpers import random_joint

pytestmark = pytest.mark.skipif(not cpp.available()[0], reason="the C++ solver is not built")


def _general(monkeypatch, P, **kw):
    """pid() by the general route only."""
    with monkeypatch.context() as m:
        m.setattr(_cpu_route, "native_pid", lambda *a, **k: None)
        return fastpid.pid(P, **kw)


def _assert_same(got, ref):
    assert (got.method, got.backend, got.base, got.status, got.coupling) == \
        (ref.method, ref.backend, ref.base, ref.status, ref.coupling)
    nats = 1.0 / (np.log(got.base) if got.base else 1.0)  # one nat in the results' units
    for name in ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2", "gap",
                 "converged", "iterations"):
        a, b = getattr(got, name), getattr(ref, name)
        assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape, name
        if name in ("converged", "iterations"):
            assert np.array_equal(np.asarray(a), np.asarray(b)), name
        else:
            # Each ends where the last Newton step leaves it: joints 1e-17 apart (the rounding
            # of their totals) ended with gaps 1.2e-14 nats apart (1e-13 masses) and a
            # redundancy 4.5e-14 apart (4x4x3; both certified).
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-13 * nats, err_msg=name)


def _inputs():
    rng = np.random.default_rng(11)
    cases = {
        "odd sizes": np.stack([random_joint(rng, (5, 3, 7)) for _ in range(3)]),
        "single 1x1x1": np.ones((1, 1, 1)),
        "single 1x4x3": random_joint(rng, (1, 4, 3)),
        "zeros": np.stack([random_joint(rng, (6, 6, 4), sparsity=0.6) for _ in range(4)]),
        "tiny masses": np.stack([random_joint(rng, (4, 5, 3), sparsity=0.3, tiny=1e-13) for _ in range(3)]),
        "equal sizes, mixed orientations": np.stack(
            [random_joint(rng, (6, 6, 5), sparsity=s) for s in (0.0, 0.5, 0.7, 0.2)]),
        "X2 larger": random_joint(rng, (3, 9, 4)),
        "batch shape (2, 3)": np.stack([random_joint(rng, (4, 4, 3)) for _ in range(6)]).reshape(2, 3, 4, 4, 3),
        "counts": rng.integers(0, 5, size=(2, 5, 4, 3)),
        "bool": rng.random((4, 3, 2)) < 0.5,
        "float32": random_joint(rng, (5, 4, 3)).astype(np.float32),
        "many classes (low-rank)": random_joint(rng, (2, 3, 300)),
        # I(Q0) = I(X1;Y) = max(I1, I2): the closed-form bracket's ends meet, to rounding.
        "X2 independent of (X1, Y)": np.einsum("iy,j->ijy", random_joint(rng, (4, 3)), random_joint(rng, (5,))),
    }
    cases["bool"][0, 0, 0] = True
    small = cases["tiny masses"]
    small[0, 0, 0, 0] = 1e-50  # above NEGLIGIBLE: solved as it is
    # Below NEGLIGIBLE (1e-60): dropped, the rest renormalised, the gap widened by the bound.
    negligible = np.stack([random_joint(rng, (4, 3, 5)) for _ in range(3)])
    negligible[0, 1, 2, 3] = 1e-70
    negligible[2, 0, :, 0] = 1e-200
    cases["negligible masses"] = negligible
    cases["peaked Dirichlet(0.05)"] = rng.dirichlet(np.full(6 * 6 * 20, 0.05), size=3).reshape(3, 6, 6, 20)
    return cases


# Numpy inputs of every case, float64 torch tensors of the float64 ones, and torch float32,
# float16 and bfloat16 tensors of a few (results in float32, their rounding in the gap).
_NARROW_CASES = ("odd sizes", "zeros", "tiny masses", "many classes (low-rank)", "X2 independent of (X1, Y)")
_CASES = [(name, None) for name in _inputs()] + [
    (name, torch.float64) for name, P in _inputs().items() if P.dtype == np.float64] + [
    (name, dtype) for name in _NARROW_CASES for dtype in (torch.float32, torch.float16, torch.bfloat16)]


_METHODS = ("exact", "fast", "proxy")


def _native(P, method="exact"):
    """_cpu_route.native_pid of P with pid()'s defaults."""
    return _cpu_route.native_pid(P, method, api.DEFAULT_TOL[result_dtype(P)], 500, 20, None, "auto")


@pytest.mark.parametrize("method", _METHODS)
@pytest.mark.parametrize("name,dtype", _CASES, ids=str)
def test_same_results_as_the_general_route(monkeypatch, name, dtype, method):
    P = _inputs()[name]
    P = P if dtype is None else torch.from_numpy(P).to(dtype)
    assert _native(P, method) is not None  # this route takes it
    more = ({"steps": 3},) if method == "fast" else ({"max_iter": 3},) if method == "exact" else ()
    for kw in ({}, {"base": 2}, {"tol": 1e-6}, {"backend": "cpp"}, *more):
        with warnings.catch_warnings():  # three Newton steps stop short: both routes warn (below)
            warnings.simplefilter("ignore", fastpid.ConvergenceWarning)
            _assert_same(fastpid.pid(P, method=method, **kw), _general(monkeypatch, P, method=method, **kw))


@pytest.mark.parametrize("dtype,kw", [(None, {"max_iter": 2}), (torch.float32, {"max_iter": 2}),
                                      (torch.float32, {"tol": 1e-9})], ids=str)
def test_unconverged_solves_warn_alike(monkeypatch, dtype, kw):
    """Stopped short (max_iter), or float32 results whose rounding alone passes tol: the same
    warnings, with the same numbers, on both routes."""
    P = random_joint(np.random.default_rng(3), (6, 5, 4))
    P = P if dtype is None else torch.from_numpy(P).to(dtype)
    with pytest.warns(fastpid.ConvergenceWarning) as got:
        res = fastpid.pid(P, **kw)
    with pytest.warns(fastpid.ConvergenceWarning) as ref:
        _assert_same(res, _general(monkeypatch, P, **kw))
    assert [str(w.message) for w in got] == [str(w.message) for w in ref]


@pytest.mark.parametrize("P", [
    np.full((3, 3, 2), -1.0),                      # invalid: the general route raises
    np.zeros((0, 3, 3, 2)),                         # empty batch
])
@pytest.mark.parametrize("method", _METHODS)
def test_what_this_route_leaves_to_the_general_one(P, method):
    assert _native(P, method) is None


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype")
@pytest.mark.parametrize("method", _METHODS)
def test_gradients_and_other_types_take_the_general_route(method):
    P = torch.from_numpy(random_joint(np.random.default_rng(4), (3, 3, 2)))
    assert _native(P.clone().requires_grad_(), method) is None
    assert _native((P * 100).long(), method) is None
    assert _native(P.float().requires_grad_(), method) is None
    assert _native(P.tolist(), method) is None
    # Layouts and devices numpy() refuses: the general route says what it takes.
    assert _native(P.to_sparse(), method) is None
    assert _native(P.to("meta"), method) is None
    assert _native(torch.nested.nested_tensor([P, P]), method) is None
    assert _native(P, method) is not None


@pytest.mark.parametrize("method", _METHODS)
@pytest.mark.parametrize("shape", [(3, 3, 2), (2, 3, 3, 2), (2, 2, 3, 3, 2)])
def test_torch_results_are_plain_float64_tensors_of_the_batch_shape(shape, method):
    P = torch.from_numpy(random_joint(np.random.default_rng(5), shape))
    res = _native(P, method)
    ref = fastpid.pid(P.numpy(), method=method)
    for name in ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2", "gap", "converged", "iterations"):
        got, want = getattr(res, name), getattr(ref, name)
        assert isinstance(got, torch.Tensor) and tuple(got.shape) == shape[:-3], name
        assert got.dtype == torch.from_numpy(np.asarray(want)).dtype, name
        np.testing.assert_array_equal(got.numpy(), want, err_msg=name)


def _prepare_reference(P, negligible):
    """fastpid._C.prepare in numpy: (P / total with the masses below negligible dropped and
    the rest renormalised, free1, free2, most1, most2, dropped, seen), or None."""
    total = P.sum(axis=(1, 2, 3))
    if not (total.min() > 0 and total.max() < np.inf):
        return None
    Q = P / total[:, None, None, None]
    if not (Q >= 0).all():
        return None
    small = (Q > 0) & (Q < negligible)
    dropped = np.where(small, Q, 0.0).sum((1, 2, 3))
    Q = np.where(small, 0.0, Q)
    Q = Q / Q.sum((1, 2, 3), keepdims=True)
    free1, free2 = (Q.sum(2) > 0).sum((1, 2)), (Q.sum(1) > 0).sum((1, 2))
    seen = np.concatenate([Q.sum(axes) > 0 for axes in ((0, 2, 3), (0, 1, 3), (0, 1, 2))])
    return Q, free1, free2, free1.max(), free2.max(), dropped, seen


@pytest.mark.parametrize("case", ["plain", "zeros", "tiny", "negative", "nan", "inf", "zero total",
                                  "negligible", "negative zero", "empty values"])
def test_native_preparation_matches_numpy(case):
    from fastpid import _C
    from fastpid._certify import NEGLIGIBLE

    rng = np.random.default_rng(21)
    P = np.stack([random_joint(rng, (5, 3, 4), sparsity=0.5 if case == "zeros" else 0.0,
                               tiny=1e-13 if case == "tiny" else None) for _ in range(3)]) * 7.0
    where = (2, 1, 0, 3)
    if case in ("negative", "nan", "inf", "negligible", "negative zero"):
        P[where] = {"negative": -1e-3, "nan": np.nan, "inf": np.inf, "negligible": 1e-65,
                    "negative zero": -0.0}[case]
    if case == "zero total":
        P[1] = 0.0
    if case == "empty values":   # x1 = 1, x2 = 0 and y = 2 have no mass in any problem
        P[:, 1], P[:, :, 0], P[..., 2] = 0.0, 0.0, 0.0
    got, ref = _C.prepare(P, NEGLIGIBLE), _prepare_reference(P, NEGLIGIBLE)
    assert (got is None) == (ref is None) == (case in ("negative", "nan", "inf", "zero total"))
    if ref is not None:
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-14, atol=0)  # totals summed in another order
        for a, b in zip(got[1:5], ref[1:5]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(got[5], ref[5], rtol=1e-14, atol=0)
        assert (got[5] > 0).tolist() == [case == "negligible" and b == 2 for b in range(3)]
        np.testing.assert_array_equal(got[6], ref[6])
        assert got[6].dtype == bool and (~got[6]).sum() == (3 if case == "empty values" else 0)
        if case == "negligible":
            assert got[0][where] == 0.0
        assert type(got[3]) is type(got[4]) is int


@pytest.mark.parametrize("steps", [None, 4])
@pytest.mark.parametrize("shape,sparsity", [((6, 6, 5), 0.5), ((3, 7, 4), 0.0), ((7, 3, 4), 0.3),
                                            ((1, 1, 1), 0.0), ((9, 5, 7), 0.6)])
def test_fused_solve_matches_solve_then_terms(shape, sparsity, steps):
    """fastpid._C.solve_pid (each problem solved in its orientation, then its terms) against
    solve() of the problems transposed by numpy where swapped, then pid_terms(): the same
    bounds, gaps and iterations, and terms equal to rounding: they come from the closed forms
    the solve computes (over the transpose, for a swapped problem), another compiled copy of
    pid_terms()'s sums, whose products the compiler may fuse into FMAs differently. ``steps``:
    method "fast" (that many alternation steps, V at the upper bound)."""
    from fastpid import _C

    rng = np.random.default_rng(sum(shape))
    P = np.stack([random_joint(rng, shape, sparsity=sparsity) for _ in range(5)])
    swap = np.array([False, True, True, False, True])
    opt = cpp.options(1e-8, steps=steps)
    for scale in (1.0, 1.0 / np.log(2)):
        terms, gap, converged, broken, iterations, settled = _C.solve_pid(P, swap, opt, scale)
        lower, upper, its = np.empty(5), np.empty(5), np.empty(5, dtype=np.int64)
        for b in range(5):
            Q = np.ascontiguousarray(P[b].transpose(1, 0, 2)) if swap[b] else P[b]
            lower[b], upper[b], _, _, its[b] = (x[0] for x in _C.solve(Q[None], opt))
        ref = _C.pid_terms(P, lower, upper, scale, at_upper=steps is not None)
        # The closed forms are differences of entropies of a few nats: their rounding is
        # ~1e-15 nats whatever the term's size (1.3e-15 on a redundancy of 0.027).
        np.testing.assert_allclose(terms, ref[0], rtol=0, atol=1e-14 * scale)
        for a, b in zip((gap, broken, iterations), (*ref[1:], its)):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(converged, gap <= opt.tol)
        assert not broken.any() and settled == bool(converged.all())
        assert settled or steps is not None
    if shape == (1, 1, 1) or steps is not None:
        return  # solved by its closed forms: nothing stops short
    # Solves stopped short of tol (two Newton steps): not settled.
    opt.max_iter = 2
    _, gap, converged, broken, _, settled = _C.solve_pid(P, swap, opt, 1.0)
    assert not settled and not converged.all() and not broken.any()
    np.testing.assert_array_equal(converged, gap <= opt.tol)


def test_native_finishing_step_matches_the_general_routes_formulas():
    """fastpid._C.pid_terms against checked_bracket, closed_form_bracket and pid_terms of the
    general route, on brackets a solver rarely returns: crossed within rounding (swapped),
    crossed beyond it, NaN or infinite bounds (broken: the closed-form bracket), and bounds
    outside the closed-form bracket (the value is clamped into it)."""
    from fastpid import _C, _certify, api, solver

    rng = np.random.default_rng(5)
    P = np.stack([random_joint(rng, (4, 3, 5), sparsity=0.3) for _ in range(8)])
    T = torch.from_numpy(P)
    mi, mi1, mi2, lower0, upper0 = solver.closed_form_bracket(T, closed_forms=cpp.closed_forms)
    mid = 0.5 * (lower0 + upper0)
    # Problem b gets case b: (lower, upper).
    cases = [(mid[0] - 1e-9, mid[0] + 1e-9),        # valid
             (mid[1] + 1e-14, mid[1]),              # crossed within rounding: swapped
             (mid[2] + 1e-3, mid[2]),               # crossed: broken
             (np.nan, mid[3]),                      # NaN: broken
             (-np.inf, mid[4]),                     # infinite: broken
             (lower0[5] - 0.5, lower0[5] - 0.4),    # below the closed-form bracket: V clamped up
             (upper0[6] + 0.1, upper0[6] + 0.2),    # above it: V clamped down
             (mid[7], np.inf)]                      # infinite: broken
    lower = torch.tensor([float(lo) for lo, _ in cases], dtype=torch.float64)
    upper = torch.tensor([float(up) for _, up in cases], dtype=torch.float64)
    for scale, at_upper in ((1.0, False), (1.0 / np.log(2), False), (1.0, True)):
        terms, gap, broken = _C.pid_terms(P, lower.numpy(), upper.numpy(), scale, at_upper=at_upper)
        lo, up, ref_broken = _certify.checked_bracket(lower, upper, lower0, upper0)
        # V: the exact solve's midpoint, or the fast solve's upper bound (api._solve_iterative).
        value = torch.where(ref_broken, mid, upper if at_upper else 0.5 * (lower + upper))
        value = torch.where(value > upper0, upper0, torch.where(value < lower0, lower0, value))  # api._within
        np.testing.assert_array_equal(broken, ref_broken.numpy())
        np.testing.assert_array_equal(gap, (up - lo).numpy())
        np.testing.assert_array_equal(terms, api.pid_terms(mi, mi1, mi2, value, scale).numpy())
    assert broken.tolist() == [False, False, True, True, True, False, False, True]
    assert (terms >= 0).all() and (gap >= 0).all()


def test_a_closed_form_bracket_crossed_by_rounding_ends_alike(monkeypatch):
    """X2 independent of (X1, Y): I_Q0 = I(X1;Y) = max(I1, I2), and rounding can leave the
    closed-form bracket crossed by an ulp. Both routes then put the proxy's V at the lower end
    (the native clamp had tested the lower end first and taken the upper: on 34 of 50 such
    joints a redundancy of ~1e-15 against the general route's 0). Totals are powers of two, so
    both routes normalise exactly and the terms agree to the last bit."""
    rng = np.random.default_rng(0)
    joints = []
    for _ in range(20):
        a, b = rng.integers(1, 8, (30, 10)).astype(float), rng.integers(1, 8, 20).astype(float)
        P = np.einsum("ay,b->aby", a, b)
        joints.append(P / 2.0 ** np.ceil(np.log2(P.sum())))
    P = np.stack(joints)
    got, ref = fastpid.pid(P, method="proxy"), _general(monkeypatch, P, method="proxy")
    for name in ("redundancy", "unique1", "unique2", "synergy", "gap"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
