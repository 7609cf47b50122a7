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

Variants (``variant=``). ``"integration"`` (default) is the objective above.
``"repository"`` follows the public SynIB code (the ``FusionIBModel_Mask`` model of the
SynIB repository on its multi-layer-perceptron fusion path):

    loss = CE(fused(z1, z2), y)
         + λ_uni · (CE(head1(sg(z1)), y) + CE(head2(sg(z2)), y))
         + w_mce · [ CE(fused(r(z1), z2), y) + CE(fused(z1, r(z2)), y) ]
         + λ_syn · [ KL_N(sg(z1), z̃2) + KL_N(z̃1, sg(z2)) ]

* the unimodal heads read detached embeddings (``sg``: stop-gradient), so they are linear
  probes trained online and give no gradient to the encoders (``detach_heads``);
* ``r(zm)``: each feature replaced, with probability ``masked_ce_p``, by the same feature of
  another sample of the batch (a random permutation); the cross-entropy of the fused
  prediction on these randomly masked inputs is trained with weight ``masked_ce``, and
  reaches the encoders;
* ``z̃m``: a *per-example* learned mask (``mask="learned_example"``): a gate
  ``g = sigmoid(ℓ) ∈ (0, 1)^{B×D}``, ``ℓ`` starting at 1 for every sample and feature,
  ``z̃m = g ⊙ sg(zm) + (1 − g) ⊙ ε`` with ``ε ~ N(running mean, noise_std² · running
  variance)`` of each feature (running statistics updated at rate ``momentum``, 0.01 as
  the repository's moving averages), fitted afresh on every batch for ``gate_steps`` Adam steps
  (learning rate ``gate_lr``, gradient norm clipped to 1) with the model frozen, to
  *maximise* the modality's head's cross-entropy while masking little:
  ``−CE(head_m(z̃m), y) + gate_sparsity · mean(1 − g)``;
* ``KL_N`` is a Gaussian (variational-bottleneck) KL instead of the KL to uniform: the fused
  logits ``μ`` of the masked input are the mean, a learned linear layer (``logvar_head``)
  gives the log-variance ``v`` from the fusion's features of the same input, and
  ``KL(N(μ, diag e^v) ‖ N(0, I)) = ½ Σ_c (e^{v_c} + μ_c² − 1 − v_c)``, averaged over the
  batch (``penalty="gaussian"``). It pulls the masked prediction's logits towards 0 (the
  uniform prediction), the learned variance towards 1;
* the penalty's inputs are detached from the encoders (``detach_penalty``): the penalty
  trains the fusion head and ``logvar_head`` only.

For the Gaussian penalty ``fusion(a, b)`` may return ``(logits, features)``; the log-variance
head then reads ``features`` (the repository reads its fusion trunk's hidden layer) and
``kl_features`` is their width. A fusion that returns only logits gives the concatenation
``[a, b]`` to the head instead (``kl_features = D1 + D2``). ``logvar_head`` is a submodule:
give the loss's :meth:`parameters` to the optimizer too. Each repository choice is also a
keyword option, so the two variants can be mixed; the repository's other parts (layer
normalisation of the embeddings, a fusion trunk of its own) belong to its model, not to the
loss, and are not reproduced.

Remaining differences of ``variant="repository"`` from the public code:

* ``off_after_epoch=E`` applies the penalty and the masked cross-entropy while
  ``epoch < E``: they are off from epoch ``E`` on. The public code's ``ending_epoch=E``
  keeps its SynIB branch (penalty and masked cross-entropy) on while ``epoch <= E``, off
  from ``E + 1`` on; its ``ending_epoch=E`` is ``off_after_epoch=E + 1`` here.
* With ``lambda_syn=0`` the masked cross-entropy stays on (weight ``masked_ce``); the
  public code skips the whole SynIB branch, masked cross-entropy included, when its synergy
  weight is 0. Pass ``masked_ce=0`` as well for that.
* The running feature statistics are updated once per training batch (both modalities',
  before the masks are fitted). The public code updates each modality's twice per batch
  (when it draws the random masks and again when it fits the learned mask), so at the
  same rate (0.01) its statistics follow the embeddings about twice as fast per batch.

State. The running statistics (``"noise"``, ``"learned_example"``) and the gate logits
(``"learned"``) are registered buffers, sized on the first batch that needs them:
``.to(device)`` moves them and ``state_dict()`` holds them, together with the state of the
loss's random generator (as a ``uint8`` tensor, in the module's extra state). A checkpoint
therefore resumes the masks' random stream exactly when the loss is on the device the
generator was saved on, and loads with ``torch.load(..., weights_only=True)``; on another
device (say a CUDA run resumed on a CPU-only machine) the generator is reseeded on the
loss's device from the saved state: deterministic, but other draws. The Gaussian
penalty's ``logvar_head`` weights are parameters in the same state dict. The per-example
gates of ``"learned_example"`` are fitted afresh on every batch and are not state. The
running statistics are kept in float32 (float64 for float64 embeddings), as ``BatchNorm``
keeps its own: in bfloat16 the small ``momentum`` updates would be rounded away. The
running variance blends the batches' own (biased) variances, (n - 1) / n of the features'
for batches of n: micro-batches of 8 of features of variance 4 end near 3.5, of 2 near 2, of
1 at 0 (use batches of 16 or more, or ``mask="random"``); a batch's non-finite features (an overflow
under float16 autocast, a step ``GradScaler`` skips) leave their statistics as they were.

