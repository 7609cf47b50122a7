"""The probe's torch k-means and PCA on inputs that do not need scikit-learn: offset data,
half precision, numpy integer arguments and the accepted input types."""
from __future__ import annotations

import math
import typing

import numpy as np
import pytest
import torch

from fastpid.integrations.cluster import kmeans, l2_normalize, pca, standardize


def _blobs(dtype=torch.float32):
    """Three well separated blobs ``(600, 8)`` (centres 0, +3, -3; spread 0.5) and their ids."""
    g = torch.Generator().manual_seed(0)
    truth = torch.arange(600) % 3
    centres = torch.tensor([[0.0] * 8, [3.0] * 8, [-3.0] * 8], dtype=dtype)
    return centres[truth] + 0.5 * torch.randn(600, 8, generator=g, dtype=dtype), truth


@pytest.mark.parametrize("dtype, offset", [(torch.float32, 1e3), (torch.float32, 1e4), (torch.float32, 3e4),
                                           (torch.float64, 1e8), (torch.float64, 1e9)])
def test_kmeans_is_unmoved_by_a_common_offset(dtype, offset):
    """|x|² - 2x·c + |c|² on raw data cancelled catastrophically: float32 blobs at an offset
    of 1e4 came out scrambled (purity 0.69) and the inertia was wrong from 1e3."""
    x, truth = _blobs(dtype)
    ref = kmeans(x, 3, seed=0)
    assert ref.labels.unique(return_counts=True)[1].tolist() == [200, 200, 200]
    shifted = kmeans(x + offset, 3, seed=0)
    assert torch.equal(shifted.labels, ref.labels)
    assert shifted.inertia == pytest.approx(ref.inertia, rel=1e-3)
    # The centres come back in the caller's coordinates.
    torch.testing.assert_close(shifted.centers - offset, ref.centers, rtol=0, atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kmeans_half_precision_runs_in_float32(dtype):
    """float16 k-means++ potentials (sums of N squared distances) overflowed 65504 and
    torch.multinomial raised 'invalid multinomial distribution' on 300 x 64 features of std 3."""
    x = 3 * torch.randn(300, 64, generator=torch.Generator().manual_seed(0))
    res = kmeans(x.to(dtype), 5)
    assert res.centers.dtype == torch.float32 and res.labels.shape == (300,)
    assert torch.equal(res.labels, kmeans(x.to(dtype).float(), 5).labels)
    assert np.isfinite(res.inertia)
    assert pca(x.to(dtype), 2).scores.dtype == torch.float32   # no half-precision SVD on the CPU


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_standardize_and_l2_normalize_of_half_precision_run_in_float32(dtype):
    """In bfloat16 the standardised columns' means came out up to 2.4e-3 from 0 (and the rows
    were returned in bfloat16), where pca and kmeans take half precision up to float32."""
    x = (3 * torch.randn(300, 16, generator=torch.Generator().manual_seed(0)) + 5).to(dtype)
    z = standardize(x)
    assert z.dtype == torch.float32
    assert z.mean(dim=0).abs().max() < 1e-6 and (z.std(dim=0, unbiased=False) - 1).abs().max() < 1e-5
    torch.testing.assert_close(z, standardize(x.float()), rtol=0, atol=0)
    ref = standardize(x.float()[:10], like=x.float())
    torch.testing.assert_close(standardize(x[:10], like=x), ref, rtol=0, atol=0)
    u = l2_normalize(x)
    assert u.dtype == torch.float32 and (u.norm(dim=1) - 1).abs().max() < 1e-6


@pytest.mark.parametrize("int_type", [np.int64, np.int32, np.uint8])
def test_numpy_integers_are_accepted_as_counts(int_type):
    """isinstance(v, int) rejected np.int64(3) with 'k must be an integer in [1, 50], got 3'."""
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    res = kmeans(x, int_type(3), n_init=int_type(2), max_iter=int_type(50))
    assert torch.equal(res.labels, kmeans(x, 3, n_init=2, max_iter=50).labels)
    assert pca(x, int_type(3)).components.shape == (3, 4)


@pytest.mark.parametrize("bad", [True, 3.0, 0, 51, "3", None])
def test_bad_counts_still_raise(bad):
    x = torch.randn(50, 4)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, N\] = \[1, 50\]"):
        kmeans(x, bad)
    with pytest.raises(ValueError, match="n_init must be a positive integer"):
        kmeans(x, 3, n_init=bad if bad != 51 else -1)


def test_public_functions_take_torch_tensors_only():
    """kmeans was annotated ArrayLike (tensor or numpy) but raised TypeError for numpy, as the
    module's other functions do; the annotation and the error now say the same thing."""
    X = np.random.default_rng(0).normal(size=(20, 3))
    for f, args in ((kmeans, (2,)), (pca, (2,)), (standardize, ()), (l2_normalize, ())):
        assert typing.get_type_hints(f)["x"] is torch.Tensor, f.__name__
        with pytest.raises(TypeError, match=r"x must be a torch.Tensor .*torch.from_numpy"):
            f(X, *args)
        f(torch.from_numpy(X), *args)


