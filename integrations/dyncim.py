"""DynCIM: a sample- and modality-level dynamic curriculum for imbalanced multimodal learning.

:class:`DynCIM` keeps the curriculum's state for ``N`` training samples and ``M >= 2``
modalities and is updated once per epoch from the model's predictions on the training set
(fused head ``(N, C)`` and one unimodal head per modality, softmax rows).

**Sample level.** Each sample's difficulty ``d_n`` in ``[0, 1]`` is a weighted mean of

* *deviation*: ``1 - p_fused(y_n)``;
* *consistency*: the generalised Jensen–Shannon divergence of the ``M + 1`` predictions
  (each unimodal head and the fused head, equal weights), ``H(mean p) - mean H(p)``,
  divided by ``log(M + 1)``, its maximum where there are at least ``M + 1`` classes (with
  ``C`` fewer it cannot pass ``log C``, and the term stays below 1: 0.63 at most for two
  classes and two modalities);
* *stability*: the spread of ``p_fused(y_n)`` over recent epochs, ``2 · std`` (a value in
  ``[0, 1]`` has ``std <= 1/2``), the std taken from exponentially weighted running
  moments with span ``window`` (``a = 2 / (window + 1)``), so no per-epoch history is
  stored. It is 0 after the first update.

Sample weights are ``w_n ∝ exp(-d_n / τ(t))`` normalised to mean 1, with the temperature
growing over training (default :class:`LinearTemperature` from 0.1 to 1.0) so that hard
samples are down-weighted early and enter later. ``t`` is the epoch the update's predictions
close (0 at the first update), so the weights trained on in epoch ``t + 1`` have ``τ(t)``:
over ``T`` epochs the last one trains with ``τ(T - 2)`` (0.969 for the default at ``T = 30``),
and ``τ(T - 1)`` comes from an update whose weights no epoch uses.

**Modality level.** ``conf_m`` is modality ``m``'s mean probability of the true class;
``GMR_m = conf_m / (∏_k conf_k)^(1/M)`` (> 1: dominant). ``HMIR_m`` is the harmonic mean,
over the last ``window`` epochs, of the relative improvement of modality ``m``'s training
cross-entropy, ``δ = (L(t-1) - L(t)) / L(t-1)``, each ``δ`` floored at ``1e-6`` first
(the harmonic mean is then dominated by the worst recent epoch, and a loss that went up
counts as a stall). Choices made here:

* stall degree ``κ_m = stall / (stall + HMIR_m)`` in ``(0, 1)``: 1/2 when the modality
  improves by ``stall`` (default 1 %) per epoch, near 1 when it has stopped; 0 until two
  updates have been seen;
* unimodal-loss weights ``λ_m = GMR_m^(-γ κ_m)`` for dominant modalities (shrunk only as
  far as they have stalled) and ``λ_m = GMR_m^(-γ)`` for lagging ones (boosted), then
  normalised to mean 1;
* the gate target (fusion weights) is ``λ / Σ λ``;
* the fused/unimodal balance: the unimodal terms are scaled by
  ``α = min(α_max, α_0 (1 + spread))``, ``spread = max_m log GMR_m - min_m log GMR_m``,
  so the more imbalanced the modalities, the more the unimodal heads are trained.

Before the first update every weight is 1, ``λ = 1``, the target is uniform and
``α = α_0``.

A lagging modality is boosted whether it is still learning or carries nothing: nothing here
tells the two apart. A modality of constant zeros (scikit-learn's digits, the second image
half zeroed, 12 epochs) got the larger gate target, [0.23, 0.77], with ``α = 3.16``; one
whose head is always wrong drives its own target to about 1 and ``α`` to ``α_max``. Check a
boosted modality's own accuracy before reading the target as a fusion weight.

Checkpoints: :meth:`DynCIM.state_dict` / :meth:`DynCIM.load_state_dict` (tensors and numbers
only; under ``torch.distributed`` load them on every rank). Distributed training:
:meth:`DynCIM.update` takes each rank's predictions for its own samples with their ``index``
(gathered over the ranks), and every rank then holds rank 0's state, so the weights are
identical on every rank.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from fastpid._validate import check_integer, check_real

from .distributed import (assemble, broadcast_object, broadcast_tensors, check_on_every_rank, is_distributed,
                          raise_on_every_rank, same_on_every_rank)
from .predictions import as_labels, check_indices, check_labels, check_probs, prob_of_label, rows_to_gather, tensor_of

__all__ = ["DynCIM", "LinearTemperature", "generalized_js", "geometric_mean_ratio",
           "harmonic_mean_improvement"]

_FLOOR = 1e-6


class LinearTemperature:
    """``τ(t) = start + (end - start) · min(1, t / (T - 1))`` for epoch ``t`` of ``T``."""

    def __init__(self, start: float = 0.1, end: float = 1.0):
        if not (start > 0 and end > 0):
            raise ValueError(f"temperatures must be positive, got start={start!r}, end={end!r}")
        self.start, self.end = float(start), float(end)

    def __call__(self, t: int, T: int) -> float:
        return self.start + (self.end - self.start) * min(1.0, t / max(1, T - 1))

    def __repr__(self) -> str:
        return f"LinearTemperature(start={self.start}, end={self.end})"


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-300).log()).sum(-1)


def generalized_js(probs: torch.Tensor) -> torch.Tensor:
    """Generalised Jensen–Shannon divergence (nats) of ``K`` distributions per sample, equal
    weights: ``H(mean_k p_k) - mean_k H(p_k)``. ``probs (K, N, C)`` → ``(N,)``, in
    ``[0, log K]``."""
    return (_entropy(probs.mean(0)) - _entropy(probs).mean(0)).clamp_min(0.0)


def geometric_mean_ratio(conf: torch.Tensor) -> torch.Tensor:
    """``GMR_m = conf_m / (∏_k conf_k)^(1/M)`` for positive confidences ``conf (M,)``."""
    log_conf = conf.clamp_min(_FLOOR).log()
    return (log_conf - log_conf.mean()).exp()


def harmonic_mean_improvement(losses: Sequence[torch.Tensor], window: int) -> torch.Tensor | None:
    """HMIR ``(M,)`` from the per-epoch losses ``[L(0), L(1), ...]`` (each ``(M,)``): the
    harmonic mean of the last ``window`` relative improvements, each floored at 1e-6.
    ``None`` with fewer than two epochs."""
    if len(losses) < 2:
        return None
    L = torch.stack(list(losses[-(window + 1):]))
    rel = ((L[:-1] - L[1:]) / L[:-1].clamp_min(_FLOOR)).clamp_min(_FLOOR)
    return rel.shape[0] / (1.0 / rel).sum(0)


class DynCIM:
    """Sample weights, unimodal-loss weights and gate targets of the DynCIM curriculum.

    Args:
        n_samples: training-set size ``N``.
        n_modalities: ``M >= 2``.
        epochs: training epochs ``T`` (for the temperature schedule); updates past epoch
            ``T - 1`` are accepted, the schedule called with ``t >= T`` (the default one
            stays at its last temperature, ``τ(T - 1)``).
        window: ``K``, the epochs over which stability and HMIR are measured.
        temperature: ``(t, T) -> τ``; default ``LinearTemperature(0.1, 1.0)``.
        difficulty_weights: weights of (deviation, consistency, stability) in ``d_n``.
        gamma: strength of the GMR re-weighting of modalities.
        stall: relative loss improvement per epoch at which a modality counts as half
            stalled.
        unimodal_scale: ``α_0``, the base weight of the unimodal loss terms.
        max_unimodal_scale: ``α_max``.
    """

    def __init__(self, n_samples: int, n_modalities: int, epochs: int, *, window: int = 5,
                 temperature=None, difficulty_weights=(1.0, 1.0, 1.0), gamma: float = 1.0,
                 stall: float = 0.01, unimodal_scale: float = 1.0, max_unimodal_scale: float = 4.0):
        n_samples, n_modalities, epochs, window = (
            check_integer(v, name, lo) for name, v, lo in (
                ("n_samples", n_samples, 1), ("n_modalities", n_modalities, 2), ("epochs", epochs, 1),
                ("window", window, 1)))
        dw = tensor_of(difficulty_weights, "difficulty_weights", dtype=torch.float64)
        # Written so that NaN fails (it had passed `dw < 0`, and every sample weight became NaN).
        if dw.shape != (3,) or not (bool(((dw >= 0) & (dw < math.inf)).all()) and 0 < float(dw.sum()) < math.inf):
            raise ValueError("difficulty_weights must be 3 numbers (deviation, consistency, stability), finite "
                             f"and >= 0 with a positive sum; got {difficulty_weights!r}")
        gamma, unimodal_scale, max_unimodal_scale = (
            check_real(v, name, 0) for name, v in (("gamma", gamma), ("unimodal_scale", unimodal_scale),
                                                   ("max_unimodal_scale", max_unimodal_scale)))
        stall = check_real(stall, "stall", 0, lo_open=True)
        if unimodal_scale > max_unimodal_scale:  # α = min(α_max, α_0 (1 + spread)) could never be α_0 again
            raise ValueError(f"unimodal_scale (alpha_0 = {unimodal_scale:g}) must not exceed max_unimodal_scale "
                             f"(alpha_max = {max_unimodal_scale:g})")
        self.n_samples, self.n_modalities, self.epochs, self.window = n_samples, n_modalities, epochs, window
        if temperature is not None and not callable(temperature):  # it failed at the first update()
            raise TypeError(f"temperature must be a schedule (t, T) -> tau > 0, e.g. LinearTemperature(0.1, 1.0), "
                            f"or None; got {temperature!r}")
        self.temperature = LinearTemperature() if temperature is None else temperature
        self.difficulty_weights = dw / dw.sum()
        self.gamma, self.stall = float(gamma), float(stall)
        self.base_unimodal_scale, self.max_unimodal_scale = float(unimodal_scale), float(max_unimodal_scale)
        self.epoch = -1          # index of the last update
        self.losses: list[torch.Tensor] = []   # per-epoch unimodal CE, each (M,)
        self._mean = self._sq = None           # running moments of p_fused(y_n)
        self.difficulty = self.components = self.gmr = self.hmir = None
        self._w = torch.ones(n_samples, dtype=torch.float64, device="cpu")
        self._lam = torch.ones(n_modalities, dtype=torch.float64, device="cpu")
        self._alpha = self.base_unimodal_scale

    def update(self, p_fused, p_modalities, y, *, index=None, epoch=None) -> None:
        """Advance one epoch with predictions on the whole training set.

        ``p_fused (N, C)``: fused softmax output; ``p_modalities``: ``M`` arrays ``(N, C)``
        (or one ``(M, N, C)`` array) of unimodal softmax outputs; ``y (N,)``: labels.
        Tensors or numpy arrays.

        ``index (B,)``: the rows are the predictions of these training samples only (e.g.
        this rank's shard); under ``torch.distributed`` every rank's rows are gathered, and
        together they must cover every sample. Under a process group every rank must call
        this, and every rank then holds rank 0's state.

        ``epoch``: the epoch these predictions close (0, 1, ...), checked to be the next one: a
        second call in one epoch (two hooks) raises instead of counting it twice (its zero loss
        change read as both modalities stalled, HMIR about 4e-6). Without it, every call is the
        next epoch. Under a process group pass it on every rank or on none: it is checked
        against rank 0's epoch, which every rank takes (a checkpoint loaded on rank 0 only).
        """
        # Under a process group a rank's own error is raised on every rank (one raising alone
        # left the others waiting in a collective), and so are index= or epoch= given on some only.
        same_on_every_rank((index is not None, epoch is not None), "whether update() got (index=, epoch=)")
        if epoch is not None:
            given = check_on_every_rank(check_integer, epoch, "epoch", 0)
            upcoming = broadcast_object(self.epoch + 1)  # rank 0's, as the update itself takes rank 0's state
            raise_on_every_rank(None if given == upcoming else ValueError(
                f"update(epoch={given}): the next epoch is {upcoming} (each call advances one epoch; call it "
                "once per epoch)"))
        if index is not None:
            p_fused, p_modalities, y = self._assemble(index, p_fused, p_modalities, y)
        pf, pm, y, tau = check_on_every_rank(self._checked, p_fused, p_modalities, y)
        self.epoch += 1

        # Sample level.
        true_f = prob_of_label(pf, y)
        a = 2.0 / (self.window + 1)
        if self._mean is None:
            self._mean, self._sq = true_f.clone(), true_f ** 2
        else:
            self._mean = (1 - a) * self._mean + a * true_f
            self._sq = (1 - a) * self._sq + a * true_f ** 2
        spread = (self._sq - self._mean ** 2).clamp_min(0.0).sqrt()
        comps = torch.stack([1.0 - true_f,
                             generalized_js(torch.cat([pm, pf[None]])) / math.log(self.n_modalities + 1),
                             (2.0 * spread).clamp(max=1.0)])
        self.components = comps
        self.difficulty = (self.difficulty_weights.to(pf.device)[:, None] * comps).sum(0)
        logw = -(self.difficulty - self.difficulty.min()) / tau
        w = logw.exp()
        self._w = w / w.mean()

        # Modality level.
        true_m = torch.stack([prob_of_label(p, y) for p in pm])          # (M, N)
        self.losses.append(-true_m.clamp_min(1e-12).log().mean(1))
        self.gmr = geometric_mean_ratio(true_m.mean(1))
        self.hmir = harmonic_mean_improvement(self.losses, self.window)
        kappa = (torch.zeros_like(self.gmr) if self.hmir is None
                 else self.stall / (self.stall + self.hmir))
        exponent = torch.where(self.gmr > 1, -self.gamma * kappa,
                               torch.full_like(kappa, -self.gamma))
        lam = self.gmr ** exponent
        self._lam = lam / lam.mean()
        log_gmr = self.gmr.log()
        self._alpha = min(self.max_unimodal_scale,
                          self.base_unimodal_scale * (1.0 + float(log_gmr.max() - log_gmr.min())))
        if is_distributed():
            self._take_rank0_state()

    def _checked(self, p_fused, p_modalities, y):
        """``(p_fused (N, C), p_modalities (M, N, C), y (N,), temperature)``, checked before
        anything changes (a refused schedule left the epoch advanced, and the same epoch could
        not be tried again)."""
        pf = check_probs(p_fused, "p_fused", self.n_samples)
        c = pf.shape[1]
        pm = torch.stack([check_probs(p, f"p_modalities[{m}]", self.n_samples, c).to(pf.device)
                          for m, p in enumerate(self._modalities(p_modalities))])
        y = check_labels(y, self.n_samples, c).to(pf.device)
        tau = float(self.temperature(self.epoch + 1, self.epochs))
        if not tau > 0:
            raise ValueError(f"the temperature schedule returned {tau!r}; it must be > 0")
        return pf, pm, y, tau

    def _modalities(self, p_modalities) -> list:
        """The ``M`` unimodal predictions as a list (an ``(M, N, C)`` array split)."""
        if isinstance(p_modalities, (torch.Tensor, np.ndarray)) and p_modalities.ndim == 3:
            p_modalities = list(p_modalities)
        if len(p_modalities) != self.n_modalities:
            raise ValueError(f"expected {self.n_modalities} unimodal predictions, got {len(p_modalities)}")
        return p_modalities

    def _assemble(self, index, p_fused, p_modalities, y):
        """The whole training set's rows from this rank's (and every other rank's)."""
        # A rank's bad rows (e.g. labels of -100) raise on every rank: alone, it would leave
        # the others waiting in the gather.
        index, *rows = check_on_every_rank(self._rows, index, p_fused, p_modalities, y)
        full = assemble(self.n_samples, index, rows)
        return full[0], full[1:-1], full[-1]

    def _rows(self, index, p_fused, p_modalities, y) -> list[torch.Tensor]:
        """This rank's ``index`` and rows, checked and on one device, to gather."""
        pf = rows_to_gather(p_fused, "p_fused")
        pm = [rows_to_gather(p, f"p_modalities[{m}]").to(pf.device)
              for m, p in enumerate(self._modalities(p_modalities))]
        return [as_labels(index, "index", device=pf.device), pf, *pm, as_labels(y, "y", device=pf.device)]

    _STATE = ("_mean", "_sq", "components", "difficulty", "_w", "gmr", "_lam")

    def _take_rank0_state(self) -> None:
        """Overwrite this rank's state with rank 0's (epoch and loss history included).

        Rank 0's epoch, loss-history length and whether it has an HMIR are broadcast first,
        and every rank then joins the same tensor broadcasts in rank 0's shapes: a rank whose
        history differs (a checkpoint loaded on rank 0 only) would otherwise broadcast
        another number of tensors and hang or abort the collective."""
        epoch, n_losses, has_hmir = broadcast_object((self.epoch, len(self.losses), self.hmir is not None))
        zeros = self._w.new_zeros  # placeholders where this rank's structure differs from rank 0's
        losses = torch.stack(self.losses) if len(self.losses) == n_losses else zeros((n_losses, self.n_modalities))
        hmir = [self.hmir if self.hmir is not None else zeros(self.n_modalities)] if has_hmir else []
        alpha = torch.tensor([self._alpha], dtype=torch.float64, device=self._w.device)
        synced = broadcast_tensors(*(getattr(self, k) for k in self._STATE), losses, alpha, *hmir)
        for k, v in zip(self._STATE, synced):
            setattr(self, k, v)
        losses, alpha, *hmir = synced[len(self._STATE):]
        self.epoch, self.losses, self._alpha = epoch, list(losses), float(alpha)
        self.hmir = hmir[0] if has_hmir else None

    def state_dict(self) -> dict:
        """Everything :meth:`update` accumulates (running moments, loss history, the current
        weights); tensors, numbers and ``None`` only, so ``torch.load(weights_only=True)``
        reads it. The configuration is the constructor's. Under ``torch.distributed`` every
        rank holds the same state: save it on one rank, load it on every rank."""
        state = {k.lstrip("_"): (None if getattr(self, k) is None else getattr(self, k).clone())
                 for k in self._STATE + ("hmir",)}
        state.update(epoch=self.epoch, alpha=self._alpha, losses=[l.clone() for l in self.losses])
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved.

        Under ``torch.distributed`` load it on every rank (e.g. rank 0's file): until the next
        :meth:`update`, which gives every rank rank 0's state, a rank that did not would
        weight its samples with its own, other state."""
        w = state["w"]
        if w.shape != (self.n_samples,) or state["lam"].shape != (self.n_modalities,):
            raise ValueError(f"the checkpoint is for {w.shape[0]} samples and {state['lam'].shape[0]} "
                             f"modalities; this DynCIM has {self.n_samples} and {self.n_modalities}")
        for k in self._STATE + ("hmir",):
            v = state[k.lstrip("_")]
            setattr(self, k, None if v is None else v.clone())
        self.epoch, self._alpha = int(state["epoch"]), float(state["alpha"])
        self.losses = [l.clone() for l in state["losses"]]

    def weights(self) -> torch.Tensor:
        """``(N,)`` sample weights, mean 1 (all 1 before the first update)."""
        return self._w.clone()

    def modality_weights(self) -> torch.Tensor:
        """``(M,)`` unimodal-loss weights ``λ``, mean 1."""
        return self._lam.clone()

    def gate_target(self) -> torch.Tensor:
        """``(M,)`` target of the batch-mean gate (fusion weights), on the simplex."""
        return self._lam / self._lam.sum()

    def unimodal_scale(self) -> float:
        """``α``: overall weight of the unimodal loss terms relative to the fused term."""
        return self._alpha

    def loss_inputs(self, index) -> dict:
        """Keyword arguments for :class:`~fastpid.integrations.dyncim_loss.DynCIMLoss` for
        the batch of training-set indices ``index (B,)``."""
        index = check_indices(index, self.n_samples)
        return {"sample_weights": self._w[index.cpu()], "modality_weights": self.modality_weights(),
                "unimodal_scale": self._alpha, "gate_target": self.gate_target()}
