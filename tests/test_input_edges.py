"""Odd inputs get a clear answer or a clear error, never a crash: unsigned codes, values
beyond int64, meta and nested tensors, codes that would need terabytes, native entry
points with bad arguments, and problem sizes each GPU route cannot take."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import fastpid
from fastpid import _certify, api, cuda, triton_kernels

CODES = (np.array([0, 1, 2, 1, 0, 2]), np.array([1, 0, 1, 1, 0, 0]), np.array([0, 1, 1, 0, 1, 0]))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.uint32, torch.uint64])
def test_joint_accepts_unsigned_torch_codes(dtype):
    ref = fastpid.joint(*CODES)
    got = fastpid.joint(*(torch.from_numpy(c.astype(np.int64)).to(dtype) for c in CODES))
    np.testing.assert_allclose(got.numpy(), ref, atol=0)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
def test_joint_accepts_unsigned_numpy_codes(dtype):
    np.testing.assert_allclose(fastpid.joint(*(c.astype(dtype) for c in CODES)), fastpid.joint(*CODES))


def test_uint64_beyond_int64_is_not_called_negative():
    big = np.array([0, 2**63 + 5], dtype=np.uint64)
    # (2^63 + 5 is read as float64, so the message quotes the float, to float64's 15 digits)
    with pytest.raises(ValueError, match=r"x1\[1\] = 9\.22337203685478e\+18 is out of range for size 4"):
        fastpid.joint(big, np.array([0, 1]), np.array([0, 1]), sizes=(4, 2, 2))
    # As counts of a distribution such values are large but valid.
    P = np.full((2, 2, 2), 2**63 + 2**62, dtype=np.uint64)
    res = fastpid.pid(P)
    assert float(res.mi) == pytest.approx(0.0, abs=1e-12)


def test_huge_float_codes_are_quoted_as_floats():
    # Not the float's 301 digits (1e300 as an integer): past 2**53 they are its rounding.
    with pytest.raises(ValueError, match=r"x1\[1\] = 1e\+300 is out of range for size 3;"):
        fastpid.joint(np.array([0.0, 1e300, 1.0]), np.array([0, 1, 1]), np.array([0, 1, 0]), sizes=(3, 2, 2))
    with pytest.raises(ValueError, match=r"x2\[0\] = -1e\+20 is a negative code"):
        fastpid.joint(np.array([0, 1]), np.array([-1e20, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"y\[1\] = 9007199254740991 is out of range for size 2"):
        fastpid.joint(np.array([0, 1]), np.array([0, 1]), np.array([0.0, 2.0**53 - 1]), sizes=(2, 2, 2))
    # Narrower floats hold exact integers to 2**24 (float32), 2**8 (bfloat16): past those, the
    # float to its type's digits (bfloat16's 1e10 had read 9999220736).
    for code, dtype, text in ((1e20, torch.float32, r"1e\+20"), (1e10, torch.bfloat16, r"1e\+10"),
                              (2.0**24 - 1, torch.float32, "16777215")):
        with pytest.raises(ValueError, match=rf"x1\[1\] = {text} is out of range for size 3;"):
            fastpid.joint(torch.tensor([0.0, code], dtype=dtype), torch.tensor([0, 1]), torch.tensor([0, 1]),
                          sizes=(3, 2, 2))


def test_huge_codes_without_sizes_are_refused_with_the_size():
    x1 = np.array([0, 10**12])
    with pytest.raises(MemoryError, match=r"joint would have shape 1000000000001 x 2 x 2 .*pass sizes="):
        fastpid.joint(x1, np.array([0, 1]), np.array([0, 1]))


def test_meta_and_nested_tensors_are_refused_clearly():
    with pytest.raises(TypeError, match="meta tensor"):
        fastpid.pid(torch.empty(2, 2, 2, device="meta"))
    nested = torch.nested.nested_tensor([torch.rand(2, 2, 2), torch.rand(2, 2, 2)])
    with pytest.raises(TypeError, match="nested tensor"):
        fastpid.pid(nested)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_quantized_tensors_are_refused_with_a_type_error():
    """A quint8 tensor passed the dtype check (torch.iinfo accepts quantized dtypes) and then
    failed inside torch with a RuntimeError."""
    q = torch.quantize_per_tensor(torch.rand(3, 3, 2), 0.1, 0, torch.quint8)
    with pytest.raises(TypeError, match=r"unsupported dtype torch.quint8.*dequantize"):
        fastpid.pid(q)
    codes = torch.quantize_per_tensor(torch.tensor([0.0, 1.0, 1.0]), 1.0, 0, torch.quint8)
    with pytest.raises(TypeError, match="unsupported dtype torch.quint8"):
        fastpid.joint(codes, [0, 1, 0], [1, 0, 1])


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_errors_of_overflowing_totals_quote_the_callers_values(as_torch, backend):
    """Problems whose total overflows are rescaled by their largest entry before they are
    checked; the message named the rescaled value (-5e-308) instead of the entry (-5)."""
    P = np.full((2, 2, 2), 1e308)
    P[0, 1, 1] = -5.0
    with pytest.raises(ValueError, match=r"negative entry \(-5 at x1=0, x2=1, y=1\)"):
        fastpid.pid(torch.tensor(P) if as_torch else P, backend=backend)


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("bad_value, message", [(np.nan, r"P\[1\] contains NaN \(at x1=0, x2=0, y=0\)"),
                                                (np.inf, r"P\[1\] contains an infinite entry")])
def test_a_bad_problem_beside_an_overflowing_total_is_the_one_named(as_torch, bad_value, message):
    """A NaN in one problem left another, whose finite counts overflow their total, unscaled:
    the error named the valid one, as "P[0] has zero total mass (all 8 entries are 0)"."""
    bad = np.ones((2, 2, 2))
    bad[0, 0, 0] = bad_value
    P = np.stack([np.full((2, 2, 2), 1e308), bad])
    with pytest.raises(ValueError, match=message):
        fastpid.pid(torch.tensor(P) if as_torch else P)


def test_a_list_of_tensors_that_need_a_gradient_is_told_to_stack_them():
    """pid([t1, t2]) with t1.requires_grad raised numpy's RuntimeError ("Can't call numpy() on
    Tensor that requires grad"); a list is read as numpy data, which keeps no gradient."""
    with pytest.raises(TypeError, match=r"P is a list of torch tensors .* \(torch.stack\(P\)\)"):
        fastpid.pid([torch.rand(2, 2, 2, requires_grad=True), torch.rand(2, 2, 2)])
    np.testing.assert_allclose(fastpid.pid([torch.ones(2, 2, 2), torch.ones(2, 2, 2)]).mi, [0.0, 0.0], atol=1e-12)


