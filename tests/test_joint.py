"""fastpid.joint / pid_from_samples against a naive per-sample numpy reference."""

import importlib
import itertools
import math
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastpid
from fastpid.joint import joint, pid_from_samples

# ``fastpid.joint`` the attribute is the function; fetch the module itself
joint_mod = importlib.import_module("fastpid.joint")

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# --------------------------------------------------------------------------- #
# reference and random inputs
# --------------------------------------------------------------------------- #
def _rows_of(v, n):
    v = np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
    if v.ndim == 1:
        return np.eye(n)[v.astype(np.int64)]
    return v


def reference_joint(x1, x2, y, sizes, weights=None, groups=None, num_groups=None):
    """Explicit loop over samples: P[g] = Σ_n w_n p1(n) ⊗ p2(n) ⊗ py(n) / Σ_n w_n."""
    r1, r2, r3 = (_rows_of(v, n) for v, n in zip((x1, x2, y), sizes))
    N = r1.shape[0]
    w = np.ones(N) if weights is None else np.asarray(
        weights.detach().cpu().numpy() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64
    )
    g = np.zeros(N, dtype=np.int64) if groups is None else np.asarray(groups).astype(np.int64)
    G = 1 if groups is None else (num_groups or int(g.max()) + 1)
    out = np.zeros((G,) + tuple(sizes))
    for n in range(N):
        out[g[n]] += w[n] * r1[n][:, None, None] * r2[n][None, :, None] * r3[n][None, None, :]
    out /= out.sum(axis=(1, 2, 3), keepdims=True)
    return out if groups is not None else out[0]


def rand_var(rng, kind, N, n):
    if kind == "hard":
        return rng.integers(0, n, size=N)
    # soft rows, some sparse
    a = rng.gamma(0.5, size=(N, n))
    a[rng.random((N, n)) < 0.3] = 0.0
    a[np.arange(N), rng.integers(0, n, size=N)] += 0.1
    return a / a.sum(axis=1, keepdims=True)


SIZES = [(1, 1, 1), (3, 17, 33), (33, 3, 1), (17, 33, 3), (1, 33, 17), (3, 3, 3), (17, 1, 17)]
KINDS = list(itertools.product(["hard", "soft"], repeat=3))


def _kind_id(k):
    return "".join("H" if s == "hard" else "S" for s in k)


