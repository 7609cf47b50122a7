"""The PID probe: how two modalities' embeddings share information about the label.

Pipeline (as in the FastPID paper): per modality, standardise the probe-set
embeddings, project them on their first principal components and cluster the projections
with k-means; the two cluster ids and the label give a ``k × k × C`` joint histogram, which
:func:`fastpid.pid` decomposes.

With few probe samples per joint cell (``N`` samples over ``k²·C`` cells) the plug-in joint
is biased: even codes that carry no information about the label get positive information
terms, mostly synergy. :meth:`PIDProbe.shuffled` measures that floor by decomposing the same
codes after a permutation that destroys what is being tested.

Under ``torch.distributed`` each rank passes its own part of the probe set; the probe
gathers the parts (see :meth:`PIDProbe.__call__`) and every rank gets the result of the
whole probe set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

import fastpid

from .cluster import kmeans, pca, standardize
from .distributed import gather_rows, is_distributed
from .predictions import as_labels, as_tensor

__all__ = ["PIDProbe", "ProbeResult", "TERMS"]

#: The information fields of a :class:`ProbeResult`, in nats (or ``base`` units).
TERMS = ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2", "gap")


@dataclass(frozen=True)
class ProbeResult:
    """PID of ``(code1, code2; label)`` on the probe set, as Python floats.

    ``mi1`` and ``mi2`` are each modality's mutual information with the label,
    ``I(Z_m; Y)`` measured on the cluster codes: the "competitive strength" proxy of the
    ECS paper. ``gap`` is the solver's certified error bound. ``codes1``/``codes2`` are the
    ``(N,)`` cluster ids and ``labels`` the ``(N,)`` int64 labels they were decomposed with
    (the whole probe set's, in the same order, when the probe gathered it from several
    ranks). The repr shows the terms and ``N`` only.
    """

    redundancy: float
    unique1: float
    unique2: float
    synergy: float
    mi: float
    mi1: float
    mi2: float
    gap: float
    codes1: torch.Tensor
    codes2: torch.Tensor
    labels: torch.Tensor | None = None

    def terms(self) -> dict:
        """The information fields as a ``{name: float}`` dict."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in TERMS}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in self.terms().items())
        return f"ProbeResult({shown}, N={self.codes1.shape[0]})"


