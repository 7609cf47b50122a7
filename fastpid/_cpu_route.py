"""The route of :func:`fastpid.pid` for exact solves by the C++ solver of CPU inputs that need
no gradient: the same solver, certificate and results as the general route
(:mod:`fastpid.api`), with the bookkeeping before the solve done in numpy, whose operations on
a few values take about a microsecond where torch's take several, and the closed forms, the
bracket and the terms after it in one native pass (``fastpid._C.pid_terms``). Measured on one
thread, one 4x4x4 problem per call: 0.17 ms per call, of which 0.08 ms is the solve (0.29 ms
with those last steps in numpy; the general route spends 0.2–0.3 ms more). Anything else
(invalid input, masses below :data:`fastpid._certify.NEGLIGIBLE`, gradients, GPU tensors,
batches large enough to be chunked or to need a memory check) is left to the general route,
which handles it or raises.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from . import api, cpp, solver
from ._build_info import load_extension
from ._certify import NEGLIGIBLE
from ._resources import CHUNK_FLOATS, cpp_bytes, memory_unchecked
from .result import PIDResult


def exact_pid(P, tol: float, max_iter: int, base, backend: str):
    """:func:`fastpid.pid` of ``P`` with ``method="exact"`` and ``backend`` ``"auto"`` or
    ``"cpp"``, or ``None`` where the general route must take it."""
    arr = _float64_array(P)
    ext = load_extension()[0]
    if arr is None or arr.ndim < 3 or arr.size == 0 or not hasattr(ext, "solve"):
        return None
    batch_shape, (n1, n2, ny) = arr.shape[:-3], arr.shape[-3:]
    flat = np.ascontiguousarray(arr.reshape(-1, n1, n2, ny))
    # torch's sum, as the general route normalises: the same joint to the last bit, and so
    # the same results.
    total = torch.from_numpy(flat).sum(dim=(1, 2, 3)).numpy()
    # Written so that NaN fails (a NaN or infinite entry makes its total NaN or infinite, and
    # a negative one stays negative); the general route says what is wrong.
    if not (total.min() > 0 and total.max() < math.inf):
        return None
    flat = flat / total[:, None, None, None]
    least = flat.min()
    if not least >= 0 or (least < NEGLIGIBLE and np.any((flat > 0) & (flat < NEGLIGIBLE))):
        return None
    free1 = (flat.sum(2) > 0).sum((1, 2))
    free2 = (flat.sum(1) > 0).sum((1, 2))
    lowrank = _elimination(n1, n2, ny, int(free1.max()), int(free2.max()), flat.shape[0], backend)
    if lowrank is None:
        return None

    lower, upper, iterations = _solve(ext, flat, api.swap_rule(n1, n2, free1, free2),
                                      _options(tol, max_iter, lowrank))
    # Closed forms, bracket and terms in one native pass (the general route's formulas).
    scale = 1.0 if base is None else 1.0 / math.log(base)
    terms, gap, broken = ext.pid_terms(flat, lower, upper, scale)
    converged = gap <= tol
    api.warn_unconverged("exact", "cpp", converged, broken, gap, tol, max_iter, stacklevel=4)  # pid()'s caller

    as_output = torch.as_tensor if isinstance(P, torch.Tensor) else np.asarray
    fields = dict(zip(api.TERMS, terms.reshape((7,) + batch_shape)))
    # float64 results: nothing is rounded, so the reported gap is the bracket's (in the units).
    fields.update(gap=gap * scale if scale != 1.0 else gap, converged=converged, iterations=iterations)
    return PIDResult(**{k: as_output(v.reshape(batch_shape)) for k, v in fields.items()},
                     method="exact", backend="cpp", base=base)


# The two decisions below depend on a few integers only, and repeat from call to call (a
# training loop's probes, resamples); cached, they take ~1 us instead of ~25.
@functools.lru_cache(maxsize=1024)
def _elimination(n1: int, n2: int, ny: int, most1: int, most2: int, B: int, backend: str):
    """For ``B`` problems ``n1 x n2 x ny`` with at most ``most1``, ``most2`` free potentials
    of X1, X2: whether the C++ solver eliminates by the low-rank structure (``True``) or the
    Schur complement (``False``), or ``None`` where this route leaves the batch to the general
    one (``backend="auto"`` picks another solver; chunked; a memory check is due)."""
    plan = solver.plan_for_counts(n1, n2, ny, most1, most2)
    lowrank = plan.structure == "lowrank"
    if ((backend == "auto" and not api.cpp_suits(n1, n2, ny, plan)) or B > CHUNK_FLOATS // plan.floats
            or not memory_unchecked(cpp_bytes(B, n1, n2, ny, True, lowrank))):
        return None
    return lowrank


@functools.lru_cache(maxsize=64)
def _options(tol: float, max_iter: int, lowrank: bool):
    """:func:`fastpid.cpp.options` of an exact solve (read, never changed, by the solver)."""
    return cpp.options(tol, max_iter, lowrank=lowrank)


def _float64_array(P):
    """``P`` as a float64 numpy array where this route takes it: numpy arrays of real numbers
    and CPU float64 tensors that do not require a gradient; else ``None``."""
    if isinstance(P, torch.Tensor):
        plain = (P.dtype == torch.float64 and P.device.type == "cpu" and P.layout == torch.strided
                 and not P.requires_grad and not P.is_nested)
        return P.detach().numpy() if plain else None
    if isinstance(P, np.ndarray) and P.dtype.kind in "fiub" and P.dtype.isnative:
        return np.asarray(P, dtype=np.float64)
    return None


def _solve(ext, flat: np.ndarray, swap, opt):
    """``(lower, upper, iterations)`` of the C++ solver (``ext``: the extension module, ``opt``
    its options) for ``flat[B, n1, n2, ny]``, each problem with its sources swapped where
    ``swap`` (a bool, or ``(B,)`` bools) says so."""
    def solve(part, swapped):
        out = ext.solve(np.ascontiguousarray(part.transpose(0, 2, 1, 3)) if swapped else part, opt, False)
        return out[0], out[1], out[4]

    if not isinstance(swap, np.ndarray) or not swap.any() or swap.all():
        return solve(flat, bool(swap) if not isinstance(swap, np.ndarray) else bool(swap[0]))
    lower, upper = np.empty(flat.shape[0]), np.empty(flat.shape[0])
    iterations = np.empty(flat.shape[0], dtype=np.int64)
    for which, swapped in ((~swap, False), (swap, True)):
        lower[which], upper[which], iterations[which] = solve(flat[which], swapped)
    return lower, upper, iterations
