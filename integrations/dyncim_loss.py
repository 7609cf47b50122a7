"""The DynCIM training loss.

``L = (1/B) Σ_n w_n [CE(fused_n) + α Σ_m λ_m CE(head_m,n)] + β KL(ḡ ‖ target)``

with sample weights ``w`` (mean 1 over the training set, from
:meth:`DynCIM.weights <fastpid.integrations.dyncim.DynCIM.weights>`), unimodal-loss
weights ``λ`` and balance ``α`` (from :class:`~fastpid.integrations.dyncim.DynCIM`), and
``ḡ`` the batch mean of the per-sample gate of
:class:`~fastpid.integrations.gated_fusion.GatedFusion`. Choice: the weighted sum is
divided by the batch size ``B``, not by ``Σ w``, so a batch of easy (heavy) samples counts
for more than a batch of hard ones, as the global normalisation of ``w`` intends.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from fastpid._validate import check_real

from .predictions import as_labels, check_batch, check_classes, check_logits, tensor_of

__all__ = ["DynCIMLoss", "dyncim_loss_terms"]


def dyncim_loss_terms(fused_logits: torch.Tensor, unimodal_logits: Sequence[torch.Tensor],
                      y: torch.Tensor, *, sample_weights=None, modality_weights=None,
                      unimodal_scale: float = 1.0, gate=None, gate_target=None) -> dict:
    """The three terms of the loss as a dict of scalars: ``fused``
    (``(1/B) Σ w_n CE(fused_n)``), ``unimodal`` (``(1/B) Σ_n w_n α Σ_m λ_m CE_m,n``) and
    ``gate`` (``KL(ḡ ‖ target)``, 0 without a gate).

    Shapes: ``fused_logits (B, C)``, ``unimodal_logits`` ``M`` × ``(B, C)``, ``y (B,)``,
    ``sample_weights (B,)`` (default 1), ``modality_weights (M,)`` (default 1),
    ``gate (B, M)`` rows on the simplex, ``gate_target (M,)`` on the simplex (default
    uniform). ``y`` may be a tensor or numpy array (integral floats accepted); an empty
    batch raises ``ValueError``.
    """
    check_logits(fused_logits, "fused_logits")  # meta ones too: shapes only
    for m, u in enumerate(unimodal_logits):
        check_logits(u, f"unimodal_logits[{m}]")
    if fused_logits.dim() != 2:
        raise ValueError(f"fused_logits must have shape (B, C), got {tuple(fused_logits.shape)}")
    check_batch("the DynCIM loss's batch (fused_logits)", fused_logits)
    y = check_classes(as_labels(y, "y", device=fused_logits.device), fused_logits.shape[1])
    B = fused_logits.shape[0]
    M = len(unimodal_logits)
    if M == 0 or any(tuple(u.shape) != tuple(fused_logits.shape) for u in unimodal_logits):
        raise ValueError("unimodal_logits must be one (B, C) tensor per modality, shaped like "
                         f"fused_logits {tuple(fused_logits.shape)}")
    dev, dt = fused_logits.device, fused_logits.dtype
    w = (torch.ones(B, device=dev, dtype=dt) if sample_weights is None
         else tensor_of(sample_weights, "sample_weights", device=dev, dtype=dt))
    lam = (torch.ones(M, device=dev, dtype=dt) if modality_weights is None
           else tensor_of(modality_weights, "modality_weights", device=dev, dtype=dt))
    if w.shape != (B,):
        raise ValueError(f"sample_weights must have shape ({B},), got {tuple(w.shape)}")
    if lam.shape != (M,):
        raise ValueError(f"modality_weights must have shape ({M},), got {tuple(lam.shape)}")
    # A NaN weight made the loss NaN, a negative one turned its samples' descent into ascent.
    for name, v in (("sample_weights", w), ("modality_weights", lam)):
        if not v.is_meta and not bool((torch.isfinite(v) & (v >= 0)).all()):  # meta: shapes only
            bad = v[~(torch.isfinite(v) & (v >= 0))]
            raise ValueError(f"{name} must be finite and >= 0, got {bad[:4].tolist()}"
                             f"{' ...' if bad.numel() > 4 else ''} among them")
    # Checked by value; a tensor stays one, so a learned or scheduled alpha keeps its gradient.
    if not (isinstance(unimodal_scale, torch.Tensor) and unimodal_scale.is_meta):
        check_real(unimodal_scale.detach() if isinstance(unimodal_scale, torch.Tensor) else unimodal_scale,
                   "unimodal_scale", 0)
    target = _gate_target(gate_target, M)  # checked with or without a gate: a wrong one is a caller's bug
    ce = F.cross_entropy(fused_logits, y, reduction="none")
    ce_m = torch.stack([F.cross_entropy(u, y, reduction="none") for u in unimodal_logits])  # (M, B)
    terms = {"fused": (w * ce).mean(),
             "unimodal": unimodal_scale * (w * (lam[:, None] * ce_m).sum(0)).mean()}
    if gate is None:
        terms["gate"] = fused_logits.new_zeros(())
        return terms
    if gate.shape != (B, M):
        raise ValueError(f"gate must have shape ({B}, {M}), got {tuple(gate.shape)}")
    _check_gate_rows(gate)
    # The KL in float32 at least: in float16 the floor 1e-12 rounds to 0, and a gate collapsed
    # onto one modality gives 0 · log 0 = NaN.
    kl_dtype = torch.promote_types(gate.dtype, torch.float32)
    target = target.to(device=dev, dtype=kl_dtype)
    gbar = gate.to(kl_dtype).mean(0).clamp_min(1e-12)
    terms["gate"] = (gbar * (gbar.log() - target.log())).sum().to(dt)
    return terms


def _check_gate_rows(gate: torch.Tensor) -> None:
    """Raise unless every row of ``gate (B, M)`` lies on the simplex (finite, >= 0, summing to 1
    within its dtype's rounding): the KL of rows off it is no KL (all 5s gave a loss of 5.73)."""
    if gate.is_meta:  # shapes only
        return
    g = gate.detach()
    eps = torch.finfo(g.dtype).eps if g.dtype.is_floating_point else 0.0
    slack = max(1e-6, 4 * g.shape[1] * eps)
    sums = g.to(torch.float64).sum(1)
    bad = ~(torch.isfinite(g).all(1) & (g >= 0).all(1) & ((sums - 1).abs() <= slack))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"gate rows must lie on the simplex (entries >= 0 summing to 1, e.g. a softmax): "
                         f"row {i} is {g[i, :8].tolist()}{' ...' if g.shape[1] > 8 else ''}")


