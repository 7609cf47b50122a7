"""A torchmetrics-style accumulator of the PID over many batches.

:class:`PIDMetric` sums the (unnormalised) joint of ``(x1, x2, y)`` batch by batch, for
example over a validation loader, and decomposes the accumulated joint once::

    metric = fastpid.PIDMetric(sizes=(20, 20, 10))
    for x1_codes, x2_codes, y in val_loader:
        metric.update(x1_codes, x2_codes, y)
    res = metric.compute()          # fastpid.pid of the joint of every batch, nats
    est = metric.estimate()         # bias-corrected, with intervals (hard codes, no weights)
    metric.reset()

Under an initialised ``torch.distributed`` process group, :meth:`PIDMetric.compute`
all-reduces the accumulated mass, so every rank gets the PID of the samples of every rank.
The state stays per rank: each rank saves and loads its own (:meth:`PIDMetric.state_dict`).
:meth:`~PIDMetric.compute` and :meth:`~PIDMetric.estimate` are then collective: every rank
must call them (and build the metric with the same ``sizes``). A call on rank 0 alone (e.g.
logging on the main process only) cannot be detected: it waits in the all-reduce until the
process group's timeout (30 minutes by default; a short ``init_process_group(timeout=...)``
helps while debugging).
"""
from __future__ import annotations

import math
import secrets

import numpy as np
import torch
import torch.distributed as dist

from ._resources import available_bytes, gib, memory_unchecked
from ._validate import _HALF_DTYPES, as_tensor, check_flag, check_rows, check_tol, check_weights
from .api import pid
from .estimate import estimate
from .joint import _parse_sizes, joint

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
    w, _ = as_tensor(weights, "weights")  # joint's reading and messages (np.asarray had said "could not convert")
    mass = float(check_weights(w.detach(), n).to(torch.float64).sum())
    if not np.isfinite(mass):
        raise ValueError(f"the batch's weights sum to {mass} in float64 (each is finite, their total is "
                         "not); scale them down: only their ratios within and across batches matter")
    return mass


def _flag(value, name: str) -> bool:
    """A saved flag: a bool, or a one-element bool tensor or array (:meth:`PIDMetric.state_dict`
    saves a 0-d tensor); bool() had read "no" as True."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.dtype in (torch.bool, np.bool_) \
            and math.prod(value.shape) == 1 and not getattr(value, "is_meta", False):
        value = bool(value.item())
    return check_flag(value, name=name)


def _float64_rows(x, name: str):
    """Probability rows in float64, so that a large batch of float32 rows sums without
    losing samples (codes and numpy rows pass as they are). float16/bfloat16 rows are checked
    as :func:`fastpid.joint` checks them, to their dtype's eps, and renormalised: in float64
    they would be held to its 1e-4 and a bfloat16 softmax refused."""
    if isinstance(x, torch.Tensor) and x.dim() == 2 and x.is_floating_point():
        rows = x.detach().to(torch.float64)
        if x.dtype in _HALF_DTYPES:
            check_rows(x.detach(), name)
            rows = rows / rows.sum(1, keepdim=True)
        return rows
    return x


def _world_size() -> int:
    """The size of the default ``torch.distributed`` process group; 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _raise_on_every_rank(error: Exception | None) -> None:
    """Raise ``error`` (this rank's, or ``None``) such that every rank raises when any does.

    A rank that raised alone, say on its own bad inputs, would leave the others waiting in
    their next collective until the process group timed out. Under a process group every
    rank raises the same ``ValueError``, naming the first rank with an error and that error;
    without one, ``error`` itself is raised. Collective: every rank must call it.
    """
    if _world_size() == 1:
        if error is not None:
            raise error
        return
    errors = [None] * dist.get_world_size()
    dist.all_gather_object(errors, None if error is None else f"{type(error).__name__}: {error}")
    for rank, message in enumerate(errors):
        if message is not None:
            raise ValueError(f"on rank {rank}: {message}") from error


