"""Peer methods that fastpid is benchmarked against (besides CVXPY, see ``fastpid.cvx``).

``cvxpy_dense`` is the BROJA program as it is commonly written for CVXPY: a variable for
every one of the n1*n2*ny entries of Q (and one for each cell's mass Q(x1, x2)), the two
marginal constraints on all (x, y) pairs, the objective ``sum rel_entr(Q, Q(x1, x2))`` plus
H(Y), Clarabel's default settings. ``fastpid.cvx``, the main peer, writes the same program
over the admissible entries only (P(x1, y) > 0 and P(x2, y) > 0), with the redundant
constraint rows dropped: on the sparse joints of real data that program is tens of times
smaller, faster and more accurate. Here the constraints are built as sparse matrices, not
entry by entry, so CVXPY's compilation takes the least time this formulation allows.

``adam_sinkhorn`` is the FastPID-style heuristic refinement of the BROJA optimisation, written
from its description: start from the analytic proxy ``Q0 = P(x1,y) P(x2,y) / P(y)``,
parametrise ``Q`` by softmax logits, and at every step

1. ``Q = softmax(logits)`` over all cells (cells where Q0 = 0 are masked out),
2. project onto the marginal constraints with 10 Sinkhorn sweeps, per target value y:
   rescale rows to ``P(x1, y)``, then columns to ``P(x2, y)``,
3. take one Adam step on the logits against ``I_Q(Y; X1, X2)`` by autograd (through the
   Sinkhorn sweeps).

It returns ``I_Q`` of the final projected ``Q`` as the estimate of V.  After 10 sweeps ``Q``
matches the ``P(x2, y)`` marginals exactly but the ``P(x1, y)`` ones only approximately, so
the estimate is not a certified bound, and a fixed step budget gives no convergence
guarantee; the benchmark measures how far it lands from the certified value.

Settings (defaults): ``lr=1e-2`` (Adam), ``steps=200``, ``sweeps=10``, float64 -- the
typical settings of that refinement (100-200 steps at lr 1e-2).
"""

from __future__ import annotations

import numpy as np
import torch

from fastpid.cvx import _OK_STATUS, _entropy, _import_cvxpy, _prepare


def _sinkhorn(Q: torch.Tensor, a: torch.Tensor, b: torch.Tensor, sweeps: int) -> torch.Tensor:
    """Scale each y-slice of Q (B, n1, n2, ny) to row sums a (B, n1, ny), column sums b (B, n2, ny).

    Rows/columns with zero target mass are set to zero (their cells are zero anyway).
    """
    tiny = torch.finfo(Q.dtype).tiny
    for _ in range(sweeps):
        rows = Q.sum(dim=2)  # (B, n1, ny)
        Q = Q * (a / rows.clamp_min(tiny)).unsqueeze(2)
        cols = Q.sum(dim=1)  # (B, n2, ny)
        Q = Q * (b / cols.clamp_min(tiny)).unsqueeze(1)
    return Q


