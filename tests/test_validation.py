"""Input validation: fastpid._validate directly, and the same bad inputs through fastpid.pid."""

import math
import re

import numpy as np
import pytest
import torch

import fastpid
from fastpid._validate import (
    check_base,
    check_choice,
    check_codes,
    check_distribution,
    check_positive_int,
    check_rows,
    check_tol,
    check_weights,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def rand_counts(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 10, size=shape).astype(np.float64) + 0.5


# --------------------------------------------------------------------------- #
# check_distribution: accepted inputs, dtype rules, normalisation
# --------------------------------------------------------------------------- #
def test_numpy_float64_normalised_per_problem():
    P = rand_counts((4, 2, 3, 5, 2))
    T, is_numpy = check_distribution(P)
    assert is_numpy is True
    assert isinstance(T, torch.Tensor) and T.dtype == torch.float64
    assert T.shape == P.shape
    expect = P / P.sum(axis=(-3, -2, -1), keepdims=True)
    np.testing.assert_allclose(T.numpy(), expect, rtol=1e-15, atol=0)
    np.testing.assert_allclose(T.sum(dim=(-3, -2, -1)).numpy(), 1.0, rtol=1e-14)


def test_input_not_modified():
    P = rand_counts((2, 2, 2))
    before = P.copy()
    check_distribution(P)
    np.testing.assert_array_equal(P, before)
    t = torch.tensor(P)
    check_distribution(t)
    torch.testing.assert_close(t, torch.tensor(before))


def test_nested_list_and_integer_counts():
    P = [[[1, 2], [3, 4]], [[0, 0], [5, 5]]]
    T, is_numpy = check_distribution(P)
    assert is_numpy and T.dtype == torch.float64
    np.testing.assert_allclose(T.numpy(), np.array(P) / 20.0)


@pytest.mark.parametrize(
    "np_dtype", [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.uint16]
)
def test_numpy_dtypes_give_float64(np_dtype):
    P = np.arange(1, 9).reshape(2, 2, 2).astype(np_dtype)
    T, is_numpy = check_distribution(P)
    assert is_numpy and T.dtype == torch.float64
    np.testing.assert_allclose(T.numpy(), np.arange(1, 9).reshape(2, 2, 2) / 36.0, rtol=1e-15)


def test_numpy_non_native_byte_order_and_readonly():
    P = np.arange(1, 9, dtype=">f8").reshape(2, 2, 2)
    T, _ = check_distribution(P)
    np.testing.assert_allclose(T.numpy(), np.arange(1, 9).reshape(2, 2, 2) / 36.0)
    Q = np.arange(1.0, 9.0).reshape(2, 2, 2)
    Q.setflags(write=False)
    T, _ = check_distribution(Q[:, ::-1])  # read-only, non-contiguous view
    np.testing.assert_allclose(T.numpy(), Q[:, ::-1] / 36.0)


@pytest.mark.parametrize(
    "tdtype, expect",
    [
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.int32, torch.float64),
        (torch.int64, torch.float64),
        (torch.uint8, torch.float64),
        (torch.bool, torch.float64),
    ],
)
def test_torch_dtype_rules(tdtype, expect):
    P = torch.tensor(np.arange(1, 9).reshape(2, 2, 2) % 2 + 1).to(tdtype)
    T, is_numpy = check_distribution(P)
    assert is_numpy is False
    assert T.dtype == expect
    assert T.device == P.device
    torch.testing.assert_close(T.sum(), torch.tensor(1.0, dtype=expect))


def test_bool_is_read_as_counts():
    P = np.zeros((2, 2, 2), dtype=bool)
    P[0, 1, 1] = P[1, 0, 0] = True
    T, _ = check_distribution(P)
    assert T.dtype == torch.float64
    assert T[0, 1, 1].item() == 0.5 and T[1, 0, 0].item() == 0.5
    with pytest.raises(ValueError, match="zero total mass"):
        check_distribution(np.zeros((2, 2, 2), dtype=bool))


def test_autograd_graph_preserved():
    P = torch.rand(3, 2, 3, 2, dtype=torch.float64) + 0.1
    P.requires_grad_(True)
    T, _ = check_distribution(P)
    assert T.requires_grad and T.grad_fn is not None
    assert torch.autograd.gradcheck(lambda x: check_distribution(x)[0], (P,))


def test_autograd_through_half_precision_cast():
    P = (torch.rand(2, 2, 2) + 0.1).to(torch.float16).requires_grad_(True)
    T, _ = check_distribution(P)
    assert T.dtype == torch.float32
    T[0, 0, 0].backward()
    assert P.grad is not None and P.grad.dtype == torch.float16