def _check_on_every_rank(check, *args):
    """``check(*args)``: its result, or the exception it raised on this rank raised on every
    rank (:func:`_raise_on_every_rank`; any ``Exception``: a user's estimator that raised a
    ``RuntimeError`` on one rank had left the others waiting). Run a rank's checks of its own
    inputs through it before a collective. Collective: every rank must call it."""
    try:
        result, error = check(*args), None
    except Exception as e:  # noqa: BLE001 - whatever it is, every rank must raise
        result, error = None, e
    _raise_on_every_rank(error)
    return result


def _shared_seed(seed):
    """``seed``, or where it is ``None`` under a process group, one seed drawn on rank 0 and
    broadcast: fresh entropy per process would give every rank another estimate. Collective
    under a process group (every rank broadcasts, whatever its ``seed``)."""
    if _world_size() == 1:
        return seed
    box = [secrets.randbits(63) if seed is None else seed]
    dist.broadcast_object_list(box, src=0)
    return box[0] if seed is None else seed


def _is_codes(x) -> bool:
    return (x.ndim if isinstance(x, (np.ndarray, torch.Tensor)) else np.ndim(x)) == 1


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
    ``w_n p1(·|n) ⊗ p2(·|n) ⊗ py(·|n)`` (``w_n = 1`` without weights; for hard codes
    without weights, a histogram of exact integer counts). Unitless; :meth:`compute`
    normalises it. ``samples_only``: whether every batch so far was hard codes without
    weights (what :meth:`estimate` needs).

    Raises at construction the errors :func:`fastpid.pid` would raise for ``pid_kwargs``
    at :meth:`compute` (an unknown name or a bad value), rather than after an epoch.
    """

    def __init__(self, sizes, *, device=None, **pid_kwargs):
        # As joint() reads sizes (tuples, lists, numpy arrays, tensors), none left to infer:
        # every batch adds into one fixed table.
        parsed = _parse_sizes(sizes)
        if None in parsed:
            raise ValueError(f"sizes must be three positive integers (n1, n2, ny), got {sizes!r}")
        self.sizes = parsed
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.pid_kwargs = pid_kwargs
        self._check_options(self.device)
        self._check_table_memory()
        self.counts = torch.zeros(self.sizes, dtype=torch.float64, device=self.device)
        self.samples_only = True

    def _check_table_memory(self) -> None:
        """MemoryError where the ``n1 x n2 x ny`` float64 table does not fit (sizes of 10^5 x 10^5
        x 10^3 had failed in torch's allocator, a RuntimeError)."""
        need = 8 * math.prod(self.sizes)
        have = None if memory_unchecked(need) else available_bytes(self.device)
        if have is not None and need > have:
            raise MemoryError(f"PIDMetric accumulates a {'x'.join(map(str, self.sizes))} float64 table, "
                              f"{gib(need, have)}, but {gib(have, need)} is free on {self.device}; it needs "
                              "fewer values per variable (merge rare values or use fewer clusters)")

    def _check_options(self, device: torch.device) -> None:
        """Raises what :meth:`compute` would raise for ``pid_kwargs`` on ``device`` (a tiny
        uniform joint there), now rather than after an epoch. Not its warnings: a small ``tol``
        is said of the caller's own joints, not of this one (its gap, 2.2e-14 nats of rounding,
        had warned of a ``tol`` below it): the ``tol`` is checked alone, and the joint solved at
        the default (not under ``warnings.catch_warnings``, whose filters are the process's: other
        threads' warnings were lost while a metric was made)."""
        kwargs = dict(self.pid_kwargs)
        check_tol(kwargs.pop("tol", None))
        pid(torch.full((2, 2, 2), 0.125, dtype=torch.float64, device=device), **kwargs)

    def to(self, device) -> "PIDMetric":
        """Moves the accumulated joint to ``device``, where later batches are added and
        :meth:`compute` solves; returns the metric (as ``torch.nn.Module.to`` does). Checks
        the ``pid_kwargs`` there first (e.g. ``backend="cuda"`` on the CPU raises)."""
        device = torch.device(device)
        self._check_options(device)
        self.device = device
        self.counts = self.counts.to(device)
        return self

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
        P = joint(*(_float64_rows(v, name) for v, name in ((x1, "x1"), (x2, "x2"), (y, "y"))),
                  sizes=self.sizes, weights=weights)
        # straight to the metric's device (not through torch's default device, which as_tensor takes)
        batch = mass * torch.as_tensor(P, device=self.device).detach().to(dtype=torch.float64)
        codes = weights is None and all(_is_codes(v) for v in (x1, x2, y))
        if codes:
            # count / N · N is within an ulp of the count: rounding restores it exactly.
            batch = batch.round()
        # Out of place: a table made under torch.inference_mode (a metric built or loaded in an
        # evaluation hook) cannot be changed in place outside it.
        self.counts = self.counts + batch
        self.samples_only = self.samples_only and codes

    def compute(self):
        """:func:`fastpid.pid` of the accumulated joint (a :class:`fastpid.PIDResult` of
        float64 torch tensors, whatever the batches were: the counts are kept as a tensor;
        ``.numpy()`` converts it).

        Under ``torch.distributed`` the counts are summed over the ranks first (every rank
        must call it, with the same ``sizes``; the local :attr:`counts` are left as they are,
        so the sum is correct only if every rank holds its own samples' counts: see
        :meth:`state_dict`). A call on rank 0 alone waits in the all-reduce until the process
        group's timeout, undetected (set a short one while debugging). Raises ``ValueError``
        when no sample has been added (on any rank), or on every rank when the ranks' sizes
        differ.

        A plug-in value: the PID of the samples' empirical joint, biased upwards in
        synergy when samples are few per cell; :meth:`estimate` corrects it and gives
        intervals."""
        counts, _ = self._global_counts("compute")
        return pid(counts / counts.sum(), **self.pid_kwargs)

    def estimate(self, **estimate_kwargs):
        """:func:`fastpid.estimate` of the samples seen (every rank's under
        ``torch.distributed``; every rank must call it): the bias-corrected PID with
        confidence intervals and the synergy test (a :class:`fastpid.PIDEstimate`, torch
        float64 on the metric's device).

        Needs the samples themselves, which the counts hold only when every batch was hard
        codes without weights (``samples_only`` on every rank). ``estimate_kwargs`` are
        :func:`fastpid.estimate`'s (``confidence``, ``seed``, ``base``, ...; ``base``
        defaults to the metric's), except those given per sample (``groups``, ``weights``,
        ``counts``, ``num_groups``) and ``sizes`` (the metric's). Raises ``ValueError`` otherwise, or
        when no sample has been added.

        Under ``torch.distributed`` every rank must call it (a call on rank 0 alone waits,
        as :meth:`compute` does), and every rank gets the same estimate: without a ``seed``
        the resampling is seeded with one seed drawn on rank 0 and broadcast (a fresh one
        per call), not with fresh entropy per process."""
        # The samples are rebuilt from the counts in cell order: arguments given per sample
        # (in the caller's order) would be applied to other samples.
        per_sample = sorted({"groups", "weights", "counts", "num_groups", "sizes"} & set(estimate_kwargs))
        # Raised on every rank (a rank that raised alone left the others in the next collective).
        _raise_on_every_rank(ValueError(
            f"PIDMetric.estimate() cannot take {', '.join(per_sample)}: the metric keeps the samples' counts, "
            "not their order (and its own sizes); call fastpid.estimate on the samples for groups or "
            "weights, or keep a PIDMetric per group") if per_sample else None)
        counts, samples_only = self._global_counts("estimate")
        if not samples_only:
            raise ValueError("PIDMetric.estimate() needs every batch to be hard codes without weights "
                             "(the counts are then the samples' histogram); some batch on some rank had "
                             "probability rows or weights: call fastpid.estimate on the samples instead")
        estimate_kwargs["seed"] = _shared_seed(estimate_kwargs.get("seed"))
        cells = counts.nonzero()
        reps = counts[tuple(cells.T)].to(torch.int64)
        x1, x2, y = cells.repeat_interleave(reps, dim=0).T
        estimate_kwargs.setdefault("base", self.pid_kwargs.get("base"))
        # An argument refused on one rank (confidence=2.0) raises on every rank.
        return _check_on_every_rank(lambda: estimate(x1, x2, y, sizes=self.sizes, **estimate_kwargs))

    def _global_counts(self, caller: str) -> tuple[torch.Tensor, bool]:
        """The counts summed over the ranks, checked to hold some samples, and whether
        every rank's are ``samples_only``."""
        counts = self.counts.clone()
        samples_only = self.samples_only
        if _world_size() > 1:
            self._check_sizes_agree(caller)
            # NCCL reduces CUDA tensors only: the counts (on CPU by default) go to its device
            # for the sum and come back to the metric's. The flag rides along as one more
            # entry, 0 where a rank's counts are not samples, so one all-reduce carries both.
            target = _collective_device() or counts.device
            flat = torch.cat([counts.flatten(), counts.new_tensor([0.0 if samples_only else 1.0])])
            flat = flat.to(target)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat = flat.to(counts.device)
            counts, samples_only = flat[:-1].view(self.sizes), bool(flat[-1] == 0)
        total = float(counts.sum())
        if not np.isfinite(total):
            raise ValueError(f"PIDMetric.{caller}(): the accumulated counts are not finite (total {total}); "
                             "a loaded state or the weights were corrupt")
        if not total > 0:
            raise ValueError(f"PIDMetric.{caller}(): no samples were added (call update() with at least "
                             "one non-empty batch of positive weight first)")
        return counts, samples_only

    def _check_sizes_agree(self, caller: str) -> None:
        """Raise the same ``ValueError`` on every rank unless every rank's ``sizes`` are this
        rank's: gloo aborts the process on an all-reduce of counts of other shapes."""
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, self.sizes)
        if len(set(every)) > 1:
            raise ValueError(f"PIDMetric.{caller}(): every rank must build the metric with the same sizes "
                             f"(e.g. the number of classes of the whole data set, not of a rank's part); "
                             f"got, by rank: {every}")

    def reset(self) -> None:
        """Forget every batch."""
        self.counts = torch.zeros_like(self.counts)  # a new table, as in update()
        self.samples_only = True

    def state_dict(self) -> dict:
        """``{"counts": tensor, "samples_only": 0-d bool tensor}`` (readable by
        ``torch.load(weights_only=True)``): this
        rank's counts only, not the sum over the ranks.

        Under ``torch.distributed`` each rank saves its own state and loads it back (e.g.
        one file per rank); the resumed :meth:`compute` then equals the uninterrupted one
        bit for bit. Loading rank 0's state on every rank would count rank 0's samples once
        per rank in :meth:`compute`'s sum and lose the other ranks' samples."""
        return {"counts": self.counts.clone(), "samples_only": torch.tensor(self.samples_only, device="cpu")}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved (checked: the shape, finite non-negative
        counts, whole numbers where they are a histogram of samples)."""
        if not isinstance(state, dict) or "counts" not in state:  # a bare KeyError: 'counts' said little
            got = f"a dict with keys {sorted(map(str, state))}" if isinstance(state, dict) else type(state).__name__
            raise ValueError("not a PIDMetric state (PIDMetric.state_dict() gives a dict with 'counts' and "
                             f"'samples_only'): got {got}")
        # As joint reads arrays: complex counts had lost their imaginary part, "abc" was torch's own error.
        counts, _ = as_tensor(state["counts"], "state['counts']", device=self.device)
        if tuple(counts.shape) != self.sizes:
            raise ValueError(f"the saved counts have shape {tuple(counts.shape)}, expected {self.sizes}")
        counts = counts.to(device=self.device, dtype=torch.float64)
        if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
            raise ValueError("the saved counts must be finite and non-negative; this state holds "
                             f"min {float(counts.min())}, max {float(counts.max())}")
        samples_only = _flag(state.get("samples_only", False), "state['samples_only']")
        if samples_only and not bool((counts == counts.round()).all()):
            raise ValueError("the saved state says samples_only (a histogram of hard codes), but its counts "
                             "are not whole numbers; save it with samples_only=False")
        self.counts = counts.clone()
        self.samples_only = samples_only

    def __repr__(self) -> str:
        total = float(self.counts.sum())
        # Hard codes without weights count samples; otherwise the mass is a sum of weights or rows.
        shown = f"samples={int(total)}" if self.samples_only else f"mass={total:.6g}"
        return f"PIDMetric(sizes={self.sizes}, {shown})"
