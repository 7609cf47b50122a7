"""The PID probe and its torch PCA / k-means, checked against scikit-learn."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from fastpid.integrations import PIDProbe
from fastpid.integrations.cluster import kmeans, pca, standardize

sklearn = pytest.importorskip("sklearn")
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


@pytest.fixture(scope="module")
def digits_left():
    X = load_digits().images[:, :, :4].reshape(-1, 32).astype(np.float64)
    return X


def test_standardize_matches_sklearn(digits_left):
    ours = standardize(torch.from_numpy(digits_left)).numpy()
    ref = StandardScaler().fit_transform(digits_left)
    np.testing.assert_allclose(ours, ref, atol=1e-10)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_pca_matches_sklearn(digits_left, k):
    X = StandardScaler().fit_transform(digits_left)
    ours = pca(torch.from_numpy(X), k)
    ref = PCA(k).fit(X)
    np.testing.assert_allclose(ours.explained_variance.numpy(), ref.explained_variance_, rtol=1e-8)
    # Axes agree up to sign; so do the scores, column by column.
    dots = (ours.components.numpy() * ref.components_).sum(1)
    np.testing.assert_allclose(np.abs(dots), 1.0, atol=1e-8)
    np.testing.assert_allclose(ours.scores.numpy(), ref.transform(X) * np.sign(dots), atol=1e-8)
    np.testing.assert_allclose(ours.components.numpy() @ ours.components.numpy().T, np.eye(k), atol=1e-10)


def test_kmeans_recovers_separated_blobs():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=10.0, size=(7, 3))
    truth = rng.integers(0, 7, size=700)
    X = centres[truth] + rng.normal(scale=0.3, size=(700, 3))
    res = kmeans(torch.from_numpy(X), 7, n_init=3, seed=0)
    assert adjusted_rand_score(truth, res.labels.numpy()) == pytest.approx(1.0)
    assert res.labels.dtype == torch.int64 and res.centers.shape == (7, 3)


def test_kmeans_inertia_close_to_sklearn(digits_left):
    Z = PCA(5).fit_transform(StandardScaler().fit_transform(digits_left))
    ours = kmeans(torch.from_numpy(Z), 20, n_init=10, seed=0)
    ref = KMeans(20, n_init=10, random_state=0).fit(Z)
    # Local optima differ between implementations; both should be as good within 2 %.
    assert ours.inertia <= 1.02 * ref.inertia_
    # The reported inertia is the actual within-cluster sum of squares of the labels.
    centres = np.stack([Z[ours.labels.numpy() == j].mean(0) for j in range(20)])
    recomputed = ((Z - centres[ours.labels.numpy()]) ** 2).sum()
    assert ours.inertia == pytest.approx(recomputed, rel=1e-9)
    assert adjusted_rand_score(ref.labels_, ours.labels.numpy()) > 0.7


def test_kmeans_deterministic_with_seed(digits_left):
    X = torch.from_numpy(digits_left)
    a, b = kmeans(X, 10, seed=3), kmeans(X, 10, seed=3)
    assert torch.equal(a.labels, b.labels)
    c = kmeans(X, 10, seed=4, n_init=1)
    assert c.labels.shape == a.labels.shape


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="n_components"):
        pca(torch.randn(10, 3), 4)
    with pytest.raises(ValueError, match="shape"):
        pca(torch.randn(10), 1)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(torch.tensor([[0.0], [float("nan")]]), 1)
    with pytest.raises(ValueError, match="k must be"):
        kmeans(torch.randn(5, 2), 6)
    with pytest.raises(TypeError):
        kmeans(np.zeros((5, 2)), 2)
    probe = PIDProbe(n_clusters=4)
    with pytest.raises(ValueError, match="rows"):
        probe(torch.randn(10, 3), torch.randn(11, 3), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"emb2 has no features \(shape \(10, 0\)\)"):  # was "x is empty"
        probe(torch.randn(10, 3), torch.randn(10, 0), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="at least n_clusters"):
        probe(torch.randn(3, 3), torch.randn(3, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="not an integer class id"):
        probe(torch.randn(10, 3), torch.randn(10, 3), torch.full((10,), 0.5))


def test_method_and_base_are_checked_at_construction():
    """PIDProbe(method="exacto") and base=1 were refused only at the first probe (an epoch
    into training, or at an ECS controller's first update)."""
    with pytest.raises(ValueError, match="method"):
        PIDProbe(n_clusters=3, method="exacto")
    with pytest.raises(ValueError, match="base must be a finite number > 1"):
        PIDProbe(n_clusters=3, base=1)
    assert PIDProbe(n_clusters=3, method=" Exact ", base=2).method == "exact"


def _cloud(codes, rng, dim=6, spread=0.05):
    """Embeddings ``(N, dim)`` that form one tight cloud per code value."""
    centres = rng.normal(size=(int(codes.max()) + 1, dim)) * 5.0
    return torch.from_numpy(centres[codes] + spread * rng.normal(size=(len(codes), dim)))


def test_probe_finds_synergy_and_redundancy():
    rng = np.random.default_rng(0)
    n = 4000
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    probe = PIDProbe(n_components=5, n_clusters=4, seed=0)
    xor = probe(_cloud(a, rng), _cloud(b, rng), torch.from_numpy(a ^ b))
    assert xor.synergy == pytest.approx(math.log(2), abs=0.01)
    assert max(xor.redundancy, xor.unique1, xor.unique2, xor.mi1, xor.mi2) < 0.01

    y = rng.integers(0, 4, n)
    copy = probe(_cloud(y, rng), _cloud(y, rng), torch.from_numpy(y))
    h_y = -sum(p * math.log(p) for p in np.bincount(y) / n)
    assert copy.redundancy == pytest.approx(h_y, abs=1e-6)
    assert copy.mi1 == pytest.approx(h_y, abs=1e-6) and copy.mi2 == pytest.approx(h_y, abs=1e-6)
    terms = copy.terms()
    assert set(terms) == {"redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2", "gap"}
    assert terms["redundancy"] + terms["unique1"] + terms["unique2"] + terms["synergy"] == pytest.approx(terms["mi"])
    # Swapping the modalities swaps the unique terms.
    uni = probe(_cloud(y, rng), _cloud(rng.integers(0, 4, n), rng), torch.from_numpy(y))
    swapped = probe(_cloud(rng.integers(0, 4, n), rng), _cloud(y, rng), torch.from_numpy(y))
    assert uni.unique1 > 1.0 and uni.unique2 < 0.01
    assert swapped.unique2 > 1.0 and swapped.unique1 < 0.01


def test_thin_probe_warning_names_suggest_k_by_its_import():
    from fastpid.estimate import suggest_k

    g = torch.Generator().manual_seed(0)
    e1, e2 = torch.randn(500, 16, generator=g), torch.randn(500, 16, generator=g)
    labels = torch.randint(0, 10, (500,), generator=g)
    with pytest.warns(UserWarning, match="from fastpid.estimate import suggest_k") as record:
        PIDProbe()(e1, e2, labels)
    msg = str(record[0].message)
    assert f"n_clusters={suggest_k(500, 10)} " in msg and "suggest_k(500, 10, samples_per_cell=4))" in msg
    # Under a stricter min_samples_per_cell the advice meets it: n_clusters=3 (suggest_k's
    # 4 per cell) still had 5.6 samples per cell against 20, and warned again; where no k
    # meets it, more samples are what helps.
    with pytest.warns(UserWarning, match=r"n_clusters=2 .*samples_per_cell=10\)\)"):
        PIDProbe(n_clusters=5, min_samples_per_cell=10)(e1, e2, labels)
    with pytest.warns(UserWarning, match=r"Use more probe samples: 800 at least for 2 clusters \(20 per cell"):
        PIDProbe(n_clusters=5, min_samples_per_cell=20)(e1, e2, labels)
    # A probe that attaches the estimate is not told to attach it.
    with pytest.warns(UserWarning, match="the bias-corrected estimate attached") as record:
        PIDProbe(estimate=True)(e1, e2, labels)
    assert "PIDProbe(estimate=True)" not in str(record[0].message)


# ---------------------------------------------------------------- scaling="l2"

def test_l2_normalize_matches_sklearn_and_keeps_zero_rows(digits_left):
    from sklearn.preprocessing import normalize

    from fastpid.integrations.cluster import l2_normalize

    X = digits_left.copy()
    assert (np.abs(X).sum(1) == 0).sum() == 0
    X[5] = 0.0                                                   # a row of zero norm
    ours = l2_normalize(torch.from_numpy(X))
    np.testing.assert_allclose(ours.numpy(), normalize(X), rtol=0, atol=1e-15)
    norms = ours.norm(dim=1)
    assert torch.equal(ours[5], torch.zeros(32, dtype=torch.float64))
    torch.testing.assert_close(norms[torch.arange(len(X)) != 5], torch.ones(len(X) - 1, dtype=torch.float64))
    # Any finite magnitude, each row its own: no overflow, no underflow, the same rows.
    factors = torch.logspace(-300, 300, len(X), dtype=torch.float64)[:, None]
    torch.testing.assert_close(l2_normalize(torch.from_numpy(X) * factors), ours, rtol=1e-14, atol=1e-15)
    big = l2_normalize(torch.tensor([[3e38, -3e38, 1e38]]))      # float32 near its maximum
    assert torch.isfinite(big).all() and float(big.norm()) == pytest.approx(1.0, abs=1e-6)
    tiny = l2_normalize(torch.tensor([[5e-324, 1e-323]], dtype=torch.float64))   # subnormal
    assert float(tiny.norm()) == pytest.approx(1.0, abs=1e-12)


def _pca_inputs(probe, monkeypatch, *embs):
    """The matrices the probe hands to PCA for each of ``embs``."""
    import fastpid.integrations.probe as probe_module

    seen = []

    def spy(x, n_components):
        seen.append(x.clone())
        return pca(x, n_components)

    monkeypatch.setattr(probe_module, "pca", spy)
    codes = [probe.codes(e) for e in embs]
    return seen, codes


def test_probe_scaling_l2_gives_unit_rows_before_pca(digits_left, monkeypatch):
    X = torch.from_numpy(digits_left[:300]).clone()
    X[7] = 0.0
    seen, _ = _pca_inputs(PIDProbe(n_clusters=10, scaling="l2"), monkeypatch, X)
    norms = seen[0].norm(dim=1)
    assert float(norms[7]) == 0.0
    torch.testing.assert_close(norms[torch.arange(300) != 7], torch.ones(299, dtype=torch.float64))
    # Unit rows: each row's own scale does not matter.
    row_scale = torch.linspace(1e-3, 1e3, 300, dtype=torch.float64)[:, None]
    l2 = PIDProbe(n_clusters=10, scaling="l2")
    assert torch.equal(l2.codes(X), l2.codes(X * row_scale))


def test_probe_default_scaling_is_unchanged(digits_left, monkeypatch):
    X = torch.from_numpy(digits_left[:300])
    default = PIDProbe(n_clusters=10)
    assert default.scaling == "standardize"
    seen, (codes,) = _pca_inputs(default, monkeypatch, X)
    assert torch.equal(seen[0], standardize(X))
    want = kmeans(pca(standardize(X), 5).scores, 10, n_init=4, max_iter=100, seed=0).labels
    assert torch.equal(codes, want)
    assert torch.equal(PIDProbe(n_clusters=10, scaling="standardize").codes(X), want)
    # The other scaling gives other codes on the same embeddings.
    assert not torch.equal(PIDProbe(n_clusters=10, scaling="l2").codes(X), want)


def test_probe_rejects_unknown_scaling():
    for bad in ("L2", "standardise", "sklearn", None, 2):
        with pytest.raises(ValueError, match="scaling must be one of"):
            PIDProbe(scaling=bad)


def test_controller_takes_an_l2_probe():
    from fastpid.integrations import ECSAsyncController

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (60,), generator=g)
    e1 = torch.randn(60, 4, generator=g) + y[:, None]
    e2 = torch.randn(60, 4, generator=g)
    ctrl = ECSAsyncController(PIDProbe(n_clusters=3, scaling="l2"), warmup_epochs=0)
    d = ctrl.update(0, e1, e2, y)
    assert ctrl.probe.scaling == "l2" and d.probed and len(ctrl.history) == 1