# --------------------------------------------------------------------------- #
# correctness against the reference
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kinds", KINDS, ids=_kind_id)
@pytest.mark.parametrize("extra", ["plain", "weights", "groups", "weights+groups"])
def test_matches_reference_numpy(sizes, kinds, extra):
    rng = np.random.default_rng(zlib.crc32(repr((sizes, kinds, extra)).encode()))  # hash() of a str varies by process
    N = 57
    xs = [rand_var(rng, k, N, n) for k, n in zip(kinds, sizes)]
    # make sure inferred sizes from hard codes equal `sizes`
    for v, k, n in zip(xs, kinds, sizes):
        if k == "hard":
            v[0] = n - 1
    w = rng.random(N) * 3 if "weights" in extra else None
    groups = None
    if "groups" in extra:
        groups = rng.integers(0, 5, size=N)
        groups[:5] = np.arange(5)
    P = joint(*xs, weights=w, groups=groups)
    assert isinstance(P, np.ndarray) and P.dtype == np.float64
    ref = reference_joint(*xs, sizes, weights=w, groups=groups)
    assert P.shape == ref.shape
    np.testing.assert_allclose(P, ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(P.sum(axis=(-3, -2, -1)), 1.0, rtol=1e-13)


@pytest.mark.parametrize("sizes", [(3, 17, 33), (17, 3, 1), (1, 1, 1)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kinds", KINDS, ids=_kind_id)
@pytest.mark.parametrize(
    "dtype, rtol, atol", [(torch.float64, 1e-12, 1e-15), (torch.float32, 2e-5, 1e-7)], ids=["f64", "f32"]
)
def test_matches_reference_torch(sizes, kinds, dtype, rtol, atol):
    rng = np.random.default_rng(7)
    N = 33
    xs = [rand_var(rng, k, N, n) for k, n in zip(kinds, sizes)]
    w = rng.random(N)
    groups = rng.integers(0, 3, size=N)
    groups[:3] = [0, 1, 2]
    targs = [torch.tensor(v) if k == "hard" else torch.tensor(v, dtype=dtype) for v, k in zip(xs, kinds)]
    P = joint(*targs, sizes=sizes, weights=torch.tensor(w, dtype=dtype), groups=torch.tensor(groups))
    assert isinstance(P, torch.Tensor)
    expect_dtype = dtype if "soft" in kinds else torch.float64
    assert P.dtype == expect_dtype
    ref = reference_joint(*xs, sizes, weights=w, groups=groups)
    np.testing.assert_allclose(P.numpy(), ref, rtol=rtol, atol=atol)


@pytest.mark.parametrize("kinds", KINDS, ids=_kind_id)
@pytest.mark.parametrize("groups", [None, 4, 30])
def test_chunked_accumulation_matches(monkeypatch, kinds, groups):
    """Force tiny chunks so every contraction path runs over many chunks."""
    rng = np.random.default_rng(11)
    N, sizes = 47, (5, 4, 6)
    xs = [rand_var(rng, k, N, n) for k, n in zip(kinds, sizes)]
    g = None
    if groups:
        g = rng.integers(0, groups, size=N)
        g[:groups] = np.arange(groups)
    full = joint(*xs, sizes=sizes, groups=g)
    monkeypatch.setattr(joint_mod, "_CHUNK_ELEMS", 61)
    chunked = joint(*xs, sizes=sizes, groups=g)
    np.testing.assert_allclose(chunked, full, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(chunked, reference_joint(*xs, sizes, groups=g), rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("mode", ["segments", "onehot", "scatter"])
@pytest.mark.parametrize("kinds", [k for k in KINDS if "soft" in k], ids=_kind_id)
@pytest.mark.parametrize("chunk_elems", [53, 1 << 22])
def test_every_contraction_mode_matches(monkeypatch, mode, kinds, chunk_elems):
    """Each way of contracting soft factors (normally picked by a cost model) is exact."""
    rng = np.random.default_rng(13)
    N, sizes = 37, (4, 1, 7)
    xs = [rand_var(rng, k, N, n) for k, n in zip(kinds, sizes)]
    g = rng.integers(0, 3, size=N)
    g[:3] = [0, 1, 2]
    w = rng.random(N)
    ref = reference_joint(*xs, sizes, weights=w, groups=g)
    real_choose = joint_mod._choose_mode
    monkeypatch.setattr(joint_mod, "_CHUNK_ELEMS", chunk_elems)
    monkeypatch.setattr(joint_mod, "_choose_mode",
                        lambda N, H, La, Rb, dev: mode if H > 1 else real_choose(N, H, La, Rb, dev))
    np.testing.assert_allclose(joint(*xs, sizes=sizes, weights=w, groups=g), ref, rtol=1e-12, atol=1e-16)
    # and gradients agree with the default path
    t = [torch.tensor(v, requires_grad=(k == "soft")) if k == "soft" else torch.tensor(v)
         for v, k in zip(xs, kinds)]
    tw = torch.tensor(w, requires_grad=True)
    coef = torch.tensor(rng.random((3,) + sizes))
    (joint(*t, sizes=sizes, weights=tw, groups=torch.tensor(g)) * coef).sum().backward()
    grads = [v.grad for v in t if v.requires_grad] + [tw.grad]
    monkeypatch.setattr(joint_mod, "_choose_mode", real_choose)
    monkeypatch.setattr(joint_mod, "_CHUNK_ELEMS", 1 << 22)
    t2 = [v.detach().clone().requires_grad_(v.requires_grad) for v in t]
    tw2 = tw.detach().clone().requires_grad_()
    (joint(*t2, sizes=sizes, weights=tw2, groups=torch.tensor(g)) * coef).sum().backward()
    for a, b in zip(grads, [v.grad for v in t2 if v.requires_grad] + [tw2.grad]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_cost_model_choices():
    cpu = torch.device("cpu")
    assert joint_mod._choose_mode(1000, 1, 20, 20, cpu) == "matmul"
    assert joint_mod._choose_mode(4096, 101, 101, 101, cpu) == "segments"
    assert joint_mod._choose_mode(10000, 1000, 20, 20, cpu) == "scatter"
    meta = torch.device("meta")
    assert joint_mod._choose_mode(1000, 5, 20, 20, meta) == "onehot"
    assert joint_mod._choose_mode(1000, 50, 20, 20, meta) == "scatter"


def test_xor_and_inferred_sizes():
    P = joint([0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 1])
    expect = np.zeros((2, 2, 2))
    expect[0, 0, 0] = expect[1, 1, 0] = expect[1, 0, 1] = expect[0, 1, 1] = 0.25
    np.testing.assert_array_equal(P, expect)


def test_explicit_sizes_pad_with_zeros():
    P = joint([0, 1], [0, 0], [1, 1], sizes=(4, 2, 3))
    assert P.shape == (4, 2, 3)
    assert P[0, 0, 1] == 0.5 and P[1, 0, 1] == 0.5 and P.sum() == 1.0
    P = joint([0, 1], [0, 0], [1, 1], sizes=[None, 3, None])
    assert P.shape == (2, 3, 2)


def test_lists_bool_and_integral_float_codes():
    a = joint([0.0, 2.0, 1.0], np.array([True, False, True]), torch.tensor([1, 0, 1]))
    b = joint([0, 2, 1], [1, 0, 1], [1, 0, 1])
    assert isinstance(a, torch.Tensor) and a.dtype == torch.float64
    np.testing.assert_array_equal(a.numpy(), b)


def test_hard_equals_one_hot_soft():
    rng = np.random.default_rng(3)
    N, sizes = 40, (3, 5, 4)
    codes = [rng.integers(0, n, size=N) for n in sizes]
    onehot = [np.eye(n)[c] for c, n in zip(codes, sizes)]
    w = rng.random(N)
    hard = joint(*codes, sizes=sizes, weights=w)
    for mask in itertools.product([0, 1], repeat=3):
        args = [oh if m else c for c, oh, m in zip(codes, onehot, mask)]
        np.testing.assert_allclose(joint(*args, sizes=sizes, weights=w), hard, rtol=1e-13, atol=1e-16)


def test_weights_scale_invariant_and_zero_weight_drops_sample():
    rng = np.random.default_rng(5)
    N = 30
    x1, x2, y = (rng.integers(0, 3, size=N) for _ in range(3))
    w = rng.random(N)
    np.testing.assert_allclose(joint(x1, x2, y, weights=w), joint(x1, x2, y, weights=1000 * w), rtol=1e-13)
    w[4] = 0.0
    keep = np.arange(N) != 4
    np.testing.assert_allclose(
        joint(x1, x2, y, weights=w, sizes=(3, 3, 3)),
        joint(x1[keep], x2[keep], y[keep], weights=w[keep], sizes=(3, 3, 3)),
        rtol=1e-13,
    )


def test_tiny_and_huge_float64_weights_keep_their_ratios_in_float32_joints():
    """Weights are scaled to a largest of 1 before the cast to a float32 joint's dtype: float64
    weights of 1e-50 read as all zero (an error saying so), e^-100 : e^-102 came out 6.75 : 1
    (subnormal float32), and 1e300 overflowed the total."""
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    P = joint(rows, y, y, weights=np.exp([-100.0, -102.0]))
    assert P.dtype == torch.float32
    assert float(P[0, 0, 0] / P[1, 1, 1]) == pytest.approx(math.exp(2.0), rel=1e-6)
    torch.testing.assert_close(joint(rows, y, y, weights=np.full(2, 1e-50)), joint(rows, y, y))
    P = joint([0, 1, 1], [0, 1, 0], [0, 1, 1], weights=[1e300, 1.0, 1.0])
    assert P[0, 0, 0] == 1.0 and np.isfinite(P).all()


def test_half_precision_rows_off_by_more_than_eps_are_refused_and_the_rest_renormalised():
    """The row-sum tolerance of float16/bfloat16 rows was 4 k eps: 0.25 for 8 bfloat16 columns
    (two samples weighted 0.625 : 0.375) and 2 at 64 (an all-zero row passed, its sample
    dropped). Now it is eps (softmax rows are off by at most 0.39 eps), and the accepted rows
    are divided by their sums, so every sample weighs the same."""
    bad = torch.tensor([[0.25] * 4 + [0.0625] * 4, [0.125] * 6 + [0.0] * 2], dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"x1\[0\] sums to 1.25, not 1 \(tolerance 7.8e-03\)"):
        joint(bad, torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"x1\[1\] sums to 0"):
        joint(torch.cat([torch.full((1, 64), 1 / 64), torch.zeros(1, 64)]).to(torch.bfloat16),
              torch.tensor([0, 1]), torch.tensor([0, 1]))
    logits = torch.randn(400, 8, generator=torch.Generator().manual_seed(0)) * 3
    for dtype in (torch.bfloat16, torch.float16):
        rows = logits.to(dtype).softmax(-1)
        assert (rows.float().sum(-1) - 1).abs().max() > 1e-4      # not rows of float32 accuracy
        P = joint(rows, torch.arange(400) % 2, torch.arange(400) % 3)
        per_sample = P.sum((0, 2))                                  # x2 = sample parity: 200 each
        torch.testing.assert_close(per_sample, torch.tensor([0.5, 0.5]), atol=1e-6, rtol=0)


def test_integer_weights_are_counts():
    x1, x2, y = [0, 1], [1, 0], [0, 1]
    np.testing.assert_allclose(joint(x1, x2, y, weights=[3, 1]), joint([0, 0, 0, 1], [1, 1, 1, 0], [0, 0, 0, 1]))


def test_groups_each_normalised_and_num_groups():
    x1 = [0, 1, 1, 0, 1]
    x2 = [0, 0, 1, 1, 1]
    y = [1, 0, 1, 0, 0]
    g = [1, 0, 1, 2, 2]
    P = joint(x1, x2, y, groups=g, num_groups=3)
    assert P.shape == (3, 2, 2, 2)
    for k in range(3):
        idx = [i for i in range(5) if g[i] == k]
        np.testing.assert_allclose(
            P[k], joint([x1[i] for i in idx], [x2[i] for i in idx], [y[i] for i in idx], sizes=(2, 2, 2))
        )


def test_mixed_dtype_promotion_and_half():
    rng = np.random.default_rng(0)
    N = 20
    a = torch.tensor(rand_var(rng, "soft", N, 3), dtype=torch.float32)
    b = torch.tensor(rand_var(rng, "soft", N, 4), dtype=torch.float64)
    y = torch.tensor(rng.integers(0, 2, size=N))
    assert joint(a, b, y).dtype == torch.float64
    assert joint(a, rng.integers(0, 4, size=N), y).dtype == torch.float32
    assert joint(a.to(torch.bfloat16), rng.integers(0, 4, size=N), y).dtype == torch.float32
    assert joint(a.to(torch.float16), b.to(torch.float16), y).dtype == torch.float32
    # numpy float32 rows: numpy in, numpy float64 out
    out = joint(a.numpy(), b.numpy(), y.numpy())
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    # a torch weights vector alone makes the output a tensor (hard codes -> float64)
    out = joint([0, 1], [1, 1], [0, 1], weights=torch.tensor([1.0, 2.0], dtype=torch.float32))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64


# --------------------------------------------------------------------------- #
# gradients
# --------------------------------------------------------------------------- #
def test_gradcheck_soft_rows_and_weights():
    torch.manual_seed(0)
    N = 7
    p1 = torch.softmax(torch.randn(N, 3, dtype=torch.float64), 1).requires_grad_()
    p2 = torch.softmax(torch.randn(N, 2, dtype=torch.float64), 1).requires_grad_()
    py = torch.softmax(torch.randn(N, 4, dtype=torch.float64), 1).requires_grad_()
    w = (torch.rand(N, dtype=torch.float64) + 0.5).requires_grad_()
    g = torch.tensor([0, 1, 0, 1, 1, 0, 0])
    assert torch.autograd.gradcheck(lambda a, b, c, ww: joint(a, b, c, weights=ww), (p1, p2, py, w))
    assert torch.autograd.gradcheck(lambda a, b, ww: joint(a, b, torch.tensor([0, 3, 1, 2, 2, 0, 3]),
                                                           weights=ww, groups=g), (p1, p2, w))
    assert torch.autograd.gradcheck(lambda c: joint(torch.tensor([0, 2, 1, 0, 2, 2, 1]), p2, c, groups=g),
                                    (py,))
    # hard codes only: the weights still carry the gradient
    codes = [torch.tensor([0, 2, 1, 0, 2, 2, 1]), torch.tensor([1, 1, 0, 0, 1, 0, 1]), torch.tensor([0, 1] * 3 + [1])]
    assert torch.autograd.gradcheck(lambda ww: joint(*codes, weights=ww, groups=g), (w,))


def test_gradcheck_through_softmax_logits():
    torch.manual_seed(1)
    N = 9
    l1 = torch.randn(N, 3, dtype=torch.float64, requires_grad=True)
    l2 = torch.randn(N, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    f = lambda a, b: joint(torch.softmax(a, 1), torch.softmax(b, 1), y)  # noqa: E731
    assert torch.autograd.gradcheck(f, (l1, l2))


def test_gradient_value_simple():
    """dP/dp1 for P = mean_n p1 ⊗ onehot(x2) ⊗ onehot(y): P[i, j, k] picks p1[n, i] / N."""
    p1 = torch.tensor([[0.3, 0.7], [0.9, 0.1]], dtype=torch.float64, requires_grad=True)
    P = joint(p1, [0, 1], [1, 1])
    torch.testing.assert_close(P.detach(), torch.tensor([[[0, 0.15], [0, 0.45]], [[0, 0.35], [0, 0.05]]],
                                                        dtype=torch.float64))
    P[0, 1, 1].backward()
    # P[0,1,1] = p1[1,0] / (total mass); total = Σ rows = 2 -> gradient 1/2 minus the normalisation term
    expect = torch.tensor([[0.0, 0.0], [0.5, 0.0]], dtype=torch.float64) - P[0, 1, 1].item() / 2
    torch.testing.assert_close(p1.grad, expect)


def test_float32_gradients_flow():
    l1 = torch.randn(50, 5, requires_grad=True)
    P = joint(torch.softmax(l1, 1), torch.randint(0, 3, (50,)), torch.randint(0, 4, (50,)))
    assert P.dtype == torch.float32
    (P * torch.rand_like(P)).sum().backward()
    assert l1.grad is not None and torch.isfinite(l1.grad).all()


@cuda
@pytest.mark.gpu
def test_cuda_matches_cpu():
    rng = np.random.default_rng(2)
    N = 300
    x1 = rand_var(rng, "soft", N, 17)
    x2 = rng.integers(0, 5, size=N)
    y = rng.integers(0, 33, size=N)
    g = rng.integers(0, 3, size=N)
    g[:3] = [0, 1, 2]
    cpu = joint(torch.tensor(x1), torch.tensor(x2), torch.tensor(y), groups=torch.tensor(g))
    dev = joint(torch.tensor(x1, device="cuda"), torch.tensor(x2, device="cuda"),
                torch.tensor(y, device="cuda"), groups=torch.tensor(g, device="cuda"))
    assert dev.device.type == "cuda"
    torch.testing.assert_close(dev.cpu(), cpu)
    with pytest.raises(ValueError, match="different devices"):
        joint(torch.tensor(x1, device="cuda"), torch.tensor(x2), y)


# --------------------------------------------------------------------------- #
# property tests
# --------------------------------------------------------------------------- #
@st.composite
def hard_samples(draw):
    N = draw(st.integers(1, 60))
    sizes = tuple(draw(st.integers(1, 6)) for _ in range(3))
    codes = [draw(st.lists(st.integers(0, n - 1), min_size=N, max_size=N)) for n in sizes]
    w = draw(st.one_of(st.none(), st.lists(st.floats(0.01, 100.0), min_size=N, max_size=N)))
    return codes, sizes, w


@settings(max_examples=60, deadline=None)
@given(hard_samples())
def test_property_hard_marginals_match_frequencies(sample):
    (x1, x2, y), sizes, w = sample
    P = joint(x1, x2, y, sizes=sizes, weights=w)
    assert P.shape == sizes
    assert abs(P.sum() - 1.0) < 1e-12
    assert (P >= 0).all()
    ww = np.ones(len(x1)) if w is None else np.asarray(w)
    for axes, codes, n in [((1, 2), x1, sizes[0]), ((0, 2), x2, sizes[1]), ((0, 1), y, sizes[2])]:
        freq = np.bincount(codes, weights=ww, minlength=n) / ww.sum()
        np.testing.assert_allclose(P.sum(axis=axes), freq, rtol=1e-10, atol=1e-14)


@st.composite
def soft_samples(draw):
    N = draw(st.integers(1, 25))
    n1, n2, ny = (draw(st.integers(1, 5)) for _ in range(3))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    kinds = draw(st.tuples(*[st.sampled_from(["hard", "soft"])] * 3))
    xs = [rand_var(rng, k, N, n) for k, n in zip(kinds, (n1, n2, ny))]
    G = draw(st.integers(1, 4))
    groups = None
    if G > 1 and N >= G:
        groups = rng.permutation(np.concatenate([np.arange(G), rng.integers(0, G, size=N - G)]))
    return xs, (n1, n2, ny), groups


@settings(max_examples=60, deadline=None)
@given(soft_samples())
def test_property_soft_normalised_and_marginals(sample):
    xs, sizes, groups = sample
    P = joint(*xs, sizes=sizes, groups=groups)
    ref = reference_joint(*xs, sizes, groups=groups)
    np.testing.assert_allclose(P, ref, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(P.sum(axis=(-3, -2, -1)), 1.0, rtol=1e-12)
    if groups is None:
        r1 = _rows_of(xs[0], sizes[0])
        np.testing.assert_allclose(P.sum(axis=(1, 2)), r1.mean(axis=0), rtol=1e-10, atol=1e-14)
    # permuting the samples changes nothing
    perm = np.random.default_rng(0).permutation(len(xs[0]))
    Pp = joint(*[v[perm] for v in xs], sizes=sizes, groups=None if groups is None else groups[perm])
    np.testing.assert_allclose(Pp, P, rtol=1e-12, atol=1e-16)


# --------------------------------------------------------------------------- #
# errors
# --------------------------------------------------------------------------- #
def test_error_negative_code():
    with pytest.raises(ValueError, match=r"x2\[2\] = -1 is a negative code"):
        joint([0, 1, 0], [0, 1, -1], [1, 1, 0])


def test_error_code_out_of_range():
    with pytest.raises(ValueError, match=r"y\[1\] = 3 is out of range for size 3"):
        joint([0, 1, 0], [0, 1, 1], [1, 3, 0], sizes=(2, 2, 3))
    with pytest.raises(ValueError, match=r"x1\[0\] = 5 is out of range for size 2"):
        joint(torch.tensor([5, 1]), [0, 1], [1, 0], sizes=(2, None, None))


def test_error_non_integral_float_codes():
    with pytest.raises(ValueError, match=r"x1\[1\] = 0.5 is not an integer code.*2-D"):
        joint([0.0, 0.5, 1.0], [0, 1, 1], [1, 1, 0])
    with pytest.raises(ValueError, match=r"y\[0\] = nan is not an integer code"):
        joint([0, 1], [0, 1], [np.nan, 1.0])
    with pytest.raises(ValueError, match=r"not an integer code"):
        joint([0, 1], [0, 1], [np.inf, 1.0])


def test_error_mismatched_lengths():
    with pytest.raises(ValueError, match=r"different numbers of samples \(x1: 3, x2: 3, y: 2\)"):
        joint([0, 1, 0], [0, 1, 1], [1, 0])
    with pytest.raises(ValueError, match=r"weights: 2"):
        joint([0, 1, 0], [0, 1, 1], [1, 0, 1], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"groups: 4"):
        joint([0, 1, 0], [0, 1, 1], [1, 0, 1], groups=[0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"x1: 4"):
        joint(np.full((4, 2), 0.5), [0, 1, 1], [1, 0, 1])


def test_error_rows_not_summing_to_one():
    rows = np.full((5, 3), 1 / 3)
    rows[3] = [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match=r"x1\[3\] sums to 1.5, not 1"):
        joint(rows, [0] * 5, [1] * 5)
    rows = np.full((5, 3), 1 / 3)
    rows[2, 0] += 2e-4
    with pytest.raises(ValueError, match=r"x2\[2\] sums to"):
        joint([0] * 5, rows, [1] * 5)
    rows[2, 0] -= 1.5e-4  # now within 1e-4: accepted
    joint([0] * 5, rows, [1] * 5)


def test_error_codes_given_as_column():
    with pytest.raises(ValueError, match="1-D vector"):
        joint(np.array([[0], [2], [1]]), [0, 1, 1], [1, 0, 1])


def test_error_negative_probability():
    rows = np.full((4, 2), 0.5)
    rows[1] = [-0.25, 1.25]
    with pytest.raises(ValueError, match=r"y\[1\] has a negative probability \(-0.25 in column 0\)"):
        joint([0, 1, 0, 1], [0, 0, 1, 1], rows)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_error_non_finite_rows(bad):
    rows = np.full((4, 2), 0.5)
    rows[2, 1] = bad
    with pytest.raises(ValueError, match=r"x1\[2\] contains a non-finite value"):
        joint(torch.tensor(rows), [0, 0, 1, 1], [0, 1, 0, 1])


def test_error_sizes_do_not_match_rows():
    with pytest.raises(ValueError, match=r"x1 has 3 columns but sizes gives 4"):
        joint(np.full((2, 3), 1 / 3), [0, 1], [0, 1], sizes=(4, 2, 2))


def test_error_bad_sizes_argument():
    with pytest.raises(ValueError, match="3 entries"):
        joint([0], [0], [0], sizes=(2, 2))
    with pytest.raises(ValueError, match=r"sizes\[1\].*>= 1"):
        joint([0], [0], [0], sizes=(2, 0, 2))
    with pytest.raises(TypeError):
        joint([0], [0], [0], sizes=3)


def test_error_empty_input():
    with pytest.raises(ValueError, match="N = 0"):
        joint([], [], [])
    with pytest.raises(ValueError, match="N = 0"):
        joint(np.zeros((0, 3)), np.zeros(0, dtype=int), np.zeros(0, dtype=int))


@pytest.mark.parametrize("bad, word", [(-0.5, "negative"), (np.nan, "not finite"), (np.inf, "not finite")])
def test_error_bad_weights(bad, word):
    w = np.ones(4)
    w[2] = bad
    with pytest.raises(ValueError, match=rf"weights\[2\] = .* is {word}"):
        joint([0, 1, 0, 1], [0, 0, 1, 1], [0, 1, 1, 0], weights=w)


def test_error_all_weights_zero():
    with pytest.raises(ValueError, match="zero total weight"):
        joint([0, 1], [0, 1], [0, 1], weights=[0.0, 0.0])


def test_error_empty_group_is_named():
    with pytest.raises(ValueError, match=r"group 1 has no samples"):
        joint([0, 1, 0], [0, 1, 1], [1, 0, 1], groups=[0, 2, 2])
    with pytest.raises(ValueError, match=r"group 3 has no samples"):
        joint([0, 1, 0], [0, 1, 1], [1, 0, 1], groups=[0, 1, 2], num_groups=4)


def test_error_zero_weight_group_is_named():
    with pytest.raises(ValueError, match=r"group 1 has zero total weight \(its 2 samples"):
        joint([0, 1, 0, 1], [0, 1, 1, 0], [1, 0, 1, 1], groups=[0, 1, 1, 0], weights=[1, 0, 0, 1])


def test_error_bad_groups():
    with pytest.raises(ValueError, match=r"groups\[1\] = -1 is a negative group id"):
        joint([0, 1], [0, 1], [0, 1], groups=[0, -1])
    with pytest.raises(ValueError, match=r"groups\[2\] = 2 is out of range for num_groups 2; group ids must be "
                                         r"integers in \[0, 2\) \(raise num_groups or fix the group id\)"):
        joint([0, 1, 1], [0, 1, 1], [0, 1, 0], groups=[0, 1, 2], num_groups=2)
    with pytest.raises(ValueError, match="num_groups was given without groups"):
        joint([0, 1], [0, 1], [0, 1], num_groups=2)
    with pytest.raises(ValueError, match="groups must be a 1-D"):
        joint([0, 1], [0, 1], [0, 1], groups=[[0], [1]])


def test_error_wrong_dimensions_and_types():
    with pytest.raises(ValueError, match="1-D vector of N integer codes or a 2-D"):
        joint(np.zeros((2, 2, 2)), [0, 1], [0, 1])
    with pytest.raises(ValueError, match="got shape \\(\\)"):
        joint(3, [0], [0])
    with pytest.raises(TypeError, match="complex"):
        joint(np.array([0, 1], dtype=complex), [0, 1], [0, 1])
    with pytest.raises(TypeError, match="numeric"):
        joint(["a", "b"], [0, 1], [0, 1])
    with pytest.raises(TypeError, match="numeric"):
        joint([0, 1], [0, 1], [0, 1], weights=["1", "2"])
    with pytest.raises(TypeError, match="required"):
        joint([0, 1], None, [0, 1])


# --------------------------------------------------------------------------- #
# pid_from_samples
# --------------------------------------------------------------------------- #
def test_pid_from_samples_composes():
    x1 = [0, 1, 1, 0] * 5
    x2 = [0, 1, 0, 1] * 5
    y = [a ^ b for a, b in zip(x1, x2)]
    direct = fastpid.pid(joint(x1, x2, y), method="proxy")
    res = pid_from_samples(x1, x2, y, method="proxy")
    np.testing.assert_allclose(res.synergy, direct.synergy)
    np.testing.assert_allclose(res.synergy, np.log(2), atol=1e-8)


def test_pid_from_samples_names_itself_for_an_unknown_argument():
    """counts= and seed= (estimate's) raised "pid() got an unexpected keyword argument", naming
    a function the caller never called, after the joint was built."""
    with pytest.raises(TypeError, match=r"pid_from_samples\(\) got unexpected keyword argument\(s\) "
                                        r"\['counts'\].*pass the counts as weights"):
        pid_from_samples([0, 1], [0, 1], [0, 1], counts=[2, 3])
    with pytest.raises(TypeError, match=r"\['seed'\]: it takes joint\(\)'s arguments and fastpid.pid\(\)'s$"):
        pid_from_samples([0, 1], [0, 1], [0, 1], seed=0)


def test_memory_error_says_where_the_sizes_come_from():
    """The message said "sizes inferred from the largest codes — pass sizes=" also when
    sizes= had been passed."""
    with pytest.raises(MemoryError) as given:
        joint([0, 1], [0, 1], [0, 1], sizes=(10**6, 10**6, 2))
    assert "come from sizes= (x1: 1,000,000, x2: 1,000,000, y: 2)" in str(given.value)
    assert "inferred" not in str(given.value) and "pass sizes=" not in str(given.value)
    # Each variable with its size: which code is out of range, not only which were inferred.
    # (a size: the largest code, 10**12, + 1; it had read as the largest code itself)
    with pytest.raises(MemoryError, match=r"from the largest code \+ 1 \(x1: 1,000,000,000,001\), "
                                          r"sizes= \(x2: 2, y: 2\) — pass sizes="):
        joint([0, 10**12], [0, 1], [0, 1], sizes=(None, 2, 2))
    with pytest.raises(MemoryError, match=r"the largest code \+ 1 \(x1: 2, x2: 2, y: 2, groups: 1,000,000,000,001\)"):
        joint([0, 1], [0, 1], [0, 1], groups=[0, 10**12])


def test_the_joint_is_refused_where_its_two_copies_do_not_fit(monkeypatch):
    """Building a joint holds its sums and the normalised joint (a 305 MB joint grew the
    process by 623 MB); the check counted one, so a joint of 0.6 of the free memory was admitted
    and then needed 1.2 of it."""
    from fastpid import _resources

    size = 8 * 100 * 100 * 10                                 # float64 bytes of the joint
    monkeypatch.setattr(_resources, "_UNCHECKED_BYTES", 0)     # a joint this small goes unchecked
    monkeypatch.setattr(_resources, "available_bytes", lambda device: int(1.5 * size))
    with pytest.raises(MemoryError, match=r"0.000745 GiB; building it takes 0.00149 GiB"):
        joint([0, 99], [0, 99], [0, 9], sizes=(100, 100, 10))
    monkeypatch.setattr(_resources, "available_bytes", lambda device: 2 * size)
    assert joint([0, 99], [0, 99], [0, 9], sizes=(100, 100, 10)).shape == (100, 100, 10)
    # Probability rows hold a chunk's products beside the sums: a third copy.
    rows = np.full((2, 100), 0.01)
    with pytest.raises(MemoryError, match=r"building it takes 0.00224 GiB"):
        joint(rows, [0, 99], [0, 9], sizes=(100, 100, 10))


def test_pid_from_samples_groups_batch():
    rng = np.random.default_rng(4)
    N = 200
    x1, x2 = rng.integers(0, 2, size=N), rng.integers(0, 2, size=N)
    x1[:4] = [0, 0, 1, 1]
    x2[:4] = [0, 1, 0, 1]
    y = x1 ^ x2
    g = np.arange(N) % 3
    res = pid_from_samples(x1, x2, y, groups=g)
    assert np.shape(res.synergy) == (3,)
    with pytest.raises(ValueError, match="group 1 has no samples"):
        pid_from_samples(x1, x2, y, groups=np.where(g == 1, 2, g))


def test_each_group_keeps_its_weights_ratio_whatever_the_other_groups_scale():
    """Weights were scaled by one largest weight over all groups: a group of weights 1e-50
    beside a group of weight 1 read as all zero in float32 rows ('zero total weight'), and
    near 1e-44 its joint was off by 15 %."""
    rows = torch.tensor([[0.25, 0.75], [0.5, 0.5], [0.25, 0.75], [0.5, 0.5]])
    codes = torch.tensor([1, 0, 1, 1])
    groups = torch.tensor([0, 0, 1, 1])
    for small in (1e-50, 1e-44):
        w = torch.tensor([1.0, 1.0, small, 3 * small], dtype=torch.float64)
        P = joint(rows, codes, codes, weights=w, groups=groups, sizes=(2, 2, 2))
        alone = joint(rows[2:], codes[2:], codes[2:], weights=torch.tensor([1.0, 3.0]), sizes=(2, 2, 2))
        torch.testing.assert_close(P[1], alone, rtol=0, atol=1e-7)


def test_float32_weights_keep_their_ratio_in_a_float64_joint():
    """float32 weights 3 and 1 were divided in float32 and gave 0.2500000056 for 1/4."""
    w = np.array([3.0, 1.0], dtype=np.float32)
    P = joint(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([0, 0]), weights=torch.from_numpy(w))
    assert P.dtype == torch.float64 and float(P[1, 0, 0]) == 0.25


def test_numpy_float16_rows_are_read_like_torch_float16_rows():
    """numpy float16 rows went through float64 and met the 1e-4 row-sum tolerance, not the
    dtype's eps as torch float16 rows do."""
    rows = torch.softmax(torch.randn(64, 7, generator=torch.Generator().manual_seed(3)), 1).half()
    assert float((rows.float().sum(1) - 1).abs().max()) > 1e-4       # off by more than 1e-4
    y = np.arange(64) % 2
    from_numpy = joint(rows.numpy(), y, y, sizes=(7, 2, 2))
    from_torch = joint(rows, torch.as_tensor(y), torch.as_tensor(y), sizes=(7, 2, 2))
    assert isinstance(from_numpy, np.ndarray) and from_numpy.dtype == np.float64
    np.testing.assert_allclose(from_numpy, from_torch.double().numpy(), rtol=0, atol=1e-7)


def test_a_fractional_group_id_gets_advice_for_group_ids():
    """The message advised probability rows, which groups cannot be."""
    with pytest.raises(ValueError, match=r"groups\[1\] = 0.5 is not an integer group id; group ids are integers") as e:
        joint([0, 1], [0, 1], [0, 1], groups=np.array([0.0, 0.5]))
    assert "probability rows" not in str(e.value)


def test_joint_under_autocast_keeps_its_dtype_and_values():
    """The matmuls of the soft-row contraction ran under autocast: float32 rows gave a
    bfloat16 joint (entries off by 4e-3, the synergy by 5 times the certified gap)."""
    g = torch.Generator().manual_seed(0)
    h1 = (3 * torch.randn(4096, 8, generator=g)).softmax(-1)
    h2 = (3 * torch.randn(4096, 8, generator=g)).softmax(-1)
    y = torch.randint(0, 4, (4096,), generator=g)
    groups = torch.arange(4096) % 3
    for kw in ({}, {"groups": groups}):
        P = joint(h1, h2, y, sizes=(8, 8, 4), **kw)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            Pa = joint(h1, h2, y, sizes=(8, 8, 4), **kw)
        assert Pa.dtype == P.dtype == torch.float32
        torch.testing.assert_close(Pa, P, rtol=1e-6, atol=1e-9)


def test_under_torch_compile_the_values_and_gradients_are_eager_ones():
    """Under torch.compile, joint and pid (run untraced) give the eager results and gradients,
    wrapped by the caller in torch.compiler.disable or not, and importing fastpid must not
    load torch._dynamo (1.1 s; a decorator would)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import sys, fastpid; print('torch._dynamo' in sys.modules)"],
                          capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr
    g = torch.Generator().manual_seed(1)
    logits1, logits2 = torch.randn(64, 4, generator=g), torch.randn(64, 3, generator=g)
    y = torch.randint(0, 2, (64,), generator=g)

    def step(a, b):
        P = joint(a.softmax(-1), b.softmax(-1), y, sizes=(4, 3, 2))
        return fastpid.pid(P).synergy * 2.0

    for wrap in (lambda f: f, torch.compiler.disable):
        compiled = torch.compile(lambda a, b: wrap(step)(a, b), backend="eager")
        a = logits1.clone().requires_grad_(True)
        b = logits1.clone().requires_grad_(True)
        out, ref = compiled(a, logits2), step(b, logits2)
        out.backward()
        ref.backward()
        assert float(out) == float(ref)
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)


def test_under_torch_compile_pid_and_joint_run_untraced_in_inference_mode_too():
    """Traced, joint and pid broke the graph 17-37 times a call, and under inference_mode dynamo
    failed its own guard on the numpy round trip of the C++ route (AssertionError "Guard failed
    on the same frame it was created"). They now run eagerly, as torch.compiler.disable runs
    them: one break each."""
    g = torch.Generator().manual_seed(2)
    logits1, logits2 = torch.randn(64, 4, generator=g), torch.randn(64, 4, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)

    def step(a, b):
        return fastpid.pid(joint(a.softmax(-1), b.softmax(-1), y, sizes=(4, 4, 3)).double()).synergy

    ref = step(logits1, logits2)
    torch._dynamo.reset()
    with torch.inference_mode():
        got = torch.compile(step, backend="eager")(logits1, logits2)
    assert float(got) == float(ref)
    torch._dynamo.reset()
    assert torch._dynamo.explain(step)(logits1, logits2).graph_break_count <= 2
    # Non-strict export runs plain Python with is_compiling() set: the untraced call must not
    # take itself for traced again (it recursed to Python's stack limit). Export cannot hold
    # pid's data-dependent steps, and says so in its own words.
    class Step(torch.nn.Module):
        def forward(self, a, b):
            return step(a, b)

    with pytest.raises(Exception) as failed:
        torch.export.export(Step(), (logits1, logits2), strict=False)
    assert not isinstance(failed.value, RecursionError)


def test_under_vmap_joint_says_why_it_cannot_run():
    """vmap over joint (an ensemble of heads) met its data-dependent checks with torch's
    generic 'data-dependent control flow' RuntimeError; pid_from_samples failed there too,
    before pid's own message."""
    L = torch.randn(5, 32, 3, generator=torch.Generator().manual_seed(0))
    c2, y = torch.randint(0, 3, (32,)), torch.randint(0, 2, (32,))
    for fn in (lambda l: joint(l.softmax(-1), c2, y, sizes=(3, 3, 2)),
               lambda l: fastpid.pid_from_samples(l.softmax(-1), c2, y, sizes=(3, 3, 2)).synergy):
        with pytest.raises(ValueError, match=r"fastpid.joint cannot run under torch.vmap \(x1 batched by it\)"):
            torch.vmap(fn)(L)


def test_under_torch_compile_unconverged_solves_warn_on_either_route():
    """A compiled function that ran a float64 solve without gradients (the CPU route, numpy
    arrays) and then one with them (tensors) raised TypeError in the convergence warning:
    dynamo had compiled the warning's frame for the first call and reused it for the second."""
    from fastpid import ConvergenceWarning

    P = torch.rand(2, 6, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(lambda P: fastpid.pid(P, max_iter=1).synergy, backend="eager")
    for X in (P, P.clone().requires_grad_(), P.float()):
        with pytest.warns(ConvergenceWarning) as caught:
            got = compiled(X)
        ours = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
        assert {w.filename for w in ours} == {__file__}  # the caller's line, through torch's wrappers
        with pytest.warns(ConvergenceWarning):
            torch.testing.assert_close(got.detach(), fastpid.pid(X.detach(), max_iter=1).synergy)


def test_masked_arrays_with_masked_entries_are_refused_and_iterators_named():
    """A numpy masked array's mask was ignored: the masked (missing) sample counted as data.
    It is refused, saying what to do; one without masked entries is its data. A generator was
    told to use .astype, which it does not have."""
    x1, x2 = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 1])
    with pytest.raises(TypeError, match=r"y is a numpy masked array with 1 masked entries.*weight 0"):
        fastpid.joint(x1, x2, np.ma.array([0, 0, 1, 1], mask=[0, 0, 0, 1]))
    with pytest.raises(TypeError, match="masked array"):
        fastpid.pid(np.ma.array(np.ones((2, 2, 2)), mask=np.eye(8, dtype=bool)[0].reshape(2, 2, 2)))
    np.testing.assert_array_equal(fastpid.joint(x1, x2, np.ma.array([0, 0, 1, 1])),
                                  fastpid.joint(x1, x2, np.array([0, 0, 1, 1])))
    with pytest.raises(TypeError, match=r"x1 is an iterator \(generator\); pass a list"):
        fastpid.joint((c for c in x1), x2, [0, 0, 1, 1])


def test_masked_arrays_inside_lists_and_given_to_the_integrations_are_refused():
    """pid([P, P]) with a masked entry in P read the entry as data (synergy 0 instead of
    0.0747 with it dropped), and the integrations wrapped masked labels without their mask
    (PIDProbe gave the unmasked result with half the labels masked)."""
    from fastpid.integrations import PIDProbe

    P = np.ma.masked_array(np.ones((2, 2, 2)), mask=np.zeros((2, 2, 2), bool))
    P.mask[0, 0, 0] = True
    for bad in ([P, P], (P.data, P), [[P]]):
        with pytest.raises(TypeError, match="P is a list holding numpy masked arrays with [12] masked entries"):
            fastpid.pid(bad)
    np.testing.assert_allclose(fastpid.pid([P.data, np.ma.masked_array(P.data)]).synergy, [0.0, 0.0], atol=1e-9)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 3))
    y = np.ma.masked_array(rng.integers(0, 2, 60), mask=np.arange(60) < 30)
    with pytest.raises(TypeError, match="masked array with 30 masked entries"):
        PIDProbe(n_clusters=3)(emb, emb, y)
    # Weights, scores and priors that torch.as_tensor read through their masks.
    from fastpid.integrations.dyncim_loss import dyncim_loss_terms
    from fastpid.integrations.ogm_ge import ogm_ge_coefficients
    z = torch.zeros(4, 2)
    w = np.ma.masked_array([1.0, 1.0, 5.0, 1.0], mask=[0, 0, 1, 0])
    with pytest.raises(TypeError, match="sample_weights is a numpy masked array with 1 masked entries"):
        dyncim_loss_terms(z, [z, z], torch.tensor([0, 1, 0, 1]), sample_weights=w)
    with pytest.raises(TypeError, match="scores is a numpy masked array"):
        ogm_ge_coefficients(np.ma.masked_array([1.0, 2.0], mask=[0, 1]))
    with pytest.raises(TypeError, match="weights is a numpy masked array"):
        fastpid.PIDMetric((2, 2, 2)).update([0, 1, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0], weights=w)


def test_lists_are_searched_for_arrays_only_where_they_hold_arrays():
    """The masked-array search walked every number of a list (a million codes: 0.66 s -> 1.43 s
    in joint()), and a list nested 3000 deep raised RecursionError instead of the TypeError
    saying it is not a rectangular array. A nested list of tensors that need a gradient is
    told to stack them, as a flat one is."""
    from fastpid._validate import _array_leaves

    assert _array_leaves(list(range(10**6))) == []
    deep = [0.5]
    for _ in range(3000):
        deep = [deep]
    with pytest.raises(TypeError, match="could not be read as a rectangular numeric array"):
        fastpid.pid(deep)
    t = torch.rand(2, 2, 2, requires_grad=True)
    with pytest.raises(TypeError, match="stack them into one tensor"):
        fastpid.pid([[t, t]])
    # After a plain list or a number (the first entries' chain ends in a number), too.
    P1 = np.ma.masked_array(np.ones((2, 2, 2)), mask=np.eye(8, dtype=bool)[0].reshape(2, 2, 2))
    with pytest.raises(TypeError, match="list holding numpy masked arrays with 1 masked entries"):
        fastpid.pid([np.ones((2, 2, 2)).tolist(), P1])
    with pytest.raises(TypeError, match="weights is a list of torch tensors"):
        fastpid.joint([0, 1], [1, 0], [0, 1], weights=[0.5, torch.tensor(0.5, requires_grad=True)])


def test_long_double_masked_arrays_are_refused_too():
    """pid() scales long double problems into float64 before anything else: a masked one went
    that way with its mask ignored (on both routes)."""
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is float64 here")
    P = np.ma.array(np.ones((2, 2, 2), dtype=np.longdouble), mask=np.eye(8, dtype=bool)[3].reshape(2, 2, 2))
    for kwargs in ({}, {"return_coupling": True}, {"method": "fast"}):
        with pytest.raises(TypeError, match="masked array with 1 masked entries"):
            fastpid.pid(P, **kwargs)


def test_float16_rows_are_read_alike_in_any_container():
    """float16 softmax rows passed as an array were checked to float16's eps; the same rows as a
    list of rows, a tuple, a list of half tensors or a big-endian array went through float64
    and met the 1e-4 tolerance ('x1[3] sums to 0.99989319, not 1')."""
    g = torch.Generator().manual_seed(0)
    p1, p2 = (torch.softmax(3 * torch.randn(200, 5, generator=g), 1).half().numpy() for _ in range(2))
    y = np.arange(200) % 2
    ref = np.asarray(joint(p1, p2, y))
    for rows in (list(p1), tuple(p1), [torch.from_numpy(r) for r in p1], p1.astype(">f2")):
        np.testing.assert_array_equal(np.asarray(joint(rows, p2, y)), ref)


def test_scalar_sizes_and_zero_d_integer_options_read_as_documented():
    """sizes=np.array(3) raised "'int' object is not iterable"; 0-d integer arrays were refused
    where 0-d tensors were taken (num_groups, max_iter, n_null, seed)."""
    y = np.arange(40) % 2
    for bad in (np.array(3), torch.tensor(3)):
        with pytest.raises(TypeError, match=r"sizes must be a sequence \(n1, n2, ny\)"):
            joint(y, y, y, sizes=bad)
    P = joint(y, y, y, groups=np.zeros(40, dtype=int), num_groups=np.array(1))
    assert P.shape == (1, 2, 2, 2)
    res = fastpid.pid(P, max_iter=np.array(50))
    a = fastpid.estimate(y, y, y, seed=np.array(3), n_null=np.array(2), n_jackknife=torch.tensor(4))
    b = fastpid.estimate(y, y, y, seed=3, n_null=2, n_jackknife=4)
    assert float(a.synergy) == float(b.synergy) and a.seed == 3 and bool(res.converged)


def test_a_small_joint_does_not_read_the_free_memory(monkeypatch):
    """Below _UNCHECKED_BYTES (as pid's own checks) the free memory is not read: reading it
    (six files) took ~80 us of a 276 us joint of 256 codes."""
    from fastpid import _resources

    def unread(device):
        raise AssertionError("the free memory was read")

    monkeypatch.setattr(_resources, "available_bytes", unread)
    assert joint([0, 9], [0, 9], [0, 9], sizes=(10, 10, 10)).shape == (10, 10, 10)
    monkeypatch.setattr(_resources, "_UNCHECKED_BYTES", 0)
    with pytest.raises(AssertionError, match="the free memory was read"):
        joint([0, 9], [0, 9], [0, 9], sizes=(10, 10, 10))


def test_a_list_of_bfloat16_rows_is_read_like_one_of_float32_rows():
    """A list of bfloat16 row tensors (rows gathered per sample) was refused: numpy has no
    bfloat16, and the list went through numpy. Tensors of one shape and dtype are stacked."""
    rows = [torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75]), torch.tensor([1.0, 0.0])]
    codes, y = [0, 1, 1], [0, 0, 1]
    want = fastpid.joint(rows, codes, y)
    got = fastpid.joint([r.to(torch.bfloat16) for r in rows], codes, y)
    np.testing.assert_allclose(got, want, rtol=1e-7)
    # Softmax rows, which sum to 1 only to bfloat16's rounding, pass as a bfloat16 tensor's do.
    soft = torch.softmax(torch.randn(3, 5, generator=torch.Generator().manual_seed(0)), 1).to(torch.bfloat16)
    np.testing.assert_allclose(fastpid.joint(list(soft), codes, y), fastpid.joint(soft, codes, y).numpy(), rtol=1e-6)
    with pytest.raises(TypeError, match="stack them"):  # a gradient would be lost: still refused
        fastpid.joint([r.to(torch.bfloat16).requires_grad_() for r in rows], codes, y)
