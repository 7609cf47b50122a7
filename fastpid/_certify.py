"""What keeps every reported ``gap`` a proof: masses below what the solvers can represent are
dropped with a bound on what that changes, broken brackets are never reported, and the
rounding of the terms (float64's own, and the output dtype's) is added to the gap.
"""
from __future__ import annotations

import math

import numpy as np
import torch

#: Entries below this share of their problem's mass are dropped before solving. Products of
#: a few such masses (the solvers form up to four) stay far above float64's smallest normal
#: 2.2e-308, and the bound below makes the change invisible next to any reachable tol.
NEGLIGIBLE = 1e-60


def drop_negligible(P: torch.Tensor):
    """``(P', bound)`` for a flat normalised float64 batch ``P[B, n1, n2, ny]``.

    ``P'`` is ``P`` with every entry below :data:`NEGLIGIBLE` set to zero, renormalised;
    ``bound[B]`` bounds how far any PID term of ``P`` can be from that of ``P'`` (nats).

    Why it holds: with ``eps`` the dropped mass, ``P = (1 - eps) P' + eps E``. Any coupling of
    one problem's constraints is within total variation ``T = 3 eps / (1 - eps)`` of a coupling
    of the other's (mix in ``E``; or scale by ``1 / (1 - eps)`` and round onto the other
    marginals, which moves at most twice the ``2 eps / (1 - eps)`` of marginal excess, by the
    Altschuler–Weed–Rigollet lemma). By the Fannes–Audenaert inequality each entropy then
    moves by at most ``T log N + h(T)`` (``N = n1 n2 ny`` cells), each mutual information
    (and so ``V``) by three times that, and each PID term, a sum of at most three of them,
    by ``bound = 9 (T log N + h(T))``.
    """
    small = (P < NEGLIGIBLE) & (P > 0)
    if not bool(small.any()):  # the usual case, decided before any other work
        return P, P.new_zeros(P.shape[0])
    eps = torch.where(small, P, 0.0).sum((1, 2, 3))
    kept = torch.where(small, 0.0, P)
    kept = kept / kept.sum((1, 2, 3), keepdim=True)
    return kept, negligible_bound(eps, P[0].numel())


def negligible_bound(eps, cells: int):
    """:func:`drop_negligible`'s ``bound`` (nats) for dropped masses ``eps`` ``(B,)`` of
    problems of ``cells`` cells; a torch tensor or a numpy array as ``eps`` is (numpy for the
    native route of :func:`fastpid.pid`, where torch's calls took ~75 us)."""
    xp = torch if isinstance(eps, torch.Tensor) else np
    T = xp.clip(3.0 * eps / (1.0 - eps), None, 0.5)
    h = xp.where(T > 0, -T * xp.log(xp.clip(T, 1e-300, None)) - (1 - T) * xp.log1p(-T), 0.0)
    return 9.0 * (T * math.log(cells) + h)


def checked_bracket(lower, upper, lower0, upper0):
    """``(lower, upper, broken)``: the solver's bracket where it is a valid one, else the
    closed-form bracket ``(lower0, upper0)`` (always valid), and which problems fell back
    (``(B,)`` tensors each; the C++ finishing step of ``fastpid._C.solve_pid`` and
    ``fastpid._C.proxy_pid``, exposed as ``fastpid._C.pid_terms``, does the same for
    :mod:`fastpid._cpu_route`).

    A bracket is broken when a bound is not finite or ``lower`` exceeds ``upper`` by more than
    rounding. Within rounding (a few ulps of ``V``) the two bounds are swapped, so that
    ``upper - lower`` still covers the rounding of both.
    """
    slack = 1e-12 * (1.0 + abs(upper0))
    # |x| < inf is isfinite() in one comparison (False for NaN too).
    ok = (abs(lower) < math.inf) & (abs(upper) < math.inf) & (lower <= upper + slack)
    lo, hi = torch.minimum(lower, upper), torch.maximum(lower, upper)
    return torch.where(ok, lo, lower0), torch.where(ok, hi, upper0), ~ok