def test_normalised_input_unchanged_to_rounding():
    P = np.random.default_rng(1).dirichlet(np.ones(27), size=5).reshape(5, 3, 3, 3)
    T, _ = check_distribution(P)
    np.testing.assert_allclose(T.numpy(), P, rtol=1e-15, atol=1e-17)


def test_unbatched_and_deep_batch_shapes():
    for shape in [(1, 1, 1), (2, 3, 4), (2, 1, 3, 1, 2, 5)]:
        T, _ = check_distribution(np.ones(shape))
        assert tuple(T.shape) == shape
        np.testing.assert_allclose(T.sum(dim=(-3, -2, -1)).numpy(), 1.0)


@cuda
@pytest.mark.gpu
def test_cuda_stays_on_device():
    P = torch.rand(4, 3, 3, 3, device="cuda") + 0.1
    T, is_numpy = check_distribution(P)
    assert not is_numpy and T.device == P.device and T.dtype == torch.float32
    P[2, 1, 0, 0] = -1.0
    with pytest.raises(ValueError, match=r"P\[2\] has a negative entry"):
        check_distribution(P)


# --------------------------------------------------------------------------- #
# check_distribution: bad input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_negative_entry_names_batch_index_and_cell(lib):
    P = rand_counts((5, 3, 2, 2, 3))
    P[3, 1, 0, 1, 2] = -0.2
    P[4, 0, 0, 0, 0] = -1.0
    if lib == "torch":
        P = torch.tensor(P)
    with pytest.raises(ValueError) as ei:
        check_distribution(P)
    msg = str(ei.value)
    assert "P[3, 1] has a negative entry" in msg
    assert "-0.2" in msg and "x1=0, x2=1, y=2" in msg
    assert ">= 0" in msg
    assert "1 more problem" in msg


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
@pytest.mark.parametrize("lib", ["numpy", "torch32", "torch64"])
def test_non_finite_entry_names_batch_index(bad, word, lib):
    P = rand_counts((6, 2, 2, 2))
    P[4, 1, 1, 0] = bad
    if lib == "torch32":
        P = torch.tensor(P, dtype=torch.float32)
    elif lib == "torch64":
        P = torch.tensor(P)
    with pytest.raises(ValueError) as ei:
        check_distribution(P)
    msg = str(ei.value)
    assert "P[4]" in msg and word in msg and "x1=1, x2=1, y=0" in msg and "finite" in msg


