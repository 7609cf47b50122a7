"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., 2022).

The established baseline for modality imbalance. After each backward pass, the gradient of
each modality's encoder is scaled down in proportion to how much that modality dominates
the batch, and Gaussian noise with the gradient's own standard deviation is added
(the "generalisation enhancement").

* Score of modality ``m`` on a batch: ``s_m = Σ_n softmax(logits_m)[n, y_n]``, with
  ``logits_m`` that modality's contribution to the fused output (or its unimodal head).
* Discrepancy ratio: the paper defines ``ρ = s_1 / s_2`` for two modalities; for ``M``
  modalities (a choice made here) ``ρ_m = s_m / mean_{k≠m} s_k``, which is the same for
  ``M = 2``.
* Coefficient (:func:`ogm_ge_coefficients`, ``rule=``), 1 where ``ρ_m <= 1``; where
  ``ρ_m > 1``:

  - ``"shifted"`` (default): ``k_m = 1 - tanh(α (ρ_m - 1))``. This is not the paper's rule;
  - ``"published"``: ``k_m = 1 - tanh(α ρ_m)``, Eq. (10) of the paper and the rule of the
    public code (for ``M = 2`` the same coefficients, except at an exact tie
    ``s_1 = s_2``, where the public code's ``else`` branch scales its second modality by
    ``1 - tanh(α)`` and this rule leaves both at 1).

  Why the default is shifted: it is continuous at ``ρ = 1``. The published rule is not:
  just above ``ρ = 1`` it already scales the dominant modality's gradient by about
  ``1 - tanh(α)`` (0.538 at ``α = 0.5``, 0.900 at ``α = 0.1``; 0.537 at ``ρ = 1.001``,
  ``α = 0.5``), and at ``ρ = 1`` the coefficient jumps back to 1, so two nearly balanced
  modalities see their gradients switch between full and about half size from batch to
  batch. The shifted rule starts at 1 and decreases smoothly with the imbalance.
* Modulation (:func:`modulate_gradients`): ``grad ← k_m · grad + ε``,
  ``ε ~ N(0, std(grad)²)`` (std of the unscaled gradient, per parameter tensor), applied to
  every parameter the caller passes for each modality, at every call. The public code
  modulates (scales and adds noise to) only the 4-D gradients, i.e. convolution weights, of
  its two encoders, and only in the epochs ``modulation_starts <= epoch <= modulation_ends``
  (0 and 50 by default); here the caller chooses the parameters (e.g. only the convolution
  weights) and when to call, so passing every encoder parameter at every step perturbs more
  than the public code does. With gradient accumulation, call it once per optimiser step,
  after the last backward pass and before ``step()``: each call scales the whole
  accumulated gradient and adds noise, so a call after each of two backward passes scales
  the first micro-batch's part by ``k_m²`` and adds noise twice.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import math
import warnings

import torch

from fastpid._caller import caller_level
from fastpid._validate import check_real

from .distributed import all_reduce_sum, check_on_every_rank, same_on_every_rank
from .predictions import check_batch, check_labels, check_logits, prob_of_label, tensor_of

__all__ = ["ogm_ge_scores", "ogm_ge_coefficients", "modulate_gradients", "RULES"]

#: Values of ``ogm_ge_coefficients(rule=...)``.
RULES = ("shifted", "published")


def ogm_ge_scores(logits: Sequence[torch.Tensor], y, *, all_ranks: bool = True) -> torch.Tensor:
    """``(M,)`` scores ``s_m = Σ_n softmax(logits_m)[n, y_n]`` (float64) for ``M`` tensors
    ``(B, C)`` and labels ``y (B,)`` (tensor or numpy; integral floats accepted).

    Under an initialised ``torch.distributed`` process group (and ``all_ranks``) the scores
    are summed over the ranks, those of the whole step's batch, so that every rank gets the
    same coefficients (each rank's own made DDP's copies of the model drift apart:
    ``modulate_gradients`` runs after DDP has averaged the gradients); every rank must then
    call it at every step, and a rank's bad input raises on every rank. Ranks that run
    different numbers of steps (``Join`` instead of ``drop_last=True``) would wait for each
    other there: pass ``all_ranks=False`` (each rank's own scores; the copies drift apart).
    The noise of :func:`modulate_gradients` must be the same on every rank too: pass a
    ``generator`` seeded alike on every rank.

    Raises ``ValueError`` for an empty batch and for NaN/Inf logits (naming the modality):
    an error, not a warning, because the scores set the gradient coefficients, and a NaN
    coefficient would turn every gradient of the step into NaN.
    """
    if not all_ranks:
        scores = _scores(logits, y)
    else:
        scores = check_on_every_rank(_scores, logits, y)
        same_on_every_rank(len(scores), "the number of modalities of ogm_ge_scores")
        scores = all_reduce_sum(scores)
    with torch.no_grad():  # the logits are checked by now
        for m, l in enumerate(logits):
            if l.shape[1] > 1 and bool(((l >= 0) & (l <= 1)).all()) and bool(
                    ((l.double().sum(-1) - 1).abs() < 1e-4).all()):
                warnings.warn(f"ogm_ge_scores: every row of modality {m}'s logits lies in [0, 1] and sums to 1, as "
                              "probabilities do; it applies the softmax itself, so pass logits (a softmax of "
                              "probabilities flattens the scores toward 1/C)", stacklevel=caller_level())
    return scores


