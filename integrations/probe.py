"""The PID probe: how two modalities' embeddings share information about the label.

Pipeline: per modality, scale the probe-set embeddings, project them on their first
principal components and cluster the projections with k-means; the two cluster ids and the
label give a ``k × k × C`` joint histogram, which :func:`fastpid.pid` decomposes. The
scaling (``PIDProbe(scaling=...)``) is ``"standardize"`` by default (zero mean and unit
variance per feature, :func:`~fastpid.integrations.cluster.standardize`) or ``"l2"``
(each embedding row divided by its Euclidean norm,
:func:`~fastpid.integrations.cluster.l2_normalize`), which is what the published FastPID
code does before its PCA(5) and k-means(20). The two give different codes, and so
different PID terms, on the same embeddings: standardising weighs every feature equally,
row normalisation keeps the features' relative scales and discards each row's norm.

With few probe samples per joint cell (``N`` samples over ``k²·C`` cells) the plug-in joint
is biased: even codes that carry no information about the label get positive information
terms, mostly synergy (random embeddings, 500 samples, ``k = 20``, 10 classes: about 1.4
nats of "synergy"). Two tools address it:

* :meth:`PIDProbe.estimated` (or ``PIDProbe(estimate=True)``, which attaches it to every
  :class:`ProbeResult`) runs :func:`fastpid.estimate` on the probe's codes: bias-corrected
  terms, confidence intervals and a test of "synergy > 0". It costs 1.5–3x the probe
  (measured for N = 500, ``k = 20``, 10 classes on 2 CPU cores: 0.06–0.10 s, against
  0.03–0.04 s for the probe itself and 0.01 s for a 4-permutation :meth:`shuffled`), so it is
  off by default. At that size it cannot repair the plug-in: random 16-dimensional embeddings
  (ten seeds (0–9)) give a corrected synergy of 0.62–0.69 nats (plug-in 1.32–1.40), flagged
  unreliable, with p = 0.033–0.30 (0.033, the smallest p that the 29 null draws allow, for
  two seeds); with ``k = 3`` the corrected synergy is 0.000–0.006 nats, its interval at most
  [0, 0.037].
* :meth:`PIDProbe.shuffled` measures a permutation floor by decomposing the same codes after
  a permutation that destroys what is being tested.

The probe warns (``UserWarning``, once per instance) when it has fewer than
``min_samples_per_cell`` samples per joint cell, and suggests a smaller ``k``
(``from fastpid.estimate import suggest_k``): fewer clusters cut the bias at its source.

Under ``torch.distributed`` each rank passes its own part of the probe set; the probe
gathers the parts (see :meth:`PIDProbe.__call__`) and every rank gets the result of the
whole probe set.
"""
from __future__ import annotations

import inspect
import math
import secrets
import statistics
import warnings
from dataclasses import dataclass, fields
from typing import Mapping

import torch

import fastpid
from fastpid._caller import caller_level
from fastpid._validate import as_tensor as as_checked_tensor
from fastpid._validate import check_base, check_choice, check_codes, check_flag, check_real
from fastpid.estimate import _check_confidence, _check_int, _check_seed, p_value_text, suggest_k, term_text

from .cluster import _check_count, check_seed, kmeans, l2_normalize, pca, standardize
from .distributed import _place_rows, broadcast_object, check_on_every_rank, gather_rows, is_distributed
from .predictions import ArrayLike, as_labels, as_tensor, check_indices

__all__ = ["PIDProbe", "ProbeResult", "TERMS", "SCALINGS"]

#: Values of ``PIDProbe(scaling=...)``: how each modality's embeddings are scaled before PCA.
SCALINGS = {"standardize": standardize, "l2": l2_normalize}

#: The information fields of a :class:`ProbeResult`, in nats (or ``base`` units).
TERMS = ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2", "gap")