def _gate_target(gate_target, M: int) -> torch.Tensor:
    """The gate target as a float64 CPU ``(M,)`` vector (uniform by default), checked to be on
    the simplex in float64 to the given dtype's rounding (a float16 uniform target of 11 sums
    to 1 only within 2e-4)."""
    raw = (torch.full((M,), 1.0 / M, dtype=torch.float64, device="cpu") if gate_target is None
           else tensor_of(gate_target, "gate_target"))
    if raw.is_meta:  # shapes only
        if raw.shape != (M,):
            raise ValueError(f"gate_target must be a positive ({M},) vector on the simplex, got shape "
                             f"{tuple(raw.shape)}")
        return raw
    slack = max(1e-6, M * torch.finfo(raw.dtype).eps) if raw.dtype.is_floating_point else 1e-6
    target = raw.detach().to(torch.float64).cpu()
    if target.shape != (M,) or not bool(torch.isfinite(target).all()) or (target <= 0).any() \
            or abs(float(target.sum()) - 1.0) > slack:
        raise ValueError(f"gate_target must be a positive ({M},) vector on the simplex (summing to 1), "
                         f"got {target.tolist() if target.numel() <= 8 else tuple(target.shape)}")
    return target


class DynCIMLoss(nn.Module):
    """The DynCIM loss ``(1/B) Σ_n w_n [CE(fused_n) + α Σ_m λ_m CE(head_m,n)] + β KL(ḡ ‖ target)``
    (module docstring), a scalar.

    Args:
        beta: weight ``β >= 0`` of the gate term.

    Call it as ``loss_fn(fused_logits, unimodal_logits, y, **kwargs)`` with

    * ``fused_logits (B, C)``: the fused head's logits;
    * ``unimodal_logits``: ``M`` tensors ``(B, C)``, one per modality's head;
    * ``y (B,)``: labels (tensor or numpy; integral floats accepted);

    and the keyword arguments (all optional; :meth:`DynCIM.loss_inputs(index)
    <fastpid.integrations.DynCIM.loss_inputs>` returns the first four for a batch of
    training-set indices):

    * ``sample_weights (B,)``: ``w_n`` (default 1);
    * ``modality_weights (M,)``: ``λ_m`` (default 1);
    * ``unimodal_scale``: ``α``, a float (default 1);
    * ``gate_target (M,)``: the target of the batch-mean gate, on the simplex (default
      uniform);
    * ``gate (B, M)``: the per-sample gate of :class:`GatedFusion`, rows on the simplex
      (default ``None``: no gate term).

    An empty batch raises ``ValueError``. :func:`dyncim_loss_terms` gives the three terms
    separately.
    """

    def __init__(self, beta: float = 0.1):
        super().__init__()
        self.beta = check_real(beta, "beta", 0)

    def forward(self, fused_logits, unimodal_logits, y, **kwargs) -> torch.Tensor:
        t = dyncim_loss_terms(fused_logits, unimodal_logits, y, **kwargs)
        return t["fused"] + t["unimodal"] + self.beta * t["gate"]
