"""Checks for the per-sample inputs that the integrations consume.

SPICE and DynCIM re-estimate their state from a model's softmax outputs on the training
set; the probe, the losses and OGM-GE take embeddings, logits and labels. These helpers
accept torch tensors and numpy arrays alike (as :func:`fastpid.joint` does), turn them into
torch tensors and say precisely what is wrong when the input is malformed (type, shape,
range, row sums, label values).
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from fastpid._validate import refuse_masked

__all__ = ["as_tensor", "tensor_of", "as_labels", "check_logits", "check_probs", "rows_to_gather", "check_labels",
           "check_classes", "check_indices", "check_batch", "prob_of_label"]

#: Rows of a probability matrix must sum to 1 within this tolerance (or, for half-precision
#: input, within the dtype's epsilon: a bfloat16 softmax row is off by up to 2^-8).
ROW_SUM_TOL = 1e-4
#: What the integrations take where they take an array: a tensor or a numpy array.
ArrayLike = Union[torch.Tensor, np.ndarray]


def as_tensor(x, name: str) -> torch.Tensor:
    """``x`` as a torch tensor: tensors pass through unchanged (same device, dtype and
    autograd graph), numpy arrays are wrapped without a copy. Anything else is a
    ``TypeError`` naming ``name``."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():  # no integration takes complex values; a cast would drop the imaginary part
            raise TypeError(f"{name} must be real, got a complex tensor ({x.dtype})")
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == object or x.dtype.kind in "USVc":
            raise TypeError(f"{name} must be real numbers, got a numpy array of dtype {x.dtype}")
        refuse_masked(x, name)
        # torch reads native byte order only (a big-endian array was its ValueError)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("=")))
    raise TypeError(f"{name} must be a torch.Tensor or a numpy array, got {type(x).__name__}")


def tensor_of(x, name: str, **kwargs) -> torch.Tensor:
    """``torch.as_tensor(x, **kwargs)`` of a numeric argument (weights, scores, a prior), with a
    masked array's masked entries refused as :func:`as_tensor` refuses them (torch reads
    through the mask), and arrays read as :func:`as_tensor` reads them (any byte order; not
    complex)."""
    refuse_masked(x, name)
    if isinstance(x, (torch.Tensor, np.ndarray)):
        x = as_tensor(x, name)
    # a tensor stays on its device, anything else goes to the CPU, whatever torch's default device
    kwargs.setdefault("device", x.device if isinstance(x, torch.Tensor) else "cpu")
    return torch.as_tensor(x, **kwargs)


def _signed(t: torch.Tensor, name: str) -> torch.Tensor:
    """``t`` as int64 where it is an unsigned integer tensor wider than uint8, which few torch
    operations take (``min`` raised NotImplementedError for uint16 labels); values from 2**63
    up, which int64 cannot hold, raise."""
    if t.dtype not in (torch.uint16, torch.uint32, torch.uint64):
        return t
    arr = t.detach().cpu().numpy()
    if arr.size and int(arr.max()) >= 2 ** 63:
        i = int(np.argmax(arr >= 2 ** 63))
        raise ValueError(f"{name}[{i}] = {int(arr[i])} is too large; ids must fit in int64 (below 2**63)")
    return torch.from_numpy(arr.astype(np.int64)).to(t.device)


