"""The few collective operations the integrations need under ``torch.distributed``.

Every function here is a no-op (or the identity) when no process group is initialised, so
single-process training runs exactly the same code path as before. Under a process group
they keep the state that each rank computes identical on every rank. Inputs may be on any
device (numpy inputs are CPU tensors): under ``nccl``, which takes CUDA tensors only, they
are moved to the current CUDA device for the collective, and the results come back on the
inputs' device (``gloo`` takes them where they are).

* :func:`gather_rows` — concatenate every rank's rows, in rank order (variable row counts);
* :func:`assemble` — build the ``(N, ...)`` arrays of a whole data set from every rank's
  rows and their sample indices;
* :func:`broadcast_object`, :func:`broadcast_tensors` — rank 0's Python object / tensors
  on every rank;
* :func:`all_reduce_sum` — the element-wise sum of a tensor over the ranks;
* :func:`raise_on_every_rank` — one rank's error (from checking its own inputs) on every rank;
  :func:`check_on_every_rank` runs such a check;
* :func:`same_on_every_rank` — a value every rank must agree on (say, whether ``index=`` was
  given), else the same error on every rank.

Under a process group every function listed above is collective: every rank must call it,
in the same order. A rank that skips a call (say, one that evaluates on rank 0 only) cannot
be detected: the others wait in the collective until the process group's timeout (30
minutes by default; pass ``init_process_group(timeout=...)`` a short one while debugging).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

from fastpid.metrics import _collective_device
from fastpid.metrics import _check_on_every_rank as check_on_every_rank
from fastpid.metrics import _raise_on_every_rank as raise_on_every_rank

from .predictions import check_indices

__all__ = ["is_distributed", "rank_and_world", "gather_rows", "assemble", "broadcast_object",
           "broadcast_tensors", "all_reduce_sum", "raise_on_every_rank", "check_on_every_rank",
           "same_on_every_rank"]


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised (with more than one
    process or not)."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` without one."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's ``tensors`` concatenated along dimension 0, in rank order.

    All tensors of one call must have the same number of rows on a rank (rows may differ
    between ranks; they are padded for the collective and trimmed after), and each must have
    the same trailing shape and dtype on every rank; otherwise every rank raises the same
    ``ValueError``. Returns the tensors unchanged without a process group. The result is
    detached, on each input's device.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return tensors
    world = dist.get_world_size()
    # Every rank's shapes and dtypes, checked alike on every rank before any data moves: a
    # rank that raised alone would leave the others waiting, and tensors of other widths in
    # one all_gather abort the process (gloo) instead of raising.
    local = [(tuple(t.shape), t.dtype) for t in tensors]
    every = [None] * world
    dist.all_gather_object(every, local)
    for r, specs in enumerate(every):
        if len({shape[0] for shape, _ in specs}) > 1:
            raise ValueError(f"gather_rows: the tensors have different row counts on rank {r}: "
                             f"{[shape[0] for shape, _ in specs]}")
    trailing = [[(shape[1:], dtype) for shape, dtype in specs] for specs in every]
    if any(t != trailing[0] for t in trailing):
        raise ValueError("gather_rows: every rank must pass tensors of the same trailing shapes and "
                         "dtypes; got (trailing shape, dtype) per tensor, by rank: "
                         + "; ".join(f"rank {r}: {[(list(s), str(d)) for s, d in t]}" for r, t in enumerate(trailing)))
    sizes = [specs[0][0][0] for specs in every]
    width, device = max(sizes), _collective_device()
    out = []
    for t in tensors:
        padded = t.detach().new_zeros((width, *t.shape[1:]), device=device or t.device)
        padded[:t.shape[0]] = t.detach()
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        out.append(torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(t.device))
    return tuple(out)


def assemble(n_samples: int, index, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The ``(n_samples, ...)`` arrays of a whole data set from rows of some samples.

    ``index (B,)`` are the sample indices of the rows of every tensor in ``tensors``
    (``(B, ...)`` each) on this rank; under a process group every rank's rows are gathered
    first. The union of the indices must cover ``0 .. n_samples - 1``; a sample seen twice
    (e.g. the padding of ``DistributedSampler``) keeps one of its rows, which should be
    equal. ``index=None`` means the rows are already the whole data set, in order. A bad
    ``index`` on one rank raises the same ``ValueError`` on every rank.
    """
    if index is None:
        return list(tensors)
    index = check_on_every_rank(_row_index, index, tensors)
    index, *tensors = gather_rows(index.to(tensors[0].device), *tensors)
    return _place_rows(n_samples, index, tensors)


def _row_index(index, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``index`` as an int64 vector, checked to have one entry per row of ``tensors``."""
    # A list or array on the CPU whatever torch's default device (a meta default had taken it).
    index = torch.as_tensor(index, device=index.device if isinstance(index, torch.Tensor) else "cpu").to(torch.int64)
    if index.dim() != 1 or any(t.shape[0] != index.shape[0] for t in tensors):
        raise ValueError(f"index must be a 1-D vector with one entry per row; got index of shape "
                         f"{tuple(index.shape)} for rows {[t.shape[0] for t in tensors]}")
    return index


def _place_rows(n_samples: int, index: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The ``(n_samples, ...)`` arrays with row ``i`` of each tensor at ``index[i]`` (the
    gathered rows of :func:`assemble`): ``index`` must lie in ``[0, n_samples)`` and cover
    every sample; of a sample's repeated rows one is kept. Not collective (it checks the
    gathered rows, the same on every rank)."""
    index = check_indices(index, n_samples)
    seen = torch.zeros(n_samples, dtype=torch.bool, device=index.device)
    seen[index] = True
    if not bool(seen.all()):
        missing = (~seen).nonzero().squeeze(1)
        raise ValueError(f"the indices (over every rank) cover {int(seen.sum())} of {n_samples} samples; "
                         f"missing e.g. {missing[:5].tolist()}; every sample needs a row")
    out = []
    for t in tensors:
        full = t.new_zeros((n_samples, *t.shape[1:]))
        full[index] = t
        out.append(full)
    return out


def same_on_every_rank(value, what: str):
    """``value`` (picklable, comparable), checked to be every rank's: where ranks differ (say,
    ``index=`` given on one rank only, whose collectives then would not match the others'),
    every rank raises the same ``ValueError`` naming each rank's. Without a process group,
    ``value``. Collective: every rank must call it."""
    if not is_distributed() or dist.get_world_size() == 1:
        return value
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise ValueError(f"{what} differs between ranks: " + ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values)))
    return value


def broadcast_object(obj):
    """Rank 0's ``obj`` (any picklable object) on every rank; ``obj`` itself without a
    process group."""
    if not is_distributed() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over every rank (a new tensor on ``t``'s device; ``t`` is left
    alone); a copy of ``t`` without a process group."""
    if not is_distributed() or dist.get_world_size() == 1:
        return t.detach().clone()
    out = t.detach().to(_collective_device() or t.device, copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(t.device)


def broadcast_tensors(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rank 0's values of ``tensors`` on every rank (new tensors on the inputs' devices; each
    rank's must have the same shapes and dtypes); the tensors unchanged without a process
    group."""
    if not is_distributed() or dist.get_world_size() == 1:
        return tensors
    device = _collective_device()
    out = []
    for t in tensors:
        copy = t.detach().to(device or t.device, copy=True).contiguous()
        dist.broadcast(copy, src=0)
        out.append(copy.to(t.device))
    return tuple(out)