@dataclass(frozen=True, eq=False)  # identity: == of array fields has no single truth value
class ProbeResult:
    """PID of ``(code1, code2; label)`` on the probe set, as Python floats.

    ``mi1`` and ``mi2`` are each modality's mutual information with the label,
    ``I(Z_m; Y)`` measured on the cluster codes: the "competitive strength" proxy of the
    ECS paper. ``gap`` is the solver's certified error bound. ``codes1``/``codes2`` are the
    ``(N,)`` cluster ids and ``labels`` the ``(N,)`` int64 labels they were decomposed with
    (the whole probe set's, in the same order, when the probe gathered it from several
    ranks). ``estimate`` is the :class:`fastpid.PIDEstimate` of the codes (bias-corrected
    terms, ``ci_low``/``ci_high``, ``p_value.synergy``; 0-d numpy ``float64`` arrays, nats or
    ``base`` units) when the probe was built with ``estimate=True``, else ``None``; the
    information fields above stay the plug-in values either way. ``base`` is the probe's
    (``None``: nats). The repr shows the plug-in terms (their ``gap`` bounds the solve, not the
    sampling error), ``N`` and, with an estimate, each corrected term with its interval (marked
    where the estimate flags it unreliable at this N) and the synergy's p-value; without one it
    says that the terms carry no interval.
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
    estimate: "fastpid.PIDEstimate | None" = None
    base: float | None = None

    def terms(self) -> dict:
        """The information fields as a ``{name: float}`` dict."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in TERMS}

    def __repr__(self) -> str:
        plugin = ", ".join(f"{k}={v:.4g}" for k, v in self.terms().items())
        units = "nats" if self.base is None else "bits" if self.base == 2 else f"base {self.base:g}"
        shown = f"plug-in: {plugin}, N={self.codes1.shape[0]}, units={units}; "
        e = self.estimate
        if e is None:  # plug-in terms of a few hundred codes are mostly bias (synergy most)
            return f"ProbeResult({shown}no interval: PIDProbe(estimate=True) gives them)"
        # As the estimate's own table prints them (.4g showed rounding noise as 5.5e-15
        # [0, 1.2e-14]); the flag, as an interval the rule distrusts is not one.
        terms = []
        for t in TERMS[:4]:
            low, high = term_text(float(getattr(e.ci_low, t))), term_text(float(getattr(e.ci_high, t)))
            flag = "" if bool(getattr(e.reliable, t)) else " unreliable at this N"
            terms.append(f"{t}={term_text(float(getattr(e, t)))} [{low}, {high}]{flag}")
        return (f"ProbeResult({shown}estimate ({100 * e.confidence:g}% intervals): {', '.join(terms)}, "
                f"p_synergy={p_value_text(float(e.p_value.synergy), e.n_null, 3)})")


#: Arguments of :func:`fastpid.estimate` that the probe sets itself (the rest may be passed
#: through ``PIDProbe(estimate_options=...)``).
_PROBE_SETS = ("sizes", "weights", "counts", "groups", "num_groups", "base", "progress")

#: :func:`fastpid.estimate`'s own checks of the options' values (with the minimums it
#: passes them), run at construction: a bad value would otherwise surface only at the first
#: probe (under ``torch.distributed``, on the rank that runs the estimate).
_OPTION_CHECKS = {
    "confidence": _check_confidence,
    "n_jackknife": lambda v: _check_int(v, "n_jackknife", 2),
    "n_null": lambda v: _check_int(v, "n_null", 0),
    "n_pilot": lambda v: _check_int(v, "n_pilot", 1),
    "seed": _check_seed,
}