def _scores(logits: Sequence[torch.Tensor], y) -> torch.Tensor:
    """:func:`ogm_ge_scores` of this rank's batch, checked."""
    for m, l in enumerate(logits):
        check_logits(l, f"logits[{m}]", meta=False)  # the scores are read by value
    if len(logits) < 2 or any(l.dim() != 2 or l.shape != logits[0].shape for l in logits):
        raise ValueError("logits must be >= 2 tensors of the same shape (B, C), got "
                         f"{[tuple(l.shape) for l in logits]}")
    check_batch("the OGM-GE batch (logits)", logits[0])
    y = check_labels(y, logits[0].shape[0], logits[0].shape[1]).to(logits[0].device)
    with torch.no_grad():
        for m, l in enumerate(logits):
            # -inf masks a class (softmax gives it 0); NaN, +inf or a row of -inf has no softmax.
            if bool((torch.isnan(l) | (l == math.inf)).any() | (l == -math.inf).all(-1).any()):
                raise ValueError(f"logits of modality {m} contain NaN, +Inf or a row of only -Inf; training "
                                 "has diverged (lower the learning rate or clip gradients)")
        # float64: summed over the ranks in bfloat16, 154.16 read 154.
        return torch.stack([prob_of_label(l.softmax(-1), y).double().sum() for l in logits])


def ogm_ge_coefficients(scores: torch.Tensor, alpha: float = 0.5, *, rule: str = "shifted") -> torch.Tensor:
    """``(M,)`` gradient coefficients in ``[0, 1]`` (float64) from the modality scores ``(M,)``.

    With ``ρ_m = s_m / mean_{k≠m} s_k``, the coefficient is 1 where ``ρ_m <= 1`` and, where
    ``ρ_m > 1``, ``1 - tanh(α (ρ_m - 1))`` for ``rule="shifted"`` (default) or
    ``1 - tanh(α ρ_m)`` for ``rule="published"`` (Eq. (10) of the OGM-GE paper; see the
    module docstring for why the default is shifted). It is 0 where a modality dominates so
    far that ``tanh`` rounds to 1 (e.g. a ratio of 40 at ``alpha`` = 0.5).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    scores = tensor_of(scores, "scores", dtype=torch.float64)
    if scores.dim() != 1 or scores.shape[0] < 2 or not bool(torch.isfinite(scores).all()) or (scores < 0).any():
        raise ValueError(f"scores must be a finite, non-negative (M,) vector with M >= 2, got {scores}")
    alpha = check_real(alpha, "alpha", 0)
    M = scores.shape[0]
    others = (scores.sum() - scores) / (M - 1)
    ratio = scores / others.clamp_min(1e-12)
    excess = ratio - 1.0 if rule == "shifted" else ratio
    return torch.where(ratio > 1, 1.0 - torch.tanh(alpha * excess), torch.ones_like(ratio))


def modulate_gradients(params: Sequence[Iterable[torch.nn.Parameter]], coefficients, *,
                       noise: bool = True, generator: torch.Generator | None = None) -> None:
    """Scale (and, with ``noise``, perturb) the gradients in place: ``params[m]`` are the
    parameters of modality ``m``'s encoder, ``coefficients`` its ``(M,)`` coefficients (in
    ``[0, 1]``, as :func:`ogm_ge_coefficients` gives them).
    Parameters without a gradient are skipped; where none has one (a call before
    ``backward()``), a warning says so. A sparse gradient (``nn.Embedding(sparse=True)``)
    stays sparse: its stored entries are scaled, and perturbed with their own spread, so that
    the rows no sample touched stay untouched (torch has no ``std`` of sparse tensors).
    ``generator``: the ``torch.Generator`` the noise is drawn from (default: torch's global
    one); under ``torch.distributed`` seed it the same on every rank."""
    coefficients = tensor_of(coefficients, "coefficients", dtype=torch.float64)
    if coefficients.shape != (len(params),):
        raise ValueError(f"need one coefficient per parameter group: {len(params)} groups, "
                         f"coefficients of shape {tuple(coefficients.shape)}")
    # A NaN made every gradient NaN, a negative one turned them round: both without a word.
    if not bool(((coefficients >= 0) & (coefficients <= 1)).all()):
        raise ValueError(f"coefficients must be in [0, 1] (ogm_ge_coefficients gives them from the scores), "
                         f"got {coefficients.tolist()}")
    modulated = 0
    for group, k in zip(params, coefficients.tolist()):
        for p in group:
            if p.grad is None:
                continue
            modulated += 1
            if p.grad.is_sparse:
                g = p.grad.coalesce()
                values = _modulated(g.values(), k, noise, generator)
                p.grad = torch.sparse_coo_tensor(g.indices(), values, g.shape, is_coalesced=True,
                                                 check_invariants=False)  # the indices of a coalesced tensor
            else:
                p.grad.copy_(_modulated(p.grad, k, noise, generator))
    if not modulated:
        warnings.warn("modulate_gradients: no parameter has a gradient, nothing was modulated; call it after "
                      "loss.backward() and before optimizer.step()", stacklevel=caller_level())


def _modulated(values: torch.Tensor, k: float, noise: bool, generator) -> torch.Tensor:
    """``values`` scaled by ``k`` and, with ``noise``, plus Gaussian noise of their own
    (unscaled) standard deviation."""
    std = values.std() if values.numel() > 1 else values.new_zeros(())
    out = values * k
    if noise:
        out = out + torch.randn(values.shape, generator=generator, device=values.device, dtype=values.dtype) * std
    return out
