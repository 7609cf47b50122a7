"""A plain training loop for two-view late-fusion models, with a method object deciding the
loss and per-epoch hooks for logging or curricula.

A *method* (see :mod:`examples.methods`) implements::

    start_epoch(epoch, model, data) -> None      # e.g. probe, pause a modality, restore
    loss(epoch, model, out, y) -> Tensor         # out is a models.FusionOutput
    reset_optimizer -> bool attribute            # set True to get a fresh optimizer
    summary() -> dict                            # anything worth saving with the run

A *hook* is ``hook(epoch, model, log)`` called after each epoch; ``log`` is the
:class:`TrainLog` so far.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

__all__ = ["TrainConfig", "TrainLog", "train", "set_seed"]


@dataclass
class TrainConfig:
    """Optimisation settings: ``epochs``, ``batch_size``, AdamW ``lr``/``weight_decay``,
    ``seed`` (model initialisation and batch order) and ``progress`` (tqdm bar)."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    progress: bool = True


@dataclass
class TrainLog:
    """Per-epoch mean training loss and anything hooks add to ``extra``."""

    loss: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)


def _optimizer(model, cfg):
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(model, data, method, cfg: TrainConfig, hooks: Sequence[Callable] = ()) -> TrainLog:
    """Train ``model`` on ``data.split("train")`` with ``method``'s loss for ``cfg.epochs``.

    Parameters that receive no gradient in a step (a paused modality) are left untouched:
    gradients are reset to ``None`` and AdamW skips such parameters.
    """
    x1, x2, y = data.split("train")
    n = y.shape[0]
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = _optimizer(model, cfg)
    log = TrainLog()
    bar = tqdm(range(cfg.epochs), desc=f"{getattr(method, 'name', 'train')}", leave=False,
               disable=not cfg.progress)
    for epoch in bar:
        model.eval()
        method.start_epoch(epoch, model, data)
        if getattr(method, "reset_optimizer", False):
            opt, method.reset_optimizer = _optimizer(model, cfg), False
        model.train()
        total, batches = 0.0, 0
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            if idx.numel() < 2:
                continue
            out = model(x1[idx], x2[idx])
            loss = method.loss(epoch, model, out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, batches = total + loss.item(), batches + 1
        log.loss.append(total / max(batches, 1))
        bar.set_postfix(loss=f"{log.loss[-1]:.3f}")
        for hook in hooks:
            hook(epoch, model, log)
    model.eval()
    return log
