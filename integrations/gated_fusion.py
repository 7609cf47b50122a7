"""Gated fusion of ``M`` modality embeddings with per-sample weights on the simplex."""
from __future__ import annotations

import numbers

from typing import Sequence, SupportsIndex

import torch
from torch import nn

__all__ = ["GatedFusion"]


class GatedFusion(nn.Module):
    """``fused = Σ_m g_m(x) z_m`` with gate ``g(x) = softmax(MLP([z_1, ..., z_M]))``.

    The gate sees the concatenated embeddings (a choice: the gate is conditioned on what
    every modality says about this sample) through one hidden layer of width ``hidden``
    with ReLU. Its last layer starts at zero, so the initial gate is uniform.

    Args:
        dim: width ``D`` of every modality embedding (project them to a common width first).
        n_modalities: ``M >= 2``.
        hidden: width of the gate's hidden layer.

    ``forward(zs)`` takes ``M`` tensors ``(B, D)`` and returns ``(fused (B, D), gate (B, M))``.
    """

    def __init__(self, dim: SupportsIndex, n_modalities: SupportsIndex, hidden: SupportsIndex = 32):
        super().__init__()
        for name, v, lo in (("dim", dim, 1), ("n_modalities", n_modalities, 2), ("hidden", hidden, 1)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        dim, n_modalities, hidden = int(dim), int(n_modalities), int(hidden)
        self.dim, self.n_modalities = dim, n_modalities
        self.gate = nn.Sequential(nn.Linear(dim * n_modalities, hidden), nn.ReLU(),
                                  nn.Linear(hidden, n_modalities))
        nn.init.zeros_(self.gate[-1].weight)
        nn.init.zeros_(self.gate[-1].bias)

    def forward(self, zs: Sequence[torch.Tensor]):
        if len(zs) != self.n_modalities:
            raise ValueError(f"expected {self.n_modalities} embeddings, got {len(zs)}")
        shape = tuple(zs[0].shape)
        if len(shape) != 2 or shape[1] != self.dim or any(tuple(z.shape) != shape for z in zs):
            raise ValueError(f"every embedding must have shape (B, {self.dim}); got "
                             f"{[tuple(z.shape) for z in zs]}")
        z = torch.stack(list(zs), dim=1)                       # (B, M, D)
        g = self.gate(z.flatten(1)).softmax(-1)                # (B, M)
        return (g[:, :, None] * z).sum(1), g