def as_labels(y, name: str = "y", device=None) -> torch.Tensor:
    """Class ids ``y (N,)`` (tensor or numpy; integer dtype, or floats with integral values
    such as ``2.0``) as an int64 tensor on ``device`` (default: ``y``'s own).

    Raises ``TypeError`` for bool, complex or non-numeric input and ``ValueError`` for a
    shape other than ``(N,)``, negative ids or non-integral / non-finite float values, or
    floats beyond the int64 range (naming the first bad position).
    """
    y = _signed(as_tensor(y, name), name)
    if y.dtype == torch.bool or y.dtype.is_complex:
        raise TypeError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"{name} must be a 1-D vector of class ids (N,), got shape {tuple(y.shape)}")
    y = y.detach()
    if not y.is_meta:  # a meta tensor (shape-only tracing) has no values to check
        if y.dtype.is_floating_point:
            bad = ~(torch.isfinite(y) & (y == y.floor()))
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                raise ValueError(f"{name}[{i}] = {float(y[i])!r} is not an integer class id; labels must "
                                 "be integers (integral floats such as 2.0 are accepted)")
            # 2**63 and above would wrap to negative ids in the int64 conversion below.
            big = y >= 2.0 ** 63
            if bool(big.any()):
                i = int(big.nonzero()[0])
                raise ValueError(f"{name}[{i}] = {float(y[i])!r} is too large for a class id; labels must "
                                 "fit in int64 (below 2**63)")
        if y.numel() and int(y.min()) < 0:
            i = int((y < 0).nonzero()[0])
            raise ValueError(f"{name}[{i}] = {int(y[i])} is negative; class ids must be >= 0")
    return y.to(device=device if device is not None else y.device, dtype=torch.int64)