def test_fitted_pca_and_kmeans_code_new_rows_alike():
    """Validation rows coded with the training set's axes and clusters (there was no way but
    to re-fit on them, which gives other axes and other cluster ids)."""
    g = torch.Generator().manual_seed(1)
    means = 6 * torch.randn(4, 5, generator=g, dtype=torch.float64) + 1e4  # a large common offset
    train = means.repeat_interleave(50, 0) + torch.randn(200, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(standardize(train, like=train), standardize(train))
    fit = pca(standardize(train), 3)
    torch.testing.assert_close(fit.transform(standardize(train)), fit.scores)
    km = kmeans(fit.scores, 4, seed=0)
    assert torch.equal(km.predict(fit.scores), km.labels)
    val = means + 0.1 * torch.randn(4, 5, generator=g, dtype=torch.float64)  # one row near each mean
    got = km.predict(fit.transform(standardize(val, like=train)))
    assert torch.equal(got, km.labels[::50])  # each near its own training blob's cluster
    # Standardised by their own statistics, four rows would land elsewhere entirely.
    assert not torch.allclose(standardize(val), standardize(val, like=train))
    with pytest.raises(ValueError, match="like has 4 features per row; x had 5"):
        standardize(val, like=train[:, :4])
    with pytest.raises(ValueError, match="4 features per row; the fit had 5"):
        fit.transform(val[:, :4])
    with pytest.raises(ValueError, match="2 features per row; the fit had 3"):
        km.predict(fit.transform(val)[:, :2])


def test_standardize_like_wider_rows_works_in_the_wider_dtype():
    """float32 training rows past float16's 65504 became inf in a float16 x's dtype: all NaN."""
    g = torch.Generator().manual_seed(0)
    train = 1e5 * torch.randn(100, 4, generator=g)
    val = (1e4 * torch.randn(3, 4, generator=g)).half()
    got = standardize(val, like=train)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    torch.testing.assert_close(got, standardize(val.float(), like=train))


@pytest.mark.parametrize("eps", [-1.0, float("nan"), float("inf")])
def test_standardize_checks_eps(eps):
    """eps was never checked: -1 made a constant column NaN (after NaN input had been refused),
    NaN or inf left every column centred but unscaled."""
    x = torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 5.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="eps"):
        standardize(x, eps)


@pytest.mark.parametrize("dtype, scale", [(torch.float64, 1e160), (torch.float64, 1e300), (torch.float32, 1e18),
                                          (torch.float32, 1e35), (torch.float64, 1e-170), (torch.float32, 1e-30)])
def test_kmeans_is_unmoved_by_the_data_scale(dtype, scale):
    """Squared distances overflowed (float64 from about 1e155, float32 from 1e18: torch's 'invalid
    multinomial distribution') or underflowed to 0. The data are divided by a power of two first,
    which leaves the labels as they are; the centres and inertia are scaled back (the inertia
    is inf only where its true value exceeds a float)."""
    x, _ = _blobs(dtype)
    ref = kmeans(x, 3, seed=0)
    got = kmeans(x * scale, 3, seed=0)
    assert torch.equal(got.labels, ref.labels)
    assert torch.equal(got.predict(x * scale), ref.labels)
    assert got.centers.dtype == dtype and bool(torch.isfinite(got.centers).all())
    torch.testing.assert_close(got.centers / scale, ref.centers, rtol=1e-4, atol=1e-4)
    want = ref.inertia * scale * scale
    if math.isinf(want):
        assert got.inertia == math.inf
    else:  # relative, with no absolute floor (the tiny scales' inertias are ~1e-58 and below)
        assert got.inertia == pytest.approx(want, rel=1e-4, abs=0)


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e19), (torch.float64, 1e150), (torch.float32, 1e-15),
                                          (torch.float64, 1e-150)])
def test_pca_is_unmoved_by_the_data_scale(dtype, scale):
    """s**2 of the singular values overflowed: pca(randn(40, 2) * 1e19, 1) in float32 had an
    explained variance of inf (about 1e38 in truth)."""
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0), dtype=dtype)
    ref, got = pca(x, 1), pca(x * scale, 1)
    assert bool(torch.isfinite(got.explained_variance).all())
    torch.testing.assert_close(got.explained_variance / scale / scale, ref.explained_variance, rtol=1e-4, atol=0)
    torch.testing.assert_close(got.components, ref.components, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.scores / scale, ref.scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.mean / scale, ref.mean, rtol=1e-4, atol=1e-5)


def test_pca_variance_past_the_dtype_is_inf_and_the_rest_finite():
    """A variance that float32 cannot hold (about 1e40) is inf; the axes and scores are not."""
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0)) * 1e20
    got = pca(x, 2)
    assert got.explained_variance[0] == math.inf
    assert bool(torch.isfinite(got.scores).all() and torch.isfinite(got.components).all())
