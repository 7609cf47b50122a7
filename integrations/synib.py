"""SynIB: a synergistic information-bottleneck objective for two-modality fusion.

    loss = CE(fused(z1, z2), y)
         + λ_uni · (CE(head1(z1), y) + CE(head2(z2), y))
         + λ_syn · [ KL(softmax(fused(z̃1, z2)) ‖ U) + KL(softmax(fused(z1, z̃2)) ‖ U) ]

``z̃m`` is modality ``m``'s embedding with the modality withheld and ``U`` the uniform
distribution over the ``C`` classes, so ``KL(p ‖ U) = log C − H(p)`` (nats). The penalty
punishes a confident fused prediction when either modality is missing, which pushes the
fusion head towards evidence that needs both modalities (synergy) instead of the easiest
unimodal shortcut.

Ways to withhold a modality (``mask=``):

* ``"random"``: each feature is replaced, with probability ``p``, by the same feature of
  another sample of the batch (a random derangement);
* ``"zero"``: each feature is set to 0 with probability ``p``;
* ``"noise"``: each feature is replaced, with probability ``p``, by a draw from
  ``N(running mean, running variance)`` of that feature;
* ``"learned"``: ``z̃m = g ⊙ zm + (1 − g) ⊙ zm[perm]`` with a per-feature gate
  ``g ∈ (0, 1)^D`` (persistent across batches, ``perm`` a random derangement of the batch)
  fitted for ``gate_steps`` gradient steps with the model frozen. The gate minimises the
  evidence the modality's own head still finds, ``max(0, log C − CE(head_m(z̃m), y))``
  (zero once the head does no better than chance), plus ``gate_sparsity · mean(1 − g)``
  (mask as little as possible). ``p`` is not used.

State. The running statistics (``"noise"``) and the gate logits (``"learned"``) are
registered buffers, sized on the first batch that needs them: ``.to(device)`` moves them and
``state_dict()`` holds them, together with the state of the loss's random generator (as a
``uint8`` tensor, in the module's extra state). A checkpoint therefore resumes the masks'
random stream exactly, and loads with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .predictions import as_labels, as_tensor, check_batch

__all__ = ["SynIBLoss", "SynIBTerms", "kl_to_uniform", "MASKS"]

MASKS = ("random", "zero", "noise", "learned")

Fusion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Head = Callable[[torch.Tensor], torch.Tensor]


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``KL(softmax(logits) ‖ uniform) = log C − H`` in nats;
    ``logits (B, C)``."""
    logp = F.log_softmax(logits, dim=-1)
    return (logp.exp() * logp).sum(-1).mean() + math.log(logits.shape[-1])


class SynIBTerms(NamedTuple):
    """What :class:`SynIBLoss` returns: ``loss`` (scalar, differentiable; call
    ``terms.loss.backward()``) and its parts (detached scalars, nats): ``fused_ce``,
    ``unimodal_ce`` (sum over the two heads; 0 when no heads were given), ``synergy_kl``
    (sum of the two KL terms; 0 when the penalty is off), plus the ``fused_logits (B, C)``
    of the full input."""

    loss: torch.Tensor
    fused_ce: torch.Tensor
    unimodal_ce: torch.Tensor
    synergy_kl: torch.Tensor
    fused_logits: torch.Tensor

    @property
    def backward(self):
        """Not a tensor: say where the loss is."""
        raise AttributeError("SynIBLoss returns SynIBTerms, a named tuple of the loss and its parts; "
                             "call .loss.backward() (e.g. loss_fn(...).loss.backward())")


def _derangement(n: int, device, generator) -> torch.Tensor:
    """A random permutation of ``range(n)`` with no fixed point (n >= 2)."""
    order = torch.randperm(n, device=device, generator=generator)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)
    return partner