def _mutual_info(Q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """I_Q(Y; X1 X2) per problem, for Q of shape (B, n1, n2, ny); zero cells contribute 0."""
    q12 = Q.sum(dim=3, keepdim=True)
    qy = Q.sum(dim=(1, 2), keepdim=True)
    pos = mask & (Q > 0)
    one = torch.ones((), dtype=Q.dtype)
    # where() on both sides keeps the gradient finite at zero cells
    logratio = torch.log(torch.where(pos, Q, one)) - torch.log(torch.where(pos, q12 * qy, one))
    return torch.where(pos, Q * logratio, torch.zeros((), dtype=Q.dtype)).sum(dim=(1, 2, 3))


def analytic_proxy(P: torch.Tensor) -> torch.Tensor:
    """Q0(x1, x2, y) = P(x1, y) P(x2, y) / P(y) for P of shape (B, n1, n2, ny)."""
    a = P.sum(dim=2)
    b = P.sum(dim=1)
    py = P.sum(dim=(1, 2))
    denom = torch.where(py > 0, py, torch.ones_like(py))
    return a.unsqueeze(2) * b.unsqueeze(1) / denom[:, None, None, :]


def adam_sinkhorn(P, *, steps: int = 200, lr: float = 1e-2, sweeps: int = 10,
                  dtype=torch.float64) -> np.ndarray:
    """FastPID-style estimate of V(P) = min_{Q in Delta_P} I_Q(Y; X1, X2), batched.

    P: array of shape (B, n1, n2, ny) (numpy or torch), each problem normalised to 1.
    Returns a float64 numpy array of shape (B,) in nats.
    """
    P = torch.as_tensor(np.array(P) if not torch.is_tensor(P) else P, dtype=dtype)
    P = P / P.sum(dim=(1, 2, 3), keepdim=True)
    a = P.sum(dim=2)  # (B, n1, ny)
    b = P.sum(dim=1)  # (B, n2, ny)
    Q0 = analytic_proxy(P)
    mask = Q0 > 0
    B = P.shape[0]
    neg_inf = torch.tensor(float("-inf"), dtype=dtype)

    logits = torch.log(torch.where(mask, Q0, torch.ones((), dtype=dtype)))
    logits = torch.where(mask, logits, torch.zeros((), dtype=dtype)).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)

    def project(theta):
        masked = torch.where(mask, theta, neg_inf).reshape(B, -1)
        Q = torch.softmax(masked, dim=1).reshape(P.shape)
        return _sinkhorn(Q, a, b, sweeps)

    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = _mutual_info(project(logits), mask).sum()
        loss.backward()
        opt.step()

    with torch.no_grad():
        V = _mutual_info(project(logits), mask)
    return V.numpy().astype(np.float64)


def _dense_program_one(P: np.ndarray, cp, solver_opts: dict) -> tuple[float, str]:
    """V of one normalised problem P (n1, n2, ny) by the dense program; (NaN, status) on failure."""
    import scipy.sparse as sp

    n1, n2, ny = P.shape
    q = cp.Variable((n1 * n2, ny), nonneg=True)  # Q, one row per cell (x1, x2)
    r = cp.Variable(n1 * n2, nonneg=True)  # Q(x1, x2)
    over_x2 = sp.kron(sp.eye(n1), np.ones((1, n2)))  # (n1, n1 n2): sums a cell's x2 away
    over_x1 = sp.kron(np.ones((1, n1)), sp.eye(n2))  # (n2, n1 n2)
    constraints = [over_x2 @ q == P.sum(axis=1), over_x1 @ q == P.sum(axis=0),
                   cp.sum(q, axis=1) == r]
    cell_mass = cp.reshape(r, (n1 * n2, 1), order="C") @ np.ones((1, ny))
    prob = cp.Problem(cp.Minimize(cp.sum(cp.rel_entr(q, cell_mass))), constraints)
    try:
        prob.solve(solver=cp.CLARABEL, **solver_opts)
    except cp.error.SolverError:
        return float("nan"), "solver_error"
    status = str(prob.status)
    if status not in _OK_STATUS or q.value is None:
        return float("nan"), status
    # I_Q of the returned Q itself (clipped at 0), as fastpid.cvx evaluates its own answer.
    Q = np.maximum(np.asarray(q.value, dtype=np.float64), 0.0)
    cells = np.broadcast_to(Q.sum(axis=1, keepdims=True), Q.shape)
    pos = Q > 0
    return float(np.sum(Q[pos] * np.log(Q[pos] / cells[pos]))) + _entropy(P.sum(axis=(0, 1))), status


def cvxpy_dense(P, *, solver_opts: dict | None = None) -> tuple[np.ndarray, list[str]]:
    """V(P) = min_{Q in Delta_P} I_Q(Y; X1, X2) by the dense CVXPY program, one problem at a time.

    P: array of shape (B, n1, n2, ny) (or any ``(..., n1, n2, ny)``), each problem normalised
    on its own. Returns ``(V, status)`` as ``fastpid.cvx.solve_cvx``: V of shape
    ``P.shape[:-3]`` in nats (NaN where the solve failed) and the CVXPY statuses.
    """
    cp = _import_cvxpy()
    flat, batch_shape = _prepare(P)
    opts = dict(solver_opts or {})
    out = [_dense_program_one(p, cp, opts) for p in flat]
    V = np.array([v for v, _ in out], dtype=np.float64)
    return V.reshape(batch_shape), [st for _, st in out]
