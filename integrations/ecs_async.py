"""ECS-async: PID-guided two-stage training of a two-modality late-fusion model.

Stage 1 (``"unimodal"``) trains each modality's encoder with its own head. Every
``probe_every`` epochs a :class:`~fastpid.integrations.PIDProbe` decomposes the
pre-fusion embeddings of a fixed probe set, and the controller

* balances the modalities by unique information: when ``U1 / U2 > ratio`` it pauses
  modality 1 (only modality 2 trains), symmetrically for modality 2, and resumes both once
  the ratio is back under ``resume_ratio`` (hysteresis; ``resume_ratio=None`` never
  resumes, as in the published code);
* tracks synergy: it keeps a snapshot of the registered modules at the peak synergy score
  seen so far, and starts stage 2 from that snapshot when the score falls below
  ``peak − (1 − drop)·|peak|`` (``drop × peak`` for a positive peak) or after
  ``max_unimodal_epochs``.

The synergy score guards against a probe artefact. With a few hundred probe samples over a
``k × k × C`` joint (4,000 cells for the defaults and 10 classes) the plug-in PID is biased,
and the bias lands mostly in synergy: k-means codes of *random* embeddings show about
1.4 nats of "synergy" on 500 samples and 10 classes. The bias shrinks as training makes the
codes of the two modalities agree, so the raw synergy of an untrained model is its largest
and the peak-synergy snapshot would be the initialisation. The corrections (defaults in
brackets):

* ``baseline`` (``"within_class"``, ``baseline_permutations=4``): the score is the probe's
  synergy minus the mean synergy of the same codes after a seeded permutation
  (:meth:`PIDProbe.shuffled`; seed ``baseline_seed + epoch``): ``"within_class"`` permutes
  modality 2's codes within each class (keeps ``(Z1, Y)`` and ``(Z2, Y)``, removes the
  interaction), ``"labels"`` permutes the labels (pure bias; measured too high for synergy
  on the digits and UCI probes, where every such score is negative), ``None`` subtracts
  nothing;
* ``min_score`` (0.05 nats): a score must exceed this to become the peak, so that a score
  at the noise level of the baseline (about 0.02 nats) does not. Measured on fixed
  embeddings (untrained encoders of the two halves of scikit-learn's digits, 500 probe
  samples, 30 probe seeds): the score's standard deviation over the probe's k-means seeds
  was 0.015 nats at ``k = 3`` and 0.016 at ``k = 20``, the 4-permutation baseline's own
  standard error 0.006 and 0.011; no seed's score passed 0.05 (largest 0.038 and 0.019).
  The k-means codes also depend on the order of the probe's rows (its seeding draws rows
  by index), so a reordered probe set moves the score within that spread;
* ``warmup_epochs`` (3): probes before this epoch are recorded but count neither for the
  peak nor for the drop test, and do not pause a modality either (untrained encoders'
  unique information says nothing about which modality will dominate).

If no probe qualifies, stage 2 starts at ``max_unimodal_epochs`` from the current
parameters (no snapshot to restore). ``warmup_epochs=0, baseline=None, min_score=-inf`` is
the uncorrected rule (score = raw synergy; the first probe is a peak).

The synergy rule (``synergy_rule``) decides when a probe's synergy is real:

* ``"baseline"`` (default): the score above; a probe qualifies when the score exceeds
  ``min_score``. Its null, "modality 2's codes independent of modality 1's given the
  label", tests synergy *beyond conditional independence*, not BROJA synergy: a joint with
  ``X1 ⊥ X2 | Y`` can have true synergy (one with 0.28 nats loses all of it to the
  baseline), and during training the probe's synergy stays within a few hundredths of a nat
  of its within-class baseline.
* ``"test"``: the score is the bias-corrected synergy of :func:`fastpid.estimate` on the
  probe's codes (:meth:`PIDProbe.estimated`, or the probe's own estimate with
  ``PIDProbe(estimate=True)``), and a probe qualifies when its test of "synergy > 0"
  (a parametric bootstrap of the likelihood-ratio test at level ``alpha``) rejects:
  ``p_value <= alpha``. ``min_score`` and the permutation baseline are not used. The test is
  conservative where the probe's codes leave most ``(code, label)`` pairs empty, as nearly
  pure clusters of each class (a trained encoder's) do: on the class-cluster joint of
  docs/estimation.md (each of 10 classes on 3 codes per modality, synergy 0.139 nats) it
  rejected in 0 of 200 samples at N = 500 and 53 of 200 at N = 2,000, while the corrected
  synergy's intervals covered the truth in 192 and 196; there the rule fires late or never.

Why ``"baseline"`` stays the default: it is the rule every published number and saved
checkpoint of this controller was made with, and it is cheap (4 permutations: 0.01 s per
probe at N = 500, ``k = 20``, 10 classes on 2 CPU cores, against 0.06–0.10 s for the
estimate). The test rule tests BROJA synergy and is recommended for new runs, with a probe
whose ``k`` fits its probe set (``from fastpid.estimate import suggest_k``: ``k = 3`` for 500
samples and 10 classes). At ``k = 20`` and 500 samples the corrected synergy is flagged
unreliable (random embeddings, ten seeds: 0.62–0.69 nats, p = 0.033–0.30) and the test's
false-positive rate on independent 20×20×10 variables at N = 500 was 6 of 12 replicates
(0.50; 95% interval 0.21–0.79; docs/estimation.md).
How often the rule fired is in :attr:`ECSAsyncController.synergy_fired` and
``history_arrays()["synergistic"]``.

Where the controller differs from the published FastPID scheduling script
(``main_fastpid.py``):

* Stage 1 does not end at the second switch of the paused modality. The script leaves
  stage 1 once the paused modality has changed twice (the first pause counts as one
  change); here stage 1 ends only by the synergy-drop rule or at ``max_unimodal_epochs``.
  The controller has no option for the switch rule (``examples/arms.py``,
  ``ECSPublished``, counts the switches itself).
* The peak-synergy snapshot is restored at stage 2 (``Decision.restore_snapshot``), as the
  FastPID paper describes the method (its abstract: the initial state is located by
  tracking peak synergy). The script keeps no snapshot: joint training continues from the
  current weights after the synergy drop. A caller who wants the script's behaviour does
  not call :meth:`~ECSAsyncController.restore`.
* The probe standardises each feature by default; the script L2-normalises each embedding
  row (scikit-learn's ``normalize``) before PCA(5) and k-means(20). For the script's
  scaling pass a probe: ``ECSAsyncController(PIDProbe(scaling="l2"), ...)``.
* Defaults: ``probe_every=1`` (the script probes every 5 epochs), ``max_unimodal_epochs=30``
  (the script: 200), ``resume_ratio=1.5`` (the script never resumes: ``None``), and the
  synergy-score corrections above (the script compares the raw synergy with ``drop`` times
  its peak, once the peak is positive: ``warmup_epochs=0, baseline=None, min_score=0``
  come closest).
* The script trains stage 2 with a new optimizer at 1/20 of the stage-1 learning rate
  (0.0005 against 0.01); the controller leaves the optimizer to the caller.

Under ``torch.distributed`` every rank calls :meth:`~ECSAsyncController.update` with its
part of the probe set: the probe gathers the parts, and :meth:`~ECSAsyncController.step`
takes rank 0's terms, baseline and synergy test, so the decisions (and the state) are
identical on every rank.

Stage 2 (``"joint"``) trains everything with
``fused_weight · CE(fused) + unimodal_weight · (CE(head1) + CE(head2))``
(:meth:`ECSAsyncController.stage_loss`).

Typical loop::

    ctrl = ECSAsyncController(modules=[enc1, enc2, head1, head2])   # warm-up 3, baseline on
    for epoch in range(epochs):
        if ctrl.wants_probe(epoch):
            d = ctrl.update(epoch, enc1(x1_probe), enc2(x2_probe), y_probe)
        else:
            d = ctrl.update(epoch)
        if d.restore_snapshot:
            ctrl.restore()
        for x1, x2, y in loader:
            loss = ctrl.stage_loss(d, fused_logits, logits1, logits2, y)
            ...
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Iterable, Mapping, Sequence, SupportsIndex

import numpy as np
import torch
import torch.nn.functional as F

import fastpid
from fastpid._caller import caller_level
from fastpid._validate import _as_real_scalar, check_integer, check_real

from .cluster import SEED_MAX, check_seed
from .distributed import broadcast_object, check_on_every_rank, rank_and_world, same_on_every_rank
from .predictions import ArrayLike, as_labels, check_batch, check_classes, check_logits
from .probe import TERMS, PIDProbe, ProbeResult

__all__ = ["ECSAsyncController", "Decision", "ProbeRecord"]

UNIMODAL, JOINT = "unimodal", "joint"
#: Values of ``ECSAsyncController(baseline=...)``.
BASELINES = ("within_class", "labels", None)
#: Values of ``ECSAsyncController(synergy_rule=...)``.
SYNERGY_RULES = ("baseline", "test")
#: Keys of a probe record's synergy test (floats; nats, except ``p_value``).
TEST_KEYS = ("synergy", "p_value", "ci_low", "ci_high")
#: Label permutations behind the check that a modality left training alone is informative
#: (:func:`_independence_p`), and the p-value above which it is called uninformative. Epoch
#: ``e``'s permutations are seeded ``baseline_seed + e + INDEPENDENCE_SEED_OFFSET`` (mod 2**64):
#: not the label baseline's own draws (``baseline_seed + e``).
INDEPENDENCE_PERMUTATIONS, INDEPENDENCE_LEVEL, INDEPENDENCE_SEED_OFFSET = 99, 0.05, 2**63


def _independence_p(codes, labels, seed: int) -> float | None:
    """Permutation p-value of the plug-in ``I(codes; labels)`` against labels shuffled
    :data:`INDEPENDENCE_PERMUTATIONS` times (seeded): the share of shuffles, the observed
    labelling counted among them, whose information is at least the observed one. A plug-in
    information on its own cannot say this: pure-noise codes (20 codes, 10 classes, 600
    samples) carry ~0.17 nats of it. Permuting the labels keeps both marginals, so only
    ``sum n log n`` over the contingency table changes. ``None`` where the codes or labels are
    not ids from 0 (e.g. -1 for points no cluster took): the check only warns, so it gives way
    to the rule on the terms rather than fail a step."""
    # On the CPU whatever torch's default device (a meta default had met CPU codes); numpy too.
    c = torch.as_tensor(codes, device="cpu").detach().long()
    y = torch.as_tensor(labels, device="cpu").detach().long()
    if c.shape != y.shape or c.dim() != 1 or not len(c) or int(c.min()) < 0 or int(y.min()) < 0:
        return None
    k, n_classes = int(c.max()) + 1, int(y.max()) + 1
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shuffled = torch.stack([y[torch.randperm(len(y), generator=gen, device="cpu")]
                            for _ in range(INDEPENDENCE_PERMUTATIONS)])
    rows = torch.cat([y[None], shuffled])  # (1 + B, N), the observed labelling first
    offsets = torch.arange(len(rows), device="cpu")[:, None] * (k * n_classes)
    counts = torch.bincount((offsets + c * n_classes + rows).flatten(), minlength=len(rows) * k * n_classes)
    counts = counts.reshape(len(rows), -1).double()
    s = torch.special.xlogy(counts, counts).sum(1)
    # Ties (a shuffle that happens to give the same table) count as at least as informative.
    return float((s >= s[0] - 1e-9 * s[0].abs()).sum()) / len(rows)


@dataclass(frozen=True)
class Decision:
    """What to do in one epoch.

    Attributes:
        epoch: the epoch the decision applies to.
        stage: ``"unimodal"`` (stage 1) or ``"joint"`` (stage 2).
        train1, train2: whether modality 1 / 2 trains this epoch.
        restore_snapshot: load the peak-synergy weights before training (set once, at the
            switch to stage 2, when a counted probe set a peak): :meth:`ECSAsyncController.restore`
            where ``modules`` were registered (the controller then holds their snapshot), else
            the caller's own checkpoint of epoch ``peak_epoch``: the weights as they were when
            that epoch's probe ran, before the epoch trained (the probe runs at its start).
        probed: whether this decision came from a fresh probe.
        counted: whether the probe's synergy score took part in the peak and drop rules
            (a probe in stage 1 at or after ``warmup_epochs``).
        reason: a short human-readable explanation.
        synergistic: whether the synergy rule fired on this probe (stage 1, warm-up
            included): ``score > min_score`` for ``synergy_rule="baseline"``,
            ``p_value <= alpha`` for ``"test"``. Only counted probes can become the peak.
    """

    epoch: int
    stage: str
    train1: bool
    train2: bool
    restore_snapshot: bool = False
    probed: bool = False
    counted: bool = False
    reason: str = ""
    synergistic: bool = False


@dataclass(frozen=True)
class ProbeRecord:
    """One probe: its epoch, the PID terms (nats; ``mi1``/``mi2`` are the MI proxy
    ``I(Z_m; Y)``), the decision taken, the permutation baseline's mean terms (nats;
    ``None`` when no baseline was computed: ``baseline=None``, ``synergy_rule="test"`` or
    stage 2), the synergy test (``{"synergy", "p_value", "ci_low", "ci_high"}`` floats:
    the corrected synergy in nats, its p-value and interval; ``None`` when none was
    computed) and the rule that scored it (``None`` for a probe in stage 2, which scores
    nothing)."""

    epoch: int
    terms: dict
    decision: Decision
    baseline: dict | None = None
    test: dict | None = None
    rule: str | None = "baseline"

    @property
    def score(self) -> float:
        """The synergy score, nats: for ``rule="baseline"`` the synergy minus the baseline's
        synergy (if any); for ``rule="test"`` the bias-corrected synergy. NaN for a probe in
        stage 2 (``rule=None``), which scores nothing (no baseline or test is computed there:
        the raw synergy would read as a jump of the score)."""
        if self.rule is None:
            return math.nan
        if self.rule == "test" and self.test is not None:
            return self.test["synergy"]
        return self.terms["synergy"] - (self.baseline["synergy"] if self.baseline is not None else 0.0)


def _nats(base) -> float:
    """The factor from ``base`` units to nats (``None``: nats already)."""
    return 1.0 if base is None else math.log(base)


def _terms(result) -> dict:
    if isinstance(result, ProbeResult):
        # The rules and the history are in nats (min_score, eps): a probe in bits is converted.
        terms = {k: v * _nats(result.base) for k, v in result.terms().items()}
    elif isinstance(result, Mapping):
        missing = [t for t in ("unique1", "unique2", "synergy") if t not in result]
        if missing:
            raise ValueError(f"PID terms are missing {missing}; expected keys among {TERMS}")
        # numbers only: float() had parsed a string term ("0.1") as one
        terms = {k: _as_real_scalar(v, f"the PID term {k!r}") for k, v in result.items() if k in TERMS}
    else:
        raise TypeError(f"expected a ProbeResult or a mapping of PID terms, got {type(result).__name__}")
    _check_finite(terms, "the PID terms")
    return terms


def _test(test, needs_p: bool) -> dict:
    """The synergy test as ``{"synergy", "p_value", "ci_low", "ci_high"}`` floats, from a
    :class:`fastpid.PIDEstimate` (scalar) or a mapping with at least ``synergy`` and
    ``p_value``. ``needs_p``: the rule reads the p-value (``synergy_rule="test"``); else an
    estimate without one (``n_null=0``) is recorded with a NaN p-value."""
    if isinstance(test, fastpid.PIDEstimate):
        if test.n_null == 0 and needs_p:
            raise ValueError("the synergy test's PIDEstimate has no p-value: it was made with n_null=0 (no "
                             "null draws); estimate with n_null >= 1")
        to_nats = _nats(test.base)
        vals = {"synergy": test.synergy * to_nats, "p_value": test.p_value.synergy,
                "ci_low": test.ci_low.synergy * to_nats, "ci_high": test.ci_high.synergy * to_nats}
    elif isinstance(test, Mapping):
        missing = [k for k in ("synergy", "p_value") if k not in test]
        if missing:
            raise ValueError(f"the synergy test is missing {missing}; expected keys among {TEST_KEYS}")
        vals = {k: test.get(k, float("nan")) for k in TEST_KEYS}
    else:
        raise TypeError(f"expected a fastpid.PIDEstimate or a mapping for the synergy test, "
                        f"got {type(test).__name__}")
    if any(not isinstance(v, (str, bytes)) and math.prod(np.shape(v)) != 1 for v in vals.values()):
        raise ValueError(f"the synergy test must hold one number per key (one problem, not a batch), "
                         f"got {vals}")
    # numbers only, as the terms: float() had parsed "0.3" and taken True
    vals = {k: _as_real_scalar(v, f"the synergy test's {k!r}") for k, v in vals.items()}
    _check_finite({k: vals[k] for k in ("synergy", "p_value") if needs_p or k == "synergy"},
                  "the synergy test's values")
    if not (0.0 <= vals["p_value"] <= 1.0 or (math.isnan(vals["p_value"]) and not needs_p)):
        raise ValueError(f"the synergy test's p_value must be in [0, 1], got {vals['p_value']}")
    return vals


def _check_finite(terms: dict, what: str) -> None:
    """NaN and infinite terms raise: a NaN compares false with everything, so it would
    silently never pause, never peak and never drop, and an infinite synergy became the peak
    whose drop threshold is NaN (the drop rule then never fired); either way the run would
    continue on a broken probe."""
    bad = [k for k, v in terms.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what} have NaN or infinite entries {bad}: {terms}")


def _shape(v) -> tuple | str:
    """A state entry's shape, or for an entry that is not a tensor (a module's extra state)
    its type's name, as :meth:`ECSAsyncController._check_snapshot` compares them."""
    if isinstance(v, torch.Tensor):
        return "uninitialised (lazy)" if torch.nn.parameter.is_lazy(v) else tuple(v.shape)
    return type(v).__name__