class SynIBLoss(nn.Module):
    """The SynIB objective (see the module docstring).

    Args:
        lambda_uni: weight of the unimodal heads' cross-entropies.
        lambda_syn: weight of the withheld-modality penalty. The default 0.1 is the only
            value of {0.1, 0.5, 1, 2} that raised the XOR-sample accuracy over joint training
            on the synthetic data (every mask, 5 seeds, ``examples/results/synib_sweep.md``);
            larger values lowered it.
        mask: ``"random"``, ``"zero"``, ``"noise"`` or ``"learned"``.
        p: probability that a feature is withheld (``"random"``, ``"zero"``, ``"noise"``).
        off_after_epoch: the penalty is applied only while ``epoch < off_after_epoch``
            (``None``: always).
        momentum: update rate of the running feature statistics used by ``"noise"``.
        gate_steps, gate_lr, gate_sparsity: fitting of the ``"learned"`` gate.
        seed: seed of the loss's own random draws (masks, permutations, noise).

    Call it as ``loss_fn(z1, z2, y, fusion, head1, head2, epoch=None)`` with embeddings
    ``z1 (B, D1)``, ``z2 (B, D2)``, labels ``y (B,)`` (tensor or numpy; integral floats
    accepted), ``fusion(z1, z2) -> (B, C)`` logits and the unimodal heads
    ``head_m(z_m) -> (B, C)`` (heads may be ``None`` when ``lambda_uni == 0`` and
    ``mask != "learned"``). It returns a :class:`SynIBTerms` named tuple; train on its
    ``.loss``. An empty batch raises ``ValueError``.

    Buffers (empty until first needed): ``running_mean{m}``, ``running_var{m}`` (``(D_m,)``,
    ``"noise"``) and ``gate_logit{m}`` (``(D_m,)``, ``"learned"``) for ``m`` = 1, 2.
    """

    def __init__(self, lambda_uni: float = 0.6, lambda_syn: float = 0.1, mask: str = "random",
                 p: float = 0.8, off_after_epoch: int | None = None, *, momentum: float = 0.1,
                 gate_steps: int = 5, gate_lr: float = 0.5, gate_sparsity: float = 0.1, seed: int = 0):
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        if not 0 < p <= 1:
            raise ValueError(f"p must be in (0, 1], got {p!r}")
        if lambda_uni < 0 or lambda_syn < 0:
            raise ValueError(f"lambda_uni and lambda_syn must be >= 0, got {lambda_uni!r}, {lambda_syn!r}")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
        if not isinstance(gate_steps, int) or gate_steps < 1:
            raise ValueError(f"gate_steps must be a positive integer, got {gate_steps!r}")
        self.lambda_uni, self.lambda_syn = float(lambda_uni), float(lambda_syn)
        self.mask, self.p, self.off_after_epoch = mask, float(p), off_after_epoch
        self.momentum = float(momentum)
        self.gate_steps, self.gate_lr, self.gate_sparsity = gate_steps, float(gate_lr), float(gate_sparsity)
        self.seed = seed
        self._gen: torch.Generator | None = None
        for m in (1, 2):
            for name in (f"running_mean{m}", f"running_var{m}", f"gate_logit{m}"):
                self.register_buffer(name, torch.empty(0))

    # ----------------------------------------------------------------- state
    def _buffer(self, name: str, m: int) -> torch.Tensor | None:
        b = getattr(self, f"{name}{m}")
        return b if b.numel() else None

    def _set_buffer(self, name: str, m: int, value: torch.Tensor) -> None:
        setattr(self, f"{name}{m}", value.detach())

    def _generator(self, device) -> torch.Generator:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if self._gen is None:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed)
        elif self._gen.device != device:
            # Moved to another device: continue deterministically from the old stream.
            seed = int(torch.randint(2 ** 62, (1,), generator=self._gen, device=self._gen.device))
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(seed)
        return self._gen

    def get_extra_state(self) -> dict:
        """The random generator's state (``uint8`` tensor) and device, for ``state_dict``."""
        if self._gen is None:
            return {"rng_state": None, "rng_device": None}
        return {"rng_state": self._gen.get_state(), "rng_device": str(self._gen.device)}

    def set_extra_state(self, state: dict) -> None:
        if state["rng_state"] is None:
            self._gen = None
            return
        self._gen = torch.Generator(device=state["rng_device"])
        self._gen.set_state(state["rng_state"])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The buffers are sized lazily: take the checkpoint's shapes before loading.
        for name, buf in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if buf is not None and saved is not None and saved.shape != buf.shape:
                self._buffers[name] = torch.empty(saved.shape, dtype=saved.dtype, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----------------------------------------------------------------- helpers
    def _update_stats(self, m: int, z: torch.Tensor) -> None:
        z = z.detach()
        mean, var = z.mean(0), z.var(0, unbiased=False)
        rm, rv = self._buffer("running_mean", m), self._buffer("running_var", m)
        if rm is not None and rm.shape == mean.shape:
            a = self.momentum
            mean, var = (1 - a) * rm + a * mean, (1 - a) * rv + a * var
        self._set_buffer("running_mean", m, mean)
        self._set_buffer("running_var", m, var)

    def gate(self, m: int) -> torch.Tensor | None:
        """The fitted ``"learned"`` gate of modality ``m`` (1 or 2), ``(D_m,)`` in (0, 1)
        (1 = keep the feature), or ``None`` before the first call."""
        g = self._buffer("gate_logit", m)
        return None if g is None else torch.sigmoid(g)

    def _fit_gate(self, m: int, z: torch.Tensor, y: torch.Tensor, partner: torch.Tensor, head: Head
                  ) -> torch.Tensor:
        logit = self._buffer("gate_logit", m)
        if logit is None or logit.shape != z.shape[1:] or logit.device != z.device:
            logit = torch.zeros(z.shape[1:], device=z.device, dtype=z.dtype)  # g = 0.5: not saturated
        z, other = z.detach(), z.detach()[partner]
        with torch.enable_grad():
            for _ in range(self.gate_steps):
                logit = logit.detach().requires_grad_(True)
                g = torch.sigmoid(logit)
                logits = head(g * z + (1 - g) * other)
                evidence = (math.log(logits.shape[-1]) - F.cross_entropy(logits, y)).clamp_min(0.0)
                objective = evidence + self.gate_sparsity * (1 - g).mean()
                (grad,) = torch.autograd.grad(objective, logit)
                logit = logit - self.gate_lr * torch.sign(grad)   # per-feature signed step
        self._set_buffer("gate_logit", m, logit)
        return torch.sigmoid(logit.detach())

    def withhold(self, z: torch.Tensor, m: int, head: Head | None = None, y: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Modality ``m``'s embedding ``z (B, D)`` with the modality withheld (``z̃m``);
        gradients still flow to the features that are kept. ``mask="learned"`` needs the
        modality's head and the labels ``y (B,)``."""
        if z.dim() != 2 or z.shape[0] < 2:
            raise ValueError(f"embeddings must have shape (B, D) with B >= 2, got {tuple(z.shape)}")
        gen = self._generator(z.device)
        if self.mask == "learned":
            if head is None or y is None:
                raise ValueError("mask='learned' needs the modality's head and the labels y")
            partner = _derangement(z.shape[0], z.device, gen)
            g = self._fit_gate(m, z, y, partner, head)
            return g * z + (1 - g) * z[partner]
        keep = torch.rand(z.shape, device=z.device, generator=gen) >= self.p
        if self.mask == "random":
            fill = z[_derangement(z.shape[0], z.device, gen)]
        elif self.mask == "zero":
            fill = torch.zeros_like(z)
        else:  # noise
            mean, var = self._buffer("running_mean", m), self._buffer("running_var", m)
            if mean is None or mean.shape != z.shape[1:]:
                raise RuntimeError(f"mask='noise' has no running statistics of modality {m} with "
                                   f"{z.shape[1]} features yet; the forward pass collects them")
            fill = mean + var.sqrt() * torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=gen)
        return torch.where(keep, z, fill)

    def penalty_active(self, epoch: int | None) -> bool:
        """Whether the withheld-modality penalty applies at ``epoch``."""
        return self.lambda_syn > 0 and (self.off_after_epoch is None or epoch is None or epoch < self.off_after_epoch)

    # ----------------------------------------------------------------- the loss
    def forward(self, z1: torch.Tensor, z2: torch.Tensor, y, fusion: Fusion,
                head1: Head | None = None, head2: Head | None = None, epoch: int | None = None) -> SynIBTerms:
        z1, z2 = as_tensor(z1, "z1"), as_tensor(z2, "z2")
        y = as_labels(y, "y", device=z1.device)
        if z1.shape[0] != z2.shape[0] or z1.shape[0] != y.shape[0]:
            raise ValueError(f"batch sizes differ: z1 {z1.shape[0]}, z2 {z2.shape[0]}, y {y.shape[0]}")
        check_batch("SynIBLoss's batch (z1, z2, y)", z1)
        fused = fusion(z1, z2)
        fused_ce = F.cross_entropy(fused, y)
        loss = fused_ce
        zero = fused_ce.detach() * 0
        uni = zero
        if self.lambda_uni > 0:
            if head1 is None or head2 is None:
                raise ValueError("lambda_uni > 0 needs the unimodal heads head1 and head2")
            uni = F.cross_entropy(head1(z1), y) + F.cross_entropy(head2(z2), y)
            loss = loss + self.lambda_uni * uni
        syn = zero
        if self.penalty_active(epoch):
            if self.mask == "noise" and (self.training or self._buffer("running_mean", 1) is None):
                self._update_stats(1, z1)
                self._update_stats(2, z2)
            syn = (kl_to_uniform(fusion(self.withhold(z1, 1, head1, y), z2))
                   + kl_to_uniform(fusion(z1, self.withhold(z2, 2, head2, y))))
            loss = loss + self.lambda_syn * syn
        return SynIBTerms(loss, fused_ce.detach(), uni.detach(), syn.detach(), fused)