class PIDProbe:
    """Standardise → PCA(``n_components``) → k-means(``n_clusters``) per modality → PID.

    Args:
        n_components: principal components kept per modality (capped at the embedding
            width and the number of samples).
        n_clusters: k-means clusters per modality (``k``); the joint is ``k × k × C``.
        n_init: k-means++ restarts per modality.
        seed: seed of the k-means initialisation (the probe is deterministic).
        method: :func:`fastpid.pid` method (``"exact"`` by default; the joint is small).
        base: logarithm base of the results (``None``: nats).
    """

    def __init__(self, n_components: int = 5, n_clusters: int = 20, *, n_init: int = 4,
                 max_iter: int = 100, seed: int = 0, method: str = "exact", base=None):
        for name, v in (("n_components", n_components), ("n_clusters", n_clusters)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.n_components = n_components
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.seed = seed
        self.method = method
        self.base = base

    def codes(self, emb, name: str = "emb") -> torch.Tensor:
        """Cluster ids ``(N,)`` (int64) of embeddings ``emb (N, D)`` (tensor or numpy; any
        magnitude: :func:`~fastpid.integrations.cluster.standardize` rescales first)."""
        emb = as_tensor(emb, name)
        if emb.dim() != 2:
            raise ValueError(f"{name} must have shape (N, D), got {tuple(emb.shape)}")
        n = emb.shape[0]
        if n < self.n_clusters:
            raise ValueError(f"{name} has {n} samples; the probe needs at least n_clusters = "
                             f"{self.n_clusters}")
        z = standardize(emb.detach().to(torch.float64))
        z = pca(z, min(self.n_components, *z.shape)).scores
        return kmeans(z, self.n_clusters, n_init=self.n_init, max_iter=self.max_iter,
                      seed=self.seed).labels

    def _n_classes(self, labels: torch.Tensor, n_classes: int | None) -> int:
        return int(labels.max()) + 1 if n_classes is None else int(n_classes)

    def shuffled(self, codes1: torch.Tensor, codes2: torch.Tensor, labels, n_permutations: int, *,
                 seed: int = 0, n_classes: int | None = None, within_class: bool = True) -> dict:
        """A permutation baseline: mean PID terms (nats, or ``base`` units; keys
        :data:`TERMS`) of the codes ``codes1 (N,)``, ``codes2 (N,)`` (ids in
        ``[0, n_clusters)``, e.g. a :class:`ProbeResult`'s) and ``labels (N,)`` over
        ``n_permutations`` random permutations, drawn from a ``torch.Generator`` seeded with
        ``seed``.

        * ``within_class=True``: ``codes2`` is permuted among the samples of each class. The
          pairs ``(code1, y)`` and ``(code2, y)`` keep their exact joint distributions (so
          redundancy and unique terms, and the number of occupied cells, stay comparable)
          while ``code1`` and ``code2`` become independent given ``y``: the synergy it gives
          is the floor that bias and the class-conditional structure produce without any
          interaction between the modalities.
        * ``within_class=False``: the labels are permuted, which keeps every marginal and
          destroys all dependence on ``y``; every term is then bias. With informative codes
          this floor is too high for synergy (the bias of an uninformative joint exceeds
          the synergy bias of an informative one, whose information is mostly redundant or
          unique).
        """
        if not isinstance(n_permutations, int) or n_permutations < 1:
            raise ValueError(f"n_permutations must be a positive integer, got {n_permutations!r}")
        codes1, codes2 = as_tensor(codes1, "codes1"), as_tensor(codes2, "codes2")
        labels = as_labels(labels, "labels", device=codes1.device)
        if not codes1.shape == codes2.shape == labels.shape or codes1.dim() != 1:
            raise ValueError(f"codes1, codes2 and labels must be 1-D of one length, got "
                             f"{tuple(codes1.shape)}, {tuple(codes2.shape)}, {tuple(labels.shape)}")
        sizes = (self.n_clusters, self.n_clusters, self._n_classes(labels, n_classes))
        gen = torch.Generator().manual_seed(seed)
        total = dict.fromkeys(TERMS, 0.0)
        for _ in range(n_permutations):
            if within_class:
                c2 = codes2.clone()
                for c in labels.unique():
                    idx = (labels == c).nonzero().squeeze(1)
                    c2[idx] = codes2[idx[torch.randperm(idx.numel(), generator=gen).to(idx.device)]]
                P = fastpid.joint(codes1, c2, labels, sizes=sizes)
            else:
                perm = torch.randperm(labels.shape[0], generator=gen).to(labels.device)
                P = fastpid.joint(codes1, codes2, labels[perm], sizes=sizes)
            res = fastpid.pid(P, method=self.method, base=self.base)
            for t in TERMS:
                total[t] += float(getattr(res, t))
        return {t: v / n_permutations for t, v in total.items()}

    def __call__(self, emb1, emb2, labels, n_classes: int | None = None, *, index=None) -> ProbeResult:
        """PID of the two modalities' embeddings ``emb1 (N, D1)``, ``emb2 (N, D2)`` about the
        ``labels (N,)`` (values in ``[0, n_classes)``; ``n_classes`` defaults to
        ``max(labels) + 1``). Tensors or numpy arrays; labels may be integral floats.

        Under an initialised ``torch.distributed`` process group each rank passes its part
        of the probe set (any number of rows, the same widths ``D1``, ``D2`` on every rank);
        the parts are gathered and every rank decomposes the whole set, so every rank gets
        the result one process would get on the concatenation of the parts in rank order.
        ``index (N_rank,)`` (optional) gives each row's position in the probe set instead:
        the gathered rows are put in that order, which must be a permutation of
        ``0 .. N - 1``. Collective: every rank must call it.

        Raises ``ValueError`` if the decomposition has NaN terms (a NaN here would silently
        steer :class:`~fastpid.integrations.ECSAsyncController`'s decisions).
        """
        labels = as_labels(labels, "labels")
        emb1, emb2 = as_tensor(emb1, "emb1"), as_tensor(emb2, "emb2")
        for name, emb in (("emb1", emb1), ("emb2", emb2)):
            if emb.dim() != 2:
                raise ValueError(f"{name} must have shape (N, D), got {tuple(emb.shape)}")
            if emb.shape[0] != labels.shape[0]:
                raise ValueError(f"{name} has {emb.shape[0]} rows but labels has {labels.shape[0]}")
        if index is not None or is_distributed():
            emb1, emb2, labels = self._gather(emb1, emb2, labels, index)
        c1 = self.codes(emb1, "emb1")
        c2 = self.codes(emb2, "emb2").to(c1.device)
        labels = labels.to(c1.device)
        P = fastpid.joint(c1, c2, labels, sizes=(self.n_clusters, self.n_clusters, self._n_classes(labels, n_classes)))
        res = fastpid.pid(P, method=self.method, base=self.base)
        terms = {t: float(getattr(res, t)) for t in TERMS}
        nan = [t for t, v in terms.items() if math.isnan(v)]
        if nan:
            raise ValueError(f"the probe's PID has NaN terms {nan} (method={self.method!r}); "
                             "the embeddings or the solver produced an undefined decomposition")
        return ProbeResult(**terms, codes1=c1, codes2=c2, labels=labels)

    @staticmethod
    def _gather(emb1, emb2, labels, index):
        """Every rank's rows (rank order, or the order ``index`` gives)."""
        device = emb1.device
        rows = [emb1.detach().to(torch.float64), emb2.detach().to(torch.float64).to(device),
                labels.to(device)]
        if index is None:
            return gather_rows(*rows)
        index = as_labels(index, "index", device=device)
        if index.shape != labels.shape:
            raise ValueError(f"index must have one entry per row ({labels.shape[0]}), got shape "
                             f"{tuple(index.shape)}")
        index, *rows = gather_rows(index, *rows)
        order = index.argsort()
        if not torch.equal(index[order], torch.arange(index.shape[0], device=device)):
            raise ValueError(f"index (over every rank) must be a permutation of 0 .. {index.shape[0] - 1}")
        return [r[order] for r in rows]
