"""Per-sample PID scores for the SPICE curriculum, from a model's own predictions.

Two estimators, both in nats, both returning a :class:`SampleScores` of ``(N,)`` tensors:

* :func:`pointwise_scores` — closed form from pointwise mutual information. With
  ``i_m = log p_m(y_n | x_m) - log p(y_n)`` for each unimodal head and ``i_12`` likewise
  from the fused head: ``r = max(0, min(i_1, i_2))``, ``u_m = max(0, i_m - r)``,
  ``s = max(0, i_12 - max(i_1, i_2))``. Choices the specification leaves open: the prior
  ``p(y)`` is the empirical label frequency of the samples passed (or a given ``prior``),
  and probabilities are clamped below at ``eps`` before the logarithm so a confident wrong
  head gives a large negative, finite ``i_m``. What the formula gives at its edges: the
  synergy is not bounded by ``max(0, i_12)``, so a sample on which every head does worse
  than the prior scores synergy where the fused head does least badly (4 classes, unimodal
  heads at 0.01 on the label, the fused head at 0.20: ``s = 3.0`` nats, shares (0, 0, 1));
  and where the batch holds one class the prior is 1, so ``r = u = 0`` and only synergy can
  be positive.
* :func:`local_scores` — the BROJA decomposition of each sample's neighbourhood. For
  sample ``n`` with ``k`` nearest neighbours ``N(n)`` in an embedding (the fused one, in
  SPICE), ``P_n = (1/k) Σ_{j ∈ N(n)} p_1(·|j) ⊗ p_2(·|j) ⊗ onehot(y_j)``, a
  ``C1 × C2 × C`` joint whose sources are the two heads' predicted classes; all ``N``
  joints are solved as one batch by :func:`fastpid.pid`. Choices: a sample is its own
  nearest neighbour (it is in ``N(n)``), distances are Euclidean, ties in distance go to the
  lower index, whatever the chunking. Ties are those of the float64 distances: exact for
  small-integer embeddings and their power-of-two multiples, not for other scales (x0.1 rounds
  equal distances apart by an ulp: the rows 2, 3, 1 times 0.1 take neighbours 0, 2 of row 0,
  against 0, 1 unscaled).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

import fastpid
from fastpid._caller import caller_level
from fastpid._validate import check_integer, check_real

from .predictions import ArrayLike, as_tensor, check_labels, check_probs, prob_of_label, tensor_of

__all__ = ["SampleScores", "pointwise_scores", "local_scores", "nearest_neighbours"]


@dataclass(frozen=True, eq=False)  # identity: == of array fields has no single truth value
class SampleScores:
    """Per-sample redundancy, unique and synergistic information ``(N,)`` (nats unless
    :func:`local_scores` was given ``base=``; >= 0). ``gap (N,)``: where the scores come from
    solves (:func:`local_scores`), each sample's certified bound on the error of its terms, in
    their units; ``None`` for closed forms (:func:`pointwise_scores`, nothing solved)."""

    redundancy: torch.Tensor
    unique1: torch.Tensor
    unique2: torch.Tensor
    synergy: torch.Tensor
    gap: torch.Tensor | None = None

    def shares(self, eps: float = 1e-12) -> torch.Tensor:
        """``(3, N)``: each sample's redundancy, uniqueness (``u1 + u2``) and synergy share of
        its total ``r + u1 + u2 + s``. A sample with no information at all (total at most
        ``eps >= 0``) has shares 0."""
        eps = check_real(eps, "eps", 0)  # a negative eps had divided 0 by itself (NaN shares)
        parts = torch.stack([self.redundancy, self.unique1 + self.unique2, self.synergy])
        total = parts.sum(0)
        return torch.where(total > eps, parts / total.clamp_min(eps), torch.zeros_like(parts))


def pointwise_scores(p1, p2, p12, y, *, prior=None, eps: float = 1e-12) -> SampleScores:
    """Closed-form per-sample scores from pointwise mutual information (module docstring).

    Args:
        p1, p2: ``(N, C)`` softmax outputs of the two unimodal heads.
        p12: ``(N, C)`` softmax output of the fused head.
        y: ``(N,)`` integer labels in ``[0, C)``.
        prior: ``(C,)`` class prior ``p(y)``; default: label frequencies of ``y``.
        eps: floor of every probability before the logarithm, in (0, 1].
    """
    eps = check_real(eps, "eps", 0, 1, lo_open=True)  # 0: a head giving the true class 0 made NaN
    p1 = check_probs(p1, "p1")
    n, c = p1.shape
    p2 = check_probs(p2, "p2", n, c)
    p12 = check_probs(p12, "p12", n, c)
    y = check_labels(y, n, c).to(p1.device)
    if prior is None:
        prior = torch.bincount(y, minlength=c).to(torch.float64) / n
    else:
        prior = tensor_of(prior, "prior", dtype=torch.float64, device=p1.device)
        # not (>= 0): NaN fails too (a NaN prior had given NaN scores)
        if prior.shape != (c,) or not bool((prior >= 0).all()) or not abs(float(prior.sum()) - 1.0) <= 1e-6:
            raise ValueError(f"prior must be a probability vector of shape ({c},) (entries >= 0, summing to 1), "
                             f"got shape {tuple(prior.shape)} summing to {float(prior.sum()):g}")
        ruled_out = prior[y] == 0
        if bool(ruled_out.any()):  # its log was floored at eps: r up to log(1/eps) = 27.6 nats
            raise ValueError(f"prior gives class {int(y[ruled_out][0])} probability 0, but y holds it; "
                             "a prior must be positive on every class the samples have")
    log_prior = prior.clamp_min(eps).log()[y]

    def pmi(p):
        return prob_of_label(p, y).clamp_min(eps).log() - log_prior

    i1, i2, i12 = pmi(p1), pmi(p2), pmi(p12)
    r = torch.minimum(i1, i2).clamp_min(0.0)
    return SampleScores(redundancy=r, unique1=(i1 - r).clamp_min(0.0),
                        unique2=(i2 - r).clamp_min(0.0),
                        synergy=(i12 - torch.maximum(i1, i2)).clamp_min(0.0))


def nearest_neighbours(emb: ArrayLike, k: int, chunk: int = 4096) -> torch.Tensor:
    """Indices ``(N, k)`` of each row's ``k`` nearest rows of ``emb (N, D)`` (itself first;
    tensor or numpy).

    Euclidean distance; computed in row chunks of ``chunk`` so memory stays ``chunk × N``.
    """
    return _neighbours(emb, k, chunk)[0]


def _neighbours(emb: ArrayLike, k: int, chunk: int = 4096) -> tuple[torch.Tensor, int]:
    """:func:`nearest_neighbours`, and how many rows have their ``k``-th and ``(k+1)``-th
    nearest at the same distance (a tie, which the lower index won)."""
    emb = as_tensor(emb, "embedding")
    if emb.dim() != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:  # (N, 0) had failed in torch's max()
        raise ValueError(f"embedding must have shape (N, D) with N, D >= 1, got {tuple(emb.shape)}")
    n = emb.shape[0]
    k = check_integer(k, "k", 1, n, expected=f"an integer in [1, N] = [1, {n}]")
    x = emb.detach().to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("embedding contains NaN or Inf")
    eps = torch.finfo(torch.float64).eps
    # Small integers (one-hot rows, quantised codes): |a|^2 - 2 a.b + |b|^2 is exact, and so is
    # every tie in it.
    peak = float(x.abs().max())
    integral = peak * peak * x.shape[1] < 2 ** 52 and bool((x == x.round()).all())
    if not integral:
        # It cancels catastrophically for rows far from the origin (an offset of 1e8 scrambled
        # 94% of neighbour sets): scale by a power of two (exact; first, so that the mean cannot
        # overflow near the largest float), then centre, then scale again so that the squares
        # cannot overflow.
        for centre in (False, True):
            if centre:
                direct = x  # scaled exactly: the distances of near ties are taken from it (below)
                x = x - x.mean(0)
            peak = float(x.abs().max())
            if peak > 0:
                x = torch.ldexp(x, torch.tensor(-math.frexp(peak)[1], dtype=torch.int32, device=x.device))
    sq = (x * x).sum(1)
    out, tied = [], 0
    for s in range(0, n, chunk):
        d = sq[s:s + chunk, None] - 2.0 * x[s:s + chunk] @ x.T + sq[None, :]
        # A point is at distance exactly 0 from itself; make it win ties against duplicates.
        rows = torch.arange(s, min(s + chunk, n), device=x.device)
        d[rows - s, rows] = -1.0
        top = d.topk(min(k + 1, n), dim=1, largest=False)
        idx = top.indices[:, :k]
        if k < n:
            if integral:  # topk picks among exact ties in no set order: row 0 of [[0], [1], [1], [1]] got 2
                near = (top.values[:, k] == top.values[:, k - 1]).nonzero().squeeze(1)
                dist = d[near]
            else:
                # Distances tied in exact arithmetic come out of the expansion some ulps apart,
                # in an order that changed with the scale and the chunk (a quantised embedding
                # times 3 had 184 of 600 neighbour sets differ): rows whose k-th and (k+1)-th
                # distances lie within the expansion's rounding of each other (a bound per
                # pair, entries of x at most 1) take distances from direct differences.
                kth, after = top.indices[:, k - 1], top.indices[:, k]
                bound = 4 * (x.shape[1] + 2) * eps * (2 * sq[rows] + sq[kth] + sq[after])
                near = (top.values[:, k] - top.values[:, k - 1] <= bound).nonzero().squeeze(1)
                dist = torch.cdist(direct[rows[near]], direct, compute_mode="donot_use_mm_for_euclid_dist")
                dist[torch.arange(len(near), device=x.device), rows[near]] = -1.0
            if near.numel():  # the k nearest, ties to the lower index
                ranked = torch.sort(dist, dim=1, stable=True)
                idx[near] = ranked.indices[:, :k]
                tied += int((ranked.values[:, k] == ranked.values[:, k - 1]).sum())
        out.append(idx)
    return torch.cat(out), tied


def local_scores(p1, p2, y, embedding, *, k: int = 16, method: str = "exact",
                 **pid_kwargs) -> SampleScores:
    """BROJA PID of each sample's ``k``-nearest-neighbour joint (module docstring).

    Args:
        p1, p2: ``(N, C)`` softmax outputs of the two unimodal heads.
        y: ``(N,)`` integer labels in ``[0, C)``.
        embedding: ``(N, D)`` representation (tensor or numpy) in which neighbours are found (SPICE uses the
            fused embedding).
        k: neighbourhood size, including the sample itself.
        method: :func:`fastpid.pid` method for the batch of ``N`` problems of size
            ``C × C × C``. Default ``"exact"``: once a model fits its training set the
            neighbourhoods are nearly label-pure and the terms are small (around 1e-2 nats),
            so the error of ``"fast"`` (certified gaps up to 4e-2 nats with 20 steps on
            digits) would scramble the ranking; on those sparse joints ``"exact"`` costs
            about as much as ``"fast"`` (1,258 problems of 10×10×10 on one CPU thread:
            0.11–0.39 s against 0.13 s).
            Further keyword arguments go to :func:`fastpid.pid` (``progress`` defaults to
            ``False``; ``base=2`` gives bits).

    Returns:
        :class:`SampleScores` on the device of ``p1``: each term of each sample within its
        ``gap``, the solve's certificate of its neighbourhood joint's PID (``"exact"``:
        ``tol``, 1e-8 nats by default, with a warning where a solve falls short; ``"fast"``:
        up to 4e-2 nats on digits, where the terms are about 1e-2).

    Warns where ties in distance pick most samples' neighbourhoods (their ``k``-th and
    ``(k+1)``-th nearest rows at the same distance, ties going to the lower index): the scores
    then follow the rows' order, not the embedding (a collapsed embedding, all rows equal,
    makes every neighbourhood the sample and the first ``k - 1`` rows; one-hot or coarsely
    quantised embeddings tie too).
    """
    p1 = check_probs(p1, "p1")
    n, c = p1.shape
    p2 = check_probs(p2, "p2", n, c)
    y = check_labels(y, n, c).to(p1.device)
    embedding = as_tensor(embedding, "embedding")
    if embedding.dim() != 2 or embedding.shape[0] != n:
        raise ValueError(f"embedding must have shape ({n}, D), got {tuple(embedding.shape)}")
    nbr, tied = _neighbours(embedding.to(p1.device), k)
    if 2 * tied > n:
        warnings.warn(f"local_scores: ties in distance pick the neighbourhoods of {tied} of {n} samples (their "
                      f"k-th and (k+1)-th nearest rows, k = {k}, lie at the same distance; the lower index wins), "
                      "so the scores follow the rows' order, not the embedding: a collapsed, one-hot or coarsely "
                      "quantised embedding?", stacklevel=caller_level())
    nbr = nbr.reshape(-1)
    groups = torch.arange(n, device=p1.device).repeat_interleave(k)
    P = fastpid.joint(p1[nbr], p2[nbr], y[nbr], sizes=(c, c, c), groups=groups, num_groups=n)
    pid_kwargs.setdefault("progress", False)
    res = fastpid.pid(P, method=method, **pid_kwargs)
    return SampleScores(redundancy=res.redundancy, unique1=res.unique1,
                        unique2=res.unique2, synergy=res.synergy, gap=res.gap)