@pytest.mark.skipif(np.finfo(np.longdouble).maxexp <= 1024, reason="long double is float64 here")
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_long_double_counts_beyond_float64_are_rescaled_per_problem(backend):
    """Finite positive long double counts beyond float64's range were cast to inf or 0 (with
    overflow warnings) and refused as "infinite entry" or "zero total mass"."""
    P = np.ones((2, 2, 2), dtype=np.longdouble)
    P[0, 0, 0] = 3
    ref = fastpid.pid(P.astype(np.float64), backend=backend)
    ten = np.longdouble(10)
    res = fastpid.pid(np.stack([P * ten**400, P * ten**-400, P]), backend=backend)
    np.testing.assert_allclose(res.synergy, float(ref.synergy), rtol=1e-12)
    # Checked in long double: cast to float64 first, -1e-400 would read as -0.0 and pass.
    bad = P * ten**400
    bad[1, 1, 1] = -(ten**-400)
    with pytest.raises(ValueError, match=r"negative entry \(-1e-400 at x1=1, x2=1, y=1\)"):
        fastpid.pid(bad, backend=backend)


# ----------------------------------------------------------------- native entry points


def _emulate():
    from fastpid import _C

    if not hasattr(_C, "emulate"):
        pytest.skip("this build has no CUDA emulation module")
    return _C.emulate


@pytest.mark.parametrize("bad", ["x1_high", "x2_negative", "y_high", "group_high", "short", "weights"])
def test_emulated_joint_kernels_validate_before_touching_memory(bad):
    e = _emulate()
    x1, x2, y = (c.astype(np.int64) for c in CODES)
    groups, weights, G = None, None, 1
    if bad == "x1_high":
        x1 = x1.copy(); x1[3] = 10**9
    elif bad == "x2_negative":
        x2 = x2.copy(); x2[0] = -7
    elif bad == "y_high":
        y = y.copy(); y[-1] = 2
    elif bad == "group_high":
        groups, G = np.array([0, 0, 1, 1, 5, 0]), 2
    elif bad == "short":
        x2 = x2[:4]
    else:
        weights = np.ones(3)
    with pytest.raises((ValueError, IndexError)):
        e.joint_codes(x1, x2, y, groups, weights, 3, 2, 2, G, 2, 4, True, True)


