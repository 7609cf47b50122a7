"""The route of :func:`fastpid.pid` for C++ solves of CPU inputs that need no gradient: the same
solver and certificate as the general route (:mod:`fastpid.api`), on the same joint up to the
rounding of its total, in two native calls, ``fastpid._C.prepare`` (normalise, check, count the
free potentials) and ``fastpid._C.solve_pid`` (method ``"exact"`` or ``"fast"``: solve each
problem in its orientation, then its closed forms, bracket and terms) or ``fastpid._C.proxy_pid``
(method ``"proxy"``: the closed forms and their bracket), with a few numpy operations between
them. Python work between two solves runs with cold caches, so it costs several times
what it costs in a loop: against the numpy and torch bookkeeping this route did before, one
call per problem on one thread took 0.83-0.87x (8x8x8), 0.89-0.92x (10x10x10), 0.86-0.93x
(12x12x6), 0.95-0.96x (clustered 20x20x10) and 0.96-0.99x (clustered 40x40x6) the time (medians
of 21 paired rounds, two sessions of them); torch inputs handed to numpy() in one call and
their results made by torch.from_numpy then took 0.91x the time (8x8x8, 419 -> 383 us a call;
numpy inputs 0.98x, 380 -> 373 us: the dropped mass counted by np.count_nonzero). Masses
below :data:`fastpid._certify.NEGLIGIBLE` are dropped natively, with the general route's bound
(one call per problem on 6x6x20 joints of Dirichlet(0.05): 0.66 ms, against 1.21 ms by the
general route and 0.61 ms for the same joints without those masses). Methods "proxy" and "fast" took the general route until they came
here: one problem per call on one thread they now take 0.086x and 0.075x its time on 2x2x2
(31 against 352 us, 50 against 673), 0.10x and 0.12x on 8x8x8, 0.13x and 0.23x on a digits
20x20x10 joint, 0.17x and 0.33x for a batch of eight 8x8x8 and 0.70x and 0.76x for 1024 of them
(medians of 11 paired rounds, numpy inputs). Torch float32, float16 and bfloat16 tensors took
the general route too (results in float32, their rounding in the gap, done here in numpy as
fastpid._certify does it in torch): 2x2x2 float32 0.14x, 0.15x and 0.17x its time (exact, fast,
proxy; 100 against 730 us exact), 8x8x8 0.27x, 0.18x and 0.20x, 64 of 8x8x4 0.79x, 0.71x and
0.61x. Anything else (invalid input, gradients, GPU tensors, batches large enough to be chunked
or to need a memory check) is left to the general route, which handles it or raises.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from . import api, cpp, solver
from ._autograd import carries_derivatives
from ._build_info import load_extension
from ._certify import NEGLIGIBLE, negligible_bound, output_gap, rounding, solver_tol
from ._resources import (cpp_chunk, cpp_indexable, cpp_route_bytes, cpp_threads, memory_unchecked,
                         native_closed_forms_bytes)
from ._validate import FLOAT32_RESULTS, float64_problems, wider_than_float64
from .result import PIDResult


def native_pid(P, method: str, tol: float, max_iter: int, steps: int, base, backend: str):
    """:func:`fastpid.pid` of ``P`` with ``method`` (``"exact"``: ``max_iter`` Newton steps at
    most; ``"fast"``: ``steps`` alternation steps; ``"proxy"``) and ``backend`` ``"auto"`` or
    ``"cpp"``, or ``None`` where the general route must take it."""
    got = _float64_array(P)
    ext = _extension()
    if got is None or got[0].ndim < 3 or got[0].size == 0 or ext is None:
        return None
    arr, out_dtype = got
    batch_shape, (n1, n2, ny) = arr.shape[:-3], arr.shape[-3:]
    B = math.prod(batch_shape)
    exact, proxy = method == "exact", method == "proxy"
    # A large batch that neither elimination takes in one call, even without the values of no
    # mass, goes to the general route (chunked, its memory checked) before the native pass over
    # it: 10^8 problems of 2x2x2 took 26-51 s here before that route's memory check refused
    # them. (Below 2^20 entries the pass is short and the check, ~1 us, would cost a small
    # problem's call ~1 %.) The proxy's closed forms take any batch in one pass: it leaves a
    # batch to the general route where its normalised copy and results need a memory check.
    if proxy and not memory_unchecked(8 * (arr.size + 10 * B) + native_closed_forms_bytes(B, n1, n2, ny)):
        return None
    if not proxy and arr.size > 1 << 20 and not _one_call(B, n1, n2, ny, exact):
        # Their sizes without those values, from the batch's summed joint (a single problem:
        # itself, not a summed copy, which went past the copies that pid() checked before
        # this route; sums over three axes of a batch took 4-13x the time of one).
        flat_view = arr.reshape(-1, n1, n2, ny)
        total = flat_view[0] if B == 1 else flat_view.sum(axis=0)
        sizes = (max(1, int(np.count_nonzero(total.sum(axis=a)))) for a in ((1, 2), (0, 2), (0, 1)))
        if not _one_call(B, *sizes, exact):
            return None
    # Normalised natively (the general route's torch sum, cold after a solve, took 20-60 us
    # a call), negligible masses dropped as the general route drops them; None where an entry
    # or a total is not valid (the general route says what is wrong).
    prepared = ext.prepare(arr.reshape(-1, n1, n2, ny), NEGLIGIBLE)
    if prepared is None:
        return None
    flat, free1, free2, most1, most2, dropped, seen = prepared
    cells = n1 * n2 * ny
    scale = 1.0 if base is None else 1.0 / math.log(base)
    # The general route keeps the values of no mass for the proxy (its closed forms skip them)
    # and leaves them out of a solve (api.values_with_mass).
    if not proxy and not seen.all():
        keep1, keep2, keepy = np.split(seen, [n1, n1 + n2])
        flat = np.ascontiguousarray(flat[:, keep1][:, :, keep2][..., keepy])
        n1, n2, ny = flat.shape[1:]
    # The gap carries the rounding of the terms, and a solve aims below tol by as much
    # (fastpid._certify.rounding, solver_tol): float64's from the joint's cells alone, float32
    # results' also from I(X1,X2;Y) as the general route has it (the closed forms, clamped at
    # 0): a solve needs it first, the proxy's own terms hold it (in nats, before the units' scale).
    narrow = out_dtype == torch.float32
    mi = np.zeros(B)
    if narrow and not proxy:
        mi = np.maximum(ext.closed_forms(flat)[:, 0], 0.0)
    rounded = rounding(mi, out_dtype, cells)
    if proxy:
        terms, gap, broken = ext.proxy_pid(flat, 1.0 if narrow else scale)
        iterations = np.zeros(B, dtype=np.int64)
        if narrow:
            mi, rounded = terms[4].copy(), rounding(terms[4], out_dtype, cells)
            terms = terms * scale if scale != 1.0 else terms  # as the native finishing step scales
    else:
        lowrank = _elimination(n1, n2, ny, most1, most2, flat.shape[0], backend, cpp_threads(), exact)
        if lowrank is None:
            return None
        swap = api.swap_rule(n1, n2, free1, free2)
        swap = swap if isinstance(swap, np.ndarray) else np.full(free1.shape, swap)
        options = _options(solver_tol(tol, rounded), max_iter, None if exact else steps, lowrank)
        cpp.follow_torch_threads()
        terms, gap, converged, broken, iterations, settled = ext.solve_pid(flat, swap, options, scale)
        if exact and not settled:
            _other_way_where_short(ext, flat, swap, options, scale, terms, gap, converged, broken, iterations)
    if np.count_nonzero(dropped):  # the dropped masses' bound widens the gap (nats), as in the general route
        gap = gap + negligible_bound(dropped, cells)
    reported = output_gap(gap, mi, out_dtype, scale, cells)
    in_nats = (reported if scale == 1.0 else output_gap(gap, mi, out_dtype, 1.0, cells)).astype(np.float64)
    gap = reported
    if narrow:
        terms = terms.astype(np.float32)
    converged = in_nats <= tol
    # What api.warn_unconverged warns of: broken brackets, and exact solves short of tol.
    if broken.any() or (exact and not converged.all()):
        # stacklevel: pid()'s caller
        api.warn_unconverged(method, "cpp", converged, broken, in_nats, tol, max_iter, iterations, rounded=rounded)

    # terms' rows are the fields api.TERMS, PIDResult's first seven, in that order. Torch
    # results share the arrays' memory (torch.from_numpy, the terms in one call).
    if isinstance(P, torch.Tensor):
        fields = [*torch.from_numpy(terms.reshape(-1, *batch_shape)).unbind(0),
                  *(torch.from_numpy(x.reshape(batch_shape)) for x in (gap, converged, iterations))]
    else:
        fields = [x.reshape(batch_shape) for x in (*terms, gap, converged, iterations)]
    return PIDResult(*fields, method=method, backend="cpp", base=base)


def _other_way_where_short(ext, flat, swap, options, scale, terms, gap, converged, broken, iterations) -> None:
    """The problems that stopped short of ``options.tol`` solved once more with their sources
    the other way round, each keeping the narrower bracket (the arrays are updated in place; as
    fastpid.api._other_way_where_short, which says why)."""
    short = np.flatnonzero(~converged & ~broken)
    # Only where the solver takes the other orientation (fastpid.api.cpp_retry_fits: the
    # larger source on the Schur side can pass its 32-bit indices, or the automatic route's
    # limit, where the first orientation did not).
    n1, n2, ny = flat.shape[1:]
    flipped = ~swap[short]  # True: solved as n2 x n1 x ny
    short = short[np.where(flipped, api.cpp_retry_fits(n2, n1, ny, options.lowrank),
                           api.cpp_retry_fits(n1, n2, ny, options.lowrank))]
    if short.size == 0:  # unsettled by broken brackets alone, or unindexable: nothing to try again
        return
    t2, g2, c2, b2, it2, _ = ext.solve_pid(np.ascontiguousarray(flat[short]), ~swap[short], options, scale)
    better = ~b2 & (g2 < gap[short])
    kept = short[better]
    terms[:, kept], gap[kept], converged[kept], iterations[kept] = t2[:, better], g2[better], c2[better], it2[better]


@functools.lru_cache(maxsize=1)
def _extension():
    """The extension module where it has this route's functions, else ``None``; looked up
    once (an import per call took several microseconds)."""
    ext = load_extension()[0]
    return ext if all(hasattr(ext, name) for name in ("solve_pid", "proxy_pid")) else None


def _one_call(B: int, n1: int, n2: int, ny: int, exact: bool) -> bool:
    """Whether the C++ solver takes ``B`` problems ``n1 x n2 x ny`` in one call (``exact``: by
    either elimination, as :func:`_elimination` would find it, its choice of the two aside)."""
    eliminations = (False, True) if exact else (False,)
    return any(cpp_indexable(max(n1, n2), min(n1, n2), ny, exact, lowrank)
               and B <= cpp_chunk(B, n1, n2, ny, exact, lowrank) for lowrank in eliminations)


# The two decisions below depend on a few integers only, and repeat from call to call (a
# training loop's probes, resamples); cached, they take ~1 us instead of ~25.
@functools.lru_cache(maxsize=1024)
def _elimination(n1: int, n2: int, ny: int, most1: int, most2: int, B: int, backend: str, threads: int,
                 exact: bool):
    """For ``B`` problems ``n1 x n2 x ny`` with at most ``most1``, ``most2`` free potentials
    of X1, X2: whether the C++ solver's Newton steps eliminate by the low-rank structure
    (``True``) or the Schur complement (``False``; method "fast", ``exact=False``, takes no
    Newton step and always gets ``False``), or ``None`` where this route leaves the batch to the general
    one (``backend="auto"`` picks another solver; chunked; a memory check is due). ``threads``
    (:func:`cpp_threads`, read inside) is part of the key: the memory counts a workspace per
    thread (a decision cached at one thread had skipped the check due at two), and the Schur
    side's limit is higher where every thread has a problem (:func:`fastpid.cpp.auto_max`)."""
    # The automatic backend weighs a "fast" solve by the exact one's plan, as the general
    # route's does (fastpid.api._choose_backend).
    plan = solver.plan_for_counts(n1, n2, ny, most1, most2)
    lowrank = exact and plan.structure == "lowrank"
    if not cpp_indexable(max(n1, n2), min(n1, n2), ny, exact, lowrank):
        return None  # the general route's memory check says what would take them
    # Chunked as the general route chunks a C++ solve (by its workspaces and outputs, not the
    # PyTorch solver's Newton system, which sent 8 problems of 20x20x101 there one at a time).
    if ((backend == "auto" and not api.cpp_suits(n1, n2, ny, plan, busy=B >= threads))
            or B > cpp_chunk(B, n1, n2, ny, exact, lowrank)
            or not memory_unchecked(cpp_route_bytes(B, n1, n2, ny, exact, lowrank))):
        return None
    return lowrank


