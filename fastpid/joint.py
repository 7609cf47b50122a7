"""Joint distributions ``P[x1, x2, y]`` from samples.

:func:`joint` turns per-sample observations of two sources and a target into the
(normalised) joint distribution that :func:`fastpid.pid` decomposes:

* **hard codes** — length-N integer vectors (cluster ids, labels): an exact
  histogram, built with one flat-index scatter-add;
* **soft rows** — ``(N, n)`` probability rows (e.g. a network's softmax output):
  ``P = (1 / Σ w) Σ_n w_n p1(·|n) ⊗ p2(·|n) ⊗ py(·|n)``, differentiable with
  respect to the rows and the weights;
* any mix of the two (a hard vector acts as one-hot rows);
* optional sample ``weights`` and a ``groups`` vector that splits the samples
  into a batch of problems ``(G, n1, n2, ny)`` (per class, per bootstrap
  resample, per epoch, ...).

No ``N × n1 × n2 × ny`` array is ever formed: hard variables become a scatter
index, soft variables are contracted with matrix products, and the samples are
processed in chunks so that temporary memory stays bounded.

:func:`pid_from_samples` composes :func:`joint` with :func:`fastpid.pid`.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch

from ._autograd import carries_derivatives
from ._tracing import traced, transformed, untraced
from ._validate import (
    as_tensor,
    check_codes,
    check_positive_int,
    check_rows,
    check_weights,
)

__all__ = ["joint", "pid_from_samples"]

# Upper bound on the number of elements of the per-chunk temporaries.
_CHUNK_ELEMS = 1 << 22

_NAMES = ("x1", "x2", "y")


def _parse_sizes(sizes) -> tuple:
    if sizes is None:
        return (None, None, None)
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (Sequence, np.ndarray, torch.Tensor)) \
            or np.ndim(sizes) == 0:  # a 0-d array or tensor: one number, no sequence
        raise TypeError(
            f"sizes must be a sequence (n1, n2, ny) of positive integers (None entries "
            f"are inferred), got {sizes!r}"
        )
    sizes = list(sizes.tolist() if isinstance(sizes, (np.ndarray, torch.Tensor)) else sizes)
    if len(sizes) != 3:
        raise ValueError(
            f"sizes must have 3 entries (n1, n2, ny), got {len(sizes)}: {sizes!r}"
        )
    return tuple(
        check_positive_int(s, name=f"sizes[{i}] (size of {_NAMES[i]})", allow_none=True)
        for i, s in enumerate(sizes)
    )


def _result_dtype(soft_tensors) -> torch.dtype:
    dtype = None
    for t in soft_tensors:
        if t.dtype.is_floating_point:
            d = torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype
            dtype = d if dtype is None else torch.promote_types(dtype, d)
    return torch.float64 if dtype is None else dtype


def sample_tensor(v, name: str, device) -> torch.Tensor:
    """Samples ``v`` (codes or probability rows) as a tensor on ``device``, as :func:`joint`
    reads them: numpy float16 rows (in any byte order, or a list of float16 rows) stay float16,
    so that they are checked to the dtype's eps and renormalised as torch's are (through
    float64 they met the 1e-4 tolerance and were refused); everything else as
    :func:`fastpid._validate.as_tensor` converts it."""
    if isinstance(v, (list, tuple)) and v and all(
            isinstance(r, torch.Tensor) and r.dtype == torch.bfloat16 and r.device.type == "cpu"
            and not r.requires_grad for r in v) and len({r.shape for r in v}) == 1:
        # bfloat16 rows have no numpy form: stacked, they are checked to bfloat16's eps and
        # renormalised as a bfloat16 tensor is; tensors that need a gradient or live off the
        # CPU are still refused below.
        v = torch.stack(list(v))
    if isinstance(v, (list, tuple)) and v:  # rows gathered per sample, arrays or tensors of one dtype
        try:
            rows = np.asarray(v)
        except (TypeError, ValueError, RuntimeError):  # ragged, or tensors that need a gradient
            rows = None
        if rows is not None and rows.dtype.kind == "f" and rows.dtype.itemsize == 2:
            v = rows
    if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.dtype.itemsize == 2 and v.ndim == 2:
        v = torch.from_numpy(v.astype("=f2", order="C"))  # any byte order
    return as_tensor(v, name, device=device)[0]

def joint(x1, x2, y, *, sizes=None, weights=None, groups=None, num_groups=None):
    """Joint distribution ``P[x1, x2, y]`` of two sources and a target from samples.

    Parameters
    ----------
    x1, x2, y : array-like (numpy array, torch tensor or list)
        Per-sample observations, all with the same number of samples N >= 1.
        Each is either

        * a 1-D vector of length N of **hard integer codes** in ``[0, n)``
          (integer or bool dtype; a float vector is accepted if all its values
          are integral, e.g. ``2.0``, and is an error otherwise), or
        * a 2-D ``(N, n)`` matrix of **soft probability rows**: entries >= 0,
          each row summing to 1 within a relative tolerance of 1e-4 (float16 and
          bfloat16 rows: the dtype's eps, and each is divided by its sum). Rows
          within that tolerance are used as given, and each problem is then
          divided by its total mass, so ``P`` sums to 1 and the formula under
          Returns holds exactly for rows that sum to 1 (within ~1e-4 for others).

        Any combination is allowed (e.g. soft ``x1``/``x2`` and hard labels
        ``y``); a hard vector behaves exactly like its one-hot rows.
    sizes : (n1, n2, ny), optional
        Number of values of each variable.  An entry may be ``None`` (or
        ``sizes`` omitted) to infer it: ``max + 1`` for codes, the row width
        for soft rows.  Given sizes must match soft row widths, and every code
        must be smaller than its size.
    weights : array-like of shape (N,), optional
        Finite, non-negative sample weights (default: all 1).  Differentiable.
    groups : array-like of integer codes, shape (N,), optional
        Group id of each sample.  Returns one distribution per group, each
        normalised on its own, stacked as ``(G, n1, n2, ny)``.
    num_groups : int, optional
        G; defaults to ``max(groups) + 1``.  Every group in ``[0, G)`` must
        receive positive total weight: an empty (or zero-weight) group raises a
        ``ValueError`` naming it, since its distribution is undefined.

    Returns
    -------
    P : torch.Tensor or numpy.ndarray, shape ``(n1, n2, ny)`` or ``(G, n1, n2, ny)``
        ``P[g, i, j, k] = Σ_{n in g} w_n p1(i|n) p2(j|n) py(k|n) / Σ_{n in g} w_n``
        — probabilities (unitless), each problem summing to 1.  A numpy float64
        array when no input is a torch tensor; otherwise a torch tensor on the
        inputs' device whose dtype is the floating dtype of the torch soft
        inputs (float16/bfloat16 promoted to float32) or float64 when there are
        none (hard codes only).  Gradients flow to soft rows and weights.

    Raises
    ------
    ValueError
        N = 0, mismatched lengths, codes negative / out of range / non-integral,
        rows that are negative, non-finite or do not sum to 1 (the first bad
        sample is named), soft row widths that contradict ``sizes``, negative or
        non-finite weights, a group (or the whole input) with zero total weight,
        inputs with 0 or more than 2 dimensions, tensors on different devices.
    TypeError
        complex, string or other non-numeric input.

    Examples
    --------
    >>> P = joint([0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 1])       # XOR samples
    >>> P.shape
    (2, 2, 2)
    """
    build = untraced(_joint) if traced() else _joint
    return build(x1, x2, y, sizes=sizes, weights=weights, groups=groups, num_groups=num_groups)


def joint_layout(x1, x2, y, *, sizes=None, weights=None, groups=None, num_groups=None):
    """What :func:`joint` of these arguments would build, without building it: its number of
    problems G, its sizes ``(n1, n2, ny)``, its device and dtype, after every check of the samples
    :func:`joint` makes (the same errors; a joint too large for the free memory is not one)."""
    check = untraced(_checked_samples) if traced() else _checked_samples
    s = check(x1, x2, y, sizes=sizes, weights=weights, groups=groups, num_groups=num_groups)
    # A problem without a sample of positive weight has no distribution, as joint() finds
    # when it normalises: here from the problems of those samples (G of 10**12 needs no array).
    held = None if s.w is None else s.w.detach() > 0
    if s.gidx is None:
        if held is not None and not bool(held.any()):
            _refuse_empty(0, 1, 1, s.N, grouped=False, overflow=False)
    else:
        present = torch.unique(s.gidx if s.w is None else s.gidx[held])
        if len(present) < s.G:
            first = present != torch.arange(len(present), device=present.device)
            g = int(first.nonzero()[0]) if bool(first.any()) else len(present)
            _refuse_empty(g, s.G, s.G - len(present), int((s.gidx == g).sum()), grouped=True, overflow=False)
    return s.G, s.sizes, s.device, s.dtype


class _Samples(NamedTuple):
    """Checked samples (:func:`_checked_samples`): hard variables as ``(axis, codes, n)``, soft
    ones as ``(axis, rows)``, the weights scaled per group (or None), the group of each sample
    (or None) and the joint's G, sizes, dtype and device."""
    N: int
    hard: list
    soft: list
    w: Optional[torch.Tensor]
    gidx: Optional[torch.Tensor]
    G: int
    sizes: tuple
    dtype: torch.dtype
    device: torch.device
    any_torch: bool
    origins: dict


def _joint(x1, x2, y, *, sizes, weights, groups, num_groups):
    """:func:`joint`, never traced by torch.compile (see :mod:`fastpid._tracing`)."""
    s = _checked_samples(x1, x2, y, sizes=sizes, weights=weights, groups=groups, num_groups=num_groups)
    _check_output_size(s.G, s.sizes, s.dtype, s.device, s.origins, soft=bool(s.soft))
    # Outside autocast: its matmuls had made a float32 joint bfloat16 (entries off by 4e-3,
    # the synergy by 5 times the certified gap).
    with torch.autocast(device_type=s.device.type, enabled=False) if s.device.type in ("cpu", "cuda") \
            else contextlib.nullcontext():
        T = _accumulate(s.N, s.hard, s.soft, s.w, s.G, s.gidx, s.dtype, s.device)  # (G, n1, n2, ny)
    P = _normalise(T, s.gidx, s.G, grouped=s.gidx is not None)
    if s.gidx is None:
        P = P[0]
    if not s.any_torch:
        return P.detach().numpy()
    return P


def _checked_samples(x1, x2, y, *, sizes, weights, groups, num_groups) -> _Samples:
    """:func:`joint`'s checks of its arguments, and what building the joint needs of them."""
    raw = {"x1": x1, "x2": x2, "y": y, "weights": weights, "groups": groups}
    vmapped = [k for k, v in raw.items() if transformed(v)[1]]
    if vmapped:  # its checks of the values are data-dependent control flow, which vmap refuses
        raise ValueError(f"fastpid.joint cannot run under torch.vmap ({', '.join(vmapped)} batched by it): "
                         "pass groups= for one joint per group of samples, or call it once per batch")
    devices = {k: v.device for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{k} on {d}" for k, d in devices.items())
        raise ValueError(f"inputs are on different devices ({listing}); move them to one device")
    device = next(iter(devices.values())) if devices else torch.device("cpu")
    any_torch = bool(devices)
    n_sizes = _parse_sizes(sizes)

    tensors = []
    for name, v in (("x1", x1), ("x2", x2), ("y", y)):
        if v is None:
            raise TypeError(f"{name} is required (codes of shape (N,) or rows of shape (N, n))")
        t = sample_tensor(v, name, device)
        if t.dim() not in (1, 2):
            raise ValueError(
                f"{name} must be a 1-D vector of N integer codes or a 2-D (N, n) matrix "
                f"of probability rows, got shape {tuple(t.shape)}"
            )
        tensors.append(t)

    # Sample counts must agree (checked before any data-dependent work).
    lengths = {n: t.shape[0] for n, t in zip(_NAMES, tensors)}
    w_t = g_t = None
    if weights is not None:
        w_t, _ = as_tensor(weights, "weights", device=device)
        if w_t.dim() == 1:
            lengths["weights"] = w_t.shape[0]
    if groups is not None:
        g_t, _ = as_tensor(groups, "groups", device=device)
        if g_t.dim() == 1:
            lengths["groups"] = g_t.shape[0]
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise ValueError(
            f"inputs have different numbers of samples ({listing}); x1, x2, y (and "
            f"weights, groups) need one entry/row per sample"
        )
    N = tensors[0].shape[0]
    if N == 0:
        raise ValueError("no samples: x1, x2 and y are empty (N = 0); need at least one sample")

    dtype = torch.float64
    if any_torch:
        dtype = _result_dtype(
            [t for name, t in zip(_NAMES, tensors) if t.dim() == 2 and isinstance(raw[name], torch.Tensor)]
        )

    # Validate each variable: hard codes -> (axis, codes, size); soft -> (axis, rows).
    hard, soft, out_sizes = [], [], []
    for axis, (name, t) in enumerate(zip(_NAMES, tensors)):
        if t.dim() == 1:
            codes, n = check_codes(t, name, n_sizes[axis])
            hard.append((axis, codes, n))
        else:
            rows = check_rows(t, name, n_sizes[axis]).to(dtype)
            n = rows.shape[1]
            soft.append((axis, rows))
        out_sizes.append(n)

    G, gidx = 1, None
    if g_t is not None:
        num_groups = check_positive_int(num_groups, name="num_groups", allow_none=True)
        if g_t.dim() != 1:
            raise ValueError(f"groups must be a 1-D vector of N group ids, got shape {tuple(g_t.shape)}")
        gidx, G = check_codes(g_t, "groups", num_groups, what="group id", size_name="num_groups")
    elif num_groups is not None:
        raise ValueError("num_groups was given without groups; pass groups=... as well")

    w = None
    if w_t is not None:
        w = check_weights(w_t, N)
        # Only ratios within a group matter: scaled to a largest weight of 1 in each group
        # before any cast to the joint's dtype, where float64 weights of 1e-50 had read as
        # all zero in float32 (and weights near 1e-44 had lost 9 % of their ratio), in the
        # wider of the two dtypes (float32 weights of 3 and 1 had given 0.2500000056 in a
        # float64 joint). A detached scale: the joint is homogeneous of degree 0 in w. A
        # group of all-zero weights stays 0 (the total-weight check names it).
        w = w.to(torch.promote_types(w.dtype, dtype))
        d = w.detach()
        if gidx is None:
            top = d.amax()
        else:
            top = d.new_zeros(G).scatter_reduce(0, gidx, d, "amax")[gidx]
        w = (w / torch.where(top > 0, top, 1.0)).to(dtype)

    return _Samples(N, hard, soft, w, gidx, G, tuple(out_sizes), dtype, device, any_torch,
                    _size_origins(n_sizes, tensors, g_t, num_groups))


_FROM_CODES = "the largest code + 1"


def _size_origins(n_sizes, tensors, groups, num_groups) -> dict:
    """Where each size of the joint comes from, ``{origin: [names]}``, for the message of
    :func:`_check_output_size`: ``sizes=`` (or ``num_groups=``), the largest code + 1, or the
    width of soft rows."""
    origins = {}
    for name, given, t in zip(_NAMES, n_sizes, tensors):
        origin = "sizes=" if given is not None else _FROM_CODES if t.dim() == 1 else "the row widths"
        origins.setdefault(origin, []).append(name)
    if groups is not None:
        origins.setdefault("num_groups=" if num_groups is not None else _FROM_CODES, []).append("groups")
    return origins


def _check_output_size(G: int, sizes, dtype: torch.dtype, device: torch.device, origins: dict,
                       soft: bool) -> None:
    """Refuse a joint larger than the free memory (typically codes far above their real
    range with ``sizes`` left to be inferred), saying how large it would be and where its
    sizes come from (``origins``, of :func:`_size_origins`); joints that need less than
    ``_resources._UNCHECKED_BYTES`` are not checked."""
    from ._resources import available_bytes, gib, memory_unchecked

    cells = G * math.prod(sizes)
    # The sums, then the normalised joint: two copies (a 305 MB joint of codes grew the process
    # by 623 MB); probability rows (``soft``) add a chunk's products beside the sums (76 MB
    # joints of 1000-value rows: 2.9 joints at N = 3,000), counted as a third.
    one = cells * torch.empty((), dtype=dtype).element_size()
    need = (3 if soft else 2) * one
    if memory_unchecked(need):  # reading the free memory (six files) took ~80 us a call
        return
    have = available_bytes(device)
    if have is not None and need > have:
        shape = " x ".join(str(n) for n in ([G] if G > 1 else []) + list(sizes))
        size_of = dict(zip((*_NAMES, "groups"), (*sizes, G)))
        whence = ", ".join(f"{origin} ({', '.join(f'{name}: {size_of[name]:,}' for name in names)})"
                           for origin, names in origins.items())
        # Advice to pass sizes= fits inferred sizes only: given ones are what the caller asked for.
        inferred = origins.get(_FROM_CODES, [])
        advice = (f"pass sizes=(n1, n2, ny){' and num_groups=' if 'groups' in inferred else ''}, or "
                  "remap the codes to 0..n-1 (e.g. with numpy.unique(..., return_inverse=True))" if inferred
                  else "it needs fewer values per variable (or fewer groups) to fit")
        raise MemoryError(
            f"the joint would have shape {shape} ({cells:.3g} cells, {gib(one)}; building it takes "
            f"{gib(need, have)}) but only {gib(have, need)} is free; its sizes come from {whence} — "
            f"{advice}")


def _accumulate(N, hard, soft, w, G, gidx, dtype, device) -> torch.Tensor:
    """Unnormalised ``T[g, x1, x2, y] = Σ_n [g_n = g] w_n Π_v F_v[n, x_v]``.

    Hard variables (and the group) are merged into one flat index ``h`` of
    size H; the soft factors are contracted over samples:

    * no soft factor: one ``index_add`` of the weights (a weighted bincount);
    * otherwise the widest soft factor R is kept aside and the others (times
      the weights) are combined into L (``c × La`` per chunk of c samples); then
      ``T[h] += L_hᵀ R_h`` by one of the contractions of :func:`_choose_mode`.
      Chunking keeps temporaries below ``_CHUNK_ELEMS`` elements.
    """
    if device.type == "cuda":
        T = _accumulate_fused(hard, soft, w, G, gidx, dtype, device)
        if T is not None:
            return T
    H = G
    h = gidx
    for _, codes, n in hard:
        h = codes if h is None else h * n + codes
        H *= n
    hard_axes = [a for a, _, _ in hard]
    hard_sizes = [n for _, _, n in hard]

    if not soft:
        vals = w if w is not None else torch.ones(N, dtype=dtype, device=device)
        if H == 1:
            T = vals.sum().reshape(1)
        else:
            T = torch.zeros(H, dtype=dtype, device=device).index_add(0, h, vals)
        T = T.reshape(G, *hard_sizes)
        axes = ["g"] + hard_axes
    else:
        r_pos = max(range(len(soft)), key=lambda i: soft[i][1].shape[1])
        r_axis, R = soft[r_pos]
        left = [s for i, s in enumerate(soft) if i != r_pos]
        left_axes = [a for a, _ in left]
        left_sizes = [f.shape[1] for _, f in left]
        La = math.prod(left_sizes)
        Rb = R.shape[1]
        mode = _choose_mode(N, H, La, Rb, device)
        per_sample = {"matmul": La, "segments": La, "onehot": H * La, "scatter": La * Rb}[mode]
        chunk = max(1, _CHUNK_ELEMS // max(per_sample, 1))
        T = None
        for s in range(0, N, chunk):
            sl = slice(s, min(N, s + chunk))
            c = sl.stop - sl.start
            L = None if w is None else w[sl, None]
            for _, F in left:
                Fc = F[sl]
                L = Fc if L is None else (L[:, :, None] * Fc[:, None, :]).reshape(c, -1)
            if L is None:
                L = torch.ones(c, 1, dtype=dtype, device=device)
            Rc = R[sl]
            if mode == "matmul":
                part = L.transpose(0, 1) @ Rc  # (La, Rb)
            elif mode == "segments":
                hs, order = torch.sort(h[sl], stable=True)
                counts = torch.bincount(hs, minlength=H).tolist()
                Ls = L.index_select(0, order).split(counts)
                Rs = Rc.index_select(0, order).split(counts)
                part = torch.stack([a.transpose(0, 1) @ b for a, b in zip(Ls, Rs)])  # (H, La, Rb)
            elif mode == "onehot":
                oh = torch.nn.functional.one_hot(h[sl], H).to(dtype)
                X = (oh[:, :, None] * L[:, None, :]).reshape(c, H * La)
                part = X.transpose(0, 1) @ Rc  # (H*La, Rb)
            else:
                O = (L[:, :, None] * Rc[:, None, :]).reshape(c, La * Rb)
                part = torch.zeros(H, La * Rb, dtype=dtype, device=device).index_add(0, h[sl], O)
            if T is None:
                T = part
            else:
                T += part  # in place: T + part had held a third joint-sized array
        T = T.reshape(G, *hard_sizes, *left_sizes, Rb)
        axes = ["g"] + hard_axes + left_axes + [r_axis]
    return T.permute([axes.index(a) for a in ("g", 0, 1, 2)])


def _accumulate_fused(hard, soft, w, G, gidx, dtype, device):
    """``T`` from the GPU kernels (CUDA, else Triton) for the two common cases, else ``None``.

    The kernels have no backward pass, so they serve only inputs that need no gradient:
    all three variables as codes, or soft rows for ``x1`` and ``x2`` with labels ``y``.
    """
    from . import cuda

    kernels = cuda
    if not cuda.available(device)[0]:
        from . import triton_kernels as kernels

        if not kernels.available(device)[0]:
            return None
    # requires_grad alone had let dual tensors and torch.func's wrapped ones through: their
    # derivatives were dropped, or the kernels failed on the wrappers' storage.
    if any(carries_derivatives(f) for _, f in soft) or carries_derivatives(w):
        return None
    kw = dict(groups=gidx, num_groups=G, weights=w)
    if len(hard) == 3:
        (_, x1, n1), (_, x2, n2), (_, y, ny) = sorted(hard, key=lambda t: t[0])
        return kernels.joint_codes(x1, x2, y, (n1, n2, ny), dtype=dtype, **kw)
    if [a for a, _ in soft] == [0, 1] and [a for a, _, _ in hard] == [2]:
        (_, y, ny), = hard
        return kernels.joint_soft(soft[0][1].to(dtype), soft[1][1].to(dtype), y, ny, **kw)
    return None


def _choose_mode(N: int, H: int, La: int, Rb: int, device: torch.device) -> str:
    """Pick how to contract ``T[h] = Σ_{n: h_n = h} L_n ⊗ R_n`` (see :func:`_accumulate`).

    * ``matmul``  — H = 1: one ``Lᵀ R``.
    * ``segments`` — sort by h and do one small ``Lᵀ R`` per value of h: no
      wasted flops, but a fixed cost per segment (CPU only; it needs the
      segment lengths on the host).
    * ``onehot``  — one large matmul against the one-hot expansion of h
      (``H×`` more flops, but a single kernel: used off the CPU when H <= width(R)).
    * ``scatter`` — scatter-add the per-sample outer products ``L_n ⊗ R_n``.

    The CPU thresholds come from timing the two candidate paths: a scatter-add
    costs about 5 ns per element of the ``N × La × Rb`` outer products, a
    segmented matmul about 60 µs per segment and chunk plus ~0.3 ns per flop.
    """
    if H == 1:
        return "matmul"
    if device.type != "cpu":
        return "onehot" if H <= Rb else "scatter"
    work = N * La * Rb
    n_chunks = -(-N * La // _CHUNK_ELEMS)
    seg_cost = n_chunks * H * 60e-6 + work * 0.3e-9
    scatter_cost = work * 5e-9
    return "segments" if seg_cost <= scatter_cost else "scatter"


def _normalise(T: torch.Tensor, gidx, G: int, *, grouped: bool) -> torch.Tensor:
    """Divide each problem by its total mass; zero-mass problems raise ValueError."""
    total = T.sum(dim=(-3, -2, -1), keepdim=True)
    _refuse_zero_totals(total.detach().reshape(G), gidx, G, grouped=grouped)
    return T / total


def _refuse_zero_totals(tot: torch.Tensor, gidx, G: int, *, grouped: bool) -> None:
    """ValueError naming the first problem whose total mass ``tot`` (G,) is 0 or not finite."""
    with torch.no_grad():
        bad = ~((tot > 0) & torch.isfinite(tot))
        any_bad = bool(bad.any())
    if any_bad:
        g = int(bad.nonzero()[0])
        n_in = 0 if gidx is None else int((gidx == g).sum())
        _refuse_empty(g, G, int(bad.sum()), n_in, grouped=grouped, overflow=not math.isfinite(float(tot[g])))


def _refuse_empty(g: int, G: int, cnt: int, n_in: int, *, grouped: bool, overflow: bool):
    """ValueError for problem ``g`` of ``G``, the first of ``cnt`` whose total weight is 0 (it holds
    ``n_in`` samples) or overflows."""
    if not grouped:
        if overflow:
            raise ValueError("the total weight overflows; rescale the weights (only their ratios matter)")
        raise ValueError("the samples have zero total weight (all weights are 0); at least one "
                         "sample needs a positive weight")
    more = "" if cnt == 1 else f" ({cnt - 1} other group{'s' if cnt > 2 else ''} too)"
    if overflow:
        raise ValueError(f"group {g}: the total weight overflows; rescale the weights{more}")
    if n_in == 0:
        raise ValueError(
            f"group {g} has no samples (groups takes values in [0, {G}) and none equals "
            f"{g}); its distribution is undefined — renumber the groups "
            f"consecutively or drop the empty group{more}"
        )
    raise ValueError(
        f"group {g} has zero total weight (its {n_in} sample{'s' if n_in != 1 else ''} "
        f"all have weight 0); its distribution is undefined{more}"
    )


@functools.cache
def _pid_parameters() -> frozenset:
    """The names :func:`fastpid.pid` takes (read once: inspect.signature took ~12 us a call)."""
    import inspect

    from .api import pid

    return frozenset(inspect.signature(pid).parameters)


def pid_from_samples(
    x1, x2, y, *, sizes=None, weights=None, groups=None, num_groups=None, **pid_kwargs
):
    """Partial information decomposition of samples: ``fastpid.pid(joint(...))``.

    Builds the joint distribution(s) with :func:`joint` (same arguments, same
    rules for hard codes and soft rows) and decomposes them with
    :func:`fastpid.pid`, to which any further keyword arguments (``method``,
    ``backend``, ``tol``, ``base``, ...) are passed.  Results have shape ``()``
    or ``(G,)`` with ``groups``; units are nats unless ``base=2``.
    """
    from .api import pid  # imported lazily: api may import this module

    unknown = sorted(set(pid_kwargs) - _pid_parameters())
    if unknown:  # before any work, and named as the caller called it (not "pid() got ...")
        hint = (" (a plug-in joint weighs a sample observed c times as weights=c does: pass the counts "
                "as weights)" if "counts" in unknown else "")
        raise TypeError(f"pid_from_samples() got unexpected keyword argument(s) {unknown}: it takes joint()'s "
                        f"arguments and fastpid.pid()'s{hint}")
    P = joint(x1, x2, y, sizes=sizes, weights=weights, groups=groups, num_groups=num_groups)
    return pid(P, **pid_kwargs)
