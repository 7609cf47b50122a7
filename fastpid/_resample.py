"""Resampled joints for :func:`fastpid.estimate`: jackknife groups and draws from the null.

Everything here builds batches of joint distributions ``(B, n1, n2, ny)`` that one batched
:func:`fastpid.pid` call then solves:

* :func:`jackknife_joints` — the delete-a-group jackknife: the samples of each problem are
  split at random into ``g`` parts of (nearly) equal size and each part is left out in
  turn. The part joints come from one :func:`fastpid.joint` call with ``groups=``.
* :func:`null_log_weights` and :func:`tempered_conditional` — the zero-synergy model fitted
  to a joint, ``P0(x1,x2,y) = P(x1,x2) q(y|x1,x2)`` with ``q(y|x) ∝ p(y) exp(f_y(x1) +
  g_y(x2))`` from the optimal dual potentials of the BROJA problem of ``P`` (see
  :mod:`fastpid.estimate` for why this is the maximum-likelihood fit under "synergy = 0"),
  shrunk towards ``p(y)`` by :func:`match_shrinkage`; :func:`unseen_lowered` gives the pairs
  the joint does not hold their Good-Turing mass (:func:`unseen_pair_mass`) where it had more;
* :func:`null_draws` — joints of the samples with the target redrawn from that model.

Random numbers come from a numpy ``Generator`` (seeded by the caller), so a seed gives the
same resamples on every device.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import cpp, solver


def group_sizes(groups: torch.Tensor | None, n: int, G: int) -> np.ndarray:
    """Samples per problem, shape ``(G,)`` (``groups=None``: one problem of ``n`` samples)."""
    if groups is None:
        return np.array([n], dtype=np.int64)
    return np.bincount(groups.detach().cpu().numpy().astype(np.int64), minlength=G)


def scaled_weights(weights, gid: np.ndarray, G: int) -> np.ndarray:
    """The weights (float64 numpy) over their problem's largest weight: weights are
    scale-free (:func:`fastpid.joint` normalises), and sums and squares of weights near
    1e300 would overflow."""
    w = torch.as_tensor(weights).detach().to(torch.float64).cpu().numpy()
    top = np.zeros(G)
    np.maximum.at(top, gid, w)
    return w / np.where(top > 0, top, 1.0)[gid]


def effective_sizes(groups, weights, n: int, G: int) -> np.ndarray:
    """Kish effective sample size ``(Σw)² / Σw²`` per problem (the sample count without weights)."""
    if weights is None:
        return group_sizes(groups, n, G).astype(np.float64)
    gid = np.zeros(n, dtype=np.int64) if groups is None else groups.detach().cpu().numpy().astype(np.int64)
    w = scaled_weights(weights, gid, G)
    s1 = np.bincount(gid, weights=w, minlength=G)
    s2 = np.bincount(gid, weights=w * w, minlength=G)
    return np.where(s2 > 0, s1 * s1 / np.where(s2 > 0, s2, 1.0), 0.0)


def weight_factors(x1, x2, y, weights, groups, G: int, n1: int, n2: int, ny: int, ridge: float = 1e-6):
    """The weights split as ``w_n = W[g, y_n] r_n``: a factor of each class in each problem and
    one of each sample, for the test's null draws, where the class factor follows the redrawn
    class and the rest stays with its sample. Returns ``(log W (G, ny), log r (N,))``, each
    problem's ``log W`` at most 0 (``-inf`` for classes without samples), or ``None`` where
    there is nothing to split (no weights, or soft target rows). The weights must be > 0
    (:func:`fastpid.estimate` drops samples of weight 0).

    ``log w = a(y) + b(x1, x2) + e`` fitted by least squares in each problem (hard-coded
    sources; soft rows: ``b = 0``), with a ``ridge`` on ``b`` so that the class takes what the
    data cannot tell apart (classes that share no source cell): ``W = exp(a)``, ``r = exp(b +
    e)``. Solved exactly, over the classes after eliminating the cells (one ``ny x ny`` system
    per problem): alternating means converge slowly where the class nearly follows a source,
    and 50 sweeps left weights of the sources alone with class factors of 0.99 and 0.97 (3 %
    of the classes not X1's); with weights 1/30/900 by X1 and 2 % not X1's the test then
    rejected 37 of 400 zero-synergy samples at 5 % (18 of 400 solved exactly). Class
    balancing (a function of the class) gives ``r = 1``; weights of the sources alone a
    constant ``W``, the weights then staying with their samples; a product of the two is
    split into them. Weights of a class and a source together (``1 / count(x1, y)``) are
    outside the model: their interaction stays with the samples (29 of 300 rejected). Kept
    whole with their samples, class-balancing weights with a 1 % jitter made the test reject
    25 of 60 zero-synergy samples (N = 400, classes of 90/5/5 %); split, 5 of 300.
    """
    if weights is None or y.dim() != 1:
        return None
    device = y.device
    gid = torch.zeros_like(y, dtype=torch.int64) if groups is None else groups.to(torch.int64)
    lw = torch.as_tensor(weights).detach().to(device=device, dtype=torch.float64).log()
    cls = gid * ny + y.to(torch.int64)
    hard = x1.dim() == 1 and x2.dim() == 1
    cells = n1 * n2 if hard else 1  # soft source rows: one cell, b = 0
    at = (gid * cells + (x1.to(torch.int64) * n2 + x2.to(torch.int64) if hard else 0)) * ny + y.to(torch.int64)

    def table(v):  # the sums of v over the samples of each (problem, cell, class), (G, cells, ny)
        return torch.zeros(G * cells * ny, dtype=torch.float64, device=device).index_add_(0, at, v).reshape(G, cells, ny)

    N, S = table(torch.ones_like(lw)), table(lw)  # counts and log-weight sums
    d_y = N.sum(1)                                # (G, ny)
    # b_c = (S_c - (N a)_c) / D_c' with D_c' = D_c (1 + ridge); then the classes' normal
    # equations (diag(D_y) - N^T D_c'^-1 N) a = S_y - N^T (S_c / D_c'), positive definite over
    # the classes with samples (at least ridge / (1 + ridge) D_y).
    inv_c = 1.0 / (N.sum(2, keepdim=True).clamp_min(1.0) * (1.0 + ridge)) if hard else torch.zeros_like(N[..., :1])
    A = torch.diag_embed(d_y) - N.transpose(1, 2) @ (N * inv_c)
    rhs = S.sum(1)[..., None] - (N * inv_c).transpose(1, 2) @ S.sum(2)[..., None]
    absent = d_y == 0
    A = A + torch.diag_embed(absent.to(A.dtype))  # a = 0 for classes without samples
    a = torch.linalg.solve(A, rhs)[..., 0]
    a = torch.where(absent, -torch.inf, a)
    top = a.amax(1, keepdim=True)
    log_W = a - torch.where(torch.isfinite(top), top, 0.0)
    return log_W, lw - log_W.flatten()[cls]


def observed_values(x1, x2, y):
    """The samples recoded over the values they take, and those values' codes.

    Returns ``(x1, x2, y)`` over ``0..m-1`` (hard codes: rank among the values seen; probability
    rows: the columns with mass in some row) and the index tensors ``(i1, i2, iy)`` of the
    kept values in the declared alphabets. A PID does not see values of no mass, nor do the
    resamples (they redraw seen samples and seen targets), so :func:`fastpid.estimate` works
    on these: 50 samples declared over 256x256x64 values fill at most 50x50x50 cells.
    """
    def one(v):
        if v.dim() == 1:
            seen, codes = torch.unique(v, return_inverse=True)
            return codes, seen.to(torch.int64)
        keep = (v > 0).any(0).nonzero()[:, 0]
        return v[:, keep], keep

    (x1, i1), (x2, i2), (y, iy) = one(x1), one(x2), one(y)
    return (x1, x2, y), (i1, i2, iy)


def partition(groups, n: int, G: int, g: int, rng: np.random.Generator) -> np.ndarray:
    """Random part ``0..g-1`` of each sample, balanced within each problem (sizes differ by <= 1)."""
    gid = np.zeros(n, dtype=np.int64) if groups is None else groups.detach().cpu().numpy().astype(np.int64)
    order = rng.permutation(n)
    # Rank of each sample among the samples of its problem, in the random order.
    sorted_idx = order[np.argsort(gid[order], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(np.bincount(gid, minlength=G))[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[sorted_idx] = np.arange(n) - starts[gid[sorted_idx]]
    # Offsetting by a random shift per problem spreads the one-larger parts around.
    shift = rng.integers(0, g, size=G)
    return (rank + shift[gid]) % g


def jackknife_joints(x1, x2, y, *, sizes, weights, groups, G: int, g: int, rng, device, joint_fn):
    """Leave-one-part-out joints ``(G, g, n1, n2, ny)`` (float64, on ``device``).

    ``joint_fn`` is :func:`fastpid.joint`; the part joints come from one call with
    ``groups = problem * g + part``, and are weighted by their part's share of the
    problem's weight (the weights scaled per problem, :func:`scaled_weights`) and summed
    over the other parts (:func:`_sum_of_others`).
    """
    n = len(x1) if not isinstance(x1, torch.Tensor) else x1.shape[0]
    part = partition(groups, n, G, g, rng)
    gid = np.zeros(n, dtype=np.int64) if groups is None else groups.detach().cpu().numpy().astype(np.int64)
    sub = gid * g + part
    sub_t = torch.as_tensor(sub, device=device)
    parts = joint_fn(x1, x2, y, sizes=sizes, weights=weights, groups=sub_t, num_groups=G * g)
    parts = torch.as_tensor(parts).to(device=device, dtype=torch.float64).detach()
    w = None if weights is None else scaled_weights(weights, gid, G)
    mass = np.bincount(sub, weights=w, minlength=G * g).astype(np.float64)
    mass_t = torch.as_tensor(mass, dtype=torch.float64, device=device).reshape(G, g)
    raw = parts.reshape(G, g, *parts.shape[1:]) * mass_t[:, :, None, None, None]
    loo = _sum_of_others(raw)
    return loo / _sum_of_others(mass_t)[:, :, None, None, None]


def _sum_of_others(a: torch.Tensor) -> torch.Tensor:
    """``Σ_{j≠i} a[:, j]`` for each ``i`` (axis 1) of non-negative ``a``, as the sum of the
    parts before ``i`` and after it: nothing is subtracted, so it keeps full relative
    precision (``total - a[:, i]`` cancels catastrophically where part ``i`` outweighs the
    rest: one weight of 1e16 among ones lost 2% of the joint)."""
    zero = torch.zeros_like(a[:, :1])
    before = torch.cat([zero, a[:, :-1].cumsum(1)], 1)
    after = torch.cat([a[:, 1:].flip(1).cumsum(1).flip(1), zero], 1)
    return before + after


def dual_potentials(P: torch.Tensor, tol: float = 1e-9):
    """Optimal dual potentials ``(f, g)`` of the BROJA problem of a flat normalised float64
    batch ``P[B, n1, n2, ny]``: ``f[B, n1, ny]``, ``g[B, n2, ny]``, ``-inf`` where
    ``P(x1, y)`` (``P(x2, y)``) is zero."""
    from .api import _choose_backend, _per_orientation, _swap_sources

    # The C++ solver where the automatic backend would use it (it factorises a dense system
    # whose size the problem sets); the PyTorch solver elsewhere, on the problem's device.
    # One Newton plan serves the backend choice, the orientation and the elimination.
    plan = solver.newton_plan(P)
    use_cpp = _choose_backend("auto", P, "exact", plan=plan) == "cpp"
    lowrank = plan.structure == "lowrank"
    on = P
    if use_cpp and P.device.type != "cpu":  # the C++ solver works on the host: its plan there too
        on = P.cpu()
        plan = solver.newton_plan(on)
    sol = _per_orientation(
        on, lambda Q, _: cpp.solve(Q, tol, lowrank=lowrank) if use_cpp else solver.solve_exact(Q, tol),
        swap=_swap_sources(on, plan))
    return sol.f.to(P.device), sol.g.to(P.device)


def null_log_weights(P: torch.Tensor, tol: float = 1e-9):
    """``(log p(y), f_y(x1) + g_y(x2))`` of the BROJA dual optimum, ``(B, 1, 1, ny)`` and
    ``(B, n1, n2, ny)`` (``-inf`` on cells no coupling of ``P`` can use).

    Cells whose ``(x1, y)`` or ``(x2, y)`` pair ``P`` does not hold get the smallest weight of
    a held cell instead of none: with few samples most unseen pairs are sampling zeros, and
    the null model must not turn them into structural ones.
    """
    f, g = dual_potentials(P, tol)
    py = P.sum((1, 2))
    p1y, p2y = P.sum(2), P.sum(1)
    held = (p1y > 0)[:, :, None, :] & (p2y > 0)[:, None, :, :] & (py > 0)[:, None, None, :]
    logpy = torch.log(torch.where(py > 0, py, torch.ones_like(py)))[:, None, None, :]
    fg = torch.where(held, f[:, :, None, :] + g[:, None, :, :], 0.0)
    big = torch.tensor(torch.inf, dtype=fg.dtype, device=fg.device)
    floor = torch.where(held, fg, big).flatten(1).amin(1)
    floor = torch.where(torch.isfinite(floor), floor, torch.zeros_like(floor))
    fg = torch.where(held, fg, floor[:, None, None, None])
    return logpy, torch.where((py > 0)[:, None, None, :], fg, -big)


def unseen_lowered(q: torch.Tensor, P: torch.Tensor, unseen_mass: torch.Tensor):
    """The null conditional ``q (B, n1, n2, ny)`` (:func:`tempered_conditional` of ``P``'s
    weights) with the cells whose ``(x1, y)`` or ``(x2, y)`` pair ``P`` does not hold scaled
    by one factor per problem, each ``x`` renormalised (an ``x`` of no mass whose every ``y``
    is unseen stays 0), so that the null world ``P(x) q(y|x)`` puts ``unseen_mass`` ``(B,)``
    on them (:func:`unseen_pair_mass`; none at 0). Problems whose world puts no more than that
    there are left as they are. Returns the conditional and which problems were lowered
    ``(B,)``."""
    held = (P.sum(2) > 0)[:, :, None, :] & (P.sum(1) > 0)[:, None, :, :]
    unseen = ~held & (q > 0)
    px = P.sum(-1)
    # Each x's share on unseen pairs and on the others, each summed (1 - u loses the digits of
    # a row almost all on unseen pairs).
    u, h = (q * unseen).sum(-1), (q * ~unseen).sum(-1)

    def mass(c):  # the world's mass on unseen pairs with their cells scaled by c (B,)
        cu = c[:, None, None] * u
        share = torch.where(px > 0, cu / (h + cu).clamp_min(torch.finfo(q.dtype).tiny), 0.0)
        return (px * share).flatten(1).sum(1)

    t = unseen_mass.to(q)
    lowered = mass(torch.ones_like(t)) > t
    # mass(c) rises with c: bisection on log c to the largest c whose mass is at most t (on c
    # itself, 64 halvings left targets 1e-15 of the mass 1e-4 off); c = 0 where t is 0. Where
    # no lowered problem has t > 0 (samples whose every pair is seen twice: the usual case),
    # every c the result uses is 0 and the bisection (2-3 ms of a small estimate) is skipped.
    lo = torch.full_like(t, math.log(torch.finfo(q.dtype).tiny))
    if bool((lowered & (t > 0)).any()):
        hi = torch.zeros_like(t)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            over = mass(torch.exp(mid)) > t
            lo, hi = torch.where(over, lo, mid), torch.where(over, mid, hi)
    c = torch.where(t > 0, torch.exp(lo), torch.zeros_like(lo))
    scaled = torch.where(unseen, q * c[:, None, None, None], q)
    scaled = scaled / scaled.sum(-1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)
    return torch.where(lowered[:, None, None, None], scaled, q), lowered


def unseen_pair_mass(x1, x2, y, groups, G: int, sizes) -> torch.Tensor | None:
    """Good-Turing's estimate of the mass of the ``(x1, y)`` and ``(x2, y)`` pairs no sample
    shows, per problem ``(G,)``: the share of its samples whose pair no other sample has, of
    both tables together; ``None`` where a variable is given as probability rows (no counts).
    Samples count once whatever their weight: the estimate is of what the sampling missed."""
    if any(v.dim() != 1 for v in (x1, x2, y)):
        return None
    m1, m2, my = sizes
    gid = torch.zeros_like(x1, dtype=torch.int64) if groups is None else groups.to(torch.int64)
    y = y.to(torch.int64)
    once = torch.zeros(G, dtype=torch.int64, device=x1.device)
    for x, m in ((x1, m1), (x2, m2)):
        pair = (gid * m + x.to(torch.int64)) * my + y
        once += (torch.bincount(pair, minlength=G * m * my).reshape(G, -1) == 1).sum(1)
    n = torch.bincount(gid, minlength=G)
    return once.to(torch.float64) / n.to(torch.float64)


def tempered_conditional(log_weights, lam: torch.Tensor) -> torch.Tensor:
    """``q_λ(y|x) ∝ p(y) exp(λ (f_y(x1) + g_y(x2)))``, normalised over ``y``; ``lam`` is ``(B,)``.

    ``λ = 1`` is the conditional of the zero-synergy fit, ``λ = 0`` the marginal ``p(y)``
    (no information about ``Y``); in between, the fit's information is shrunk.
    """
    logpy, fg = log_weights
    lam = lam.to(fg.dtype)[:, None, None, None]
    z = logpy + torch.where(torch.isfinite(fg), lam * torch.where(torch.isfinite(fg), fg, 0.0), fg)
    z = torch.where(torch.isfinite(fg), z, fg)
    empty = ~torch.isfinite(z).any(-1, keepdim=True)
    z = torch.where(empty, logpy.expand_as(z), z)
    return torch.softmax(z, -1)


def conditional_mi(px: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``I(Y; X1,X2)`` of the joints ``px(x) q(y|x)``; ``px (B, n1, n2)``, ``q (B, n1, n2, ny)``."""
    J = px[..., None] * q
    py = J.sum((1, 2), keepdim=True)
    ratio = torch.where(J > 0, q / torch.where(py > 0, py, torch.ones_like(py)), torch.ones_like(q))
    return (J * torch.log(ratio)).sum((1, 2, 3))


#: Floats of the per-sample conditionals a pass of :func:`null_draws` forms for soft sources
#: (8 MB a pass).
MIXTURE_CHUNK_FLOATS = 1 << 20
#: Bytes :func:`null_draws` holds per sample and draw (the uniforms, the redrawn targets, the
#: repeated sources, groups and weights, and fastpid.joint's cell indices): estimates of
#: 20x20x10 codes grew by 285 / 690 / 2,037 MB at N = 10^5 / 3·10^5 / 10^6 with 29 null
#: draws, about 70 bytes a sample and draw. Soft sources repeat their rows too: 8 bytes more
#: per value of a row (10^5 samples of two 10-value sources: 479 MB, counted 742).
BYTES_PER_SAMPLE_DRAW = 96


def redraw_bytes(x1, x2, sizes, draws: int) -> int:
    """What :func:`null_draws` holds for ``draws`` draws of the samples ``x1``, ``x2`` (codes,
    or probability rows) over ``sizes`` values: per sample and draw, as above; per sample,
    three float64 rows over the classes (the conditionals and their running sums) and, a code
    beside probability rows, its float64 one-hot row. 0 without draws."""
    if draws == 0:
        return 0
    n1, n2, ny = sizes
    row_values = sum(v.shape[1] for v in (x1, x2) if v.dim() == 2)
    one_hot = sum(n for n, v in zip((n1, n2), (x1, x2)) if v.dim() == 1) if row_values else 0
    n = int(x1.shape[0])
    return draw_bytes(row_values) * n * draws + 8 * (3 * ny + 2 * one_hot) * n


def draw_bytes(row_values: int) -> int:
    """What a null draw holds per sample (:func:`redraw_bytes`), its sources' probability rows
    having ``row_values`` values in all (0 for codes)."""
    return BYTES_PER_SAMPLE_DRAW + 8 * row_values


def factor_bytes(G: int, ny: int) -> int:
    """What :func:`weight_factors` holds beyond the joints: ``ny x ny`` float64 systems per
    problem, about 2.5 of them at its peak (16 problems of 3,000 classes grew the process by
    2.9 GB), counted as 4."""
    return 4 * 8 * G * ny * ny


def null_draws(q: torch.Tensor, x1, x2, *, weights, groups, draws: int, rng, joint_fn, factors=None):
    """Joints ``(G, draws, n1, n2, ny)`` of the samples with their sources kept and the
    target redrawn from the zero-synergy conditional: ``y*_n ~ q(· | x1_n, x2_n)``.

    ``q[G, n1, n2, ny]`` is normalised over ``y`` (:func:`tempered_conditional`). The sources, the
    weights and the groups of the samples are kept as observed (the test conditions on
    them: under the null they carry no information about the conditional of ``Y``); soft
    source rows give ``y*_n`` from the mixture ``Σ_x p1(x1|n) p2(x2|n) q(·|x)``. The draws
    are one :func:`fastpid.joint` call with ``groups = draw * G + group``.

    ``factors`` (:func:`weight_factors`): the class factor ``W`` of the weights follows the
    redrawn target, the rest ``r`` stays with its sample (``weights`` is then not read).
    ``q`` is the weighted world's conditional, so the samples' own is ``q(y|x) / W(y)``
    (renormalised): ``y*`` is drawn from that and weighted ``W(y*) r``. Kept with their samples, a rare class's large weights
    spread over every class, and the test rejected 42 % of zero-synergy samples at the 5 %
    level.
    """
    G, n1, n2, ny = q.shape
    device = q.device
    t1 = torch.as_tensor(x1).to(device)
    t2 = torch.as_tensor(x2).to(device)
    n = t1.shape[0]
    gid = (torch.zeros(n, dtype=torch.int64, device=device) if groups is None
           else torch.as_tensor(groups).to(device=device, dtype=torch.int64))
    q = q.to(torch.float64)
    if t1.dim() == 1 and t2.dim() == 1:
        probs = q[gid, t1.long(), t2.long()]                                   # (N, ny)
    else:
        r1 = t1.to(torch.float64) if t1.dim() == 2 else torch.nn.functional.one_hot(t1.long(), n1).double()
        r2 = t2.to(torch.float64) if t2.dim() == 2 else torch.nn.functional.one_hot(t2.long(), n2).double()
        # In chunks of samples: q[gid] at once is (N, n1, n2, ny), and grew an estimate of 10^5
        # samples of 10 soft values each over 20 classes by 1.7 GB.
        step = max(1, MIXTURE_CHUNK_FLOATS // (n1 * n2 * ny))
        probs = torch.cat([torch.einsum("ni,nj,nijy->ny", r1[s:s + step].detach(), r2[s:s + step].detach(),
                                        q[gid[s:s + step]]) for s in range(0, n, step)])
    if factors is not None:
        lp = _log_over_class_factor(probs, factors[0].to(device)[gid])
        top = lp.amax(-1, keepdim=True)
        probs = torch.exp(lp - torch.where(torch.isfinite(top), top, 0.0))
    cdf = probs.cumsum(-1)
    cdf = cdf / cdf[:, -1:].clamp_min(1e-300)
    u = torch.as_tensor(rng.random((n, draws)), dtype=torch.float64, device=device)
    ystar = torch.searchsorted(cdf.contiguous(), u).clamp_max(ny - 1)      # (N, draws)
    ystar = ystar.T.reshape(-1)                                            # draw-major
    rep = lambda t: t.detach().repeat(draws, *([1] * (t.dim() - 1)))      # noqa: E731
    sub = (torch.arange(draws, device=device)[:, None] * G + gid[None, :]).reshape(-1)
    if factors is not None:
        lw = factors[0].to(device).flatten()[(sub % G) * ny + ystar] + rep(factors[1].to(device))
        top = torch.full((draws * G,), -torch.inf, dtype=lw.dtype, device=device).scatter_reduce(0, sub, lw, "amax")
        w = torch.exp(lw - top[sub])  # each draw's problem is normalised on its own
    else:
        w = None if weights is None else rep(torch.as_tensor(weights).to(device))
    P = joint_fn(rep(t1), rep(t2), ystar, sizes=(n1, n2, ny), weights=w, groups=sub,
                 num_groups=draws * G)
    P = torch.as_tensor(P).to(device=device, dtype=torch.float64)
    return P.reshape(draws, G, n1, n2, ny).transpose(0, 1)


def _log_over_class_factor(probs: torch.Tensor, log_W: torch.Tensor) -> torch.Tensor:
    """``log(probs / W)`` per sample and class (``-inf`` where either is 0): in logs, as class
    factors far below the largest (1e-300) would overflow ``1 / W``."""
    return torch.where(torch.isfinite(log_W) & (probs > 0), probs.log() - log_W, -torch.inf)


def draws_marginal(q: torch.Tensor, x1, x2, groups, factors, px: torch.Tensor) -> torch.Tensor:
    """The sources' weighted marginal ``(G, n1, n2)`` that :func:`null_draws` from ``q`` give,
    to first order (each draw is normalised by its own total: O(1/N) apart): ``px`` (the
    data's) where the weights stay whole with their samples; with ``factors``, sample ``n``
    puts ``r_n / Z_n`` on its cell, ``Z_n = Σ_y q(y|x_n) / W(y)``,
    which is the data's only where ``q`` is the data's own conditional (hard-coded sources;
    soft rows keep ``px``). The null world solved with the draws has this marginal, so that
    its synergy is theirs."""
    if factors is None or x1.dim() != 1 or x2.dim() != 1:
        return px
    G, n1, n2, ny = q.shape
    gid = torch.zeros_like(x1, dtype=torch.int64) if groups is None else groups.to(torch.int64)
    log_W, log_r = (f.to(q.device) for f in factors)
    log_z = torch.logsumexp(_log_over_class_factor(q.to(torch.float64)[gid, x1.long(), x2.long()], log_W[gid]), -1)
    mass = log_r - log_z
    top = torch.full((G,), -torch.inf, dtype=mass.dtype, device=q.device).scatter_reduce(0, gid, mass, "amax")
    cell = (gid * n1 + x1.long()) * n2 + x2.long()
    out = torch.zeros(G * n1 * n2, dtype=torch.float64, device=q.device).index_add_(0, cell, torch.exp(mass - top[gid]))
    return out.reshape(G, n1, n2)


def match_shrinkage(log_weights, px: torch.Tensor, v_pilot: torch.Tensor, v_hat: np.ndarray, device,
                    steps: int = 14, lam_max: float = 1.5) -> torch.Tensor:
    """Shrinkage ``λ`` per problem such that the null world's information matches the data.

    The plug-in ``V`` of the data is biased upwards, and so is the fitted null model built
    from it: draws from it have a plug-in ``V`` of about ``I(P0_1) + b`` (``b``: the bias,
    measured by the pilot draws ``v_pilot``). The null world that could have produced the
    data's plug-in ``V̂`` has ``I(P0_λ) = V̂ - b``; ``λ`` solves that by bisection on
    ``[0, lam_max]`` (``I(P0_λ)`` is closed form: no solves).
    """
    G = px.shape[0]

    def info(lam):
        return conditional_mi(px, tempered_conditional(log_weights, lam))

    ones = torch.ones(G, dtype=torch.float64, device=device)
    bias = v_pilot - info(ones)
    target = torch.as_tensor(np.asarray(v_hat, dtype=np.float64), device=device) - bias
    # Bisection on [0, lam_max] (I(P0_λ) grows with λ), all problems at once.
    lo, hi = torch.zeros_like(ones), torch.full_like(ones, lam_max)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        below = info(mid) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return 0.5 * (lo + hi)
