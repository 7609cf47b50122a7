"""Late-fusion models: one encoder and one unimodal head per modality, and a fusion head."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["LateFusion", "FusionOutput"]


class FusionOutput(NamedTuple):
    """Embeddings ``z1 (B, E)``, ``z2 (B, E)`` and logits ``(B, C)`` of the two unimodal heads
    and the fusion head."""

    z1: torch.Tensor
    z2: torch.Tensor
    logits1: torch.Tensor
    logits2: torch.Tensor
    fused: torch.Tensor


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class LateFusion(nn.Module):
    """Two MLP encoders ``x_m (B, D_m) -> z_m (B, emb_dim)``, linear heads ``z_m -> (B, C)``
    and an MLP fusion head on ``[z1, z2]``.

    ``encoders``, ``heads`` are :class:`nn.ModuleList` of length 2 (index 0 = modality 1).
    """

    def __init__(self, d1: int, d2: int, n_classes: int, *, hidden: int = 64, emb_dim: int = 16,
                 fusion_hidden: int = 64):
        super().__init__()
        self.encoders = nn.ModuleList([_mlp(d, hidden, emb_dim) for d in (d1, d2)])
        self.heads = nn.ModuleList([nn.Linear(emb_dim, n_classes) for _ in range(2)])
        self.fusion = _mlp(2 * emb_dim, fusion_hidden, n_classes)

    def fuse(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Fusion logits ``(B, C)`` from the embeddings."""
        return self.fusion(torch.cat([z1, z2], dim=1))

    def embed(self, x1: torch.Tensor, x2: torch.Tensor):
        """``(z1, z2)``, the pre-fusion embeddings."""
        return self.encoders[0](x1), self.encoders[1](x2)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> FusionOutput:
        z1, z2 = self.embed(x1, x2)
        return FusionOutput(z1, z2, self.heads[0](z1), self.heads[1](z2), self.fuse(z1, z2))