@pytest.mark.parametrize("options, error, match", [
    ({"confidence": 95}, ValueError, r"estimate_options: confidence must be in \(0, 1 - 1e-6\], got 95"),
    ({"confidence": "0.9"}, TypeError, "estimate_options: confidence must be a real number"),
    ({"n_jackknife": 1}, ValueError, "estimate_options: n_jackknife must be >= 2"),
    ({"n_null": -1}, ValueError, "estimate_options: n_null must be >= 0"),
    ({"n_pilot": 2.5}, TypeError, "estimate_options: n_pilot must be an integer >= 1"),
    ({"seed": -3}, ValueError, "estimate_options: seed must be None or an integer >= 0"),
])
def test_estimate_options_values_are_checked_at_construction(options, error, match):
    """Only the keys were checked: confidence=95 was accepted and raised at the first probe
    (under torch.distributed on rank 0 alone, which left rank 1 waiting)."""
    with pytest.raises(error, match=match):
        PIDProbe(estimate_options=options)


def test_every_estimate_option_has_a_value_check():
    import inspect

    import fastpid
    from fastpid.integrations.probe import _OPTION_CHECKS, _PROBE_SETS

    params = inspect.signature(fastpid.estimate).parameters
    options = {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in _PROBE_SETS}
    assert set(_OPTION_CHECKS) == options
    probe = PIDProbe(estimate_options={"confidence": 0.9, "n_jackknife": 2, "n_null": 0, "n_pilot": 1,
                                       "seed": None})
    assert probe.estimate_options["confidence"] == 0.9