def test_emulated_soft_joint_validates_labels():
    e = _emulate()
    p1 = np.full((4, 3), 1 / 3)
    p2 = np.full((4, 2), 0.5)
    with pytest.raises((ValueError, IndexError)):
        e.joint_soft(p1, p2, np.array([0, 1, 9, 0]), None, None, 2, 1, 1, 4, False)
    with pytest.raises(ValueError):
        e.joint_soft(p1, p2[:3], np.array([0, 1, 1, 0]), None, None, 2, 1, 1, 4, False)


def test_native_solver_validates_shapes():
    from fastpid import _C

    opt = fastpid.cpp.options(1e-8)
    with pytest.raises(ValueError, match="shape"):
        _C.solve(np.ones((2, 2, 2)), opt)
    with pytest.raises(ValueError, match="between 1 and"):
        _C.solve(np.ones((1, 0, 2, 2)), opt)


# ------------------------------------------------------------------------ GPU routing
# Without a GPU the routing is checked on meta tensors (no data, a non-CPU device) with the
# kernels' availability patched in; the kernels themselves are tested through the host
# emulation and the Triton interpreter elsewhere.


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(cuda, "available", lambda device=None: (True, ""))
    monkeypatch.setattr(triton_kernels, "available", lambda device=None: (True, ""))
    # The block solver fits only problems up to 8x8x8 here; the rest need per-thread scratch.
    monkeypatch.setattr(cuda, "workspace_doubles",
                        lambda n1, n2, ny, device=None: 0 if n1 * n2 * ny <= 512 else n1 * n2 * ny * 40)


def _flat(n1, n2, ny):
    return torch.empty(4, n1, n2, ny, dtype=torch.float64, device="meta")


@pytest.mark.parametrize("shape,route", [
    ((8, 8, 8), "cuda"),      # block solver
    ((20, 20, 10), "cpp"),    # per-thread path, Schur size 200: the C++ solver on the host
    ((20, 20, 101), "torch"),  # Schur size 2020: one GPU thread would take far too long
    ((64, 64, 10), "torch"),
    ((2, 3, 3000), "torch"),
])
def test_exact_route_on_a_gpu(fake_gpu, shape, route):
    if route == "cpp" and not fastpid.backends()["cpp"]["available"]:
        route = "cuda"
    assert api._choose_backend("auto", _flat(*shape), "exact") == route


def test_explicit_cuda_refuses_sizes_it_would_crawl_on(fake_gpu):
    with pytest.raises(RuntimeError, match="too large for the CUDA solver's one-problem-per-thread path"):
        api._choose_backend("cuda", _flat(64, 64, 101), "exact")
    assert api._choose_backend("cuda", _flat(64, 64, 101), "fast") == "cuda"


@pytest.mark.parametrize("method,shape", [("fast", (1100, 1100, 1800)), ("proxy", (1100, 1100, 1800)),
                                          ("exact", (9_000_000, 1, 256)), ("fast", (1, 1, 536_870_912)),
                                          ("fast", (46_340, 46_340, 1))])
