"""CVXPY reference for the BROJA optimisation (``backend="cvx"``).

Solves, for each problem in a batch,

    V(P) = min_{Q >= 0, Q(x1, y) = P(x1, y), Q(x2, y) = P(x2, y)}  I_Q(Y; X1, X2)

as an exponential-cone program with CVXPY and Clarabel.  Because ``Q(y) = P(y)`` on the
feasible set,

    I_Q(Y; X1, X2) = H_P(Y) + sum_{x1, x2, y} Q log(Q / Q(x1, x2))
                   = H_P(Y) + sum rel_entr(Q, Q(x1, x2)),

and ``rel_entr(x, t) = x log(x / t)`` is jointly convex, so the program is DCP.  Only cells
with ``P(x1, y) > 0`` and ``P(x2, y) > 0`` can carry mass on the feasible set; the others are
left out of the program (they are exactly zero in the returned Q).

This module is the slow, general-purpose peer: the torch solver in :mod:`fastpid.solver` is
the one to use.  It exists to validate that solver and to benchmark against "CVXPY with
Clarabel, as people use it".  Clarabel runs with its default settings unless
``solver_opts`` says otherwise; :data:`TIGHT_CLARABEL` holds the tightest settings that
still converge on the problems we test; with them Clarabel came within 9e-11..2.4e-10 nats
of the certified values on the benchmark's sparse families (status ``"optimal"``), with its
defaults off by up to 7.8e-7 (``bench/results/solver_cpu_intel.md``; 7.6e-7 in the earlier
reports there). Clarabel certifies nothing about V itself: the certified gap of
``fastpid.pid`` is the judge of accuracy.

Needs the optional dependency: ``pip install 'fastpid[cvx]'``.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["solve_cvx", "solve_cvx_q", "TIGHT_CLARABEL"]

#: Tighter Clarabel settings for validation runs (pass as ``solver_opts``).
TIGHT_CLARABEL = {
    "tol_gap_abs": 1e-11,
    "tol_gap_rel": 1e-11,
    "tol_feas": 1e-11,
    "tol_ktratio": 1e-9,
    "max_iter": 400,
}

#: Statuses for which a value is returned (anything else gives NaN).
_OK_STATUS = ("optimal", "optimal_inaccurate")

#: Show a progress bar for batches larger than this.
_PROGRESS_MIN_BATCH = 8


def available() -> tuple[bool, str]:
    """``(True, "")`` where CVXPY and its Clarabel solver are installed, else ``(False, why)``;
    without importing them (CVXPY's import takes about a second)."""
    import importlib.util

    missing = [name for name, module in (("CVXPY", "cvxpy"), ("Clarabel", "clarabel"))
               if importlib.util.find_spec(module) is None]
    if missing:
        return False, f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed " \
                      "(pip install 'fastpid[cvx]')"
    return True, ""


def _import_cvxpy():
    try:
        import cvxpy as cp
    except ImportError as exc:  # pragma: no cover - exercised only without cvxpy
        raise ImportError(
            "backend='cvx' needs CVXPY with the Clarabel solver, which is an optional "
            "dependency of fastpid: pip install 'fastpid[cvx]'"
        ) from exc
    if "CLARABEL" not in cp.installed_solvers():  # pragma: no cover
        raise ImportError(
            "backend='cvx' needs the Clarabel solver for CVXPY, which is not installed: "
            "pip install 'fastpid[cvx]'"
        )
    return cp


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _solve_one(P: np.ndarray, cp, solver_opts: dict) -> tuple[float, str, np.ndarray]:
    """Solve one problem ``P`` of shape (n1, n2, ny), normalised.  Returns (V, status, Q)."""
    import scipy.sparse as sp

    n1, n2, ny = P.shape
    p1y = P.sum(axis=1)  # (n1, ny): P(x1, y)
    p2y = P.sum(axis=0)  # (n2, ny): P(x2, y)
    py = p1y.sum(axis=0)
    h_y = _entropy(py)

    # Cells that can carry mass: P(x1, y) > 0 and P(x2, y) > 0.
    support = (p1y[:, None, :] > 0) & (p2y[None, :, :] > 0)
    i1, i2, iy = np.nonzero(support)
    m = i1.size
    Q = np.zeros_like(P)
    if m == 0:  # cannot happen for a normalised P, but never divide by nothing
        return 0.0, "optimal", Q

    q = cp.Variable(m, nonneg=True)
    rows = np.arange(m)

    # Marginal constraints; one (x2, y) constraint per target value is implied by the others
    # (both sets sum to p(y)), so it is dropped to keep the equality system full rank.
    k1 = i1 * ny + iy
    used1, r1 = np.unique(k1, return_inverse=True)
    A1 = sp.csr_array((np.ones(m), (r1, rows)), shape=(used1.size, m))
    b1 = p1y.reshape(-1)[used1]
    k2 = i2 * ny + iy
    used2, r2 = np.unique(k2, return_inverse=True)
    y_of_used2 = used2 % ny
    last_of_y = np.zeros(used2.size, dtype=bool)
    # used2 is sorted by (x2, y); the last x2 for each y is the redundant row to drop
    for y in np.unique(y_of_used2):
        last_of_y[np.nonzero(y_of_used2 == y)[0][-1]] = True
    keep2 = ~last_of_y
    A2 = sp.csr_array((np.ones(m), (r2, rows)), shape=(used2.size, m))[keep2]
    b2 = p2y.reshape(-1)[used2][keep2]

    # Q(x1, x2) for each cell, through an auxiliary variable per (x1, x2) pair in use.
    k12 = i1 * n2 + i2
    used12, r12 = np.unique(k12, return_inverse=True)
    S = sp.csr_array((np.ones(m), (r12, rows)), shape=(used12.size, m))  # sum cells -> pair
    E = sp.csr_array((np.ones(m), (rows, r12)), shape=(m, used12.size))  # pair -> its cells
    r = cp.Variable(used12.size, nonneg=True)

    constraints = [A1 @ q == b1, r == S @ q]
    if A2.shape[0]:
        constraints.append(A2 @ q == b2)
    objective = cp.Minimize(cp.sum(cp.rel_entr(q, E @ r)))
    prob = cp.Problem(objective, constraints)
    try:
        prob.solve(solver=cp.CLARABEL, **solver_opts)
    except cp.error.SolverError:
        return float("nan"), "solver_error", np.full_like(P, np.nan)
    status = str(prob.status)
    if status not in _OK_STATUS or prob.value is None or q.value is None:
        return float("nan"), status, np.full_like(P, np.nan)
    # The objective at the returned point, with Q(x1, x2) recomputed from q itself: CVXPY's
    # own prob.value uses the auxiliary r, which can round to 0 where q is 1e-30 and give inf.
    qv = np.maximum(np.asarray(q.value, dtype=np.float64), 0.0)
    q12 = np.bincount(r12, weights=qv, minlength=used12.size)[r12]
    pos = qv > 0
    V = float(np.sum(qv[pos] * np.log(qv[pos] / q12[pos]))) + h_y
    Q[i1, i2, iy] = qv
    return V, status, Q


def _prepare(P) -> tuple[np.ndarray, tuple[int, ...]]:
    raw = np.asarray(P)
    # A cast would read True as 1, drop imaginary parts and parse strings; exact integer counts
    # past int64 come as Python ints in an object array.
    real = raw.dtype.kind in "iuf" or (raw.dtype.kind == "O" and all(
        isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in raw.flat))
    if not real:
        raise TypeError(f"P must hold real numbers (integers or floats); got dtype {raw.dtype}")
    P = raw.astype(np.float64)
    if P.ndim < 3:
        raise ValueError(
            f"P must have shape (..., n1, n2, ny) with at least 3 dimensions; got shape {P.shape}"
        )
    if not np.all(np.isfinite(P)) or np.any(P < 0):
        raise ValueError("P must have finite, non-negative entries")
    batch_shape = P.shape[:-3]
    P = P.reshape((-1,) + P.shape[-3:])
    # Over each problem's largest entry first: counts near the float64 limit had summed to
    # inf, and P / inf to a joint of zeros, solved as V = 0 with status "optimal".
    top = P.max(axis=(1, 2, 3), initial=0.0)
    P = P / np.where(top > 0, top, 1.0)[:, None, None, None]
    total = P.sum(axis=(1, 2, 3))
    if np.any(total <= 0):
        b = int(np.nonzero(total <= 0)[0][0])
        raise ValueError(f"problem {b} of P has zero total mass; a distribution needs mass > 0")
    P = P / total[:, None, None, None]
    return P, batch_shape


def _iterate(n: int, progress):
    """Problem indices, with a tqdm bar for large batches (auto: only on a terminal)."""
    if progress is False or (progress is None and n <= _PROGRESS_MIN_BATCH):
        return range(n)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return range(n)
    # disable=None: tqdm switches itself off when stderr is not a terminal
    return tqdm(range(n), desc="cvxpy+clarabel", unit="problem", leave=False,
                disable=None if progress is None else False)


def solve_cvx_q(P, *, solver_opts: dict | None = None, progress: bool | None = None):
    """Like :func:`solve_cvx` but also return the optimal couplings.

    Returns ``(V, status, Q)``: ``V`` of shape ``P.shape[:-3]`` (nats), ``status`` a flat
    list of CVXPY status strings (one per problem, row-major over the batch), and ``Q`` of
    the shape of ``P``: the solver's optimal joint (clipped at 0; cells outside the support
    are exactly 0).  Failed problems get NaN in ``V`` and ``Q``.
    """
    cp = _import_cvxpy()
    P, batch_shape = _prepare(P)
    opts = dict(solver_opts or {})
    V = np.empty(P.shape[0])
    Q = np.empty_like(P)
    status: list[str] = []
    for b in _iterate(P.shape[0], progress):
        V[b], st, Q[b] = _solve_one(P[b], cp, opts)
        status.append(st)
    return V.reshape(batch_shape), status, Q.reshape(batch_shape + P.shape[1:])


def solve_cvx(P, *, solver_opts: dict | None = None, progress: bool | None = None):
    """BROJA ``V(P) = min_{Q in Delta_P} I_Q(Y; X1, X2)`` by CVXPY + Clarabel.

    Parameters
    ----------
    P : array_like, shape (B, n1, n2, ny) (or any ``(..., n1, n2, ny)``)
        Joint distributions, target last; each problem is normalised on its own.
    solver_opts : dict, optional
        Keyword arguments for ``cvxpy.Problem.solve`` / Clarabel settings, e.g.
        :data:`TIGHT_CLARABEL` or ``{"verbose": True}``.  Default: Clarabel defaults.
    progress : bool, optional
        Progress bar.  ``None`` (default): shown for batches of more than 8 problems when
        stderr is a terminal; ``True``/``False`` force it on/off.

    Returns
    -------
    V : numpy.ndarray, float64, shape ``P.shape[:-3]``
        The optimal value in nats; NaN where the solver failed.
    status : list of str
        CVXPY's status for each problem (``"optimal"``, ``"optimal_inaccurate"``,
        ``"solver_error"``, ...), flattened row-major over the batch.
    """
    V, status, _ = solve_cvx_q(P, solver_opts=solver_opts, progress=progress)
    return V, status
