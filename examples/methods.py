"""Training methods for :func:`examples.training.train`: what loss each epoch uses.

* :class:`Joint` — joint training from scratch: ``CE(fused) + w·(CE1 + CE2)``;
* :class:`Pretrain` — a fixed number of unimodal epochs (``CE1 + CE2``), then joint;
* :class:`ECSAsync` — :class:`fastpid.integrations.ECSAsyncController` decides; stage 2
  uses the joint loss, or a :class:`~fastpid.integrations.SynIBLoss` when one is given;
* :class:`SynIB` — :class:`~fastpid.integrations.SynIBLoss` from the first epoch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastpid.integrations import ECSAsyncController, PIDProbe, SynIBLoss

__all__ = ["Joint", "Pretrain", "ECSAsync", "SynIB", "probe_subset"]


def _joint_loss(out, y, w):
    return F.cross_entropy(out.fused, y) + w * (F.cross_entropy(out.logits1, y) + F.cross_entropy(out.logits2, y))


def _synib_loss(loss_fn, epoch, model, out, y):
    return loss_fn(out.z1, out.z2, y, model.fuse, model.heads[0], model.heads[1], epoch=epoch).loss


def probe_subset(data, size: int, seed: int) -> torch.Tensor:
    """A fixed random subset (indices into ``data``) of the training split, the probe set."""
    g = torch.Generator().manual_seed(seed)
    return data.train[torch.randperm(data.train.numel(), generator=g)[:size]]


class Joint:
    name = "joint"

    def __init__(self, unimodal_weight: float = 0.6):
        self.w = unimodal_weight
        self.reset_optimizer = False

    def start_epoch(self, epoch, model, data):
        pass

    def loss(self, epoch, model, out, y):
        return _joint_loss(out, y, self.w)

    def summary(self):
        return {}


class Pretrain(Joint):
    name = "pretrain"

    def __init__(self, pretrain_epochs: int = 10, unimodal_weight: float = 0.6):
        super().__init__(unimodal_weight)
        self.pretrain_epochs = pretrain_epochs

    def loss(self, epoch, model, out, y):
        if epoch < self.pretrain_epochs:
            return F.cross_entropy(out.logits1, y) + F.cross_entropy(out.logits2, y)
        return _joint_loss(out, y, self.w)


class SynIB:
    name = "synib"

    def __init__(self, loss_fn: SynIBLoss | None = None):
        self.loss_fn = loss_fn if loss_fn is not None else SynIBLoss()
        self.reset_optimizer = False

    def start_epoch(self, epoch, model, data):
        pass

    def loss(self, epoch, model, out, y):
        return _synib_loss(self.loss_fn, epoch, model, out, y)

    def summary(self):
        return {}


class ECSAsync:
    """ECS-async: probes the pre-fusion embeddings of a fixed probe set (``probe_size``
    training samples) each probe epoch and follows the controller's decisions; a fresh
    optimizer starts stage 2 (the parameters jump back to the peak-synergy snapshot)."""

    name = "ecs"

    def __init__(self, probe_size: int = 500, stage2_loss: SynIBLoss | None = None, seed: int = 0,
                 probe: PIDProbe | None = None, **controller_kwargs):
        self.probe_size, self.seed = probe_size, seed
        self.probe = probe if probe is not None else PIDProbe(seed=seed)
        self.controller_kwargs = controller_kwargs
        self.stage2_loss = stage2_loss
        self.controller: ECSAsyncController | None = None
        self.decision = None
        self.reset_optimizer = False
        if stage2_loss is not None:
            self.name = "ecs+synib"

    def start_epoch(self, epoch, model, data):
        if self.controller is None:
            self.controller = ECSAsyncController(self.probe, modules=[*model.encoders, *model.heads],
                                                 **self.controller_kwargs)
            self._probe_idx = probe_subset(data, self.probe_size, self.seed)
        ctrl = self.controller
        if ctrl.wants_probe(epoch):
            with torch.no_grad():
                z1, z2 = model.embed(data.x1[self._probe_idx], data.x2[self._probe_idx])
            d = ctrl.update(epoch, z1, z2, data.y[self._probe_idx])
        else:
            d = ctrl.update(epoch)
        if d.restore_snapshot:
            ctrl.restore()
            self.reset_optimizer = True
        self.decision = d

    def loss(self, epoch, model, out, y):
        d = self.decision
        if d.stage == "joint" and self.stage2_loss is not None:
            return _synib_loss(self.stage2_loss, epoch, model, out, y)
        return self.controller.stage_loss(d, out.fused, out.logits1, out.logits2, y)

    def summary(self):
        return {"history": self.controller.history_arrays()}