def check_logits(x, name: str, *, meta: bool = True) -> None:
    """Refuse ``x`` unless it is a floating-point torch tensor (logits: numpy ones had raised an
    AttributeError, integer, bool or complex ones torch's NotImplementedError from the softmax),
    and unless ``meta``, a meta tensor (where its values are read). The type only, no read from
    the device."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a floating-point torch.Tensor (B, C), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor (B, C), got one of {x.dtype}")
    if x.is_meta and not meta:
        raise TypeError(f"{name} is a meta tensor (shape only, no data); its values are read: pass a tensor "
                        "with values, on the CPU or a GPU")


def check_batch(name: str, *tensors: torch.Tensor) -> None:
    """Raise a ``ValueError`` naming the batch ``name`` when it has no samples (a loss over an
    empty batch is NaN, which would silently poison the parameters)."""
    for t in tensors:
        if t.shape[0] == 0:
            raise ValueError(f"empty batch: {name} has 0 samples; a loss needs at least one "
                             "(skip empty batches, e.g. DataLoader(drop_last=True) or a sampler "
                             "that admits no sample)")


def check_probs(p, name: str, n_rows: int | None = None, n_cols: int | None = None) -> torch.Tensor:
    """``p (N, C)`` probability rows as a float64 tensor (on ``p``'s device).

    Raises ``TypeError`` for non-numeric input and ``ValueError`` for a wrong shape,
    NaN/Inf, negative entries or rows that do not sum to 1 (within :data:`ROW_SUM_TOL`, or the
    epsilon of a half-precision dtype, whose rows are then renormalised in float64).
    """
    if not isinstance(p, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (N, C), "
                        f"got {type(p).__name__}")
    p = as_tensor(p, name)
    if not (p.dtype.is_floating_point):
        raise TypeError(f"{name} must hold floating-point probabilities, got dtype {p.dtype}")
    if p.dim() != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, C) with N, C >= 1, got {tuple(p.shape)}")
    if n_rows is not None and p.shape[0] != n_rows:
        raise ValueError(f"{name} has {p.shape[0]} rows, expected {n_rows} (one per sample)")
    if n_cols is not None and p.shape[1] != n_cols:
        raise ValueError(f"{name} has {p.shape[1]} columns, expected {n_cols} (one per class)")
    tol = _row_sum_tol(p.dtype)
    p = p.detach().to(torch.float64)
    if not torch.isfinite(p).all():
        raise ValueError(f"{name} contains NaN or Inf")
    if (p < 0).any():
        raise ValueError(f"{name} has negative entries; pass softmax probabilities, not logits")
    sums = p.sum(1)
    worst = (sums - 1.0).abs().max()
    if worst > tol:
        hint = ("; rows from a half-precision softmax, cast up? renormalise them: p / p.sum(1, keepdim=True)"
                if worst < 1e-2 else "")
        raise ValueError(f"{name}: rows must sum to 1 (softmax probabilities); the worst row is "
                         f"off by {float(worst):.3g} (tolerance {tol:.3g}){hint}")
    return p / sums[:, None] if tol > ROW_SUM_TOL else p


def _row_sum_tol(dtype: torch.dtype) -> float:
    """How far rows of ``dtype`` may sum from 1: :data:`ROW_SUM_TOL`, or a half-precision
    dtype's epsilon."""
    return max(ROW_SUM_TOL, torch.finfo(dtype).eps) if dtype.is_floating_point else ROW_SUM_TOL


def rows_to_gather(p, name: str) -> torch.Tensor:
    """This rank's probability rows ``p (N, C)`` in float64, to gather before
    :func:`check_probs` checks the whole set (no rank raises alone: the others would wait in
    the gather for good). Half-precision rows within their dtype's epsilon of summing to 1
    are renormalised here, because the gathered float64 rows are held to :data:`ROW_SUM_TOL`;
    any other row is passed on unchanged for that check to report."""
    p = as_tensor(p, name).detach()
    tol = _row_sum_tol(p.dtype)
    p = p.to(torch.float64)
    if tol > ROW_SUM_TOL and p.dim() == 2:
        sums = p.sum(1, keepdim=True)
        near = ((sums - 1).abs() <= tol) & torch.isfinite(p).all(1, keepdim=True) & (p >= 0).all(1, keepdim=True)
        p = torch.where(near, p / sums, p)
    return p


def check_labels(y, n_rows: int, n_classes: int, name: str = "y") -> torch.Tensor:
    """Labels ``y (N,)`` in ``[0, n_classes)`` as an int64 tensor (see :func:`as_labels`)."""
    if not isinstance(y, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of class ids, "
                        f"got {type(y).__name__}")
    if tuple(y.shape) != (n_rows,):
        raise ValueError(f"{name} must have shape ({n_rows},), got {tuple(y.shape)}")
    return check_classes(as_labels(y, name), n_classes, name)


def check_classes(y: torch.Tensor, n_classes: int, name: str = "y") -> torch.Tensor:
    """``y``, the int64 labels of :func:`as_labels`, checked to lie below ``n_classes`` (the
    columns of the logits or probability rows they index: a label past them was
    cross-entropy's bare IndexError, and a device-side assert on a GPU)."""
    if y.numel() and not y.is_meta:
        top = int(y.max())
        if top >= n_classes:
            i = int((y >= n_classes).nonzero()[0])
            raise ValueError(f"{name}[{i}] = {int(y[i])} is not one of the {n_classes} classes; "
                             f"class ids must lie in [0, {n_classes})")
    return y


def check_indices(index, n_samples: int | None, name: str = "index") -> torch.Tensor:
    """Training-set indices ``index (B,)`` (tensor, numpy array or list of integers) as an int64
    tensor: a boolean mask, a float, a negative index (which would wrap to the end) or one past
    ``n_samples`` (``None``: no upper bound) raises, naming ``name``."""
    if isinstance(index, (list, tuple)):  # an empty list is no batch, not a float one
        try:
            index = (torch.as_tensor(index, device="cpu") if len(index)  # not torch's default device
                     else torch.zeros(0, dtype=torch.int64, device="cpu"))
        except (RuntimeError, ValueError, TypeError, OverflowError) as e:  # [0, None]: torch's RuntimeError
            raise TypeError(f"{name} must be a list of integer sample indices: {e}") from None
    else:
        index = _signed(as_tensor(index, name), name)
    if index.dtype == torch.bool or index.is_floating_point() or index.is_complex():
        raise TypeError(f"{name} must hold integer sample indices, got dtype {index.dtype}")
    if index.dim() != 1:
        raise ValueError(f"{name} must be a 1-D vector of sample indices, got shape {tuple(index.shape)}")
    top = math.inf if n_samples is None else n_samples
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= top):
        bound = f"in [0, {n_samples})" if n_samples is not None else ">= 0"
        raise ValueError(f"{name} must lie {bound}, got values in [{int(index.min())}, {int(index.max())}]")
    return index.to(torch.int64)


def prob_of_label(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``p[n, y_n]`` for ``p (N, C)`` and ``y (N,)``: the probability of each true class."""
    return p.gather(1, y.to(p.device)[:, None]).squeeze(1)