# ---------------------------------------------------------------- argument checks

def _small_probe_set():
    g = torch.Generator().manual_seed(0)
    e1, e2 = torch.randn(200, 8, generator=g), torch.randn(200, 6, generator=g)
    return e1, e2, torch.randint(0, 3, (200,), generator=g)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_inputs_are_read_as_the_core_api_reads_them_and_seeds_checked():
    """Big-endian numpy arrays were torch's byte-order ValueError (fastpid.joint takes them);
    complex embeddings lost their imaginary part in a cast; a numpy-integer seed broke
    shuffled(), a float one seeded k-means with its integer part, 2**64 passed the
    constructor and overflowed at the first probe; index= errors spoke of class ids."""
    e1, e2, y = _small_probe_set()
    probe = PIDProbe(n_clusters=3)
    ref = probe(e1, e2, y)
    swapped = probe(e1.numpy().astype(">f4"), e2.numpy(), y.numpy().astype(">i8"))
    assert torch.equal(swapped.codes1, ref.codes1) and float(swapped.synergy) == float(ref.synergy)
    with pytest.raises(TypeError, match="emb1 must be real"):
        probe(e1.to(torch.complex64), e2, y)
    with pytest.raises(TypeError, match="emb2 must be real numbers"):
        probe(e1, e2.numpy().astype(np.complex128), y)
    # the integrations' other array arguments are read alike (tensor_of)
    from fastpid.integrations.spice_scores import pointwise_scores
    p = torch.softmax(e1[:, :3].double(), 1)
    yy = y.clamp(max=2)
    ref_scores = pointwise_scores(p, p, p, yy, prior=np.array([0.3, 0.3, 0.4]))
    be_scores = pointwise_scores(p, p, p, yy, prior=np.array([0.3, 0.3, 0.4], dtype=">f8"))
    assert torch.equal(ref_scores.synergy, be_scores.synergy)
    with pytest.raises(TypeError, match="prior must be real numbers"):
        pointwise_scores(p, p, p, yy, prior=np.array([0.3, 0.3, 0.4], dtype=complex))
    assert probe.shuffled(ref.codes1, ref.codes2, y, 2, seed=np.int64(3)) == \
        probe.shuffled(ref.codes1, ref.codes2, y, 2, seed=3)
    for bad in (None, 0.7, -1, 2 ** 64):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64 - 1\]"):
            probe.shuffled(ref.codes1, ref.codes2, y, 2, seed=bad)
        with pytest.raises(ValueError, match="seed must be"):
            kmeans(e1, 3, seed=bad)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64 - 1\]"):
        PIDProbe(seed=2 ** 64)
    with pytest.raises(ValueError, match="tol must be a finite number"):
        kmeans(e1, 3, tol=float("nan"))
    with pytest.raises(ValueError, match=r"index \(row positions\) must lie >= 0"):
        probe(e1, e2, y, index=np.arange(200) - 1)
    with pytest.raises(TypeError, match=r"index \(row positions\) must hold integer sample indices"):
        probe(e1, e2, y, index=np.arange(200) + 0.5)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_probe_n_classes_is_checked_against_the_labels():
    """int(n_classes) truncated 3.7 to 3 and took True as 1; a too-small value was reported as
    'y[1] = 2 is out of range for size 2', names the caller never used."""
    e1, e2, labels = _small_probe_set()
    probe = PIDProbe(n_components=3, n_clusters=4)
    res = probe(e1, e2, labels)
    for bad in (3.7, 2.5, True, 0, -1, "3"):
        with pytest.raises(ValueError, match=f"n_classes must be a positive integer, got {bad!r}"):
            probe(e1, e2, labels, n_classes=bad)
        with pytest.raises(ValueError, match="n_classes must be a positive integer"):
            probe.shuffled(res.codes1, res.codes2, labels, 2, n_classes=bad)
    i = int((labels == 2).nonzero()[0])
    too_small = rf"labels\[{i}\] = 2 is out of range for n_classes = 2; labels must lie in \[0, n_classes\)"
    with pytest.raises(ValueError, match=too_small):
        probe(e1, e2, labels, n_classes=2)
    with pytest.raises(ValueError, match=too_small):
        probe.estimated(res.codes1, res.codes2, labels, n_classes=np.int64(2))
    # Integral values of any integer type are taken as they are.
    wide = probe(e1, e2, labels, n_classes=np.int64(5))
    assert wide.terms() == probe(e1, e2, labels, n_classes=5).terms()
    assert probe(e1, e2, labels, n_classes=3).terms() == res.terms()