@functools.lru_cache(maxsize=64)
def _options(tol: float, max_iter: int, steps: int | None, lowrank: bool):
    """:func:`fastpid.cpp.options` of a solve (``steps=None``: exact; read, never changed, by
    the solver)."""
    return cpp.options(tol, max_iter, steps, lowrank=lowrank)


def _float64_array(P):
    """``(P as a float64 numpy array, the results' torch dtype)`` where this route takes ``P``:
    numpy arrays of real numbers (long double ones with each problem scaled into float64's
    range, as the general route does) and CPU tensors of float64 (results in float64) or of
    float32, float16 or bfloat16 (results in float32, as the general route gives them) that
    carry no derivatives; else ``None``."""
    if isinstance(P, torch.Tensor):
        if P.requires_grad:  # the usual training-loop call, told apart before numpy() raises (~10 us)
            return None
        if P.dtype in FLOAT32_RESULTS:
            # Converted first (numpy has no bfloat16): a tensor off the CPU, of another layout or
            # carrying derivatives is left to the general route before the copy.
            if P.device.type != "cpu" or P.layout != torch.strided or P.is_nested or carries_derivatives(P):
                return None
            return P.to(torch.float64).numpy(), torch.float32
        # numpy() refuses tensors that require a gradient, live off the CPU or are not
        # strided (one call where checking each property took several microseconds), but
        # not forward-mode AD's dual tensors, whose tangent it would drop.
        try:
            arr = P.numpy()
        except (RuntimeError, TypeError):
            return None
        return (arr, torch.float64) if arr.dtype == np.float64 and not carries_derivatives(P) else None
    if wider_than_float64(P):  # long double
        if P.ndim < 3 or P.size == 0:
            return None
        scaled, bad = float64_problems(P)
        return None if bad.any() else (scaled, torch.float64)  # invalid: the general route says what is wrong
    if type(P) is np.ndarray and P.dtype.kind in "fiub" and P.dtype.isnative:  # not a masked array
        return np.asarray(P, dtype=np.float64), torch.float64
    return None
