"""Standardisation, row normalisation, PCA and k-means in PyTorch, for the PID probe.

Everything runs on the device of the input tensor (GPU when the embeddings are there) and
is deterministic for a given ``seed``: random draws come from a private
:class:`torch.Generator`, and cluster sums are matrix products rather than atomic
scatter-adds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fastpid._validate import check_integer, check_real

__all__ = ["standardize", "l2_normalize", "pca", "kmeans", "PCAResult", "KMeansResult"]


def _check_matrix(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__} "
                        "(wrap a numpy array with torch.from_numpy)")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not x.dtype.is_floating_point:
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def _check_count(v, name: str, hi: int | None = None, hi_name: str = "") -> int:
    """``v`` as a Python int in ``[1, hi]`` (``hi = None``: no upper bound). Any integral
    type counts (numpy and Python ints alike, e.g. a k from ``np.argmax``); bools do not."""
    expected = "a positive integer" if hi is None else f"an integer in [1, {hi_name}] = [1, {hi}]"
    return check_integer(v, name, 1, hi, expected=expected)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision ``x`` as float32: sums of squares overflow float16 (max 65504), and
    the SVD has no half-precision kernel on the CPU."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _power_of_two_scale(peak: torch.Tensor) -> torch.Tensor:
    """The power of two that brings each positive ``peak`` into ``[1, 2)`` (1 where the peak
    is 0); dividing by it is exact in floating point."""
    return torch.where(peak > 0, torch.exp2(torch.frexp(peak).exponent.to(peak.dtype) - 1), torch.ones_like(peak))


#: The largest seed a torch.Generator takes (it holds 64 bits).
SEED_MAX = 2 ** 64 - 1


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as a Python int in ``[0, SEED_MAX]``: any integral type (a numpy int from a
    config too), not bool, float or None (``int(0.7)`` had seeded with 0 silently)."""
    return check_integer(seed, name, 0, SEED_MAX, expected="an integer in [0, 2**64 - 1]")