def test_probe_accepts_numpy_integer_counts():
    """isinstance(v, int) rejected np.int64(4) ('n_clusters must be a positive integer, got 4')."""
    e1, e2, labels = _small_probe_set()
    probe = PIDProbe(n_components=np.int64(3), n_clusters=np.int64(4), n_init=np.int32(2), max_iter=np.int64(50),
                     min_samples_per_cell=0)
    assert (probe.n_components, probe.n_clusters, probe.n_init, probe.max_iter) == (3, 4, 2, 50)
    assert all(type(v) is int for v in (probe.n_components, probe.n_clusters, probe.n_init, probe.max_iter))
    res = probe(e1, e2, labels)
    ref = PIDProbe(n_components=3, n_clusters=4, n_init=2, max_iter=50, min_samples_per_cell=0)(e1, e2, labels)
    assert res.terms() == ref.terms()
    assert probe.shuffled(res.codes1, res.codes2, labels, np.int64(2)) == probe.shuffled(res.codes1, res.codes2,
                                                                                         labels, 2)
    for name in ("n_components", "n_clusters", "n_init", "max_iter"):
        for bad in (True, 0, 2.0):
            with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
                PIDProbe(**{name: bad})


def test_float_labels_beyond_int64_are_rejected():
    """A float label of 1e20 passed the checks and wrapped to INT64_MIN in the conversion."""
    from fastpid.integrations.predictions import as_labels

    for big in (1e20, 2.0 ** 63):
        y = torch.tensor([0.0, 1.0, big], dtype=torch.float64)
        with pytest.raises(ValueError, match=rf"labels\[2\] = {re.escape(repr(big))} is too large for a class id"):
            as_labels(y, "labels")
        with pytest.raises(ValueError, match=r"is too large for a class id"):
            as_labels(y.float().numpy(), "labels")
    assert as_labels(torch.tensor([2.0 ** 62])).tolist() == [2 ** 62]   # the largest still fit
    e1, e2, labels = _small_probe_set()
    labels = labels.double()
    labels[0] = 1e20
    with pytest.raises(ValueError, match=r"labels\[0\] = 1e\+20 is too large for a class id"):
        PIDProbe(n_components=3, n_clusters=4)(e1, e2, labels)


