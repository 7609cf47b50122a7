"""Checks for the per-sample predictions and labels that the curricula consume.

SPICE and DynCIM re-estimate their state from a model's softmax outputs on the training
set. These helpers turn that input into float64 torch tensors and say precisely what is
wrong when it is malformed (shape, range, row sums, label range).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_probs", "check_labels", "prob_of_label"]

#: Rows of a probability matrix must sum to 1 within this tolerance.
ROW_SUM_TOL = 1e-4


def check_probs(p, name: str, n_rows: int | None = None, n_cols: int | None = None) -> torch.Tensor:
    """``p (N, C)`` probability rows as a float64 tensor (on ``p``'s device).

    Raises ``TypeError`` for non-numeric input and ``ValueError`` for a wrong shape,
    NaN/Inf, negative entries or rows that do not sum to 1 (within :data:`ROW_SUM_TOL`).
    """
    if isinstance(p, np.ndarray):
        p = torch.from_numpy(p)
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (N, C), "
                        f"got {type(p).__name__}")
    if not (p.dtype.is_floating_point):
        raise TypeError(f"{name} must hold floating-point probabilities, got dtype {p.dtype}")
    if p.dim() != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, C) with N, C >= 1, got {tuple(p.shape)}")
    if n_rows is not None and p.shape[0] != n_rows:
        raise ValueError(f"{name} has {p.shape[0]} rows, expected {n_rows} (one per sample)")
    if n_cols is not None and p.shape[1] != n_cols:
        raise ValueError(f"{name} has {p.shape[1]} columns, expected {n_cols} (one per class)")
    p = p.detach().to(torch.float64)
    if not torch.isfinite(p).all():
        raise ValueError(f"{name} contains NaN or Inf")
    if (p < 0).any():
        raise ValueError(f"{name} has negative entries; pass softmax probabilities, not logits")
    worst = (p.sum(1) - 1.0).abs().max()
    if worst > ROW_SUM_TOL:
        raise ValueError(f"{name}: rows must sum to 1 (softmax probabilities); the worst row is "
                         f"off by {float(worst):.3g}")
    return p


def check_labels(y, n_rows: int, n_classes: int, name: str = "y") -> torch.Tensor:
    """Integer labels ``y (N,)`` in ``[0, n_classes)`` as an int64 tensor."""
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of class ids, "
                        f"got {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if y.shape != (n_rows,):
        raise ValueError(f"{name} must have shape ({n_rows},), got {tuple(y.shape)}")
    y = y.to(torch.int64)
    if n_rows and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"{name} must lie in [0, {n_classes}), got values in "
                         f"[{int(y.min())}, {int(y.max())}]")
    return y


def prob_of_label(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``p[n, y_n]`` for ``p (N, C)`` and ``y (N,)``: the probability of each true class."""
    return p.gather(1, y.to(p.device)[:, None]).squeeze(1)