Distributed training. Nothing is synchronised under ``torch.distributed``: each rank's
running statistics follow the embeddings of its own batches and its ``"learned"`` gates are
fitted on them, so they differ between ranks (as ``BatchNorm``'s statistics do without
``SyncBatchNorm``), and a checkpoint saved on rank 0 carries rank 0's. Every rank built
with the same ``seed`` draws the same masks, permutations and noise; pass
``seed=base_seed + rank`` for different draws on each rank.

Evaluation. The learned gates are fitted by gradient steps of their own (with the model
frozen), also when the caller computes no gradient: the loss is the same under
``torch.no_grad()`` and ``torch.inference_mode()`` (PyTorch Lightning validates under the
latter). In evaluation mode ``"learned"`` uses its gate as trained and fits a temporary one
only before the first training step, as ``"noise"`` uses its statistics as trained; the
per-example gates of ``"learned_example"`` are fitted on every batch, in evaluation too,
as they are part of the penalty's definition. Evaluation draws its masks, permutations
and noise from a stream of its own, restarted by every ``eval()``: each validation pass
draws the same ones, and validating leaves the training stream (and so training) as it was.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fastpid._caller import caller_level
from fastpid._validate import check_integer, check_real

from .cluster import check_seed
from .predictions import ArrayLike, as_labels, as_tensor, check_batch, check_classes, check_logits

__all__ = ["SynIBLoss", "SynIBTerms", "kl_to_uniform", "gaussian_kl", "MASKS", "PENALTIES", "VARIANTS"]

MASKS = ("random", "zero", "noise", "learned", "learned_example")
#: Values of ``SynIBLoss(penalty=...)``.
PENALTIES = ("uniform", "gaussian")
#: Each variant's choices for the options left at ``None``.
VARIANTS = {
    "integration": dict(lambda_uni=0.6, mask="random", p=0.8, penalty="uniform", detach_heads=False,
                        detach_penalty=False, masked_ce=0.0, masked_ce_p=0.5, momentum=0.1, gate_steps=5,
                        gate_lr=0.5, gate_sparsity=0.1),
    "repository": dict(lambda_uni=1.0, mask="learned_example", p=0.8, penalty="gaussian", detach_heads=True,
                       detach_penalty=True, masked_ce=1.0, masked_ce_p=0.5, momentum=0.01, gate_steps=20,
                       gate_lr=0.1, gate_sparsity=1.0),
}

Fusion = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]
Head = Callable[[torch.Tensor], torch.Tensor]


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _batch_of_rows(x, name: str) -> None:
    """Refuse ``x`` unless it is a floating tensor ``(B, C)`` with ``B, C >= 1`` (shape checks
    only, no read from the device): a 0-d tensor raised an IndexError, a ``(B, 0)`` one
    "math domain error", numpy input an AttributeError, and an empty batch gave NaN."""
    check_logits(x, name)
    if x.dim() != 2 or 0 in x.shape:
        raise ValueError(f"{name} must have shape (B, C) with B, C >= 1, got {tuple(x.shape)}")


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``KL(softmax(logits) ‖ uniform) = log C − H`` in nats;
    ``logits (B, C)``, computed in float32 at least (in bfloat16 it came out negative, in steps
    of 2⁻⁶ nats near 0, where the penalty drives the fused head). A class masked out with a
    ``-inf`` logit has ``p log p = 0`` (``0 · (−inf)`` had made the loss NaN), and no gradient
    reaches it."""
    _batch_of_rows(logits, "logits")
    logp = F.log_softmax(_at_least_float32(logits), dim=-1)
    finite_logp = logp.masked_fill(logp == -math.inf, 0.0)
    return (logp.exp() * finite_logp).sum(-1).mean() + math.log(logits.shape[-1])


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``KL(N(mean, diag exp(logvar)) ‖ N(0, I))``
    ``= ½ Σ_c (exp(logvar_c) + mean_c² − 1 − logvar_c)`` in nats; ``mean``, ``logvar (B, C)``;
    computed in float32 at least, like :func:`kl_to_uniform`."""
    _batch_of_rows(mean, "mean")
    _batch_of_rows(logvar, "logvar")
    if mean.shape != logvar.shape:  # (4, 3) against (1, 3) had been broadcast
        raise ValueError(f"mean and logvar must have the same shape (B, C), got {tuple(mean.shape)} and "
                         f"{tuple(logvar.shape)}")
    mean, logvar = _at_least_float32(mean), _at_least_float32(logvar)
    return 0.5 * (logvar.exp() + mean.pow(2) - 1 - logvar).sum(-1).mean()