def test_cuda_takes_no_problem_past_32_bit_indices(fake_gpu, monkeypatch, method, shape):
    """The kernels index a problem's cells and its alternation's arrays with 32-bit integers:
    1100x1100x1800 (2.2e9 cells) went to them and read out of bounds; 9e6x1x256 has a Schur size
    of 256; 1x1x536870912 and 46340x46340x1 have few enough cells, but arrays of 4.3e9 doubles,
    whose sizes wrapped to 16 bytes and 0.8 MB."""
    monkeypatch.setattr(api, "_host_beats_gpu_threads", lambda flat: False)  # the CUDA route's own limit
    assert api._choose_backend("auto", _flat(*shape), method) == "torch"
    with pytest.raises(RuntimeError, match="pass the CUDA kernels' 32-bit indices"):
        api._choose_backend("cuda", _flat(*shape), method)
    n1, n2, ny = shape
    smaller = (n1, n2, ny // 8) if ny > 1 else (n1 // 2, n2 // 2, ny)
    assert api._choose_backend("auto", _flat(*smaller), method) == "cuda"


def test_return_coupling_routes_exact_to_torch_on_a_gpu(fake_gpu):
    assert api._choose_backend("auto", _flat(8, 8, 8), "exact", return_coupling=True) == "torch"


def test_triton_route_by_padded_size(monkeypatch, fake_gpu):
    monkeypatch.setattr(cuda, "available", lambda device=None: (False, "no CUDA build"))
    assert api._choose_backend("auto", _flat(20, 20, 10), "fast") == "triton"
    assert api._choose_backend("auto", _flat(64, 64, 101), "fast") == "torch"
    with pytest.raises(RuntimeError, match="pad to 524288 cells"):
        api._choose_backend("triton", _flat(64, 64, 101), "proxy")
    ok, _ = triton_kernels.size_route(32, 32, 16)
    assert ok


@pytest.mark.parametrize("kw", [dict(backend="torch"), dict(method="proxy"), dict(method="fast"), {}])
def test_a_reversed_axis_of_length_one_is_read(kw):
    """numpy calls P[::-1] of a (1, 6, 1) joint C-contiguous, its stride negative: the
    general route handed it to torch.from_numpy, which refused it."""
    P = np.random.default_rng(0).dirichlet(np.ones(6)).reshape(1, 6, 1)
    view = P[::-1]
    assert view.flags.c_contiguous and view.strides[0] < 0
    got, want = fastpid.pid(view, **kw), fastpid.pid(P.copy(), **kw)
    assert float(got.synergy) == float(want.synergy) and float(got.gap) == float(want.gap)


@pytest.mark.parametrize("method", ["exact", "fast", "proxy"])
@pytest.mark.parametrize("shape, dtype", [((0, 3, 4, 2), torch.float64), ((2, 0, 3, 3, 2), torch.float16)])
def test_a_batch_of_no_problems_gives_empty_results(method, shape, dtype):
    """A training loop's empty batch (everything filtered out) is answered, not refused: every
    field empty with the batch shape, in the dtype a non-empty batch would have, and a loss
    summed over it backpropagates."""
    P = torch.rand(shape, dtype=dtype, requires_grad=True)
    res = fastpid.pid(P, method=method, return_coupling=True)
    out_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    for name in api.TERMS + ("gap",):
        value = getattr(res, name)
        assert value.shape == shape[:-3] and value.dtype == out_dtype, name
    assert res.converged.dtype == torch.bool and res.iterations.dtype == torch.int64
    assert res.coupling.shape == shape and res.shape == shape[:-3]
    assert not res.coupling.requires_grad  # detached, as every batch's coupling
    (res.synergy.sum() + res.redundancy.sum()).backward()
    assert P.grad.shape == shape


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_subnormal_totals_give_no_nan_gradient(backend):
    """A joint of 1e-310 in all: the values were right but the backward of P / total overflowed
    1 / total and its inf - inf made every cell's gradient NaN. The gradient is the normalised
    joint's over the total: at 1e-310 it overflows to inf in most cells, at 1e-300 in none."""
    P = torch.rand(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    P = P / P.sum()
    ref = P.clone().requires_grad_()
    fastpid.pid(ref, backend=backend).synergy.backward()
    for total, finite in ((1e-300, True), (1e-310, False)):
        X = (P * total).requires_grad_()
        res = fastpid.pid(X, backend=backend)
        res.synergy.backward()
        assert abs(float(res.synergy.detach()) - float(fastpid.pid(P).synergy)) < 1e-9
        assert not X.grad.isnan().any()
        assert bool(torch.isinf(X.grad).any()) != finite
        assert torch.allclose(X.grad, ref.grad / total, rtol=1e-6)  # inf where ref.grad / total overflows


def test_a_batch_of_no_problems_as_numpy_and_named_backends():
    res = fastpid.pid(np.ones((0, 2, 2, 2)), base=2)
    assert isinstance(res.synergy, np.ndarray) and res.synergy.shape == (0,) and res.units == "bits"
    assert fastpid.pid(torch.ones(0, 2, 2, 2), backend="cvx").status == ()
    # a backend that cannot take these tensors still says so
    with pytest.raises(RuntimeError, match="backend='cuda' is not available"):
        fastpid.pid(torch.ones(0, 2, 2, 2), backend="cuda")



def test_proxy_works_out_no_newton_plan(monkeypatch):
    """The closed form has no Newton system: working out its plan took 0.62 s of a 3.2 s proxy
    call on 3 million 2x2x2 problems."""
    from fastpid import solver

    def no_plan(*args, **kwargs):
        raise AssertionError("newton_plan called for method='proxy'")

    monkeypatch.setattr(solver, "newton_plan", no_plan)
    res = fastpid.pid(torch.rand(5, 3, 3, 2, dtype=torch.float64), method="proxy")
    assert res.backend == ("cpp" if fastpid.backends()["cpp"]["available"] else "torch")


def test_a_batch_of_no_problems_still_needs_cvxpy_for_backend_cvx(monkeypatch):
    real = api.backends()
    monkeypatch.setattr(api, "backends", lambda: {**real, "cvx": {"available": False, "reason": "CVXPY is not installed"}})
    with pytest.raises(RuntimeError, match="backend='cvx' is not available: CVXPY is not installed"):
        fastpid.pid(torch.ones(0, 2, 2, 2), backend="cvx")


def test_nested_lists_of_python_integers_past_int64_are_counts():
    """A list holding 2**70 became a numpy array of objects, refused as 'non-numeric dtype
    object ... e.g. with .astype(float)', while the same counts as floats solve."""
    counts = [[[2 ** 70, 1], [1, 1]], [[3, 1], [1, 2 ** 65]]]
    got = fastpid.pid(counts)
    want = fastpid.pid(np.array(counts, dtype=np.float64))
    np.testing.assert_array_equal(got.synergy, want.synergy)
    with pytest.raises(ValueError, match="P holds an integer beyond the float64 range"):
        fastpid.pid([[[10 ** 400, 1], [1, 1]]])
    with pytest.raises(TypeError, match="P must be numeric .* got None"):
        fastpid.pid(None)


def test_string_labels_are_refused_with_how_to_code_them():
    """Labels as strings were told to use .astype(float), which fails on them."""
    for labels in (np.array(["cat", "dog", "cat"]), np.array(["cat", "dog", "cat"], dtype=object),
                   ["cat", "dog", "cat"], np.array([b"a", b"b", b"a"])):
        with pytest.raises(TypeError, match=r"y has non-numeric dtype .*labels must be integer codes first, "
                                            r"e\.g\. np\.unique\(x, return_inverse=True\)\[1\]"):
            fastpid.joint(np.array([0, 1, 1]), np.array([0, 1, 0]), labels)
    codes = np.unique(np.array(["cat", "dog", "cat"]), return_inverse=True)[1]
    assert fastpid.joint(np.array([0, 1, 1]), np.array([0, 1, 0]), codes).shape == (2, 2, 2)
    # Objects that are not text keep the float advice.
    with pytest.raises(TypeError, match=r"convert it first, e\.g\. with \.astype\(float\)"):
        fastpid.pid(np.array([[[0.5, None]]], dtype=object))


def test_a_column_of_codes_is_told_to_be_a_vector():
    """Labels shaped (N, 1) were read as rows over one value: 'y[0] sums to 0, not 1 ... over
    its 1 values', which puzzled; the message now names the shape and the fix."""
    codes = np.array([0, 1, 1, 0])
    with pytest.raises(ValueError, match=r"y has shape \(4, 1\): a 2-D y is read as probability rows, and rows over "
                                         r"one value must all be 1 \(y\[0\] is 0\); pass hard codes as a 1-D vector "
                                         r"\(y\.ravel\(\)\) \(1 more row also affected\)"):
        fastpid.joint(codes, codes, codes[:, None])
    # A column of ones is a valid (if trivial) variable.
    assert fastpid.joint(codes, codes, np.ones((4, 1))).shape == (2, 2, 1)


@pytest.mark.parametrize("shape", [(1, 1, 100_000), (1, 3, 100_000), (2, 2, 300_000)])
@pytest.mark.parametrize("kw", [{}, dict(method="fast"), dict(method="proxy"), dict(backend="torch"),
                                dict(backend="cpp", grad=True)])
def test_constant_or_independent_sources_of_many_target_values_report_no_information(shape, kw):
    """Every term of these joints is 0 (X1, X2 and Y independent, uniform). Their closed forms
    are differences of entropies summed over 10^5 target values: a running sum of a source's
    row came out 1.9e-12 short of its total, the closed forms took -t log t of it for
    I(X1;Y), crossed their own bracket (I(X1;Y) above I(X1,X2;Y) = 0), and the gap was reported
    as -1.9e-12 with the redundancy at 3.8e-12. Now the gap is >= 0 and every term lies within
    it of 0, the gap covering the closed forms' own rounding (a few ulps of entropies of ~14 nats)."""
    kw = dict(kw)
    P = torch.ones(shape, dtype=torch.float64, requires_grad=kw.pop("grad", False))
    with warnings.catch_warnings():
        # The crossed bounds had also warned of a broken bracket: no warning now.
        warnings.simplefilter("error", fastpid.ConvergenceWarning)
        res = fastpid.pid(P if P.requires_grad else P.numpy(), **kw)
    gap, rounded = float(res.gap), float(_certify.rounding(np.zeros(1), torch.float64, P.numel())[0])
    assert rounded <= gap <= rounded + 1e-13
    for t in ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2"):
        assert 0.0 <= float(getattr(res, t).detach() if P.requires_grad else getattr(res, t)) <= gap, t
