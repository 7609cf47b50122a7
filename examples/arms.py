"""The arms of the fair protocol (:mod:`examples.fair`): every method, baselines included,
as an object that :func:`examples.fair.fit` drives on a :class:`~examples.curricula.MultiViewNet`.

An arm has (defaults in :class:`Arm`)::

    fusion                                  "concat" or "gated" (the model it trains)
    start_epoch(epoch, model, data)         before the epoch (probes, stage switches)
    reset_optimizer, lr_scale               read after start_epoch
    extra_parameters() -> list              trained too (a loss's own parameters)
    epoch_indices(epoch) -> (n,) int64      training-split positions to visit, in order
    loss(epoch, model, out, y, idx)         out: a curricula.MultiOutput of the batch
    after_backward(model, out, y)           between backward and the optimizer step
    end_epoch(epoch, out, y)                out: predictions on the whole training split
    summary() -> dict                       saved with the run

Baselines: :class:`Fused` (fused loss only; the unimodal heads are trained on *detached*
embeddings, so they are online linear probes that do not touch the encoders) and
:class:`FusedHeads` (fused plus unimodal cross-entropies). Imbalance methods:
:class:`OGMGE` (the integration's rule), :class:`OGMGEPublic` (the public code's rule),
:class:`ECS` (the integration's rules with the calibrated synergy test), :class:`ECSPublished`
(the published schedule), :class:`SynIB` (the integration's loss), :class:`SynIBRepository`
(the public SynIB code's loss), :class:`Pretrain` (unimodal pre-training, then fused+heads).
Curricula and DynCIM: :class:`Curriculum` wraps the classes of
:mod:`examples.curricula`. :data:`ARMS` maps the protocol's names to constructors and
:data:`SPACES` to their tuning grids.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastpid.estimate import suggest_k
from fastpid.integrations import PIDProbe, SynIBLoss
from fastpid.integrations.ecs_async import JOINT, Decision
from fastpid.integrations.ogm_ge import modulate_gradients, ogm_ge_coefficients, ogm_ge_scores

from . import curricula
from .methods import ECSAsync
from .models import FusionOutput

__all__ = ["Arm", "Fused", "FusedHeads", "Pretrain", "OGMGE", "OGMGEPublic", "ECS", "ECSPublished", "SynIB",
           "SynIBRepository", "Curriculum", "ARMS", "SPACES", "IMBALANCE_ARMS"]


def _two_view(out) -> FusionOutput:
    return FusionOutput(out.zs[0], out.zs[1], out.heads[0], out.heads[1], out.fused)


class Arm:
    """Defaults: concatenation fusion, every training sample once per epoch, no hooks."""

    fusion = "concat"
    reset_optimizer = False
    lr_scale = 1.0

    def __init__(self, n_train: int, epochs: int, seed: int = 0):
        self.n, self.epochs = n_train, epochs
        self.gen = torch.Generator().manual_seed(seed)

    def start_epoch(self, epoch, model, data):
        pass

    def epoch_indices(self, epoch):
        return torch.randperm(self.n, generator=self.gen)

    def after_backward(self, model, out, y):
        pass

    def end_epoch(self, epoch, out, y):
        pass

    def extra_parameters(self) -> list:
        return []

    def summary(self) -> dict:
        return {}


class Fused(Arm):
    """``CE(fused)``; the heads learn ``CE(head_m(z_m.detach()))`` and give no gradient to
    the encoders."""

    def loss(self, epoch, model, out, y, idx):
        probes = sum(F.cross_entropy(h(z.detach()), y) for h, z in zip(model.heads, out.zs))
        return F.cross_entropy(out.fused, y) + probes


class FusedHeads(Arm):
    """``CE(fused) + w Σ_m CE(head_m)``."""

    def __init__(self, n_train, epochs, seed=0, *, unimodal_weight: float = 0.6):
        super().__init__(n_train, epochs, seed)
        self.w = unimodal_weight

    def loss(self, epoch, model, out, y, idx):
        return F.cross_entropy(out.fused, y) + self.w * sum(F.cross_entropy(h, y) for h in out.heads)


class Pretrain(FusedHeads):
    """Unimodal pre-training: encoder 1 with head 1 alone (``CE(head_1)``) for ``P`` passes
    over the training set, then encoder 2 with head 2 alone for ``P`` passes, then the fused
    model with ``CE(fused) + w Σ_m CE(head_m)`` (a fresh optimizer) for the rest of the
    budget. ``P = round(pretrain_fraction · epochs / 2)`` (at least 1, and leaving at least
    one fused pass): each unimodal pass counts as one pass of the budget, so the arm visits
    as many samples as every other arm, ``2P`` of its ``epochs`` passes unimodal.

    (:class:`examples.methods.Pretrain` trains both encoders at once, ``CE_1 + CE_2`` on the
    same batch, and counts that as one epoch: two unimodal passes for the price of one, so it
    is not reused here.)"""

    def __init__(self, n_train, epochs, seed=0, *, pretrain_fraction: float = 0.4, unimodal_weight: float = 0.6):
        super().__init__(n_train, epochs, seed, unimodal_weight=unimodal_weight)
        if epochs < 3:
            raise ValueError(f"pre-training needs a budget of at least 3 passes, got {epochs}")
        if not 0 < pretrain_fraction < 1:
            raise ValueError(f"pretrain_fraction must be in (0, 1), got {pretrain_fraction!r}")
        self.per_modality = min(max(1, round(pretrain_fraction * epochs / 2)), (epochs - 1) // 2)
        self.joint_from = 2 * self.per_modality

    def stage(self, epoch) -> int:
        """1 or 2 while that modality pre-trains, 0 in the fused stage."""
        return 0 if epoch >= self.joint_from else 1 + epoch // self.per_modality

    def start_epoch(self, epoch, model, data):
        if epoch == self.joint_from:
            self.reset_optimizer = True

    def loss(self, epoch, model, out, y, idx):
        m = self.stage(epoch)
        return super().loss(epoch, model, out, y, idx) if m == 0 else F.cross_entropy(out.heads[m - 1], y)

    def summary(self):
        return {"pretrain_passes_per_modality": self.per_modality, "joint_from_epoch": self.joint_from}


class _Modulated:
    """OGM-GE's step shared by both rules: after backward, scale each encoder's gradient by
    ``ogm_ge_coefficients(scores, alpha, rule=self.rule)`` (with noise) and record the
    coefficients."""

    rule = "shifted"

    def after_backward(self, model, out, y):
        k = ogm_ge_coefficients(ogm_ge_scores(out.heads, y), self.alpha, rule=self.rule)
        modulate_gradients([e.parameters() for e in model.encoders], k, generator=self.gen)
        self.coefficients.append(k.tolist())

    def summary(self):
        return {"mean_coefficients": torch.tensor(self.coefficients).mean(0).tolist()}


class OGMGE(_Modulated, FusedHeads):
    """The integration's OGM-GE: coefficients ``1 − tanh(α(ρ − 1))`` from the unimodal heads,
    with the fused-plus-heads loss."""

    def __init__(self, n_train, epochs, seed=0, *, alpha: float = 0.5, **kwargs):
        super().__init__(n_train, epochs, seed, **kwargs)
        self.alpha, self.coefficients = alpha, []


class OGMGEPublic(_Modulated, Fused):
    """OGM-GE as in the public code: fused loss only, coefficient ``1 − tanh(α·ρ)``
    (``ogm_ge_coefficients(..., rule="published")``), noise with the gradient's own standard
    deviation on both encoders (on every encoder parameter at every step; the public code
    modulates only convolution weights, within an epoch window). The public model's fusion is
    linear, so each modality's share of the fused logits is its score; with an MLP fusion
    head there is no such share, and the scores come from the detached unimodal heads of
    :class:`Fused` (linear probes trained online, no gradient to the encoders)."""

    rule = "published"

    def __init__(self, n_train, epochs, seed=0, *, alpha: float = 0.1):
        super().__init__(n_train, epochs, seed)
        self.alpha, self.coefficients = alpha, []


class ECS(Arm):
    """ECS-async with the integration's rules, settings as in
    :mod:`examples.run_integrations` (probe every epoch, stage 2 by ``epochs // 2``), and the
    calibrated synergy rule the integration recommends for new runs: ``synergy_rule="test"``
    with a probe of ``k = suggest_k(probe set, classes)`` clusters (3 for 500 samples and
    10 classes, 5 for 4 classes) that attaches :func:`fastpid.estimate` to every probe."""

    def __init__(self, n_train, epochs, seed=0, **controller_kwargs):
        super().__init__(n_train, epochs, seed)
        kw = dict(max_unimodal_epochs=max(1, epochs // 2), min_unimodal_epochs=max(1, epochs // 10),
                  probe_every=1, synergy_rule="test")
        self.seed = seed
        self.method = ECSAsync(seed=seed, **{**kw, **controller_kwargs})

    def start_epoch(self, epoch, model, data):
        m = self.method
        if m.controller is None and m.controller_kwargs.get("synergy_rule") == "test":
            n_probe = min(m.probe_size, len(data.train))
            m.probe = PIDProbe(n_clusters=suggest_k(n_probe, data.n_classes), seed=self.seed, estimate=True)
        m.start_epoch(epoch, model, data)
        self.reset_optimizer, m.reset_optimizer = m.reset_optimizer, False

    def loss(self, epoch, model, out, y, idx):
        return self.method.loss(epoch, model, _two_view(out), y)

    def summary(self):
        """Stage-2 start, the restored peak, and the synergy rule on the stage-1 probes (the
        probes up to and including the switch epoch): how many there were
        (``synergy_tests``), on how many the rule fired (``synergy_fired``; warm-up probes
        included, as :attr:`ECSAsyncController.synergy_fired` counts them) and on how many
        of those after the warm-up (``synergy_fired_counted``: only these can become the
        peak), at which epochs, and every stage-1 probe's p-value and corrected synergy."""
        ctrl = self.method.controller
        h = ctrl.history_arrays()
        end = h["switch_epoch"] if h["switch_epoch"] is not None else float("inf")
        stage1 = [r for r in ctrl.history if r.epoch <= end]
        fired = [r.epoch for r in stage1 if r.decision.synergistic]
        return {"switch_epoch": h["switch_epoch"], "peak_epoch": h["peak_epoch"], "synergy_rule": h["synergy_rule"],
                "k": ctrl.probe.n_clusters, "warmup_epochs": ctrl.warmup_epochs, "synergy_tests": len(stage1),
                "synergy_fired": len(fired), "synergy_fired_counted": sum(e >= ctrl.warmup_epochs for e in fired),
                "fired_epochs": fired,
                "synergy_p_value": [r.test["p_value"] if r.test is not None else None for r in stage1],
                "synergy_estimate": [r.test["synergy"] if r.test is not None else None for r in stage1]}


class ECSPublished(ECS):
    """ECS-async on the published script's schedule: probe every 5 epochs, never resume a
    paused modality, leave stage 1 after the second change of the paused modality (or by the
    controller's own rules), and train stage 2 at the learning rate ÷ 20.

    The controller has no option to stop after a number of switches, so this arm keeps its
    own stage: after the second switch it stops consulting the controller, restores the
    peak-synergy snapshot if one exists, and trains with the controller's stage-2 loss.
    Two parts are the integration's, not the script's: the restore (the script keeps no
    snapshot and continues from the current weights) and the probe (:class:`ECS`'s:
    standardised features, ``k`` from ``suggest_k``, the synergy test; the script
    L2-normalises rows before PCA(5) and k-means(20))."""

    def __init__(self, n_train, epochs, seed=0, *, switches: int = 2, stage2_lr_divisor: float = 20.0,
                 **controller_kwargs):
        super().__init__(n_train, epochs, seed, probe_every=5, resume_ratio=None, **controller_kwargs)
        self.switches, self.divisor = switches, stage2_lr_divisor
        self.changes, self.paused, self.own_switch = 0, None, None

    def start_epoch(self, epoch, model, data):
        if self.own_switch is not None:
            self.method.decision = Decision(epoch, JOINT, True, True, reason="stage 2 (published switch rule)")
            return
        super().start_epoch(epoch, model, data)
        d = self.method.decision
        paused = None if d.train1 and d.train2 else (1 if not d.train1 else 2)
        if d.stage != JOINT and paused != self.paused:
            self.changes, self.paused = self.changes + 1, paused
            if self.changes >= self.switches:
                self.own_switch = epoch
                ctrl = self.method.controller
                if ctrl.snapshot is not None:
                    ctrl.restore()
                self.method.decision = Decision(epoch, JOINT, True, True, reason="stage 2 (published switch rule)")
                self.reset_optimizer = True
        if self.method.decision.stage == JOINT:
            self.lr_scale = 1.0 / self.divisor

    def summary(self):
        out = super().summary()
        if self.own_switch is not None:
            out["switch_epoch"] = self.own_switch
        return {**out, "modality_switches": self.changes}


class SynIB(Arm):
    """:class:`~fastpid.integrations.SynIBLoss` from the first epoch."""

    def __init__(self, n_train, epochs, seed=0, **loss_kwargs):
        super().__init__(n_train, epochs, seed)
        self.loss_fn = SynIBLoss(seed=seed, **loss_kwargs)

    def loss(self, epoch, model, out, y, idx):
        return self.loss_fn(out.zs[0], out.zs[1], y, model.fuse, model.heads[0], model.heads[1], epoch=epoch).loss


class SynIBRepository(Arm):
    """:class:`~fastpid.integrations.SynIBLoss` with ``variant="repository"`` (the public
    SynIB code: per-example learned masks, Gaussian KL, cross-entropy on randomly masked
    inputs, detached heads) from the first epoch. The log-variance head reads the fusion
    MLP's hidden layer, as the repository's reads its fusion trunk's; it is built at the
    first epoch (it needs the class count) and trained with the model."""

    def __init__(self, n_train, epochs, seed=0, **loss_kwargs):
        super().__init__(n_train, epochs, seed)
        self.seed, self.loss_kwargs, self.loss_fn = seed, loss_kwargs, None

    def start_epoch(self, epoch, model, data):
        if self.loss_fn is None:
            self.loss_fn = SynIBLoss(variant="repository", num_classes=data.n_classes,
                                     kl_features=model.fusion[0].out_features, seed=self.seed, **self.loss_kwargs)
            self.reset_optimizer = True

    def extra_parameters(self):
        return [] if self.loss_fn is None else list(self.loss_fn.parameters())

    def loss(self, epoch, model, out, y, idx):
        trunk, last = model.fusion[:2], model.fusion[2]

        def fusion(a, b):
            h = trunk(torch.cat([a, b], 1))
            return last(h), h
        return self.loss_fn(out.zs[0], out.zs[1], y, fusion, model.heads[0], model.heads[1], epoch=epoch).loss


class Curriculum(Arm):
    """A method of :mod:`examples.curricula` (``cls(n, schedule_epochs, 2, seed=..., **kw)``)
    as an arm; ``schedule_epochs`` is the length of its own schedule (see
    :func:`examples.fair.schedule_epochs`)."""

    def __init__(self, n_train, epochs, seed=0, *, cls, **kwargs):
        super().__init__(n_train, epochs, seed)
        self.inner = cls(n_train, epochs, 2, seed=seed, **kwargs)
        self.fusion = self.inner.fusion

    def epoch_indices(self, epoch):
        return self.inner.epoch_indices(epoch)

    def loss(self, epoch, model, out, y, idx):
        return self.inner.loss(epoch, out, y, idx)

    def after_backward(self, model, out, y):
        self.inner.after_backward(model, out, y)

    def end_epoch(self, epoch, out, y):
        self.inner.end_epoch(epoch, out, y)

    def planned_fractions(self) -> list:
        """The fraction of the training set each epoch of the schedule will visit."""
        inner = self.inner
        if isinstance(inner, curricula.SPICE):
            # The share the curriculum admits at each epoch once scores exist (ceil(c N) / N).
            return [1.0] + [inner.cur.scheduled_fraction(e) for e in range(1, self.epochs)]
        if isinstance(inner, curricula.StaticCurriculum):
            return [1.0] + [inner.pacing(e - 1, max(1, self.epochs - 2)) for e in range(1, self.epochs)]
        return [1.0] * self.epochs


def _curriculum(cls, **fixed):
    return lambda n, epochs, seed=0, **kw: Curriculum(n, epochs, seed, cls=cls, **fixed, **kw)


class _Gated(FusedHeads):
    fusion = "gated"


#: Protocol name -> constructor ``(n_train, epochs, seed, **params)``.
ARMS = {
    "fused": Fused,
    "fused+heads": FusedHeads,
    "pre-training": Pretrain,
    "OGM-GE": OGMGE,
    "OGM-GE (public rule)": OGMGEPublic,
    "ECS-async": ECS,
    "ECS-async (published schedule)": ECSPublished,
    "SynIB": SynIB,
    "SynIB (repository variant)": SynIBRepository,
    "static curriculum": _curriculum(curricula.StaticCurriculum),
    "SPICE (pointwise)": _curriculum(curricula.SPICE, estimator="pointwise"),
    "gated fused+heads": _Gated,
    "DynCIM (gated)": _curriculum(curricula.DynCIMMethod),
}
#: Arms whose purpose is to correct modality imbalance (the probe gap is their mechanism check).
IMBALANCE_ARMS = ("pre-training", "OGM-GE", "OGM-GE (public rule)", "ECS-async", "ECS-async (published schedule)",
                  "SynIB", "SynIB (repository variant)", "DynCIM (gated)")
#: Each arm's own hyper-parameters; the protocol adds the shared optimiser grid.
SPACES = {
    "fused": {},
    "fused+heads": {"unimodal_weight": [0.3, 0.6, 1.0]},
    "pre-training": {"pretrain_fraction": [0.2, 0.4, 0.6]},
    "OGM-GE": {"alpha": [0.1, 0.3, 0.5, 1.0]},
    "OGM-GE (public rule)": {"alpha": [0.05, 0.1, 0.3, 0.5]},
    "ECS-async": {"ratio": [2.0, 3.0, 5.0]},
    "ECS-async (published schedule)": {"ratio": [2.0, 3.0, 5.0]},
    "SynIB": {"lambda_syn": [0.05, 0.1, 0.5, 1.0]},
    "SynIB (repository variant)": {"lambda_syn": [0.01, 0.1, 1.0], "gate_sparsity": [0.1, 1.0]},
    "static curriculum": {"c0": [0.1, 0.2, 0.4]},
    "SPICE (pointwise)": {"c0": [0.1, 0.2, 0.4]},
    "gated fused+heads": {"unimodal_weight": [0.3, 0.6, 1.0]},
    "DynCIM (gated)": {"beta": [0.01, 0.1, 1.0]},
}