class SynIBTerms(NamedTuple):
    """What :class:`SynIBLoss` returns: ``loss`` (scalar, differentiable; call
    ``terms.loss.backward()``) and its parts (detached scalars, nats): ``fused_ce``,
    ``unimodal_ce`` (sum over the two heads; 0 when ``lambda_uni == 0``), ``synergy_kl``
    (sum of the two KL terms, to uniform or Gaussian; 0 when the penalty is off) and
    ``masked_ce`` (sum of the two cross-entropies on randomly masked inputs; 0 unless
    ``masked_ce > 0``); and the ``fused_logits (B, C)`` of the full input (not detached)."""

    loss: torch.Tensor
    fused_ce: torch.Tensor
    unimodal_ce: torch.Tensor
    synergy_kl: torch.Tensor
    fused_logits: torch.Tensor
    masked_ce: torch.Tensor | None = None

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


def _check_modality(m) -> None:
    """Refuse a modality number other than 1 or 2 (``gate(3)`` raised an AttributeError from
    inside, ``withhold(z, 3)`` kept statistics under a third modality)."""
    if isinstance(m, bool) or m not in (1, 2):
        raise ValueError(f"m must be the modality, 1 or 2, got {m!r}")


def _fused(fusion: Fusion, a: torch.Tensor, b: torch.Tensor):
    """``(logits, features)`` of ``fusion(a, b)``; ``features`` is ``None`` when the fusion
    returns logits only."""
    out = fusion(a, b)
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(f"fusion(a, b) must return logits or (logits, features), got {len(out)} values")
        out, features = out
    else:
        features = None
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"fusion(a, b) must return logits (a tensor) or (logits, features), got "
                        f"{type(out).__name__} (wrap a fusion that returns a dict or an object: "
                        "lambda a, b: fusion(a, b)['logits'])")
    if out.dim() != 2 or out.shape[0] != a.shape[0]:  # a (B,) output had failed in cross_entropy
        raise ValueError(f"fusion(a, b) must return logits of shape (B, C) = ({a.shape[0]}, C), got "
                         f"{tuple(out.shape)}")
    return out, features


def _top_label(y: torch.Tensor) -> int:
    """The largest label of ``y`` (-1 where it has none or no values: meta), read once per batch
    (on a GPU each read waits for the device)."""
    return int(y.max()) if y.numel() and not y.is_meta else -1


def _head_ce(logits: torch.Tensor, y: torch.Tensor, top: int, m: int, classes: int | None = None) -> torch.Tensor:
    """Modality ``m``'s head's cross-entropy, its labels (the largest ``top``) checked against
    the head's own classes (the fused logits' check does not cover a head with fewer), and its
    classes against the fused logits' ``classes`` where given."""
    if top >= logits.shape[-1]:
        check_classes(y, logits.shape[-1], f"y (for head{m}'s logits)")
    if classes is not None and (logits.dim() != 2 or logits.shape[-1] != classes):
        # A head of other classes whose count the labels happened to fit trained silently.
        raise ValueError(f"head{m} returned logits of shape {tuple(logits.shape)}; the fusion's are "
                         f"(B, {classes}): every head must score the same classes")
    return F.cross_entropy(logits, y)


def _normal(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a normal copy of it if it is an inference tensor (made under
    ``torch.inference_mode()``): autograd cannot save those for backward, and
    ``load_state_dict`` cannot copy into them."""
    if not t.is_inference():
        return t
    with torch.inference_mode(False):
        return t.clone()


@contextlib.contextmanager
def _buffers_kept(head):
    """Run the block, then put back ``head``'s buffers (a ``BatchNorm``'s running statistics)
    as they were: a gate fit calls the head ``gate_steps`` times on masked embeddings, which
    a head in training mode would take into its statistics (a repository-variant run of 50
    batches left a head's running variance 24 % low), and the penalty and the masked
    cross-entropy call the fusion on masked inputs (a BatchNorm's running mean of inputs
    around 3 ended at 2.2 after one step). Heads and fusions that are not modules are left
    as they are. Written through ``.data``: the head's own forward pass may have saved these
    buffers for the backward pass, which refuses a buffer whose version moved (the values
    put back are the ones it saved)."""
    saved = [(b, b.detach().clone()) for b in head.buffers()] if isinstance(head, nn.Module) else []
    try:
        yield
    finally:
        with torch.inference_mode(False), torch.no_grad():
            for b, v in saved:
                b.data.copy_(v)


def _positive_int(name, v):
    return check_integer(v, name, 1, expected="a positive integer")


def _seed_of(data: bytes) -> int:
    """A generator seed (< 2**62) derived from ``data``, the same on every machine."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") % 2 ** 62