def _sized_on_load(module: torch.nn.Module) -> set[str]:
    """The state keys of ``module`` whose shapes loading sets: buffers that a submodule sizes
    on first use and to a checkpoint's (``_sized_on_load``, :class:`SynIBLoss`'s), and torch's
    lazy parameters and buffers while uninitialised (a lazy layer that has loaded a state
    keeps its class until its first forward, with that state's shapes, which are checked)."""
    keys = set()
    for prefix, sub in module.named_modules():
        lead = prefix + "." if prefix else ""
        keys.update(lead + name for name in getattr(sub, "_sized_on_load", ()))
        for name, value in (*sub.named_parameters(recurse=False), *sub.named_buffers(recurse=False)):
            if torch.nn.parameter.is_lazy(value):
                keys.add(lead + name)
    return keys


class ECSAsyncController:
    """Decides, from probes of the pre-fusion embeddings, which modalities train and when
    stage 2 starts.

    Args:
        probe: the :class:`PIDProbe` (default: PCA(5) + k-means(20), exact PID).
        probe_every: probe every this many epochs (epoch 0 is always probed).
        ratio: pause the modality whose unique information exceeds the other's by more than
            this factor (``> 1``).
        resume_ratio: resume both once the paused modality's uniqueness ratio is below this
            (``1 <= resume_ratio <= ratio``); ``None`` never resumes.
        drop: start stage 2 when the synergy score falls below
            ``peak − (1 − drop)·|peak|``, i.e. by the fraction ``1 − drop`` of the peak's
            magnitude: ``drop × peak`` for a positive peak, and still below the peak for a
            negative one (``0 < drop < 1``).
        max_unimodal_epochs: stage 2 starts at this epoch at the latest.
        min_unimodal_epochs: the synergy-drop rule is ignored before this epoch.
        warmup_epochs: probes before this epoch count neither for the peak nor for the drop
            rule, and pause no modality (``0``: every probe counts).
        baseline: the permutation baseline subtracted from the synergy:
            ``"within_class"``, ``"labels"`` (see :meth:`PIDProbe.shuffled`) or ``None``
            (score = raw synergy; :meth:`step` then takes no baseline).
        baseline_permutations: permutations averaged per probe (``>= 1``).
        baseline_seed: seed of the permutations, in ``[0, 2**64 - 1]``; epoch ``e`` uses
            ``baseline_seed + e`` (modulo 2**64).
        min_score: nats; with ``synergy_rule="baseline"``, a counted score becomes the peak
            only above this (and above the previous peak).
        synergy_rule: when a probe's synergy counts as real (see the module docstring):
            ``"baseline"`` (default; score = synergy minus the permutation baseline,
            qualifying above ``min_score``) or ``"test"`` (score = the bias-corrected
            synergy of :func:`fastpid.estimate`, qualifying when its test of "synergy > 0"
            gives ``p_value <= alpha``; ``baseline`` and ``min_score`` are then unused).
            ``"baseline"`` is the default because it reproduces the controller's published
            behaviour and costs about an eighth of the test; ``"test"`` tests BROJA synergy
            (the within-class baseline tests synergy beyond conditional independence), is
            conservative on nearly pure class clusters (module docstring), and is
            recommended for new runs with a probe ``k`` suited to the probe set's size.
        alpha: significance level of the test rule (``0 < alpha < 1``). The smallest
            p-value is ``1 / (n_null + 1)`` (``1/30`` with :func:`fastpid.estimate`'s
            defaults), so ``alpha`` below that never fires; raise ``n_null`` through
            ``PIDProbe(estimate_options={"n_null": ...})`` for smaller levels.
        eps: nats (``> 0``) added to both unique terms before the ratio, so that two
            near-zero terms do not give a wild (or undefined) ratio.
        balance_by: ``"unique"`` (``U1/U2``, the ECS rule) or ``"mi"`` (the MI proxy
            ``I(Z1;Y)/I(Z2;Y)``).
        fused_weight, unimodal_weight: stage-2 loss weights (``>= 0``).
        modules: modules whose parameters the peak-synergy snapshot holds (encoders, and
            usually their heads), or one module (the whole model; a container is one module
            too, its own parameters included). Without them
            :meth:`restore` is unavailable; the caller can watch :attr:`peak_epoch` and keep
            its own snapshots.
    """

    def __init__(self, probe: PIDProbe | None = None, *, probe_every: int = 1, ratio: float = 3.0,
                 resume_ratio: float | None = 1.5, drop: float = 0.8, max_unimodal_epochs: int = 30,
                 min_unimodal_epochs: int = 0, warmup_epochs: int = 3,
                 baseline: str | None = "within_class", baseline_permutations: int = 4, baseline_seed: int = 0,
                 min_score: float = 0.05, eps: float = 1e-3, balance_by: str = "unique",
                 fused_weight: float = 1.0, unimodal_weight: float = 0.6,
                 modules: Sequence[torch.nn.Module] | torch.nn.Module | None = None,
                 synergy_rule: str = "baseline", alpha: float = 0.05):
        if probe is not None and not isinstance(probe, PIDProbe):
            raise TypeError(f"probe must be a PIDProbe or None, got {type(probe).__name__}")
        probe_every, max_unimodal_epochs, min_unimodal_epochs, warmup_epochs, baseline_permutations = (
            check_integer(v, name, lo) for name, v, lo in (
                ("probe_every", probe_every, 1), ("max_unimodal_epochs", max_unimodal_epochs, 0),
                ("min_unimodal_epochs", min_unimodal_epochs, 0), ("warmup_epochs", warmup_epochs, 0),
                ("baseline_permutations", baseline_permutations, 1)))
        baseline_seed = check_seed(baseline_seed, "baseline_seed")
        ratio = check_real(ratio, "ratio", 1, lo_open=True)
        if resume_ratio is not None:
            resume_ratio = check_real(resume_ratio, "resume_ratio")
            if not 1 <= resume_ratio <= ratio:
                raise ValueError(f"resume_ratio must be in [1, ratio={ratio}] or None, got {resume_ratio!r}")
        drop = check_real(drop, "drop", 0, 1, lo_open=True, hi_open=True)
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
        if synergy_rule not in SYNERGY_RULES:
            raise ValueError(f"synergy_rule must be one of {SYNERGY_RULES}, got {synergy_rule!r}")
        if synergy_rule == "test" and probe is not None and probe.estimate_options.get("n_null", 1) == 0:
            raise ValueError("synergy_rule='test' needs the synergy test's p-value, but the probe's "
                             "estimate_options set n_null=0 (no null draws, no p-value)")
        alpha = check_real(alpha, "alpha", 0, 1, lo_open=True, hi_open=True)
        min_score = check_real(min_score, "min_score", allow_inf=True)
        eps = check_real(eps, "eps", 0, lo_open=True)
        if balance_by not in ("unique", "mi"):
            raise ValueError(f"balance_by must be 'unique' or 'mi', got {balance_by!r}")
        fused_weight = check_real(fused_weight, "fused_weight", 0)
        unimodal_weight = check_real(unimodal_weight, "unimodal_weight", 0)
        if isinstance(modules, torch.nn.Module):
            # One module, containers too (a ModuleDict iterated its keys; a Sequential its
            # children, not its own parameters): iterating a model raised "not iterable".
            modules = [modules]
        if modules is not None:
            if not isinstance(modules, Iterable):  # list(3) had said "'int' object is not iterable"
                raise TypeError(f"modules must be a torch.nn.Module, a sequence of them or None, got "
                                f"{type(modules).__name__} ({modules!r})")
            modules = list(modules)
            bad = [type(m).__name__ for m in modules if not isinstance(m, torch.nn.Module)]
            if bad:
                raise TypeError(f"modules must be torch.nn.Module instances, got {bad}")
        self.probe = probe if probe is not None else PIDProbe()
        self.probe_every = probe_every
        self.ratio = ratio
        self.resume_ratio = resume_ratio
        self.drop = drop
        self.max_unimodal_epochs = max_unimodal_epochs
        self.min_unimodal_epochs = min_unimodal_epochs
        self.warmup_epochs = warmup_epochs
        self.baseline = baseline
        self.synergy_rule = synergy_rule
        self.alpha = alpha
        self.baseline_permutations = baseline_permutations
        self.baseline_seed = baseline_seed
        self.min_score = min_score
        self.eps = eps
        self.balance_by = balance_by
        self.fused_weight = fused_weight
        self.unimodal_weight = unimodal_weight
        self.modules = modules
        self._reset()

    def _reset(self):
        self.stage = UNIMODAL
        self.paused: int | None = None       # 1, 2 or None
        self.peak_score: float | None = None   # nats
        self.peak_epoch: int | None = None
        self.switch_epoch: int | None = None
        self.snapshot: list[dict] | None = None
        self.history: list[ProbeRecord] = []
        self._warned_uninformed = False
        self._pending_warning = None  # a warning of this step, given once it is recorded (_step)

    # ----------------------------------------------------------------- decisions
    def wants_probe(self, epoch: int) -> bool:
        """Whether :meth:`update` will probe at ``epoch`` (and so needs embeddings)."""
        return epoch % self.probe_every == 0

    def current(self, epoch: int, *, probed: bool = False, reason: str = "") -> Decision:
        """The standing decision at ``epoch`` (an integer >= 0) without a new probe."""
        epoch = check_integer(epoch, "epoch", 0)
        if self.stage == JOINT:
            return Decision(epoch, JOINT, True, True, probed=probed, reason=reason or "stage 2")
        return Decision(epoch, UNIMODAL, self.paused != 1, self.paused != 2, probed=probed,
                        reason=reason or ("both train" if self.paused is None else f"modality {self.paused} paused"))

    def update(self, epoch: SupportsIndex, emb1: ArrayLike | None = None, emb2: ArrayLike | None = None,
               labels: ArrayLike | None = None) -> Decision:
        """The decision for ``epoch``, probing ``emb1 (N, D1)``, ``emb2 (N, D2)`` and
        ``labels (N,)`` of the probe set when :meth:`wants_probe` says so, plus, while in
        stage 1, the permutation baseline of the probe's codes (``synergy_rule="baseline"``,
        unless ``baseline=None``) or the probe's :class:`fastpid.PIDEstimate`
        (``synergy_rule="test"``: the probe result's own with ``PIDProbe(estimate=True)``,
        else :meth:`PIDProbe.estimated` of its codes, computed on rank 0 only under
        ``torch.distributed``; an error there raises on every rank).

        Call it once per epoch, before training that epoch, with embeddings computed by the
        current (not yet trained this epoch) encoders; an epoch below 0, or not after the last
        probed one, raises ``ValueError`` (a run resumed within epoch ``e`` from a state saved
        after ``update(e)`` takes that epoch's stage and modalities from :meth:`current`,
        whose decision asks for no snapshot restore). Tensors or numpy arrays. Under
        ``torch.distributed`` each rank passes its part of the probe set (see
        :meth:`PIDProbe.__call__`); every rank must call it. ``epoch`` may be a numpy integer
        or a 0-d integer tensor; it is kept as a Python int.
        """
        # A rank's own error raised on every rank: alone, it left the others waiting in the probe.
        epoch = same_on_every_rank(check_on_every_rank(self._checked_epoch, epoch, emb1, emb2, labels),
                                   "update()'s epoch")
        if self.wants_probe(epoch):
            res = self.probe(emb1, emb2, labels)
            baseline, estimate = None, False
            if self.stage == UNIMODAL and self.synergy_rule == "test":
                # step() uses rank 0's test on every rank, so only rank 0 computes it (the
                # gathered codes, hence the seeded estimate, are the same on every rank).
                estimate = res.estimate is None and rank_and_world()[0] == 0
            elif self.baseline is not None and self.stage == UNIMODAL:
                baseline = self.probe.shuffled(res.codes1, res.codes2, res.labels, self.baseline_permutations,
                                               seed=(self.baseline_seed + epoch) % (SEED_MAX + 1),
                                               within_class=self.baseline == "within_class")
            return self._step(epoch, self._parse(res, baseline, None, estimate=estimate, epoch=epoch))
        if self.stage == UNIMODAL and epoch >= self.max_unimodal_epochs:
            return self._switch(epoch, f"reached max_unimodal_epochs={self.max_unimodal_epochs}")
        return self.current(epoch)

    def _checked_epoch(self, epoch, emb1, emb2, labels) -> int:
        """``epoch`` as a plain int (it seeds the baseline and is saved in the history), checked,
        and that a probe epoch has its probe set."""
        epoch = self._check_epoch(epoch)
        if self.wants_probe(epoch) and (emb1 is None or emb2 is None or labels is None):
            raise ValueError(f"epoch {epoch} is a probe epoch (probe_every={self.probe_every}); "
                             "pass emb1, emb2 and labels")
        return epoch

    def step(self, epoch: int, result, baseline=None, test=None) -> Decision:
        """Apply the rules to one probe's PID terms (a :class:`ProbeResult` or a mapping with
        at least ``unique1``, ``unique2``, ``synergy``; plus ``mi1``, ``mi2`` when
        ``balance_by="mi"``) and record it in :attr:`history`.

        ``baseline`` is the permutation baseline's terms (a mapping with at least
        ``synergy``, as :meth:`PIDProbe.shuffled` returns); with ``synergy_rule="baseline"``
        stage 1 needs it unless ``baseline=None``, which rejects it (with ``"test"`` it is
        optional and only recorded).

        ``test`` is the synergy test: a scalar :class:`fastpid.PIDEstimate` (as
        :meth:`PIDProbe.estimated` returns) or a mapping with ``synergy`` (corrected, nats)
        and ``p_value`` (optionally ``ci_low``, ``ci_high``); default: ``result.estimate``
        when ``result`` is a :class:`ProbeResult` that has one. With ``synergy_rule="test"``
        stage 1 needs it; with ``"baseline"`` it is only recorded.

        NaN terms raise ``ValueError`` (an error rather than a warning: a NaN never compares
        true, so the rules would silently stop working for the rest of the run). A negative
        unique term (a bias-corrected estimate of a term that is 0) counts as 0 in the ratio
        rule, whatever its size: pass terms that are information, not differences. Under
        ``torch.distributed`` rank 0's terms, baseline and test are used on every rank, so
        every rank takes the same decision; every rank must call it.

        Units: a :class:`ProbeResult` and a :class:`fastpid.PIDEstimate` are converted to
        nats from their ``base``, and a ``baseline`` passed with a :class:`ProbeResult` from
        that result's ``base`` (as :meth:`PIDProbe.shuffled` of the same probe returns it);
        other mappings are taken as nats (the unit of ``min_score``, ``eps`` and the
        history)."""
        epoch = self._check_epoch(epoch)  # as in update()
        return self._step(epoch, self._parse(result, baseline, test, epoch=epoch))

    def _check_epoch(self, epoch: SupportsIndex) -> int:
        """``epoch`` as a plain int, after the last probed one: a repeated or earlier epoch (a
        run resumed at the checkpoint's own epoch, two hooks calling :meth:`update`) would
        record a probe twice, and count its synergy twice."""
        epoch = check_integer(epoch, "epoch", 0)  # 1.5 had raised "'float' object cannot be interpreted ..."
        if self.history and epoch <= self.history[-1].epoch:
            raise ValueError(f"epoch {epoch} does not come after epoch {self.history[-1].epoch}, which was "
                             "probed already: call update() once per epoch, epochs increasing (a run resumed "
                             "from a checkpoint goes on at the epoch after the one it saved)")
        return epoch

    def _step(self, epoch: int, parsed) -> Decision:
        """:meth:`step` from :meth:`_parse`'s answer on this rank."""
        # Rank 0's inputs, or rank 0's error, on every rank: a rank that raised alone would
        # leave the others waiting in the broadcast until the process group timed out.
        parsed, error = broadcast_object(parsed)
        if error is not None:
            raise error
        terms, baseline, test, informed = parsed
        record = ProbeRecord(epoch, terms, None, baseline, test,
                             self.synergy_rule if self.stage == UNIMODAL else None)
        if self.stage == JOINT:
            decision = self.current(epoch, probed=True)
        else:
            if self.synergy_rule == "test":
                if test is None:
                    raise ValueError("synergy_rule='test': pass the synergy test (test=PIDProbe.estimated(...), "
                                     "or a ProbeResult from PIDProbe(estimate=True)) with the terms")
                synergistic = test["p_value"] <= self.alpha
            else:
                if self.baseline is not None and baseline is None:
                    raise ValueError(f"baseline={self.baseline!r}: pass the permutation baseline "
                                     "(PIDProbe.shuffled) with the terms")
                synergistic = record.score > self.min_score
            by_baseline = self.synergy_rule == "baseline" and baseline is not None
            score_se = baseline.get("synergy_se", math.nan) if by_baseline else math.nan
            decision = replace(self._unimodal_step(epoch, terms, record.score, synergistic, score_se, informed),
                               synergistic=synergistic)
        self.history.append(replace(record, decision=decision))
        # Warned once the step is recorded: raised as an error (-W error), the warning had left
        # the pause set and the epoch unrecorded, and the retried step said "paused".
        warning, self._pending_warning = getattr(self, "_pending_warning", None), None
        if warning is not None:
            warnings.warn(warning, stacklevel=caller_level())
        return decision

    @property
    def synergy_fired(self) -> int:
        """How many stage-1 probes the synergy rule fired on (:attr:`Decision.synergistic`;
        warm-up probes included)."""
        return sum(r.decision.synergistic for r in self.history)

    def _unimodal_step(self, epoch: int, terms: dict, score: float, synergistic: bool, score_se: float,
                       informed: dict | None) -> Decision:
        counted = epoch >= self.warmup_epochs
        key1, key2 = ("unique1", "unique2") if self.balance_by == "unique" else ("mi1", "mi2")
        if counted and (key1 not in terms or key2 not in terms):  # before any state changes
            raise ValueError(f"balance_by={self.balance_by!r} needs {key1!r} and {key2!r} in the PID terms")
        if counted and synergistic and (self.peak_epoch is None or score > self.peak_score):
            self._take_snapshot()  # first: a failed snapshot had left a peak without one
            self.peak_score, self.peak_epoch = score, epoch
        if epoch >= self.max_unimodal_epochs:
            return self._switch(epoch, f"reached max_unimodal_epochs={self.max_unimodal_epochs}", probed=True,
                                counted=counted)
        if (counted and self.peak_epoch is not None and epoch >= self.min_unimodal_epochs
                and score < self.drop_threshold()):
            se = f" (baseline's standard error {score_se:.2g})" if math.isfinite(score_se) else ""
            return self._switch(epoch, f"synergy score {score:.4g}{se} < {self.drop_threshold():.4g} nats "
                                       f"(drop {self.drop} of peak {self.peak_score:.4g}, epoch {self.peak_epoch})",
                                probed=True, counted=True)
        if not counted:
            return replace(self.current(epoch, probed=True, reason=f"warm-up (epoch < {self.warmup_epochs})"),
                           counted=False)
        # Information is >= 0; a term a little below (an estimate's) counts as 0: a negative
        # one made the ratio negative (the dominant modality never paused), -eps divided by 0.
        r = (max(terms[key1], 0.0) + self.eps) / (max(terms[key2], 0.0) + self.eps)
        reason = ""
        if r > self.ratio and self.paused != 1:
            self.paused, reason = 1, f"{key1}/{key2} = {r:.3g} > {self.ratio}: pause modality 1"
            self._warn_if_left_uninformed(epoch, terms, informed)
        elif 1 / r > self.ratio and self.paused != 2:
            self.paused, reason = 2, f"{key2}/{key1} = {1 / r:.3g} > {self.ratio}: pause modality 2"
            self._warn_if_left_uninformed(epoch, terms, informed)
        elif self.paused is not None and self.resume_ratio is not None:
            paused_ratio = r if self.paused == 1 else 1 / r
            if paused_ratio < self.resume_ratio:
                reason = f"ratio {paused_ratio:.3g} < {self.resume_ratio}: resume modality {self.paused}"
                self.paused = None
        return replace(self.current(epoch, probed=True, reason=reason), counted=True)

    def _warn_if_left_uninformed(self, epoch: int, terms: dict, informed: dict | None) -> None:
        """Warn (once, as :meth:`_step` ends) where a pause leaves training only a modality whose codes carry no
        information on the label: an uninformative modality makes the other look dominant,
        and pausing that froze the only informative encoder until stage 2. Uninformative: with
        the probe's codes (``informed``, :func:`_independence_p`), no more information than
        under shuffled labels (p > :data:`INDEPENDENCE_LEVEL`); with terms alone,
        ``I(Z_m; Y) <= eps`` (a collapsed modality)."""
        left = 3 - self.paused
        mi = terms.get(f"mi{left}")
        if mi is None or self._warned_uninformed:
            return
        if informed is not None:
            if informed[left] <= INDEPENDENCE_LEVEL:
                return
            why = (f"no more than with shuffled labels (p = {informed[left]:.2g} over "
                   f"{INDEPENDENCE_PERMUTATIONS} label permutations)")
        elif mi <= self.eps:
            why = f"<= eps = {self.eps:g}"
        else:
            return
        self._warned_uninformed = True
        self._pending_warning = (
            f"ECSAsyncController: epoch {epoch} pauses modality {self.paused}, leaving only modality {left} "
            f"training, whose probe codes carry I(Z{left};Y) = {mi:.3g} nats ({why}): a collapsed or "
            f"uninformative modality? Modality {self.paused} stays paused until the ratio falls below "
            "resume_ratio or stage 2 starts")

    def drop_threshold(self) -> float | None:
        """The score below which stage 2 starts: ``peak − (1 − drop)·|peak|`` (nats;
        ``drop × peak`` for a positive peak), ``None`` before a peak."""
        if self.peak_score is None:
            return None
        return self.peak_score - (1.0 - self.drop) * abs(self.peak_score)

    def _parse(self, result, baseline, test, *, estimate: bool = False, epoch: int = 0):
        """``((terms, baseline, test, informed), None)`` checked, or ``(None, error)`` (step());
        ``informed``: each modality's :func:`_independence_p` (rank 0 only, in stage 1 from the
        warm-up on and until the warning was given; else ``None``).

        ``estimate=True`` computes ``test`` here, as :meth:`PIDProbe.estimated` of the
        ``result``'s codes (update() on rank 0), so that its errors reach every rank too."""
        try:
            if estimate:
                test = self.probe.estimated(result.codes1, result.codes2, result.labels)
            terms = _terms(result)
            # Whether each modality's codes inform on the labels (a ProbeResult has its codes),
            # for the warning of a pause that leaves only an uninformative one training.
            # Rank 0's is the one broadcast: the others would only discard theirs.
            informed = None
            if (isinstance(result, ProbeResult) and result.labels is not None and self.stage == UNIMODAL
                    and not self._warned_uninformed and epoch >= self.warmup_epochs
                    and rank_and_world()[0] == 0):
                seed = (self.baseline_seed + epoch + INDEPENDENCE_SEED_OFFSET) % (SEED_MAX + 1)
                informed = {m: _independence_p(codes, result.labels, seed)
                            for m, codes in ((1, result.codes1), (2, result.codes2))}
                informed = None if None in informed.values() else informed
            if test is None and isinstance(result, ProbeResult):
                test = result.estimate
            if test is not None:
                test = _test(test, needs_p=self.synergy_rule == "test")
            if baseline is not None:
                if "synergy" not in baseline:
                    raise ValueError("the baseline needs a 'synergy' term")
                if self.baseline is None:
                    raise ValueError("a baseline was passed but baseline=None (the score is raw synergy)")
                # In the units of the terms it goes with: a ProbeResult's base (PIDProbe.shuffled
                # of the same probe), else nats.
                to_nats = _nats(result.base) if isinstance(result, ProbeResult) else 1.0
                baseline = {k: _as_real_scalar(v, f"the baseline's {k!r}") * to_nats for k, v in baseline.items()
                            if k in TERMS or k == "synergy_se"}
                se = baseline.pop("synergy_se", math.nan)
                _check_finite(baseline, "the baseline's terms")
                if not (math.isnan(se) or 0.0 <= se < math.inf):  # NaN: one permutation, no spread
                    raise ValueError(f"the baseline's synergy_se must be >= 0 and finite, or NaN, got {se!r}")
                baseline["synergy_se"] = se
        except Exception as error:  # any error: every rank must raise it, not this one alone
            return None, error
        return (terms, baseline, test, informed), None

    def _switch(self, epoch: int, why: str, probed: bool = False, counted: bool = False) -> Decision:
        self.stage, self.paused, self.switch_epoch = JOINT, None, epoch
        restore = self.peak_epoch is not None
        return Decision(epoch, JOINT, True, True, restore_snapshot=restore, probed=probed, counted=counted,
                        reason=f"stage 2: {why}" + (f"; restore epoch-{self.peak_epoch} snapshot" if restore else ""))

    # ----------------------------------------------------------------- snapshots
    def _take_snapshot(self):
        # A state dict may hold more than tensors (a module's extra state, e.g. SynIBLoss's
        # generator state, a dict): copied, not detached.
        if self.modules is not None:
            self.snapshot = [{k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                              for k, v in m.state_dict().items()} for m in self.modules]

    def _check_snapshot(self, snapshot: list[dict] | None) -> None:
        """Raise ``ValueError`` naming what differs when ``snapshot`` does not fit the
        registered modules: :meth:`restore` would load only part of it, or fail late."""
        if snapshot is None or self.modules is None:
            return
        if len(snapshot) != len(self.modules):
            raise ValueError(f"the state's snapshot holds {len(snapshot)} modules but {len(self.modules)} "
                             "are registered (modules=[...] must list the same modules in the same order)")
        for i, (module, saved) in enumerate(zip(self.modules, snapshot)):
            own = module.state_dict()
            where = f"the state's snapshot of module {i} ({type(module).__name__})"
            keys = [f"{what} keys {names}" for what, names in (("lacks", sorted(own.keys() - saved.keys())),
                    ("has unexpected", sorted(saved.keys() - own.keys()))) if names]
            if keys:
                raise ValueError(f"{where} " + " and ".join(keys))
            resized = _sized_on_load(module)
            shapes = [f"{k}: {_shape(saved[k])} saved, {_shape(v)} registered"
                      for k, v in own.items() if k not in resized and _shape(saved[k]) != _shape(v)]
            if shapes:
                raise ValueError(f"{where} has other shapes: " + "; ".join(shapes))

    def restore(self) -> None:
        """Load the peak-synergy snapshot into the registered modules."""
        if self.modules is None:
            raise RuntimeError("no modules were registered (pass modules=[...] to the controller)")
        if self.snapshot is None:
            raise RuntimeError("no snapshot has been taken yet (no counted probe fired the synergy rule: a score "
                               "above min_score, or with synergy_rule='test' a p-value <= alpha)")
        for m, state in zip(self.modules, self.snapshot):
            m.load_state_dict(state)

    # ----------------------------------------------------------------- loss
    def stage_loss(self, decision: Decision, fused_logits: torch.Tensor, logits1: torch.Tensor,
                   logits2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss for ``decision``: the cross-entropies of the training
        modalities' heads in stage 1; ``fused_weight · CE(fused) + unimodal_weight ·
        (CE1 + CE2)`` in stage 2. Logits are ``(B, C)``, labels ``(B,)`` (tensor or numpy,
        integral floats accepted). An empty batch raises ``ValueError``."""
        if not isinstance(decision, Decision):  # None had raised "'NoneType' object has no attribute 'stage'"
            raise TypeError(f"decision must be the Decision that update() or current() returned, got "
                            f"{type(decision).__name__}")
        check_logits(fused_logits, "fused_logits")  # numpy or integer logits had failed inside torch
        check_batch("stage_loss's batch (fused_logits)", fused_logits)
        labels = as_labels(labels, "labels", device=fused_logits.device)
        # The labels are checked against the classes of every head used, from one read of the
        # largest (on a GPU each read waits for the device).
        top = int(labels.max()) if labels.numel() and not labels.is_meta else -1
        joint = decision.stage == JOINT
        for name, lg, used in (("fused_logits", fused_logits, True), ("logits1", logits1, joint or decision.train1),
                               ("logits2", logits2, joint or decision.train2)):
            if not used:
                continue
            check_logits(lg, name)
            if lg.shape[0] != fused_logits.shape[0]:
                raise ValueError(f"{name} has {lg.shape[0]} rows but fused_logits has {fused_logits.shape[0]}")
            if top >= lg.shape[-1]:
                check_classes(labels, lg.shape[-1], "labels" if name == "fused_logits" else f"labels (for {name})")
        if joint:
            return (self.fused_weight * F.cross_entropy(fused_logits, labels)
                    + self.unimodal_weight * (F.cross_entropy(logits1, labels) + F.cross_entropy(logits2, labels)))
        parts = [F.cross_entropy(lg, labels)
                 for lg, on in ((logits1, decision.train1), (logits2, decision.train2)) if on]
        if not parts:  # the controller always trains one; a Decision built by hand may not
            raise ValueError(f"decision {decision} trains neither modality in stage 1: no loss to return")
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    # ----------------------------------------------------------------- state and history
    def history_arrays(self) -> dict:
        """The probe history as lists: ``epoch``, every PID term, ``synergy_baseline`` (the
        permutation baseline's synergy, NaN where none was computed), ``synergy_baseline_se``
        (its standard error over the permutations, the score's uncertainty from the baseline;
        NaN where none was computed or given), ``score`` (synergy
        minus baseline; with ``synergy_rule="test"`` the test's corrected synergy; NaN for the
        probes after the switch, which score nothing; the probe whose decision starts stage 2
        is scored, and recorded with stage ``"joint"``), ``stage``, ``train1``, ``train2``, ``counted``, plus
        ``switch_epoch`` (start of stage 2 or ``None``), ``peak_epoch`` and
        ``warmup_epochs``; and for the synergy rule: ``synergistic`` (whether it fired, per
        probe), ``synergy_estimate``, ``synergy_p_value``, ``synergy_ci_low``,
        ``synergy_ci_high`` (the test's values, NaN where none was computed),
        ``synergy_rule`` and ``synergy_fired`` (how many probes it fired on)."""
        out = {"epoch": [r.epoch for r in self.history]}
        for t in TERMS:
            out[t] = [r.terms.get(t, float("nan")) for r in self.history]
        out["synergy_baseline"] = [r.baseline["synergy"] if r.baseline is not None else float("nan")
                                   for r in self.history]
        out["synergy_baseline_se"] = [r.baseline.get("synergy_se", float("nan")) if r.baseline is not None
                                      else float("nan") for r in self.history]
        out["score"] = [r.score for r in self.history]
        for f in ("stage", "train1", "train2", "counted", "synergistic"):
            out[f] = [getattr(r.decision, f) for r in self.history]
        for key, name in (("synergy", "synergy_estimate"), ("p_value", "synergy_p_value"),
                          ("ci_low", "synergy_ci_low"), ("ci_high", "synergy_ci_high")):
            out[name] = [r.test[key] if r.test is not None else float("nan") for r in self.history]
        out["synergy_rule"] = self.synergy_rule
        out["synergy_fired"] = self.synergy_fired
        out["switch_epoch"] = self.switch_epoch
        out["peak_epoch"] = self.peak_epoch
        out["warmup_epochs"] = self.warmup_epochs
        return out

    def state_dict(self) -> dict:
        """Everything needed to resume: stage, paused modality, peak score, snapshot,
        history, whether the probe has warned of a thin probe set and the controller of a pause
        that left an uninformative modality, and the ``baseline`` the
        scores were taken against (the configuration is the constructor's; that one is checked
        on loading)."""
        return {
            "probe_warned": bool(getattr(self.probe, "_warned", False)),
            "uninformed_warned": self._warned_uninformed,
            "baseline": self.baseline,
            "stage": self.stage, "paused": self.paused, "peak_score": self.peak_score,
            "peak_epoch": self.peak_epoch, "switch_epoch": self.switch_epoch,
            "snapshot": copy.deepcopy(self.snapshot),
            "history": [{"epoch": r.epoch, "terms": dict(r.terms), "decision": asdict(r.decision),
                         "baseline": None if r.baseline is None else dict(r.baseline),
                         "test": None if r.test is None else dict(r.test), "rule": r.rule}
                        for r in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved. A snapshot that does not fit the registered
        modules (their number, or a module's state keys or shapes) raises ``ValueError``, as
        does a history scored by another ``synergy_rule`` or against another ``baseline``: its
        peak and scores are not this controller's (a raw synergy peak of 1.35 against a corrected
        score of 0.2 switched to stage 2; a raw peak of 1.43 against scores less a baseline, at
        once too)."""
        # A dict of another kind (say a model's state_dict) had raised KeyError: 'history'.
        needed = ("stage", "paused", "peak_score", "peak_epoch", "switch_epoch", "snapshot", "history")
        missing = [k for k in needed if k not in state] if isinstance(state, dict) else list(needed)
        if missing:
            raise ValueError(f"state is not an ECSAsyncController.state_dict() (missing {', '.join(missing)}); "
                             f"got {type(state).__name__}"
                             + (f" with keys {sorted(map(str, state))[:8]}" if isinstance(state, dict) else ""))
        other = sorted({h.get("rule", "baseline") for h in state["history"]} - {None, self.synergy_rule})
        if other:
            raise ValueError(f"the saved history was scored with synergy_rule={other[0]!r}, but this "
                             f"controller uses {self.synergy_rule!r}: its peak and scores are not comparable; "
                             f"build the controller with synergy_rule={other[0]!r} to resume")
        # The baseline counts under the baseline rule only; states saved before it: not known.
        if self.synergy_rule == "baseline" and "baseline" in state and state["baseline"] != self.baseline:
            raise ValueError(f"the saved history was scored against baseline={state['baseline']!r}, but this "
                             f"controller uses baseline={self.baseline!r}: its peak and scores are not comparable; "
                             f"build the controller with baseline={state['baseline']!r} to resume")
        self._check_snapshot(state["snapshot"])
        self.stage, self.paused = state["stage"], state["paused"]
        self.peak_score, self.peak_epoch = state["peak_score"], state["peak_epoch"]
        self.switch_epoch = state["switch_epoch"]
        self.snapshot = copy.deepcopy(state["snapshot"])
        if state.get("probe_warned") and hasattr(self.probe, "_warned"):  # a resumed run warns once in all
            self.probe._warned = True
        self._warned_uninformed = bool(state.get("uninformed_warned", False))  # states saved before it: not yet
        # .get: states saved before the synergy test existed have no "test"/"rule" entries.
        self.history = [ProbeRecord(h["epoch"], dict(h["terms"]), Decision(**h["decision"]),
                                    None if h["baseline"] is None else dict(h["baseline"]),
                                    None if h.get("test") is None else dict(h["test"]),
                                    h.get("rule", "baseline"))
                        for h in state["history"]]
