"""Evaluation: accuracies (overall, per head, per synthetic interaction type) and the PID of
a trained model's predictions."""
from __future__ import annotations

import torch

import fastpid

from .data import INTERACTION_TYPES

PID_TERMS = ("redundancy", "unique1", "unique2", "synergy", "mi")  # as the results store them, nats

__all__ = ["evaluate", "latent_pid", "prediction_pid"]


@torch.no_grad()
def evaluate(model, data, part: str = "test") -> dict:
    """Accuracies in [0, 1] on ``part``: ``acc`` (fused), ``acc1``/``acc2`` (unimodal heads),
    and ``acc_<type>`` per interaction type when ``data.meta`` has ``"type"``."""
    model.eval()
    x1, x2, y = data.split(part)
    out = model(x1, x2)
    pred = out.fused.argmax(1)
    res = {"acc": (pred == y).float().mean().item(),
           "acc1": (out.logits1.argmax(1) == y).float().mean().item(),
           "acc2": (out.logits2.argmax(1) == y).float().mean().item()}
    if "type" in data.meta:
        kind = data.meta["type"][data.indices(part)]
        for t, name in enumerate(INTERACTION_TYPES):
            sel = kind == t
            if sel.any():
                res[f"acc_{name}"] = (pred[sel] == y[sel]).float().mean().item()
    return res


def latent_pid(data, labels, part: str = "test") -> dict:
    """PID (nats) of the synthetic latent inputs ``X1 = (type, code1)``, ``X2 = (type,
    code2)`` (16 values each) about ``labels`` of the ``part`` split's samples."""
    idx = data.indices(part)
    kind, c1, c2 = (data.meta[k][idx] for k in ("type", "code1", "code2"))
    res = fastpid.pid_from_samples(kind * 4 + c1, kind * 4 + c2, labels, sizes=(16, 16, data.n_classes))
    if not bool(res.converged):  # the tables say each PID is within tol of the truth of its joint
        raise RuntimeError(f"the {part} split's PID did not certify: gap {float(res.gap):.3g} nats")
    return {t: float(getattr(res, t)) for t in PID_TERMS}


@torch.no_grad()
def prediction_pid(model, data, part: str = "test") -> dict:
    """:func:`latent_pid` of the model's fused prediction (``argmax fused``); with the true
    label in its place it is the target profile."""
    x1, x2, _ = data.split(part)
    return latent_pid(data, model(x1, x2).fused.argmax(1), part)