def test_nan_and_negative_in_same_problem_reports_nan():
    P = rand_counts((2, 2, 2))
    P[0, 0, 0] = -1
    P[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        check_distribution(P)


def test_counts_whose_total_overflows_are_normalised():
    """Finite counts up to the float64 range (README) whose total overflows were refused
    ('rescale the counts'); they are scaled by their largest entry first. A zero problem
    beside them is still named."""
    P = np.full((2, 2, 2, 2), 1e308)
    P[1] *= np.arange(1, 9).reshape(2, 2, 2) / 8
    T, _ = check_distribution(P)
    small = P / 1e308
    np.testing.assert_allclose(T.numpy(), small / small.sum((1, 2, 3), keepdims=True), rtol=1e-15)
    P[0] = 0.0
    with pytest.raises(ValueError, match=r"P\[0\] has zero total mass"):
        check_distribution(P)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_zero_mass_problem_names_batch_index(lib):
    P = rand_counts((3, 4, 2, 2, 2))
    P[2, 1] = 0.0
    if lib == "torch":
        P = torch.tensor(P)
    with pytest.raises(ValueError) as ei:
        check_distribution(P)
    msg = str(ei.value)
    assert "P[2, 1] has zero total mass" in msg and "positive total" in msg


def test_unbatched_error_has_no_index_and_custom_name():
    with pytest.raises(ValueError, match=r"^Q has zero total mass"):
        check_distribution(np.zeros((2, 2, 2)), name="Q")
    P = np.ones((2, 2, 2))
    P[1, 0, 1] = -3
    with pytest.raises(ValueError, match=r"^joint has a negative entry \(-3 at x1=1, x2=0, y=1"):
        check_distribution(P, name="joint")


@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
def test_fewer_than_three_dims(shape):
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        check_distribution(np.ones(shape))
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        check_distribution(torch.ones(shape))


def test_scalar_python_number_rejected():
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        check_distribution(1.0)


@pytest.mark.parametrize("shape, axis", [((0, 2, 2), 0), ((2, 0, 2), 1), ((2, 2, 0), 2), ((3, 2, 2, 0), 3),
                                         ((0, 2, 0, 2), 2)])
def test_size_zero_problem_axis(shape, axis):
    with pytest.raises(ValueError, match=f"size 0 along axis {axis}; each of n1, n2 and ny"):
        check_distribution(np.ones(shape))


@pytest.mark.parametrize("shape", [(0, 2, 2, 2), (3, 0, 2, 2, 2)])
def test_size_zero_batch_axis_is_a_batch_of_no_problems(shape):
    T, is_numpy = check_distribution(np.ones(shape), float64=True)
    assert is_numpy and T.shape == shape and T.dtype == torch.float64


def test_complex_rejected():
    with pytest.raises(TypeError, match="complex"):
        check_distribution(np.ones((2, 2, 2), dtype=np.complex128))
    with pytest.raises(TypeError, match="complex"):
        check_distribution(torch.ones(2, 2, 2, dtype=torch.complex64))


@pytest.mark.parametrize(
    "bad",
    [
        np.array([[["a", "b"], ["c", "d"]]] * 2),
        np.ones((2, 2, 2), dtype=object),
        np.array([[[b"x"]]]),
        "not a distribution",
        np.zeros((2, 2, 2), dtype="datetime64[s]"),
    ],
)
def test_non_numeric_rejected(bad):
    with pytest.raises(TypeError, match="non-numeric|numeric"):
        check_distribution(bad)


def test_ragged_list_rejected():
    with pytest.raises(TypeError, match="rectangular"):
        check_distribution([[[1, 2], [3]], [[1, 2], [3, 4]]])


# --------------------------------------------------------------------------- #
# scalar option checks
# --------------------------------------------------------------------------- #
def test_check_tol():
    assert check_tol(None) is None
    assert check_tol(1e-8) == 1e-8
    assert check_tol(np.float32(0.5)) == 0.5
    assert check_tol(torch.tensor(1e-3, dtype=torch.float64)) == 1e-3
    assert check_tol(3) == 3.0
    for bad in [0, 0.0, -1e-9, float("nan"), float("inf"), -float("inf")]:
        with pytest.raises(ValueError, match="tol must be a finite number > 0"):
            check_tol(bad)
    for bad in ["1e-8", True, 1j, [1e-8], torch.ones(2)]:
        with pytest.raises(TypeError, match="tol must be a real number"):
            check_tol(bad)
    with pytest.raises(TypeError):
        check_tol(None, allow_none=False)


def test_check_choice():
    allowed = ("exact", "proxy", "fast")
    assert check_choice("exact", allowed, "method") == "exact"
    assert check_choice(" Proxy", allowed, "method") == "proxy"
    for bad in ["exakt", "", None, 3, "exact-ish"]:
        with pytest.raises(ValueError) as ei:
            check_choice(bad, allowed, "method")
        msg = str(ei.value)
        assert msg.startswith("unknown method")
        assert "'exact', 'proxy', 'fast'" in msg
        assert repr(bad) in msg


def test_check_positive_int_and_base():
    assert check_positive_int(None, name="max_iter") is None
    assert check_positive_int(5, name="max_iter") == 5
    assert check_positive_int(np.int64(7), name="max_iter") == 7
    assert check_positive_int(3.0, name="steps") == 3
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        check_positive_int(0, name="max_iter")
    for bad in [2.5, "3", True]:
        with pytest.raises(TypeError, match="steps must be a positive integer"):
            check_positive_int(bad, name="steps")
    assert check_base(None) is None
    assert check_base(2) == 2.0
    assert check_base(math.e) is None  # nats are said one way: base None
    for bad in [1, 0, -2, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match="base must be"):
            check_base(bad)
    with pytest.raises(TypeError):
        check_base("2")


# --------------------------------------------------------------------------- #
# sample-level helpers used by joint()
# --------------------------------------------------------------------------- #
def test_check_codes():
    c, n = check_codes(torch.tensor([0, 2, 1]), "x1")
    assert n == 3 and c.dtype == torch.int64
    c, n = check_codes(torch.tensor([0.0, 2.0]), "x1", 5)
    assert n == 5 and c.tolist() == [0, 2]
    c, n = check_codes(torch.tensor([True, False]), "x1")
    assert n == 2 and c.tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"x1\[1\] = -1 is a negative code"):
        check_codes(torch.tensor([0, -1, -2]), "x1")
    with pytest.raises(ValueError, match=r"y\[2\] = 4 is out of range for size 4"):
        check_codes(torch.tensor([0, 3, 4]), "y", 4)
    with pytest.raises(ValueError, match=r"x2\[1\] = 0.5 is not an integer code"):
        check_codes(torch.tensor([1.0, 0.5]), "x2")
    with pytest.raises(ValueError, match=r"x2\[0\] = nan is not an integer"):
        check_codes(torch.tensor([float("nan"), 1.0]), "x2")
    with pytest.raises(ValueError, match="empty"):
        check_codes(torch.zeros(0, dtype=torch.int64), "x1")