#: What rounding to float32 adds to the gap, per nat of ``I(X1,X2;Y)`` (see output_gap()).
FLOAT32_ROUNDING = 2.0**-23

#: What the float64 rounding of the terms' own computation adds to the gap, per unit of
#: ``1 + log(cells)`` (see rounding()): 32 ulps of 1.
FLOAT64_ROUNDING = 32 * 2.0**-52


# The three functions below take torch tensors or, in fastpid._cpu_route (where torch's
# operations on a few numbers took ~140 us a call), numpy arrays, and return the same kind.


def rounding(mi, dtype: torch.dtype, cells: int):
    """What output_gap() adds for the rounding of each problem's terms (nats), ``(B,)`` for
    problems of ``cells`` cells whose ``I(X1,X2;Y)`` is ``mi`` ``(B,)``.

    Always the float64 computation's: ``FLOAT64_ROUNDING (1 + log cells)``. The terms are sums
    and differences of entropies, each a sum over at most ``cells`` entries, and of the solver's
    bounds, sums of the same kind; each is within a few ``eps (1 + H)`` of exact, ``H <= log
    cells`` (measured: the closed forms of 240 random, sparse, peaked and near-point-mass joints
    of 1 to 8,000 cells, torch and C++, against 40-digit arithmetic, at most ``1.4 eps (1 + log
    cells)``; every term of independent joints of up to 10^6 cells, where each is 0, at most
    ``12.7 eps (1 + log cells)``, uniform 2x2x50,000). Without it the gap of closed-form cases
    was 0 beside terms an ulp off (XOR's synergy log 2 - 1.1e-16). float32 results add
    ``2^-23 mi``: one rounding of each term and of the unit conversion, every term being at
    most ``I(X1,X2;Y)``.
    """
    floor = FLOAT64_ROUNDING * (1.0 + math.log(cells))
    if isinstance(mi, np.ndarray):
        narrow = FLOAT32_ROUNDING * np.abs(mi) if dtype == torch.float32 else np.zeros_like(mi)
    else:
        mi = mi.detach().abs()
        narrow = FLOAT32_ROUNDING * mi if dtype == torch.float32 else torch.zeros_like(mi)
    return narrow + floor


def solver_tol(tol: float, rounded) -> float:
    """The gap the solvers aim at so that each problem's reported gap, its rounding ``rounded``
    ``(B,)`` (rounding()) added and rounded up, is still at most ``tol``. Problems whose rounding
    alone reaches ``tol`` cannot be reported converged whatever the solve (the warning says why),
    so they set no target; ``tol`` itself where none is rounded."""
    room = rounded[rounded < tol]
    allowance = float(room.max()) if len(room) else 0.0
    return (tol - allowance) * (1.0 - 2.0**-20) if allowance > 0 else tol


def output_gap(gap, mi, dtype: torch.dtype, scale: float, cells: int):
    """The gap in the output units and dtype, covering the rounding of the terms (rounding():
    problems of ``cells`` cells, ``I(X1,X2;Y) = mi``) and rounded up to ``dtype`` (float32 or
    float64)."""
    g = gap + rounding(mi, dtype, cells)
    g = g if scale == 1.0 else g * scale
    in_numpy = isinstance(g, np.ndarray)
    if dtype == torch.float64 and g.dtype == (np.float64 if in_numpy else torch.float64):  # nothing to narrow
        return g
    if in_numpy:
        out = g.astype({torch.float32: np.float32, torch.float64: np.float64}[dtype])
        return np.where(out.astype(g.dtype) < g, np.nextafter(out, out.dtype.type(math.inf)), out)
    out = g.to(dtype)
    return torch.where(out.to(g.dtype) < g, torch.nextafter(out, torch.full_like(out, math.inf)), out)
