"""A torchmetrics-style accumulator of the PID over many batches.

:class:`PIDMetric` sums the (unnormalised) joint of ``(x1, x2, y)`` batch by batch, for
example over a validation loader, and decomposes the accumulated joint once::

    metric = fastpid.PIDMetric(sizes=(20, 20, 10))
    for x1_codes, x2_codes, y in val_loader:
        metric.update(x1_codes, x2_codes, y)
    res = metric.compute()          # fastpid.pid of the joint of every batch, nats
    metric.reset()

Under an initialised ``torch.distributed`` process group, :meth:`PIDMetric.compute`
all-reduces the accumulated mass, so every rank gets the PID of the samples of every rank.
The state stays per rank: each rank saves and loads its own (:meth:`PIDMetric.state_dict`).
"""
from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.distributed as dist

from ._validate import check_weights
from .api import pid
from .joint import joint

__all__ = ["PIDMetric"]


def _n_samples(x, name: str) -> int:
    if (x.ndim if isinstance(x, torch.Tensor) else np.ndim(x)) == 0:
        raise ValueError(f"{name} must be a (B,) vector of codes or a (B, n) matrix of rows, got a scalar")
    return int(x.shape[0]) if isinstance(x, (np.ndarray, torch.Tensor)) else len(x)


def _collective_device() -> torch.device | None:
    """The device a collective of the default process group needs its tensors on: the
    current CUDA device under NCCL (which takes CUDA tensors only), else ``None`` (the
    tensors' own device; gloo takes CPU and CUDA tensors)."""
    if dist.get_backend() == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return None


def _batch_mass(weights, n: int) -> float:
    """The total of the batch's ``weights`` (``n`` without), checked as :func:`fastpid.joint`
    checks them (before it, so that a batch of total weight 0 can add nothing)."""
    if weights is None:
        return float(n)
    w = (weights.detach() if isinstance(weights, torch.Tensor)
         else torch.as_tensor(np.asarray(weights, dtype=np.float64)))
    return float(check_weights(w, n).to(torch.float64).sum())


class PIDMetric:
    """Accumulates the joint ``P[x1, x2, y]`` over batches; :meth:`compute` decomposes it.

    Args:
        sizes: ``(n1, n2, ny)``, the alphabet sizes (fixed, so that every batch adds into
            one ``n1 × n2 × ny`` array).
        device: where the accumulated joint lives (default: CPU; a batch on another device
            is added after moving its joint there).
        **pid_kwargs: keyword arguments of :func:`fastpid.pid` used by :meth:`compute`
            (e.g. ``method``, ``base``).

    State: ``counts``, the ``(n1, n2, ny)`` float64 sum over the samples seen of
    ``w_n p1(·|n) ⊗ p2(·|n) ⊗ py(·|n)`` (for hard codes, a histogram of counts; ``w_n = 1``
    without weights). Unitless; :meth:`compute` normalises it.
    """

    def __init__(self, sizes, *, device=None, **pid_kwargs):
        sizes = tuple(sizes)
        if len(sizes) != 3 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1
                                  for s in sizes):
            raise ValueError(f"sizes must be three positive integers (n1, n2, ny), got {sizes!r}")
        self.sizes = tuple(int(s) for s in sizes)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.pid_kwargs = pid_kwargs
        self.counts = torch.zeros(sizes, dtype=torch.float64, device=self.device)

    def update(self, x1, x2, y, weights=None) -> None:
        """Add one batch: ``x1``, ``x2``, ``y`` are ``(B,)`` integer codes or ``(B, n)``
        probability rows, as :func:`fastpid.joint` takes them (numpy or torch), with
        optional non-negative ``weights (B,)``. An empty batch, or one whose weights are all
        0 (a masked or padded batch), adds nothing."""
        n = [_n_samples(v, name) for v, name in ((x1, "x1"), (x2, "x2"), (y, "y"))]
        if len(set(n)) != 1:
            raise ValueError(f"x1, x2 and y must have the same number of samples, got {n[0]}, {n[1]}, {n[2]}")
        mass = _batch_mass(weights, n[0])
        if n[0] == 0 or mass == 0:
            return
        P = joint(x1, x2, y, sizes=self.sizes, weights=weights)
        P = torch.as_tensor(P).detach().to(device=self.device, dtype=torch.float64)
        self.counts += mass * P

    def compute(self):
        """:func:`fastpid.pid` of the accumulated joint (a :class:`fastpid.PIDResult`).

        Under ``torch.distributed`` the counts are summed over the ranks first (every rank
        must call it; the local :attr:`counts` are left as they are, so the sum is correct
        only if every rank holds its own samples' counts: see :meth:`state_dict`). Raises
        ``ValueError`` when no sample has been added (on any rank)."""
        counts = self.counts.clone()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # NCCL reduces CUDA tensors only: the counts (on CPU by default) go to its device
            # for the sum and come back to the metric's.
            reduced = counts.to(_collective_device() or counts.device)
            dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
            counts = reduced.to(counts.device)
        total = float(counts.sum())
        if not total > 0:
            raise ValueError("PIDMetric.compute(): no samples were added (call update() with at least "
                             "one non-empty batch of positive weight first)")
        return pid(counts / total, **self.pid_kwargs)

    def reset(self) -> None:
        """Forget every batch."""
        self.counts.zero_()

    def state_dict(self) -> dict:
        """``{"counts": tensor}`` (readable by ``torch.load(weights_only=True)``): this
        rank's counts only, not the sum over the ranks.

        Under ``torch.distributed`` each rank saves its own state and loads it back (e.g.
        one file per rank); the resumed :meth:`compute` then equals the uninterrupted one
        bit for bit. Loading rank 0's state on every rank would count rank 0's samples once
        per rank in :meth:`compute`'s sum and lose the other ranks' samples."""
        return {"counts": self.counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        counts = torch.as_tensor(state["counts"])
        if tuple(counts.shape) != self.sizes:
            raise ValueError(f"the saved counts have shape {tuple(counts.shape)}, expected {self.sizes}")
        self.counts = counts.to(device=self.device, dtype=torch.float64).clone()

    def __repr__(self) -> str:
        return f"PIDMetric(sizes={self.sizes}, samples={float(self.counts.sum()):.6g})"
