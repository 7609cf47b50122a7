"""The arms of the fair protocol (:mod:`examples.fair`): every method, baselines included,
as an object that :func:`examples.fair.fit` drives on a :class:`~examples.curricula.MultiViewNet`.

An arm has (defaults in :class:`Arm`)::

    fusion                                  "concat" or "gated" (the model it trains)
    start_epoch(epoch, model, data)         before the epoch (probes, stage switches)
    reset_optimizer, lr_scale               read after start_epoch
    epoch_indices(epoch) -> (n,) int64      training-split positions to visit, in order
    loss(epoch, model, out, y, idx)         out: a curricula.MultiOutput of the batch
    after_backward(model, out, y)           between backward and the optimizer step
    end_epoch(epoch, out, y)                out: predictions on the whole training split
    summary() -> dict                       saved with the run

Baselines: :class:`Fused` (fused loss only; the unimodal heads are trained on *detached*
embeddings, so they are online linear probes that do not touch the encoders) and
:class:`FusedHeads` (fused plus unimodal cross-entropies). Imbalance methods:
:class:`OGMGE` (the integration's rule), :class:`OGMGEPublic` (the public code's rule),
:class:`ECS` (the integration's defaults), :class:`ECSPublished` (the published schedule),
:class:`SynIB`. Curricula and DynCIM: :class:`Curriculum` wraps the classes of
:mod:`examples.curricula`. :data:`ARMS` maps the protocol's names to constructors and
:data:`SPACES` to their tuning grids.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastpid.integrations import SynIBLoss
from fastpid.integrations.ecs_async import JOINT, Decision
from fastpid.integrations.ogm_ge import modulate_gradients, ogm_ge_coefficients, ogm_ge_scores

from . import curricula
from .methods import ECSAsync
from .models import FusionOutput

__all__ = ["Arm", "Fused", "FusedHeads", "OGMGE", "OGMGEPublic", "ECS", "ECSPublished", "SynIB",
           "Curriculum", "ogm_ge_public_coefficients", "ARMS", "SPACES", "IMBALANCE_ARMS"]


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


class OGMGE(FusedHeads):
    """The integration's OGM-GE: coefficients ``1 − tanh(α(ρ − 1))`` from the unimodal heads,
    with the fused-plus-heads loss."""

    def __init__(self, n_train, epochs, seed=0, *, alpha: float = 0.5, **kwargs):
        super().__init__(n_train, epochs, seed, **kwargs)
        self.alpha, self.coefficients = alpha, []

    def after_backward(self, model, out, y):
        k = ogm_ge_coefficients(ogm_ge_scores(out.heads, y), self.alpha)
        modulate_gradients([e.parameters() for e in model.encoders], k, generator=self.gen)
        self.coefficients.append(k.tolist())

    def summary(self):
        return {"mean_coefficients": torch.tensor(self.coefficients).mean(0).tolist()}


def ogm_ge_public_coefficients(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """The public OGM-GE code's coefficients for two modalities: ``ρ = s_1 / s_2``; the
    dominant modality gets ``1 − tanh(α·ρ)`` (``ρ`` its score over the other's, ``> 1``), the
    other 1."""
    s1, s2 = (float(v) for v in scores)
    ratio = s1 / max(s2, 1e-12)
    if ratio > 1:
        return torch.tensor([1.0 - torch.tanh(torch.tensor(alpha * ratio)).item(), 1.0])
    inverse = s2 / max(s1, 1e-12)
    if inverse > 1:
        return torch.tensor([1.0, 1.0 - torch.tanh(torch.tensor(alpha * inverse)).item()])
    return torch.ones(2)


class OGMGEPublic(Fused):
    """OGM-GE as in the public code: fused loss only, coefficient ``1 − tanh(α·ρ)``, noise
    with the gradient's own standard deviation on both encoders. The public model's fusion is
    linear, so each modality's share of the fused logits is its score; with an MLP fusion
    head there is no such share, and the scores come from the detached unimodal heads of
    :class:`Fused` (linear probes trained online, no gradient to the encoders)."""

    def __init__(self, n_train, epochs, seed=0, *, alpha: float = 0.1):
        super().__init__(n_train, epochs, seed)
        self.alpha, self.coefficients = alpha, []

    def after_backward(self, model, out, y):
        k = ogm_ge_public_coefficients(ogm_ge_scores(out.heads, y), self.alpha)
        modulate_gradients([e.parameters() for e in model.encoders], k, generator=self.gen)
        self.coefficients.append(k.tolist())

    def summary(self):
        return {"mean_coefficients": torch.tensor(self.coefficients).mean(0).tolist()}


class ECS(Arm):
    """ECS-async with the integration's defaults, settings as in
    :mod:`examples.run_integrations` (probe every epoch, stage 2 by ``epochs // 2``)."""

    def __init__(self, n_train, epochs, seed=0, **controller_kwargs):
        super().__init__(n_train, epochs, seed)
        kw = dict(max_unimodal_epochs=max(1, epochs // 2), min_unimodal_epochs=max(1, epochs // 10),
                  probe_every=1)
        self.method = ECSAsync(seed=seed, **{**kw, **controller_kwargs})

    def start_epoch(self, epoch, model, data):
        self.method.start_epoch(epoch, model, data)
        self.reset_optimizer, self.method.reset_optimizer = self.method.reset_optimizer, False

    def loss(self, epoch, model, out, y, idx):
        return self.method.loss(epoch, model, _two_view(out), y)

    def summary(self):
        h = self.method.controller.history_arrays()
        return {"switch_epoch": h["switch_epoch"], "peak_epoch": h["peak_epoch"]}


class ECSPublished(ECS):
    """ECS-async on the published script's schedule: probe every 5 epochs, never resume a
    paused modality, leave stage 1 after the second change of the paused modality (or by the
    controller's own rules), and train stage 2 at the learning rate ÷ 20.

    The controller has no option to stop after a number of switches, so this arm keeps its
    own stage: after the second switch it stops consulting the controller, restores the
    peak-synergy snapshot if one exists, and trains with the controller's stage-2 loss."""

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
            cur = inner.cur
            return [1.0] + [float(cur.pacing(p.step, max(1, p.length - 1)))
                            for p in (cur.schedule.position(e) for e in range(1, self.epochs))]
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
    "OGM-GE": OGMGE,
    "OGM-GE (public rule)": OGMGEPublic,
    "ECS-async": ECS,
    "ECS-async (published schedule)": ECSPublished,
    "SynIB": SynIB,
    "static curriculum": _curriculum(curricula.StaticCurriculum),
    "SPICE (pointwise)": _curriculum(curricula.SPICE, estimator="pointwise"),
    "gated fused+heads": _Gated,
    "DynCIM (gated)": _curriculum(curricula.DynCIMMethod),
}
#: Arms whose purpose is to correct modality imbalance (the probe gap is their mechanism check).
IMBALANCE_ARMS = ("OGM-GE", "OGM-GE (public rule)", "ECS-async", "ECS-async (published schedule)", "SynIB",
                  "DynCIM (gated)")
#: Each arm's own hyper-parameters; the protocol adds the shared optimiser grid.
SPACES = {
    "fused": {},
    "fused+heads": {"unimodal_weight": [0.3, 0.6, 1.0]},
    "OGM-GE": {"alpha": [0.1, 0.3, 0.5, 1.0]},
    "OGM-GE (public rule)": {"alpha": [0.05, 0.1, 0.3, 0.5]},
    "ECS-async": {"ratio": [2.0, 3.0, 5.0]},
    "ECS-async (published schedule)": {"ratio": [2.0, 3.0, 5.0]},
    "SynIB": {"lambda_syn": [0.05, 0.1, 0.5, 1.0]},
    "static curriculum": {"c0": [0.1, 0.2, 0.4]},
    "SPICE (pointwise)": {"c0": [0.1, 0.2, 0.4]},
    "gated fused+heads": {"unimodal_weight": [0.3, 0.6, 1.0]},
    "DynCIM (gated)": {"beta": [0.01, 0.1, 1.0]},
}