def test_shuffled_and_estimated_name_the_codes_and_n_clusters():
    """Codes out of range were fastpid.joint's "x1[5] = 4 is out of range for size 4 ... (raise
    size ...)", names the caller never used; within_class="no" was taken as true."""
    e1, e2, labels = _small_probe_set()
    probe = PIDProbe(n_components=3, n_clusters=4, min_samples_per_cell=0)
    res = probe(e1, e2, labels)
    high, negative = res.codes1.clone(), res.codes2.clone()
    high[5], negative[7] = 4, -1
    too_high = (r"codes1\[5\] = 4 is out of range for n_clusters 4; codes must be integers in \[0, 4\) "
                r"\(raise n_clusters or fix the code\)")
    below = r"codes2\[7\] = -1 is a negative code; codes must be integers in \[0, 4\)"
    with pytest.raises(ValueError, match=too_high):
        probe.shuffled(high, res.codes2, labels, 2)
    with pytest.raises(ValueError, match=too_high):
        probe.estimated(high.numpy(), res.codes2, labels)
    with pytest.raises(ValueError, match=below):
        probe.shuffled(res.codes1, negative, labels, 2, within_class=False)
    with pytest.raises(ValueError, match=below):
        probe.estimated(res.codes1, negative, labels)
    for flag in ("no", 1, None):
        with pytest.raises(TypeError, match=rf"within_class must be True or False, got {type(flag).__name__}"):
            probe.shuffled(res.codes1, res.codes2, labels, 2, within_class=flag)
    # Integral float codes are read as the integers they hold, as before.
    assert probe.shuffled(res.codes1.double(), res.codes2, labels, 2, within_class=np.bool_(True)) == \
        probe.shuffled(res.codes1, res.codes2, labels, 2)