def test_check_rows():
    rows = torch.tensor([[0.2, 0.8], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    out = check_rows(rows, "x1")
    assert out is rows
    assert check_rows(torch.tensor([[0, 1], [1, 0]]), "x1").dtype == torch.float64
    check_rows(torch.tensor([[0.5, 0.5 + 5e-5]]), "x1")  # within 1e-4
    with pytest.raises(ValueError, match=r"x1\[1\] sums to 1.1, not 1"):
        check_rows(torch.tensor([[0.5, 0.5], [0.6, 0.5], [2.0, 0.0]]), "x1")
    with pytest.raises(ValueError, match=r"x1\[0\] has a negative probability \(-0.5 in column 0\)"):
        check_rows(torch.tensor([[-0.5, 1.5]]), "x1")
    with pytest.raises(ValueError, match=r"y\[1\] contains a non-finite value"):
        check_rows(torch.tensor([[0.5, 0.5], [float("nan"), 1.0]]), "y")
    with pytest.raises(ValueError, match="3 columns but sizes gives 4"):
        check_rows(torch.full((2, 3), 1 / 3), "x2", 4)


def test_check_weights():
    w = check_weights(torch.tensor([1, 0, 2]), 3)
    assert w.dtype == torch.float64
    with pytest.raises(ValueError, match=r"weights\[1\] = -1.0 is negative"):
        check_weights(torch.tensor([1.0, -1.0]), 2)
    with pytest.raises(ValueError, match=r"weights\[0\] = inf is not finite"):
        check_weights(torch.tensor([float("inf"), 1.0]), 2)
    with pytest.raises(ValueError, match="length 2 but there are N=3"):
        check_weights(torch.ones(2), 3)


# --------------------------------------------------------------------------- #
# the same bad inputs through the public fastpid.pid
# --------------------------------------------------------------------------- #
def _bad_distributions():
    neg = rand_counts((3, 2, 2, 2))
    neg[1, 0, 1, 1] = -0.5
    nan = rand_counts((3, 2, 2, 2))
    nan[2, 0, 0, 0] = np.nan
    inf = rand_counts((2, 2, 2))
    inf[1, 1, 1] = np.inf
    zero = rand_counts((4, 2, 2, 2))
    zero[3] = 0
    return [
        pytest.param(neg, ValueError, r"P\[1\] has a negative entry", id="negative"),
        pytest.param(nan, ValueError, r"P\[2\] contains NaN", id="nan"),
        pytest.param(inf, ValueError, r"infinite", id="inf"),
        pytest.param(zero, ValueError, r"P\[3\] has zero total mass", id="zero-mass"),
        pytest.param(np.ones((2, 2)), ValueError, "at least 3 dimensions", id="2d"),
        pytest.param(np.ones((2, 0, 2)), ValueError, "size 0", id="empty-axis"),
        pytest.param(np.ones((2, 2, 2), dtype=complex), TypeError, "complex", id="complex"),
        pytest.param(np.array([[["a"]]]), TypeError, "numeric", id="string"),
        pytest.param(np.ones((2, 2, 2), dtype=object), TypeError, "numeric", id="object"),
    ]


@pytest.mark.parametrize("P, exc, pattern", _bad_distributions())
def test_pid_rejects_bad_distributions(P, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fastpid.pid(P)


# Complex, string and object arrays have no torch counterpart; the float cases do.
@pytest.mark.parametrize("P, exc, pattern", [p for p in _bad_distributions() if p.values[0].dtype.kind == "f"])
def test_pid_rejects_bad_torch_distributions(P, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fastpid.pid(torch.tensor(P))


@pytest.mark.parametrize("tol", [0, -1e-8, float("nan")])
def test_pid_rejects_bad_tol(tol):
    with pytest.raises(ValueError, match="tol"):
        fastpid.pid(np.ones((2, 2, 2)), tol=tol)


@pytest.mark.parametrize("kw, what", [({"method": "exakt"}, "method"), ({"backend": "gpu2"}, "backend")])
def test_pid_rejects_unknown_choice(kw, what):
    with pytest.raises(ValueError, match=re.compile(f"unknown {what}.*expected one of", re.S)):
        fastpid.pid(np.ones((2, 2, 2)), **kw)


def test_a_number_in_a_one_element_array_is_taken_as_in_a_one_element_tensor():
    """A real-number option took a one-element tensor but refused the same number in a
    one-element numpy array (a grouped estimate of one group gives those)."""
    P = np.full((2, 2, 2), 1 / 8)
    ref = fastpid.pid(P, tol=1e-6)
    for tol in (torch.tensor([1e-6]), np.array([1e-6]), np.array([[1e-6]])):
        assert float(fastpid.pid(P, tol=tol).gap) == float(ref.gap)
    with pytest.raises(TypeError, match="tol must be a real number"):
        fastpid.pid(P, tol=np.array([1e-6, 1e-7]))