def _estimate_options(options) -> dict:
    """``options`` checked against :func:`fastpid.estimate`'s keyword arguments and the
    values it accepts."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"estimate_options must be a mapping or None, got {type(options).__name__}")
    params = inspect.signature(fastpid.estimate).parameters
    allowed = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in _PROBE_SETS)
    bad = sorted(k for k in options if k not in allowed)
    if bad:
        raise ValueError(f"estimate_options has unknown keys {bad}; allowed: {allowed}")
    for k, v in options.items():
        try:
            _OPTION_CHECKS[k](v)
        except (TypeError, ValueError) as error:
            raise type(error)(f"estimate_options: {error}") from None
    return dict(options)


def _check_finite(emb: torch.Tensor, name: str) -> None:
    bad = ~torch.isfinite(emb).all(1)
    if bool(bad.any()):
        raise ValueError(f"{name} has NaN or Inf entries ({int(bad.sum())} of {emb.shape[0]} rows, the "
                         f"first at row {int(bad.nonzero()[0, 0])}); a diverged model's embeddings cannot be "
                         "clustered")


class PIDProbe:
    """Scale → PCA(``n_components``) → k-means(``n_clusters``) per modality → PID.

    Args:
        n_components: principal components kept per modality (capped at the embedding
            width and the number of samples).
        n_clusters: k-means clusters per modality (``k``); the joint is ``k × k × C``.
        n_init: k-means++ restarts per modality.
        max_iter: cap on the k-means (Lloyd) iterations per restart.
        seed: seed of the k-means initialisation (the probe is deterministic).
        method: :func:`fastpid.pid` method of the plug-in terms (``"exact"`` by default; the
            joint is small). The estimate (``estimate=True``) solves exactly whatever it is:
            :func:`fastpid.estimate` has no other method.
        base: logarithm base of the results (``None``: nats).
        estimate: also run :meth:`estimated` on every probe and attach the
            :class:`fastpid.PIDEstimate` to the :class:`ProbeResult` (``result.estimate``).
            Off by default: at N = 500, ``k = 20``, 10 classes it costs 0.06–0.10 s on 2 CPU
            cores, 1.5–3x the probe itself (0.03–0.04 s).
        estimate_options: keyword arguments for :func:`fastpid.estimate` (``confidence``,
            ``n_jackknife``, ``n_null``, ``seed``, ...; the probe sets ``sizes`` and
            ``base``), keys and values checked here as :func:`fastpid.estimate` checks
            them. ``seed`` defaults to the probe's ``seed``, so the estimate is
            deterministic too.
        min_samples_per_cell: warn (``UserWarning``, once per probe instance) when the
            probe set has fewer samples than this per cell of the ``k × k × C`` joint
            (``N < min_samples_per_cell · k² · C``, ``C`` the classes the probe set holds);
            ``0`` never warns.
        scaling: how each modality's embeddings are scaled before the PCA:
            ``"standardize"`` (default; zero mean, unit variance per feature) or ``"l2"``
            (unit-norm rows; a row of zeros stays 0), as the published FastPID code does.
            Both rescale by powers of two first, so embeddings of any finite magnitude work.
    """

    def __init__(self, n_components: int = 5, n_clusters: int = 20, *, n_init: int = 4,
                 max_iter: int = 100, seed: int = 0, method: str = "exact", base=None,
                 estimate: bool = False, estimate_options: Mapping | None = None,
                 min_samples_per_cell: float = 1.0, scaling: str = "standardize"):
        # Checked here rather than at the first probe; numpy ints are stored as Python ints.
        n_components, n_clusters, n_init, max_iter = (
            _check_count(v, name) for name, v in (("n_components", n_components), ("n_clusters", n_clusters),
                                                  ("n_init", n_init), ("max_iter", max_iter)))
        if not isinstance(estimate, bool):
            raise TypeError(f"estimate must be True or False, got {estimate!r}")
        min_samples_per_cell = check_real(min_samples_per_cell, "min_samples_per_cell", 0)
        if not isinstance(scaling, str) or scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {tuple(SCALINGS)}, got {scaling!r}")
        self.scaling = scaling
        self.estimate = estimate
        self.estimate_options = _estimate_options(estimate_options)
        self.min_samples_per_cell = float(min_samples_per_cell)
        self._warned = False
        self.n_components = n_components
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        # Checked here: it seeds the k-means and, by default, the estimate, which refused a
        # negative one only at the first probe.
        self.seed = check_seed(seed)
        self.method = check_choice(method, fastpid.api.METHODS, "method")
        self.base = check_base(base)

    def codes(self, emb, name: str = "emb") -> torch.Tensor:
        """Cluster ids ``(N,)`` (int64) of embeddings ``emb (N, D)`` (tensor or numpy; any
        magnitude: the ``scaling`` function, :func:`~fastpid.integrations.cluster.standardize`
        or :func:`~fastpid.integrations.cluster.l2_normalize`, rescales first)."""
        emb = as_tensor(emb, name)
        if emb.dim() != 2:
            raise ValueError(f"{name} must have shape (N, D), got {tuple(emb.shape)}")
        n = emb.shape[0]
        if n < self.n_clusters:
            raise ValueError(f"{name} has {n} samples; the probe needs at least n_clusters = "
                             f"{self.n_clusters}")
        _check_finite(emb, name)
        z = SCALINGS[self.scaling](emb.detach().to(torch.float64))
        z = pca(z, min(self.n_components, *z.shape)).scores
        return kmeans(z, self.n_clusters, n_init=self.n_init, max_iter=self.max_iter,
                      seed=self.seed).labels

    @staticmethod
    def _check_n_classes(n_classes) -> int | None:
        """``None`` or a positive integer (int() would truncate 3.7 to 3 and take True as 1)."""
        return None if n_classes is None else _check_count(n_classes, "n_classes")

    def _n_classes(self, labels: torch.Tensor, n_classes: int | None) -> int:
        """The ``C`` of the joint: ``n_classes`` (checked to exceed every label, so that an
        error names the caller's arguments rather than fastpid.joint's) or ``max(labels) + 1``."""
        n_classes = self._check_n_classes(n_classes)
        if not labels.numel():
            return 1 if n_classes is None else n_classes
        top = int(labels.max())
        if n_classes is None:
            return top + 1
        if top >= n_classes:
            i = int((labels >= n_classes).nonzero()[0])
            raise ValueError(f"labels[{i}] = {int(labels[i])} is out of range for n_classes = {n_classes}; "
                             f"labels must lie in [0, n_classes) (raise n_classes, or leave it None "
                             f"for max(labels) + 1 = {top + 1})")
        return n_classes

    def _checked_codes(self, codes1, codes2, labels, n_classes: int | None):
        """``(codes1, codes2, labels, sizes)`` as tensors, checked to be 1-D of one length;
        ``sizes`` is the ``(k, k, C)`` of their joint."""
        codes1, codes2 = as_tensor(codes1, "codes1"), as_tensor(codes2, "codes2")
        labels = as_labels(labels, "labels", device=codes1.device)
        if not codes1.shape == codes2.shape == labels.shape or codes1.dim() != 1:
            raise ValueError(f"codes1, codes2 and labels must be 1-D of one length, got "
                             f"{tuple(codes1.shape)}, {tuple(codes2.shape)}, {tuple(labels.shape)}")
        # Checked as fastpid.joint checks them, under the caller's names (joint's said "x1" and "raise size").
        codes1, codes2 = (check_codes(as_checked_tensor(c, name)[0], name, self.n_clusters, size_name="n_clusters")[0]
                          for c, name in ((codes1, "codes1"), (codes2, "codes2")))
        return codes1, codes2, labels, (self.n_clusters, self.n_clusters, self._n_classes(labels, n_classes))

    def shuffled(self, codes1: ArrayLike, codes2: ArrayLike, labels, n_permutations: int, *,
                 seed: int = 0, n_classes: int | None = None, within_class: bool = True) -> dict:
        """A permutation baseline: mean PID terms (nats, or ``base`` units; keys
        :data:`TERMS`) of the codes ``codes1 (N,)``, ``codes2 (N,)`` (ids in
        ``[0, n_clusters)``, e.g. a :class:`ProbeResult`'s) and ``labels (N,)`` over
        ``n_permutations`` random permutations, drawn from a ``torch.Generator`` seeded with
        ``seed``; and, with two permutations or more, under keys ``"<term>_se"`` for the
        information terms (not ``gap``), the standard error of each mean over the permutations
        (sample SD / sqrt(n); one permutation has no spread, and no such keys).

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
        n_permutations = _check_count(n_permutations, "n_permutations")
        within_class = check_flag(within_class, name="within_class")  # "no" had been taken as true
        codes1, codes2, labels, sizes = self._checked_codes(codes1, codes2, labels, n_classes)
        gen = torch.Generator().manual_seed(check_seed(seed))
        draws = {t: [] for t in TERMS}
        for _ in range(n_permutations):
            if within_class:
                c2 = codes2.clone()
                for c in labels.unique():
                    idx = (labels == c).nonzero().squeeze(1)
                    # drawn on the CPU, where gen lives (a default device of cuda refused the CPU generator)
                    c2[idx] = codes2[idx[torch.randperm(idx.numel(), generator=gen, device="cpu").to(idx.device)]]
                P = fastpid.joint(codes1, c2, labels, sizes=sizes)
            else:
                perm = torch.randperm(labels.shape[0], generator=gen, device="cpu").to(labels.device)
                P = fastpid.joint(codes1, codes2, labels[perm], sizes=sizes)
            res = fastpid.pid(P, method=self.method, base=self.base)
            for t in TERMS:
                draws[t].append(float(getattr(res, t)))
        out = {}
        for t, v in draws.items():
            total = 0.0
            for x in v:  # in turn: the means the baselines had before their errors were kept
                total += x
            out[t] = total / n_permutations
        if n_permutations > 1:
            for t in TERMS[:-1]:  # the gap's spread is no uncertainty of the baseline
                out[f"{t}_se"] = statistics.stdev(draws[t]) / math.sqrt(n_permutations)
        return out

    def estimated(self, codes1, codes2, labels, *, n_classes: int | None = None, seed=...) -> "fastpid.PIDEstimate":
        """:func:`fastpid.estimate` of the codes ``codes1 (N,)``, ``codes2 (N,)`` (ids in
        ``[0, n_clusters)``, e.g. a :class:`ProbeResult`'s) and ``labels (N,)`` (values in
        ``[0, n_classes)``, default ``max(labels) + 1``), over the ``k × k × C`` joint, with
        the probe's ``estimate_options`` and ``base``.

        Returns a :class:`fastpid.PIDEstimate` of 0-d numpy ``float64`` arrays (whatever the
        codes' device): corrected terms, ``ci_low``/``ci_high`` per term, ``p_value.synergy``
        (test of "synergy > 0"), ``plugin``, ``n``, ``cells``, ``reliable``. Deterministic:
        the resampling is seeded with ``seed`` where given, else ``estimate_options["seed"]``,
        default the probe's ``seed``. Not collective: under ``torch.distributed`` call it with
        the gathered codes (a :class:`ProbeResult`'s) on every rank, with one seed, or on one
        rank and broadcast the result.
        """
        codes1, codes2, labels, sizes = self._checked_codes(codes1, codes2, labels, n_classes)
        options = {"seed": self.seed, **self.estimate_options}
        if seed is not ...:
            options["seed"] = seed
        # numpy in, numpy out: the estimate's fields are float64 scalars on the host.
        return fastpid.estimate(codes1.cpu().numpy(), codes2.cpu().numpy(), labels.cpu().numpy(),
                                sizes=sizes, base=self.base, progress=False, **options)

    def _check_density(self, n: int, n_classes: int) -> None:
        """Warn once per instance when the probe set is thin for the ``k × k × C`` joint
        (``C``: the classes it holds)."""
        cells = self.n_clusters * self.n_clusters * n_classes
        if self._warned or self.min_samples_per_cell <= 0 or n >= self.min_samples_per_cell * cells:
            return
        self._warned = True
        # suggest_k's own density, or the user's where higher (advice below it would warn again)
        per_cell = max(4.0, self.min_samples_per_cell)
        k = suggest_k(n, n_classes, samples_per_cell=per_cell)
        if n < per_cell * k * k * n_classes:  # suggest_k's floor of 2 clusters is too many still
            advice = (f"use more probe samples: {math.ceil(per_cell * 4 * n_classes)} at least for 2 clusters "
                      f"({per_cell:g} per cell of 2x2x{n_classes})")
        elif k < self.n_clusters:
            advice = (f"use fewer clusters, e.g. n_clusters={k} (from fastpid.estimate import suggest_k; "
                      f"suggest_k({n}, {n_classes}, samples_per_cell={per_cell:g}))")
        else:
            advice = "use fewer clusters or more probe samples"
        warnings.warn(
            f"PIDProbe: {n} probe samples over {self.n_clusters}x{self.n_clusters}x{n_classes} = {cells} "
            f"joint cells ({n / cells:.3g} samples per cell, below min_samples_per_cell="
            f"{self.min_samples_per_cell:g}); the plug-in PID terms, synergy most of all, are then "
            f"mostly estimation bias. {advice[0].upper() + advice[1:]}"
            + (" (the bias-corrected estimate attached says how far its terms can be trusted)." if self.estimate
               else ", or use the bias-corrected estimate and its synergy test (PIDProbe(estimate=True)).")
            + " Warned once per probe.",
            UserWarning, stacklevel=caller_level())

    def __call__(self, emb1, emb2, labels, n_classes: int | None = None, *, index=None) -> ProbeResult:
        """PID of the two modalities' embeddings ``emb1 (N, D1)``, ``emb2 (N, D2)`` about the
        ``labels (N,)`` (values in ``[0, n_classes)``; ``n_classes`` defaults to
        ``max(labels) + 1``). Tensors or numpy arrays; labels may be integral floats.

        Under an initialised ``torch.distributed`` process group each rank passes its part
        of the probe set (any number of rows, the same widths ``D1``, ``D2`` on every rank);
        the parts are gathered and every rank decomposes the whole set, so every rank gets
        the result one process would get on the concatenation of the parts in rank order.
        ``index (N_rank,)`` (optional) gives each row's position in the probe set instead:
        the gathered rows are put in that order. Every position ``0 .. N - 1`` must occur;
        one given twice (the padding of ``DistributedSampler``) keeps one of its rows, as in
        ``SPICECurriculum.update(index=)``. Bad inputs on one rank, or labels outside one
        rank's ``n_classes``, raise the same ``ValueError`` on every rank.

        Collective: every rank must call it, with its own part of the probe set. A call on
        rank 0 alone (e.g. evaluating on the main process only) cannot be detected: it waits
        in the gather until the process group's timeout (30 minutes by default; a short
        ``init_process_group(timeout=...)`` helps while debugging).

        With ``estimate=True`` the result carries :meth:`estimated` of the codes (computed on
        every rank from the gathered codes, so every rank gets the same estimate). Warns once
        per instance when ``N < min_samples_per_cell · k² · C``, ``C`` the classes the
        labels hold (not ``n_classes``: an empty class adds no cells to estimate).

        Raises ``ValueError`` if the decomposition has NaN terms (a NaN here would silently
        steer :class:`~fastpid.integrations.ECSAsyncController`'s decisions).
        """
        # One rank's bad inputs: every rank raises, none waits in the gather.
        emb1, emb2, labels, index = check_on_every_rank(self._checked, emb1, emb2, labels, n_classes, index)
        if index is not None or is_distributed():
            emb1, emb2, labels = self._gather(emb1, emb2, labels, index)
        c1 = self.codes(emb1, "emb1")
        c2 = self.codes(emb2, "emb2").to(c1.device)
        labels = labels.to(c1.device)
        # The labels are every rank's now, but n_classes is each rank's own: a rank that
        # refuses them must not leave the others to go on without it.
        n_classes = check_on_every_rank(self._n_classes, labels, n_classes)
        # The classes the probe set holds: the joint's empty classes add no cells to estimate.
        self._check_density(int(labels.shape[0]), int(labels.unique().numel()))
        P = fastpid.joint(c1, c2, labels, sizes=(self.n_clusters, self.n_clusters, n_classes))
        res = fastpid.pid(P, method=self.method, base=self.base)
        terms = {t: float(getattr(res, t)) for t in TERMS}
        nan = [t for t, v in terms.items() if math.isnan(v)]
        if nan:
            raise ValueError(f"the probe's PID has NaN terms {nan} (method={self.method!r}); "
                             "the embeddings or the solver produced an undefined decomposition")
        est = None
        if self.estimate:
            seed = self.estimate_options.get("seed", self.seed)
            if seed is None:  # fresh entropy, drawn on rank 0: each rank's own gave each its estimate
                seed = broadcast_object(secrets.randbits(63))
            est = self.estimated(c1, c2, labels, n_classes=n_classes, seed=seed)
        return ProbeResult(**terms, codes1=c1, codes2=c2, labels=labels, estimate=est, base=self.base)

    @classmethod
    def _checked(cls, emb1, emb2, labels, n_classes, index):
        """This rank's embeddings, labels and ``index`` as tensors, checked: ``(N, D)``
        matrices with one row per label, ``index`` (if given) one entry per row, and
        ``n_classes`` ``None`` or a positive integer."""
        for name, v in (("emb1", emb1), ("emb2", emb2), ("labels", labels)):  # they raised from inside torch
            if isinstance(v, torch.Tensor) and v.is_meta:
                raise TypeError(f"{name} is a meta tensor (shape only, no data); the probe clusters values: pass "
                                "a tensor with values, on the CPU or a GPU")
        labels = as_labels(labels, "labels")
        emb1, emb2 = as_tensor(emb1, "emb1"), as_tensor(emb2, "emb2")
        for name, emb in (("emb1", emb1), ("emb2", emb2)):
            if emb.layout != torch.strided:  # refused here, before the gather that cannot take it
                raise TypeError(f"{name} is a {emb.layout} tensor; pass a dense one ({name}.to_dense())")
            if emb.dim() != 2:
                raise ValueError(f"{name} must have shape (N, D), got {tuple(emb.shape)}")
            if emb.shape[1] == 0:  # the clustering's own check said "x is empty"
                raise ValueError(f"{name} has no features (shape {tuple(emb.shape)}); the probe needs D >= 1")
            if emb.shape[0] != labels.shape[0]:
                raise ValueError(f"{name} has {emb.shape[0]} rows but labels has {labels.shape[0]}")
            _check_finite(emb, name)  # here, the row and rank named; after the gather, neither
        cls._check_n_classes(n_classes)
        if index is not None:
            index = check_indices(index, None, "index (row positions)").to(emb1.device)
            if index.shape != labels.shape:
                raise ValueError(f"index must have one entry per row ({labels.shape[0]}), got shape "
                                 f"{tuple(index.shape)}")
        return emb1, emb2, labels, index

    @staticmethod
    def _gather(emb1, emb2, labels, index):
        """Every rank's rows (rank order, or the order ``index`` gives: one row per position,
        as :func:`~fastpid.integrations.distributed.assemble` keeps)."""
        device = emb1.device
        rows = [emb1.detach().to(torch.float64), emb2.detach().to(torch.float64).to(device),
                labels.to(device)]
        if index is None:
            return gather_rows(*rows)
        index, *rows = gather_rows(index, *rows)
        n = int(index.max()) + 1 if index.numel() else 0
        return _place_rows(n, index, rows)