class SynIBLoss(nn.Module):
    """The SynIB objective (see the module docstring).

    Options left at ``None`` take the value of ``variant`` (:data:`VARIANTS`):

    ==================  ================  =================
    option              ``integration``   ``repository``
    ==================  ================  =================
    ``lambda_uni``      0.6               1.0
    ``mask``            ``"random"``      ``"learned_example"``
    ``p``               0.8               0.8
    ``penalty``         ``"uniform"``     ``"gaussian"``
    ``detach_heads``    False             True
    ``detach_penalty``  False             True
    ``masked_ce``       0                 1
    ``masked_ce_p``     0.5               0.5
    ``momentum``        0.1               0.01
    ``gate_steps``      5                 20
    ``gate_lr``         0.5               0.1
    ``gate_sparsity``   0.1               1.0
    ==================  ================  =================

    Args:
        lambda_uni: weight of the unimodal heads' cross-entropies.
        lambda_syn: weight of the withheld-modality penalty. Of {0.1, 0.5, 1, 2}, 0.1 (the
            default) is the only value whose mean XOR-sample accuracy rose over joint training
            with 15 % XOR samples and batches of 128 (integration variant, every mask, 5
            seeds, ``examples/results/synib_sweep.md``: +2.4 to +4.8 points over the masks,
            each paired 95 % interval reaching below 0); larger values lowered it there. With
            30 % XOR samples and batches of 64, 0.5 and 1 raised it too (and 2 with the zero
            mask), the noise mask the most (+5.8 [2.7, 8.8] and +6.0 [3.8, 8.2] points against
            +4.1 [2.1, 6.0] at 0.1; the sweep chose noise at 0.5 there).
        mask: how the penalty withholds a modality: ``"random"``, ``"zero"``, ``"noise"``,
            ``"learned"`` (one gate per feature, kept across batches and refitted only in
            training mode) or ``"learned_example"`` (one gate per sample and feature, fitted
            on each batch).
        p: probability that a feature is withheld (``"random"``, ``"zero"``, ``"noise"``);
            ``None``: the variant's value (0.8).
        off_after_epoch: the penalty and the masked cross-entropy are applied only while
            ``epoch < off_after_epoch`` (``None``: always); a call without ``epoch`` is
            then a ``ValueError``.
        variant: ``"integration"`` or ``"repository"``: the defaults of the other options.
        penalty: ``"uniform"`` (KL to the uniform prediction) or ``"gaussian"`` (the
            variational KL of the module docstring; needs ``num_classes`` and
            ``kl_features``).
        detach_heads: the heads read detached embeddings (probes: no encoder gradient).
        detach_penalty: the penalty's inputs are detached (it trains the fusion only).
        masked_ce: weight of the fused cross-entropy on randomly masked inputs (``>= 0``).
        masked_ce_p: probability that ``masked_ce``'s random mask replaces a feature;
            ``None``: the variant's value (0.5).
        num_classes, kl_features: output and input width of ``logvar_head``
            (``penalty="gaussian"``).
        momentum: update rate of the running feature statistics (``"noise"``,
            ``"learned_example"``); the first training batch sets them (an evaluation
            before any training draws from its own batch and keeps nothing).
        gate_steps, gate_lr, gate_sparsity: fitting of the learned gates (``"learned"``:
            signed steps of size ``gate_lr``; ``"learned_example"``: Adam steps).
        noise_std: scale of the noise that fills the masked features of
            ``"learned_example"``, in running standard deviations.
        seed: seed of the loss's own random draws (masks, permutations, noise); the same
            on every rank of a distributed run gives every rank the same draws.

    Call it as ``loss_fn(z1, z2, y, fusion, head1, head2, epoch=None)`` with embeddings
    ``z1 (B, D1)``, ``z2 (B, D2)``, labels ``y (B,)`` (tensor or numpy; integral floats
    accepted), ``fusion(z1, z2) -> (B, C)`` logits (or ``(logits, features)``) and the
    unimodal heads ``head_m(z_m) -> (B, C)`` (heads may be ``None`` when
    ``lambda_uni == 0`` and the mask is not learned). It returns a :class:`SynIBTerms`
    named tuple; train on its ``.loss``. An empty batch raises ``ValueError``; a batch of one
    gets no synergy penalty with ``"random"`` and ``"learned"`` (they fill from another
    sample: 0, with a one-time ``UserWarning``; ``DataLoader(drop_last=True)`` avoids it).

    The fusion's and heads' own buffers (a ``BatchNorm``'s running statistics) follow the
    real inputs only: those the loss calls them with on masked or withheld inputs are put
    back afterwards (where ``fusion`` and the heads are modules; a function wrapping one
    is called as it is).

    Buffers (empty until first needed): ``running_mean{m}``, ``running_var{m}`` (``(D_m,)``,
    ``"noise"`` and ``"learned_example"``) and ``gate_logit{m}`` (``(D_m,)``, ``"learned"``)
    for ``m`` = 1, 2. Submodule: ``logvar_head`` (``penalty="gaussian"``; else ``None``).
    """

    #: The buffers sized on first use, and to a checkpoint's shapes on loading (empty until
    #: then): a snapshot's check (ECSAsyncController) accepts other shapes of these.
    _sized_on_load = tuple(f"{name}{m}" for m in (1, 2) for name in ("running_mean", "running_var", "gate_logit"))

    def __init__(self, lambda_uni: float | None = None, lambda_syn: float = 0.1, mask: str | None = None,
                 p: float | None = None, off_after_epoch: int | None = None, *, variant: str = "integration",
                 penalty: str | None = None, detach_heads: bool | None = None, detach_penalty: bool | None = None,
                 masked_ce: float | None = None, masked_ce_p: float | None = None, num_classes: int | None = None,
                 kl_features: int | None = None, momentum: float | None = None, gate_steps: int | None = None,
                 gate_lr: float | None = None, gate_sparsity: float | None = None, noise_std: float = 1.0,
                 seed: int = 0):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
        given = dict(lambda_uni=lambda_uni, mask=mask, p=p, penalty=penalty, detach_heads=detach_heads,
                     detach_penalty=detach_penalty, masked_ce=masked_ce, masked_ce_p=masked_ce_p,
                     momentum=momentum, gate_steps=gate_steps, gate_lr=gate_lr, gate_sparsity=gate_sparsity)
        o = {k: VARIANTS[variant][k] if v is None else v for k, v in given.items()}
        if o["mask"] not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {o['mask']!r}")
        if o["penalty"] not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {o['penalty']!r}")
        for name in ("p", "masked_ce_p", "momentum"):
            o[name] = check_real(o[name], name, 0, 1, lo_open=True)
        for name in ("lambda_uni", "masked_ce", "gate_sparsity"):
            o[name] = check_real(o[name], name, 0)
        o["gate_lr"] = check_real(o["gate_lr"], "gate_lr", 0, lo_open=True)
        lambda_syn = check_real(lambda_syn, "lambda_syn", 0)
        noise_std = check_real(noise_std, "noise_std", 0, lo_open=True)
        o["gate_steps"] = _positive_int("gate_steps", o["gate_steps"])
        if off_after_epoch is not None:
            off_after_epoch = check_integer(off_after_epoch, "off_after_epoch", 0, expected="an epoch >= 0 or None")
        for name in ("detach_heads", "detach_penalty"):
            if not isinstance(o[name], bool):
                raise TypeError(f"{name} must be True or False, got {o[name]!r}")
        self.variant = variant
        self.lambda_uni, self.lambda_syn = float(o["lambda_uni"]), float(lambda_syn)
        self.mask, self.p, self.off_after_epoch = o["mask"], float(o["p"]), off_after_epoch
        self.penalty, self.detach_heads, self.detach_penalty = o["penalty"], o["detach_heads"], o["detach_penalty"]
        self.masked_ce, self.masked_ce_p = float(o["masked_ce"]), float(o["masked_ce_p"])
        self.momentum = float(o["momentum"])
        self.gate_steps, self.gate_lr = o["gate_steps"], float(o["gate_lr"])
        self.gate_sparsity = float(o["gate_sparsity"])
        self.noise_std = float(noise_std)
        self.seed = check_seed(seed)
        # Checked whatever the penalty (0 or 3.5 had been taken where the uniform one ignores them).
        num_classes, kl_features = (None if v is None else _positive_int(name, v)
                                    for name, v in (("num_classes", num_classes), ("kl_features", kl_features)))
        self.logvar_head: nn.Linear | None = None
        if self.penalty == "gaussian":
            if num_classes is None or kl_features is None:
                raise ValueError("penalty='gaussian' needs num_classes and kl_features (the width of the "
                                 "features its log-variance head reads)")
            self.logvar_head = nn.Linear(kl_features, num_classes)
        self._gen: torch.Generator | None = None
        self._eval_gen: torch.Generator | None = None  # evaluation's own stream (_generator)
        self._last_gates: dict = {}
        self._warned_alone = False
        for name in self._sized_on_load:
            self.register_buffer(name, torch.empty(0))

    def extra_repr(self) -> str:
        return (f"variant={self.variant!r}, lambda_uni={self.lambda_uni}, lambda_syn={self.lambda_syn}, "
                f"mask={self.mask!r}, penalty={self.penalty!r}, masked_ce={self.masked_ce}")

    # ----------------------------------------------------------------- state
    def _buffer(self, name: str, m: int) -> torch.Tensor | None:
        b = getattr(self, f"{name}{m}")
        return b if b.numel() else None

    def _set_buffer(self, name: str, m: int, value: torch.Tensor) -> None:
        setattr(self, f"{name}{m}", _normal(value.detach()))

    def train(self, mode: bool = True) -> "SynIBLoss":
        if not mode:  # each evaluation pass draws the same masks (_generator)
            self._eval_gen = None
        return super().train(mode)

    def _generator(self, device) -> torch.Generator:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if not self.training:
            # Evaluation draws from a stream of its own, restarted by eval(), so that how often
            # a model is validated does not change its training (the training stream had
            # advanced with every validation batch).
            if self._eval_gen is None or self._eval_gen.device != device:
                self._eval_gen = torch.Generator(device=device)
                self._eval_gen.manual_seed(_seed_of(f"evaluation {self.seed}".encode()))
            return self._eval_gen
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
        rng_state = state["rng_state"].cpu()  # generators take their state on the CPU (map_location)
        device = self.running_mean1.device  # the loss's device: its buffers follow .to()
        self._gen = torch.Generator(device=device)
        if torch.device(state["rng_device"]) == device:
            self._gen.set_state(rng_state)
        else:
            # The saved device may not exist here (a CUDA checkpoint on a CPU-only machine):
            # continue deterministically from a seed taken from the saved state, as
            # _generator does on a device change.
            self._gen.manual_seed(_seed_of(rng_state.numpy().tobytes()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The buffers are sized lazily: take the checkpoint's shapes before loading.
        for name, buf in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if buf is not None and saved is not None and saved.shape != buf.shape:
                self._buffers[name] = torch.empty(saved.shape, dtype=saved.dtype, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----------------------------------------------------------------- helpers
    def _update_stats(self, m: int, z: torch.Tensor) -> None:
        # In float32 at least, as BatchNorm keeps them: in bfloat16 an update of 1% of the
        # running value is rounded away and the statistics stop tracking. The variance is the
        # batches' own (biased), as the committed experiments ran. A feature that is not
        # finite in the batch (an overflow under float16 autocast, a step GradScaler then
        # skips) leaves its statistics as they were: blended in, one such batch made every
        # later loss NaN.
        z = z.detach().to(torch.promote_types(z.dtype, torch.float32))
        mean, var = z.mean(0), z.var(0, unbiased=False)
        rm, rv = self._buffer("running_mean", m), self._buffer("running_var", m)
        if rm is not None and rm.shape == mean.shape:
            a = self.momentum
            # A running value that is not finite (a first batch's) takes the batch's own.
            mean = torch.where(mean.isfinite(), torch.where(rm.isfinite(), (1 - a) * rm + a * mean, mean), rm)
            var = torch.where(var.isfinite(), torch.where(rv.isfinite(), (1 - a) * rv + a * var, var), rv)
        self._set_buffer("running_mean", m, mean)
        self._set_buffer("running_var", m, var)

    def _clear_stats(self) -> None:
        device = self.running_mean1.device
        with torch.inference_mode(False):  # an inference tensor here would break load_state_dict
            for name in ("running_mean", "running_var"):
                for m in (1, 2):
                    setattr(self, f"{name}{m}", torch.empty(0, device=device))

    def _noise(self, m: int, z: torch.Tensor, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
        """Draws ``(B, D)`` of ``N(running mean, scale² · running variance)`` of modality ``m``."""
        mean, var = self._buffer("running_mean", m), self._buffer("running_var", m)
        if mean is None or mean.shape != z.shape[1:]:
            raise RuntimeError(f"mask={self.mask!r} has no running statistics of modality {m} with "
                               f"{z.shape[1]} features yet; the forward pass collects them")
        noise = torch.randn(z.shape, device=z.device, dtype=mean.dtype, generator=gen)
        return (mean + scale * var.sqrt() * noise).to(z.dtype)

    def gate(self, m: int) -> torch.Tensor | None:
        """The fitted gate of modality ``m`` (1 or 2), in (0, 1) (1 = keep the feature), or
        ``None`` before the first call: the persistent ``(D_m,)`` gate of ``"learned"``, or
        the ``(B, D_m)`` per-example gate of the last batch for ``"learned_example"``."""
        _check_modality(m)
        if self.mask == "learned_example":
            return self._last_gates.get(m)
        g = self._buffer("gate_logit", m)
        return None if g is None else torch.sigmoid(g)

    def _fit_gate(self, m: int, z: torch.Tensor, y: torch.Tensor, partner: torch.Tensor, head: Head,
                  classes: int | None) -> torch.Tensor:
        logit = self._buffer("gate_logit", m)
        fitted = logit is not None and logit.shape == z.shape[1:] and logit.device == z.device
        if fitted and not self.training:  # evaluation uses the gate as trained, as "noise" its statistics
            return torch.sigmoid(logit)
        z, y = _normal(z.detach()), _normal(y)
        top = _top_label(y)
        # The fit needs autograd even where the caller's loss does not; enable_grad alone
        # does not leave inference mode.
        with torch.inference_mode(False), torch.enable_grad(), _buffers_kept(head):
            if not fitted:
                logit = torch.zeros(z.shape[1:], device=z.device, dtype=z.dtype)  # g = 0.5: not saturated
            other = z[partner]
            for _ in range(self.gate_steps):
                logit = logit.detach().requires_grad_(True)
                g = torch.sigmoid(logit)
                logits = head(g * z + (1 - g) * other)
                evidence = (math.log(logits.shape[-1]) - _head_ce(logits, y, top, m, classes)).clamp_min(0.0)
                objective = evidence + self.gate_sparsity * (1 - g).mean()
                (grad,) = torch.autograd.grad(objective, logit)
                logit = logit - self.gate_lr * torch.sign(grad)   # per-feature signed step
        if self.training:
            self._set_buffer("gate_logit", m, logit.detach())
        return torch.sigmoid(logit.detach())

    def _fit_example_gate(self, m: int, z: torch.Tensor, y: torch.Tensor, head: Head,
                          gen: torch.Generator, classes: int | None) -> torch.Tensor:
        """The per-example gate ``(B, D)`` of ``"learned_example"``: Adam on the gate logits
        (first-moment rate 0.9, second 0.999), the gradient's norm clipped to 1, minimising
        ``−CE(head(g ⊙ z + (1 − g) ⊙ ε), y) + gate_sparsity · mean(1 − g)``, a fresh ``ε``
        every step; the head's parameters get no gradient."""
        z, y = _normal(z.detach()), _normal(y)
        top = _top_label(y)
        b1, b2, eps = 0.9, 0.999, 1e-8
        # The gate and Adam's moments in float32 at least: in float16 eps rounds to 0, and a
        # gradient entry that underflowed to 0 stepped by 0 / 0 (every float16 loss was NaN).
        work = torch.promote_types(z.dtype, torch.float32)
        with torch.inference_mode(False), torch.enable_grad(), _buffers_kept(head):  # as in _fit_gate
            logit = torch.ones_like(z, dtype=work)
            m1, m2 = torch.zeros_like(logit), torch.zeros_like(logit)
            for t in range(1, self.gate_steps + 1):
                logit = logit.detach().requires_grad_(True)
                g = torch.sigmoid(logit)
                masked = (g * z + (1 - g) * self._noise(m, z, gen, self.noise_std)).to(z.dtype)
                objective = -_head_ce(head(masked), y, top, m, classes) + self.gate_sparsity * (1 - g).mean()
                (grad,) = torch.autograd.grad(objective, logit)
                norm = grad.norm()
                if norm > 1.0:
                    grad = grad / norm
                m1 = b1 * m1 + (1 - b1) * grad
                m2 = b2 * m2 + (1 - b2) * grad * grad
                step = (m1 / (1 - b1 ** t)) / ((m2 / (1 - b2 ** t)).sqrt() + eps)
                logit = logit.detach() - self.gate_lr * step
        g = torch.sigmoid(logit.detach()).to(z.dtype)
        self._last_gates[m] = g
        return g

    def withhold(self, z: torch.Tensor, m: int, head: Head | None = None, y: torch.Tensor | None = None, *,
                 classes: int | None = None) -> torch.Tensor:
        """Modality ``m``'s embedding ``z (B, D)`` with the modality withheld (``z̃m``);
        gradients still flow to the features that are kept (``"learned_example"``: none, its
        input is detached). The learned masks need the modality's head and the labels
        ``y (B,)``; ``"noise"`` and ``"learned_example"`` the running statistics. ``classes``:
        the fusion's class count, which the head's logits must have (``forward`` passes it)."""
        _check_modality(m)
        least = 2 if self.mask in ("random", "learned") else 1  # these fill from another sample
        if z.dim() != 2 or z.shape[0] < least:
            raise ValueError(f"mask={self.mask!r} needs embeddings of shape (B, D) with B >= {least}, "
                             f"got {tuple(z.shape)}")
        gen = self._generator(z.device)
        if self.mask in ("learned", "learned_example") and (head is None or y is None):
            raise ValueError(f"mask={self.mask!r} needs the modality's head and the labels y")
        if self.mask == "learned_example":
            g = self._fit_example_gate(m, z, y, head, gen, classes)
            return g * z.detach() + (1 - g) * self._noise(m, z, gen, self.noise_std)
        if self.mask == "learned":
            partner = _derangement(z.shape[0], z.device, gen)
            g = self._fit_gate(m, z, y, partner, head, classes)
            return g * z + (1 - g) * z[partner]
        # float32 draws whatever torch's default dtype (a float64 default had drawn other masks
        # from the same seed).
        keep = torch.rand(z.shape, device=z.device, dtype=torch.float32, generator=gen) >= self.p
        if self.mask == "random":
            fill = z[_derangement(z.shape[0], z.device, gen)]
        elif self.mask == "zero":
            fill = torch.zeros_like(z)
        else:  # noise
            fill = self._noise(m, z, gen)
        return torch.where(keep, z, fill)

    def random_mask(self, z: torch.Tensor) -> torch.Tensor:
        """``z (B, D)`` with each feature replaced, with probability ``masked_ce_p``, by the
        same feature of the sample a random permutation of the batch assigns (the masked
        cross-entropy's input; gradients flow to every entry used)."""
        gen = self._generator(z.device)
        replace = torch.rand(z.shape, device=z.device, dtype=torch.float32, generator=gen) < self.masked_ce_p
        order = torch.randperm(z.shape[0], device=z.device, generator=gen)
        return torch.where(replace, z[order], z)

    def penalty_active(self, epoch: float | None) -> bool:
        """Whether the withheld-modality penalty applies at ``epoch``."""
        return self.lambda_syn > 0 and self._in_time(epoch)

    def _in_time(self, epoch: float | None) -> bool:
        if epoch is not None:  # a fractional epoch (a trainer's progress, 2.5) is one too
            epoch = check_real(epoch, "epoch", 0)
        if self.off_after_epoch is None:
            return True
        if epoch is None:  # the penalty had stayed on without a word
            raise ValueError(f"off_after_epoch={self.off_after_epoch} needs the epoch: pass epoch= to the loss "
                             "(or build it with off_after_epoch=None)")
        return epoch < self.off_after_epoch

    def _kl(self, fusion: Fusion, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        logits, feats = _fused(fusion, a, b)
        if self.penalty == "uniform":
            return kl_to_uniform(logits)
        if feats is None:
            feats = torch.cat([a, b], 1)
        if feats.shape[-1] != self.logvar_head.in_features:
            raise ValueError(f"penalty='gaussian': the log-variance head reads {self.logvar_head.in_features} "
                             f"features (kl_features) but got {feats.shape[-1]} (the fusion's features, or "
                             f"D1 + D2 when the fusion returns logits only)")
        if logits.shape[-1] != self.logvar_head.out_features:
            raise ValueError(f"penalty='gaussian': the log-variance head gives num_classes="
                             f"{self.logvar_head.out_features} values but the fusion gives {logits.shape[-1]} logits")
        return gaussian_kl(logits, self.logvar_head(feats))

    # ----------------------------------------------------------------- the loss
    def forward(self, z1: ArrayLike, z2: ArrayLike, y, fusion: Fusion,
                head1: Head | None = None, head2: Head | None = None, epoch: float | None = None) -> SynIBTerms:
        in_time = self._in_time(epoch)
        penalty = self.lambda_syn > 0 and in_time
        z1, z2 = as_tensor(z1, "z1"), as_tensor(z2, "z2")
        for name, z in (("z1", z1), ("z2", z2)):
            if z.dim() != 2:
                raise ValueError(f"{name} must be embeddings of shape (B, D), got {tuple(z.shape)}")
        y = as_labels(y, "y", device=z1.device)
        if z1.shape[0] != z2.shape[0] or z1.shape[0] != y.shape[0]:
            raise ValueError(f"batch sizes differ: z1 {z1.shape[0]}, z2 {z2.shape[0]}, y {y.shape[0]}")
        check_batch("SynIBLoss's batch (z1, z2, y)", z1)
        fused = _fused(fusion, z1, z2)[0]
        fused_ce = F.cross_entropy(fused, check_classes(y, fused.shape[-1]))
        top = _top_label(y)
        loss = fused_ce
        zero = fused_ce.new_zeros(())  # an infinite fused_ce times 0 had reported the unused terms as NaN
        uni = zero
        if self.lambda_uni > 0:
            if head1 is None or head2 is None:
                raise ValueError("lambda_uni > 0 needs the unimodal heads head1 and head2")
            h1, h2 = (z1.detach(), z2.detach()) if self.detach_heads else (z1, z2)
            classes = fused.shape[-1]
            uni = _head_ce(head1(h1), y, top, 1, classes) + _head_ce(head2(h2), y, top, 2, classes)
            loss = loss + self.lambda_uni * uni
        mce = zero
        if self.masked_ce > 0 and in_time:
            with _buffers_kept(fusion):  # its running statistics follow the real inputs only
                mce = (F.cross_entropy(_fused(fusion, self.random_mask(z1), z2)[0], y)
                       + F.cross_entropy(_fused(fusion, z1, self.random_mask(z2))[0], y))
            loss = loss + self.masked_ce * mce
        syn = zero
        # "random" and "learned" fill a withheld modality from another sample: a batch of one
        # (a loader's last, without drop_last) has none, and its penalty is left out.
        alone = z1.shape[0] < 2 and self.mask in ("random", "learned")
        if alone and penalty and not self._warned_alone:
            self._warned_alone = True
            warnings.warn(f"SynIBLoss: mask={self.mask!r} fills a withheld modality from another sample of the "
                          "batch, and a batch of one has none: its synergy penalty is 0 (use "
                          "DataLoader(drop_last=True) to train without such batches)", stacklevel=caller_level())
        if penalty and not alone:
            noisy = self.mask in ("noise", "learned_example")
            # An evaluation before any training (a sanity check) draws its noise from its own
            # batch and keeps nothing: stored, its statistics would stay in the training
            # batches' running ones (36 % of a validation mean after 100 batches at momentum 0.01).
            provisional = noisy and not self.training and self._buffer("running_mean", 1) is None
            if noisy and (self.training or provisional):
                self._update_stats(1, z1)
                self._update_stats(2, z2)
            a, b = (z1.detach(), z2.detach()) if self.detach_penalty else (z1, z2)
            try:
                with _buffers_kept(fusion):  # as for the masked cross-entropy
                    classes = fused.shape[-1]  # the learned masks' heads must score the fusion's classes
                    syn = (self._kl(fusion, self.withhold(a, 1, head1, y, classes=classes), b)
                           + self._kl(fusion, a, self.withhold(b, 2, head2, y, classes=classes)))
            finally:
                if provisional:
                    self._clear_stats()
            loss = loss + self.lambda_syn * syn
        return SynIBTerms(loss, fused_ce.detach(), uni.detach(), syn.detach(), fused, mce.detach())
