"""Curriculum and imbalance methods on M-view late-fusion models: the pieces that
:mod:`examples.run_curricula` compares.

The shared harness (:mod:`examples.training`) trains two-view models with a per-batch loss;
curricula also need the sample indices of a batch (weights), a say in which samples an
epoch visits (samplers), a hook between backward and step (OGM-GE) and an end-of-epoch
update from predictions on the whole training set. :func:`train_curriculum` is that loop;
the data sets come from :mod:`examples.data`.

Methods (each an object with ``epoch_indices``, ``loss``, ``after_backward``,
``end_epoch``, ``history``):

* :class:`Plain` — late fusion, ``CE(fused) + w Σ_m CE(head_m)``, every sample every epoch;
* :class:`StaticCurriculum` — samples ranked once, after the first (full-data) epoch, by
  the fused cross-entropy (easy first), admitted by the same square-root competence over
  the remaining epochs;
* :class:`SPICE` — :class:`fastpid.integrations.SPICECurriculum` through its sampler;
* :class:`DynCIMMethod` — :class:`fastpid.integrations.DynCIM` weights with a gated-fusion
  model and :class:`fastpid.integrations.DynCIMLoss`;
* :class:`OGMGE` — plain loss with OGM-GE gradient modulation of the encoders, scores
  from the unimodal heads.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fastpid.integrations import (DynCIM, DynCIMLoss, GatedFusion, RootCompetence,
                                  SPICECurriculum, SPICESampler)
from fastpid.integrations.ogm_ge import modulate_gradients, ogm_ge_coefficients, ogm_ge_scores

__all__ = ["MultiViewNet", "MultiOutput", "Plain", "StaticCurriculum", "SPICE", "DynCIMMethod",
           "OGMGE", "train_curriculum", "predict"]


class MultiOutput(NamedTuple):
    """``zs``: M embeddings ``(B, E)``; ``heads``: M unimodal logits ``(B, C)``; ``fused``:
    fused logits ``(B, C)``; ``fused_emb``: the fused representation; ``gate``: ``(B, M)``
    gate weights (``None`` for concatenation fusion)."""

    zs: list
    heads: list
    fused: torch.Tensor
    fused_emb: torch.Tensor
    gate: torch.Tensor | None


def _mlp(d_in, hidden, d_out):
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class MultiViewNet(nn.Module):
    """M MLP encoders ``(B, D_m) -> (B, emb_dim)`` (as in :class:`examples.models.LateFusion`),
    linear unimodal heads, and either ``fusion="concat"`` (an MLP on the concatenated
    embeddings, the plain late fusion) or ``fusion="gated"``
    (:class:`~fastpid.integrations.GatedFusion` then an MLP head)."""

    def __init__(self, dims, n_classes, *, hidden=64, emb_dim=16, fusion="concat"):
        super().__init__()
        if fusion not in ("concat", "gated"):
            raise ValueError(f"fusion must be 'concat' or 'gated', got {fusion!r}")
        self.encoders = nn.ModuleList(_mlp(d, hidden, emb_dim) for d in dims)
        self.heads = nn.ModuleList(nn.Linear(emb_dim, n_classes) for _ in dims)
        self.gate = GatedFusion(emb_dim, len(dims)) if fusion == "gated" else None
        width = emb_dim if fusion == "gated" else emb_dim * len(dims)
        self.fusion = _mlp(width, hidden, n_classes)

    def embed(self, *xs):
        """The pre-fusion embeddings, one ``(B, emb_dim)`` per view."""
        return tuple(enc(x) for enc, x in zip(self.encoders, xs))

    def fuse(self, *zs) -> torch.Tensor:
        """Fused logits ``(B, C)`` from the embeddings (as in :meth:`forward`)."""
        emb = torch.cat(zs, 1) if self.gate is None else self.gate(list(zs))[0]
        return self.fusion(emb)

    def forward(self, xs) -> MultiOutput:
        zs = [enc(x) for enc, x in zip(self.encoders, xs)]
        heads = [h(z) for h, z in zip(self.heads, zs)]
        if self.gate is None:
            emb, g = torch.cat(zs, 1), None
        else:
            emb, g = self.gate(zs)
        return MultiOutput(zs, heads, self.fusion(emb), emb, g)


@torch.no_grad()
def predict(model, xs) -> MultiOutput:
    model.eval()
    out = model(xs)
    model.train()
    return out


def _plain_loss(out, y, w):
    return F.cross_entropy(out.fused, y) + w * sum(F.cross_entropy(h, y) for h in out.heads)


class Plain:
    """Late fusion with unimodal auxiliary losses of weight ``unimodal_weight``."""

    name = "late fusion"
    fusion = "concat"

    def __init__(self, n_train, epochs, n_views, *, unimodal_weight=0.6, seed=0):
        self.n, self.epochs, self.w = n_train, epochs, unimodal_weight
        self.gen = torch.Generator().manual_seed(seed)
        self.history = {}

    def epoch_indices(self, epoch):
        return torch.randperm(self.n, generator=self.gen)

    def loss(self, epoch, out, y, idx):
        return _plain_loss(out, y, self.w)

    def after_backward(self, model, out, y):
        pass

    def end_epoch(self, epoch, out, y):
        pass


class StaticCurriculum(Plain):
    """Loss-ranked curriculum: ranking fixed after epoch 0, competence ``c0`` → 1 over the
    remaining epochs."""

    name = "static (loss-ranked)"

    def __init__(self, *args, c0=0.2, **kwargs):
        super().__init__(*args, **kwargs)
        self.pacing, self.order = RootCompetence(c0), None
        self.history = {"fraction": []}

    def epoch_indices(self, epoch):
        if self.order is None:
            frac = 1.0
            idx = torch.arange(self.n)
        else:
            frac = self.pacing(epoch - 1, max(1, self.epochs - 2))
            idx = self.order[:max(1, int(round(frac * self.n)))]
        self.history["fraction"].append(frac)
        return idx[torch.randperm(len(idx), generator=self.gen)]

    def end_epoch(self, epoch, out, y):
        if self.order is None:
            # Stable: the order of tied losses otherwise follows the CPU's sort kernel (AVX2 and
            # the default build ranked a tie of 2,800 losses differently).
            self.order = F.cross_entropy(out.fused, y, reduction="none").argsort(stable=True)


class SPICE(Plain):
    """:class:`~fastpid.integrations.SPICECurriculum` with the ``"pointwise"`` or ``"local"``
    estimator (``local``: ``k`` neighbours in the fused embedding, solved exactly)."""

    def __init__(self, *args, estimator="pointwise", refresh=1, k=16, c0=0.2, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = f"SPICE ({estimator})"
        kw = {"k": k} if estimator == "local" else None
        self.cur = SPICECurriculum(self.n, self.epochs, estimator=estimator, estimator_kwargs=kw,
                                   refresh=refresh, pacing=RootCompetence(c0))
        self.sampler = SPICESampler(self.cur, generator=self.gen)
        self.history = {"phase": [], "fraction": [], "update_seconds": []}

    def epoch_indices(self, epoch):
        self.cur.set_epoch(epoch)
        self.history["phase"].append(self.cur.phase())
        self.history["fraction"].append(self.cur.fraction())
        return torch.tensor(list(self.sampler), dtype=torch.int64)

    def end_epoch(self, epoch, out, y):
        if self.cur.due(epoch + 1):
            t = time.perf_counter()
            p = [h.softmax(1) for h in out.heads]
            self.cur.update(p[0], p[1], out.fused.softmax(1), y, embedding=out.fused_emb)
            self.history["update_seconds"].append(time.perf_counter() - t)


class DynCIMMethod(Plain):
    """:class:`~fastpid.integrations.DynCIM` on a gated-fusion model."""

    name = "DynCIM"
    fusion = "gated"

    def __init__(self, n_train, epochs, n_views, *, beta=0.1, seed=0, **kwargs):
        super().__init__(n_train, epochs, n_views, seed=seed, **kwargs)
        self.dyn = DynCIM(n_train, n_views, epochs, unimodal_scale=self.w)
        self.crit = DynCIMLoss(beta=beta)
        self.history = {"modality_weights": [], "gate_target": [], "weight_p10": [],
                        "weight_p90": [], "unimodal_scale": [], "gmr": []}

    def loss(self, epoch, out, y, idx):
        return self.crit(out.fused, out.heads, y, gate=out.gate, **self.dyn.loss_inputs(idx))

    def end_epoch(self, epoch, out, y):
        self.dyn.update(out.fused.softmax(1), [h.softmax(1) for h in out.heads], y)
        w = self.dyn.weights()
        h = self.history
        h["modality_weights"].append(self.dyn.modality_weights().tolist())
        h["gate_target"].append(self.dyn.gate_target().tolist())
        h["weight_p10"].append(float(w.quantile(0.1)))
        h["weight_p90"].append(float(w.quantile(0.9)))
        h["unimodal_scale"].append(self.dyn.unimodal_scale())
        h["gmr"].append(self.dyn.gmr.tolist())


class OGMGE(Plain):
    """Plain loss; encoder gradients modulated by OGM-GE (``alpha``), with noise."""

    name = "OGM-GE"

    def __init__(self, *args, alpha=0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = alpha
        self.history = {"coefficients": []}
        self._batch = []

    def after_backward(self, model, out, y):
        k = ogm_ge_coefficients(ogm_ge_scores(out.heads, y), self.alpha)
        modulate_gradients([e.parameters() for e in model.encoders], k, generator=self.gen)
        self._batch.append(k)

    def end_epoch(self, epoch, out, y):
        self.history["coefficients"].append(torch.stack(self._batch).mean(0).tolist())
        self._batch = []


def train_curriculum(model, xs, y, method, *, epochs, batch_size=64, lr=1e-3, weight_decay=1e-4):
    """Train ``model`` on views ``xs`` (M tensors ``(N, D_m)``) and labels ``y (N,)`` with
    ``method`` for ``epochs`` epochs (AdamW); returns the per-epoch mean training loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for epoch in range(epochs):
        model.train()
        total, batches = 0.0, 0
        for idx in method.epoch_indices(epoch).split(batch_size):
            if idx.numel() < 2:
                continue
            out = model([x[idx] for x in xs])
            loss = method.loss(epoch, out, y[idx], idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            method.after_backward(model, out, y[idx])
            opt.step()
            total, batches = total + loss.item(), batches + 1
        losses.append(total / max(batches, 1))
        method.end_epoch(epoch, predict(model, xs), y)
    model.eval()
    return losses