def _generator(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(check_seed(seed))
    return g


def standardize(x: torch.Tensor, eps: float = 1e-8, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """Zero mean, unit variance per column of ``x (N, D)``; constant columns become 0.

    Each column is first divided by a power of two that brings its largest magnitude into
    ``[1, 2)`` (exact in floating point), so that the variance cannot overflow: embeddings of any
    finite magnitude (up to the dtype's maximum, e.g. 1e300 in float64) standardise to the
    same values as the same embeddings at ordinary scale. ``eps`` is the smallest standard
    deviation, relative to that scale, that counts as a non-constant column.

    ``like (M, D)``: rows whose scale, means and deviations are used instead of ``x``'s, e.g.
    the training embeddings when ``x`` holds validation ones, so that both are standardised
    alike, in the wider of the two dtypes; :meth:`PCAResult.transform` and
    :meth:`KMeansResult.predict` of fits on the training rows then code the validation rows as
    the training rows were coded.

    Half-precision rows are standardised in float32 (and returned so, as :func:`pca` and
    :func:`kmeans` take them): in bfloat16 the column means came out 2.4e-3 from 0.
    """
    eps = check_real(eps, "eps", 0)  # -1 had made constant columns NaN, NaN or inf left all unscaled
    x = _at_least_float32(_check_matrix(x, "x"))
    ref = x
    if like is not None:
        like = _at_least_float32(_check_matrix(like, "like"))
        x = x.to(torch.promote_types(x.dtype, like.dtype))  # float32 rows past 65504 are inf in float16
        ref = _check_new_rows(like, x.shape[1], x, name="like", other="x")
    scale = _power_of_two_scale(ref.abs().amax(dim=0))
    ref = ref / scale
    std = ref.std(dim=0, unbiased=False)
    return (x / scale - ref.mean(dim=0)) / torch.where(std > eps, std, torch.ones_like(std))


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Each row of ``x (N, D)`` divided by its Euclidean norm (unit-norm rows, as
    scikit-learn's ``normalize`` gives); rows of zero norm stay 0.

    Each row is first divided by a power of two that brings its largest magnitude into
    ``[1, 2)`` (exact in floating point), so that the squared norm can neither overflow nor
    underflow: rows of any finite magnitude (up to the dtype's maximum, e.g. 1e300 in
    float64) normalise to the same values as the same rows at ordinary scale, and rows of
    subnormal numbers still get unit norm. Half-precision rows are normalised in float32 (and
    returned so), as :func:`standardize` does.
    """
    x = _at_least_float32(_check_matrix(x, "x"))
    x = x / _power_of_two_scale(x.abs().amax(dim=1, keepdim=True))
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


def _check_new_rows(x, d: int, like: torch.Tensor, name: str = "x", other: str = "the fit") -> torch.Tensor:
    """Rows ``x (M, D)`` to be coded like ``other`` of ``d`` features, in ``like``'s dtype."""
    x = _check_matrix(x, name)
    if x.shape[1] != d:
        raise ValueError(f"{name} has {x.shape[1]} features per row; {other} had {d}")
    if x.device != like.device:
        raise ValueError(f"{name} is on {x.device}, {other} on {like.device}; move one of them first")
    return x.to(like.dtype)


@dataclass(frozen=True, eq=False)  # identity: == of array fields has no single truth value
class PCAResult:
    """``scores (N, k)``: projections of the centred data; ``components (k, D)``: orthonormal
    principal axes (sign fixed so the largest-magnitude entry of each axis is positive);
    ``explained_variance (k,)``: variance along each axis (``N - 1`` denominator);
    ``mean (D,)``: the column means that were subtracted."""

    scores: torch.Tensor
    components: torch.Tensor
    explained_variance: torch.Tensor
    mean: torch.Tensor

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(M, k)`` of new rows ``x (M, D)`` on these axes, centred by the fitted
        data's means: e.g. validation embeddings on the training set's components, so that
        both sets are coded alike (``transform`` of the fitted data gives ``scores``)."""
        return (_check_new_rows(x, self.components.shape[1], self.components) - self.mean) @ self.components.T


def pca(x: torch.Tensor, n_components: int) -> PCAResult:
    """Principal component analysis of ``x (N, D)`` (a torch tensor) by a thin SVD of the
    centred data.

    ``n_components`` must be at most ``min(N, D)``. Half-precision input (float16, bfloat16)
    is computed, and returned, in float32. Data of any finite magnitude work (computed divided
    by a power of two, exact); an ``explained_variance`` is inf only where the dtype cannot hold it.
    """
    x = _at_least_float32(_check_matrix(x, "x"))
    n, d = x.shape
    n_components = _check_count(n_components, "n_components", min(n, d), "min(N, D)")
    # In units of a power of two (exact): s**2 had overflowed (float32 data of 1e19 gave a variance of inf).
    scale = _power_of_two_scale(x.abs().amax())
    x = x / scale
    mean = x.mean(dim=0)
    xc = x - mean
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)
    comp = vh[:n_components]
    idx = comp.abs().argmax(dim=1)
    signs = torch.sign(comp.gather(1, idx[:, None]))
    comp = comp * torch.where(signs == 0, torch.ones_like(signs), signs)
    var = s[:n_components] ** 2 / max(n - 1, 1)
    return PCAResult(scores=xc @ comp.T * scale, components=comp, explained_variance=var * scale * scale,
                     mean=mean * scale)


@dataclass(frozen=True, eq=False)  # identity: == of array fields has no single truth value
class KMeansResult:
    """``labels (N,)`` int64 cluster ids in ``[0, k)``; ``centers (k, D)``; ``inertia``: sum of
    squared distances of the points to their centres (a Python float); ``n_iter``: Lloyd
    iterations of the best restart."""

    labels: torch.Tensor
    centers: torch.Tensor
    inertia: float
    n_iter: int

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Cluster ids ``(M,)`` int64 of new rows ``x (M, D)``: each row's nearest centre (the
        first on a tie), e.g. validation embeddings coded with the training set's clusters.
        Distances are taken about the centres' mean, which keeps a large common offset from
        costing precision (as in :func:`kmeans`)."""
        x = _check_new_rows(x, self.centers.shape[1], self.centers)
        scale = _power_of_two_scale(torch.maximum(x.abs().amax(), self.centers.abs().amax()))  # as in kmeans
        x, centers = x / scale, self.centers / scale
        offset = centers.mean(dim=0)
        return _sq_dists(x - offset, centers - offset).argmin(1)


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(N, k)``, clamped at 0 against round-off."""
    return ((x * x).sum(1, keepdim=True) - 2.0 * x @ c.T + (c * c).sum(1)[None, :]).clamp_min(0.0)


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding: each new centre is the best (lowest potential) of
    ``2 + floor(log k)`` candidates drawn with probability proportional to D²."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = torch.randint(n, (1,), generator=gen, device=x.device)
    centers = [x[first]]
    closest = _sq_dists(x, centers[0]).squeeze(1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # all points already coincide with a centre: pick any
            cand = torch.randint(n, (trials,), generator=gen, device=x.device)
        else:
            cand = torch.multinomial(closest / total, trials, replacement=True, generator=gen)
        cand_d = torch.minimum(closest[None, :], _sq_dists(x, x[cand]).T)  # (trials, N)
        best = cand_d.sum(1).argmin()
        closest = cand_d[best]
        centers.append(x[cand[best]][None])
    return torch.cat(centers)


def _lloyd(x, centers, max_iter: int, tol: float):
    k = centers.shape[0]
    labels = None
    for it in range(1, max_iter + 1):
        d = _sq_dists(x, centers)
        labels = d.argmin(1)
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)
        counts = onehot.sum(0)
        new = (onehot.T @ x) / counts.clamp_min(1.0)[:, None]
        empty = counts == 0
        if empty.any():  # re-seed empty clusters at the points farthest from their centres
            far = d.gather(1, labels[:, None]).squeeze(1).argsort(descending=True)
            new[empty] = x[far[: int(empty.sum())]]
        shift = ((new - centers) ** 2).sum()
        centers = new
        if shift <= tol:
            break
    d = _sq_dists(x, centers)
    labels = d.argmin(1)
    inertia = d.gather(1, labels[:, None]).sum()
    return labels, centers, float(inertia), it


def kmeans(x: torch.Tensor, k: int, *, n_init: int = 4, max_iter: int = 100, tol: float = 1e-4,
           seed: int = 0) -> KMeansResult:
    """k-means clustering of ``x (N, D)`` (a torch tensor) into ``k`` clusters.

    k-means++ seeding, ``n_init`` restarts (the lowest inertia wins), Lloyd iterations until
    the squared centre shift is at most ``tol`` times the mean per-feature variance (as
    scikit-learn does) or ``max_iter`` is reached. Deterministic for a given ``seed``.

    The data are clustered centred (the column means subtracted, and added back to the
    returned centres), so a large common offset does not cost precision, and divided by a
    power of two (exact), so data of any finite magnitude get the labels they get at any other
    scale. Half-precision input (float16, bfloat16) is clustered in float32 and its
    ``centers`` come back as float32; other floating dtypes keep theirs (integer input becomes
    the default dtype).
    """
    x = _at_least_float32(_check_matrix(x, "x"))
    n = x.shape[0]
    k = _check_count(k, "k", n, "N")
    n_init, max_iter = _check_count(n_init, "n_init"), _check_count(max_iter, "max_iter")
    # Squared distances overflowed from 1e155 in float64 (1e18 in float32) and underflowed for tiny
    # data: cluster in units of a power of two (exact, so the labels are those of any scale).
    scale = _power_of_two_scale(x.abs().amax())
    x = x / scale
    # The distances are |x|² - 2 x·c + |c|²: with features far from 0 these terms cancel
    # catastrophically (float32 scrambles separated blobs at an offset of 1e4), so cluster
    # the centred data, as scikit-learn does. Distances, and so the inertia, are unchanged.
    mean = x.mean(dim=0)
    x = x - mean
    gen = _generator(x.device, seed)
    abs_tol = check_real(tol, "tol", 0) * float(x.var(dim=0, unbiased=False).mean())  # NaN ran every step
    best = None
    for _ in range(n_init):
        run = _lloyd(x, _kmeans_pp(x, k, gen), max_iter, abs_tol)
        if best is None or run[2] < best[2]:
            best = run
    labels, centers, inertia, n_iter = best
    # The inertia is a Python float: inf only where float64 cannot hold it.
    scale = float(scale)
    return KMeansResult(labels=labels, centers=(centers + mean) * scale, inertia=inertia * scale * scale,
                        n_iter=n_iter)
