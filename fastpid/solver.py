"""PyTorch reference solver for the one optimisation behind the BROJA PID.

    V(P) = min_{Q >= 0, Q(x1,y) = P(x1,y), Q(x2,y) = P(x2,y)}  I_Q(Y; X1, X2)

All functions work on a flat batch ``P[B, n1, n2, ny]`` of normalised float64
problems and run on any torch device. Notation:

* dual potentials ``f[B, n1, ny]`` and ``g[B, n2, ny]``; the coupling they define is
  ``Q(x1,x2,y) = R(x1,x2) p(y) exp(f_y(x1) + g_y(x2))``;
* ``s(x1,x2) = sum_y p(y) exp(f_y(x1) + g_y(x2))``; any ``(f, g)`` gives the lower bound
  ``sum P(x1,y) f + sum P(x2,y) g - log max s`` on V;
* any exactly feasible ``Q`` gives the upper bound ``I_Q(Y; X1, X2)``.

The exact solver runs a short Blahut–Arimoto alternation (it finds a good interior
starting point) and then follows the central path of the barrier problem on the dual

    maximise  sum P(x1,y) f + sum P(x2,y) g + mu * sum_cells log(1 - s(x1,x2))

by primal–dual Newton steps: per cell a slack ``tau`` (which tends to ``1 - s``) and a
multiplier ``R``, and each step solves the optimality conditions ``s + tau = 1``,
``R tau = mu`` and the marginals, linearised; the step keeps ``tau`` and ``R`` positive
but not ``s < 1`` (a barrier line search held to ``s < 1`` took many short steps after
each cut of ``mu``), and ``mu`` then becomes a tenth of the mean ``R tau``: one Newton step
per level, about a quarter fewer steps in all than centring at each level. Near a centre
``R`` is the primal coupling's cell mass, so both bounds come out of every step; the solve
stops when they are within ``tol``. Every cell's ``R`` stays strictly positive, so cells
whose optimal mass is zero (the usual case for sparse joints) cost nothing special: their
``R`` simply decays with ``mu``.

Entries with ``P(x1,y) = 0`` (or ``P(x2,y) = 0``) carry potential ``-inf``; they are
kept out of every computation by boolean masks and never produce NaN.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch

from .info import closed_forms as torch_closed_forms
from .info import given_y, marginals, mutual_informations

_NEG_INF = float("-inf")
_MU_MIN = 1e-13

# Defaults of the exact solve, shared with the C++ port (fastpid/cpp.py).
WARM_STEPS = 10  # Blahut–Arimoto steps before Newton
# ... and WARM_BLOCK more at a time, up to WARM_MOST in all, where the alternation would
# certify by itself: its stationarity (:func:`stationarity`), falling at its rate over the
# last WARM_BLOCK steps, would reach tol by WARM_MOST steps (:func:`warm_start`). Joints with
# tiny sources and many classes converge that way: per block of 5 steps the stationarity fell
# 17-50x on 3x3x50 joints of Dirichlet(0.2), 5-17x on 5x3x40 ones, 12x on 2x3x3000 ones, while
# a Newton step cost 13-32 alternation steps (2x2x20 to 5x3x40). C++, one thread, in paired
# runs against 10 steps alone (six joints a shape, of Dirichlet(1) and of Dirichlet(0.2)):
# 2x3x3000 0.52x the time, 3x3x50 and 5x3x40 of Dirichlet(0.2) 0.37x and 0.67x, 2x2x20 of
# the two 0.77x and 0.84x, 4x4x30 of Dirichlet(0.2) 0.91x, 4x4x12 of Dirichlet(0.2) 1.01x
# (0.9 more steps), and 43 other cases (dense 3x3x3 to clustered 40x40x6, digits) the same
# steps and 0.96-1.02x the time; 200 random joints of 2-5 x 2-4 x 15-119 0.76x, 600 peaked
# and 300 sparse small ones 1.00x; at tol 1e-8 and 1e-10, none short that was not before.
# A rule that went on while the stationarity fell faster than Newton steps would shrink the gap
# in the same time (their cost modelled from the Newton system's flops) took 4x4x30 of
# Dirichlet(1) to 0.87x, but 6x6x20 to 1.04-1.07x and digits to 1.04x: how many Newton steps
# a smaller gap saves varies too much. The stationarity fell within 0.8-1.2x of the gap's rate
# a block on dense joints; on sparse real ones (digits, clustered) it jumps about.
WARM_BLOCK = 5
WARM_MOST = 30
# The alternation's own primal bound (a coupling rounded to the constraints) only where its
# stationarity at its end is within WARM_BOUND_RANGE of tol: above that it does not certify,
# and Newton starts from the gap stationarity / STATIONARITY_PER_GAP instead of the bounds'
# (the stationarity was 1.3-14x that gap, median 2.7, on 93 test and bench joints; starting
# mu from 0.1-1x the gap took the same Newton steps, from 3x 2 % more). Without the bound, one
# problem per call took 0.945x the time on digits 30x30x10, 0.965x on digits 20x20x10, 0.966x
# on clustered 20x20x10, 0.97-0.98x on UCI and 12x12x6, ~1 on 8x8x8; 131 joints 2,202 ->
# 2,196 iterations at 1e-8 (2,035 -> 2,020 at 1e-6, 2,385 -> 2,380 at 1e-10). Near float64's
# reach the start matters more: from / 3 a sparse 6x3x5 joint certifies 2.3e-13 where / 10 stalls
# at 2.1e-11 (at 1e-12 a third of 1,250 stress joints stop short either way, 1-2 more with / 10),
# but / 3 took 1.02-1.05x the time on digits and clustered joints at 1e-8.
WARM_BOUND_RANGE = 100.0
STATIONARITY_PER_GAP = 10.0
# Sinkhorn sweeps behind each primal bound. The multipliers R are near the constraints by the
# time a bound is due, so few sweeps project them: with 5 instead of 20, the C++ solver took
# the same iterations to within 2 over 448 random joints (7,707 to 1e-8, 8,172 to 1e-10),
# 2,800 peaked ones (46,559 / 51,947) and the bench's families, and 0.81-0.91x the time per
# solve on 8x8x8 to clustered 40x40x6 (1.02x on 12x12x6); even 1 sweep took at most 9 more
# iterations there.
POLISH_SWEEPS = 5
# At mu's floor the primal bound is the last chance to certify, and 20 sweeps can leave the
# projected coupling's marginals far enough off that its rounding costs up to 3e-9 nats
# (108 + 20 problems at tol 1e-10: 52 stopped short, largest gap 3.8e-9; with 100 sweeps
# there: 17, largest 3.6e-10). The 100 run only where the POLISH_SWEEPS bound at the floor
# did not certify, and only once the iterate is near its centre (dec2 <= CENTRED mu) or on its
# second step at the floor: the first step to reach the floor is often still off centre, its
# bound a little above tol, and the next Newton step certifies for a tenth of the sweeps'
# cost (bench joints at tol 1e-8: one 12x12x6 and one clustered 20x20x10 joint of eight took
# twice their time in those sweeps; C++, per solve 0.93 and 0.94 of the time over the eight;
# to 1e-10: 40x40x6 202 -> 206 iterations, 64x64x10 the same 50; 448 random joints the same
# steps, 2,800 peaked ones +3 and +2).
FLOOR_POLISH_SWEEPS = 100
# An iterate is near its centre where its Newton decrement dec2 is at most CENTRED mu.
CENTRED = 10.0
# Primal-dual path following: after a barrier step (and in the low-rank elimination, after
# every step) mu becomes MU_FACTOR times the mean complementarity R tau of the cells (at
# most the mu it was): one step per level of the barrier instead of the 4-8 of a centring,
# cut 50x (168 dense, sparse, tiny-mass, peaked and clustered problems: 6424 -> 4626
# iterations at tol 1e-8, 7127 -> 4989 at 1e-10, as many short of it, 25; MU_FACTOR 0.05 and
# 0.07 cost up to 470 steps on single problems).
MU_FACTOR = 0.1
# A step goes this fraction of the way to where a slack or a multiplier would reach zero:
# (f, g) and the slacks by the slacks' limit, the multipliers by theirs (one common length,
# the shorter, took 3,493 Newton steps over 420 dense, peaked, tiny-mass, sparse, few-sample
# and clustered joints at tol 1e-8 where these take 3,400; clustered ones 4-10 % fewer; but
# 7 % more on 3,000 joints whose masses span 20-60 decades, where, before MU_RAISE, they
# also left one more joint stalled).
FRACTION_TO_BOUNDARY = 0.99
# A primal-dual step shorter than MIN_STEP, without ascent, or to a point where a cell's
# log s exceeds MAX_LOG_S gives way to a barrier step (_barrier_step): on joints with masses
# of 1e-13 or 1e-45 the Newton systems are nearly singular, and primal-dual steps alone ran
# away (20 such joints: 5 ended with gaps of 8e-8 to 0.2; with the barrier steps 2, at 4e-8
# and 8e-8, where centring at every level certified all 20). MIN_STEP 0.05 to 0.15 take the
# same steps within 1 %; 0.3 takes 50 % more on the 168 problems above. MAX_LOG_S was 1.0:
# a very peaked 4x4x4 joint (tests/data/peaked_4x4x4_stall.npy) then stepped to s = 1.7 on
# a cell, the barrier step shifted f down by log s to get back inside, and it crawled on for
# 500 iterations (gap 2.2e-3); with 0.3 it certifies in 58. Over 2,800 peaked joints
# (Dirichlet(0.02-0.2) over the cells of 2x2x2 to 8x8x8), short of 1e-8: 3 -> 2, iterations
# the same (+4); to 1e-10: 9 short either way, +1.2 % iterations; 0.1 left 2 and 7 short
# but took 3.5 % more iterations.
MIN_STEP = 0.1
MAX_LOG_S = 0.3
# After a barrier step shorter than MU_RAISE_STEP, mu rises MU_RAISE-fold (never above the
# starting mu; the next step, without predictor, aims at that mu): such a step leaves the
# iterate far from the centre of its mu, and cutting mu there (to MU_FACTOR times the mean
# R tau) made the next steps shorter still (a peaked 8x8x8 joint,
# tests/data/peaked_8x8x8_stall.npy, crawled by steps of 0.001 while mu fell to its floor
# and stopped at max_iter with a gap of 5.8e-3 at tol 1e-10). Holding mu there certified
# that joint, but barrier steps still crawled (Newton decrements of 1e3-1e4 at mu ~ 1e-8)
# on joints whose masses span 20-60 decades (tests/data/short_barrier_steps.npz): of
# 1,200 of them (6x6x6, 9x5x4, 3x8x7; C++) 7 stayed short of 1e-8 and 25 of 1e-10. Raising
# mu threefold: none and 3, iterations -8 % and -10 %; 2,000 peaked joints (Dirichlet(0.02-0.1)
# over 2x3x4 to 8x8x8) 2 -> 0 short of 1e-8 and 4 -> 0 of 1e-10, iterations -2 % and -3 %;
# the 448 dense, peaked and clustered test joints the same steps within 2 (twofold: about the
# same; tenfold: worse on the wide-range joints).
MU_RAISE_STEP = 0.01
MU_RAISE = 3.0
# The slacks start at 1 - s cut towards their centre mu / R, to no less than SLACK_START_CUT
# of 1 - s: the alternation leaves the support cells' slacks (about its 1e-3 shift of f) far
# above mu / R, off the centre, and the first Newton steps stopped at 0.8-0.9 of a full
# step. C++, Newton steps over 8 joints per bench family: 0.25-0.5 fewer a solve on all but
# 16x2x30 (the same), 0.93-1.0x the time; 3,000 joints whose masses span 20-60 decades
# 53,990 -> 53,933 iterations to 1e-8 (none short), 60,702 -> 61,108 to 1e-10 (the same
# joint short); 2,000 more 36,248 -> 36,454 (none short of 1e-8, one of 1e-10 either way);
# 600 more: one short of 1e-10 (3.1e-10), none before. Cut to 0.3 of 1 - s: the same steps on
# the bench, two of the 2,000 short of 1e-10; all the way to mu / R: one of the 3,000 short
# of 1e-8 (7.4e-8) and three of 1e-10.
SLACK_START_CUT = 0.5
# At mu's floor with the gap still above tol, one more primal bound comes from the
# multipliers with the cells whose R is below SUPPORT_FACTOR mu scaled by SUPPORT_SHRINK: at
# the barrier's centre R tau = mu, so cells off the optimal coupling's support keep masses
# ~mu, and over the hundreds of such cells of a clustered joint they held the bound about
# ncells mu above V (clustered 40x40x6 stopped at 1.5e-10 at tol 1e-10, 64x64x10 at
# 3.9e-10; mu's floor is 1e-13). Scaled down (C++): every 40x40x6 and 64x64x10 bench joint
# certifies 1e-10 (246 -> 202 and 61 -> 50 iterations); 2,800 peaked joints 49,556 ->
# 49,555 iterations to 1e-10 (the same one short), 45,850 -> 45,848 to 1e-8; 448 random
# joints 8,172 -> 8,170 to 1e-10, the same to 1e-8; the other bench families the same
# steps. Leaving those cells out instead gave the C++ solver a negative "bound" on a
# singular test joint (a marginal whose cells were all below the cut: the sweeps' potentials
# became infinite); scaled, the sweeps still reach every marginal, and the rounding makes the
# coupling exactly feasible, so the bound is valid (a worse one than the bound held is
# dropped).
SUPPORT_FACTOR = 1e3
SUPPORT_SHRINK = 1e-6
# Mehrotra's predictor-corrector after each primal-dual step (_predict): the corrector aims
# at sigma times the mean complementarity, sigma = (what the affine step reaches / now)^3,
# at least CENTRING_MIN (uncapped cuts of 1e7 on peaked joints ran into the floor and
# stalled there) and never above the last target (the first: the starting mu), and adds the
# affine step's second-order term -dR dtau to each cell's target. With the multipliers
# started from the alternation's mixture (solve_exact), the same 168 problems: 4626 -> 3518
# iterations at tol 1e-8 (the Newton steps 2946 -> 1838), 4989 -> 3769 at 1e-10 (24 short of
# it); 60 hard test joints (tiny masses, singular systems, low-rank eliminations) 2754 ->
# 2313, as many short of 1e-8 (2). One factorisation serves both solves. The corrector also
# adds the affine step's second-order term of each cell's s to the linearised s + tau = 1
# (_predict's soc): without it, the convex s outran its linear model, full steps left
# s + tau > 1 and the following steps stopped short at slacks near zero. C++, iterations
# without -> with it, none short of tol either way: 1,000 peaked joints (Dirichlet(0.02-0.2)
# over 2x2x2 to 8x8x8) 15,255 -> 14,719 at tol 1e-8 and 16,179 -> 15,786 at 1e-10; 600 whose
# masses span 20-60 decades 14,487 -> 11,750 and 16,612 -> 13,064; 400 sparse 6,154 -> 6,001
# and 6,537 -> 6,439; the 17 joints of tests/data 503 -> 366 and 655 -> 433. The low-rank
# elimination takes it too. It was left out where a first trial had 1 of 30 tiny-mass test
# problems stall at 2e-8 (Woodbury solves lose digits, which the corrector amplified);
# measured again on the current solver: 480 joints of 2-4 x 2-3 x 20-149 (dense, peaked,
# masses of 1e-13, masses over 20-60 decades, half the entries 0), iterations 10,243 ->
# 9,906 at tol 1e-8 and 10,288 -> 9,543 at 1e-10 (dense 1,628 -> 1,424 and 1,716 -> 1,398),
# none short either way, the C++ solver step for step the same; 1,100 more (C++, 2-5 x 2-4 x
# 8-299) none short; C++, one problem per call, Dirichlet(1): 0.79-0.89x the time.
CENTRING_MIN = 0.01
# A step at mu's floor that leaves the iterate centred but the gap within 1 % of where it was
# counts towards a stall; before it counts, the step is extrapolated (_extrapolate): the new
# point plus 2, 4, 8, ... times the Newton direction (up to EXTRAPOLATE_DOUBLINGS doublings)
# while the dual bound rises, and the iterate restarts at the best point. On
# near-deterministic joints with noise cells the optimal potentials run off along one
# direction in which the dual objective still rises but the barrier's curvature keeps each
# Newton step short: 4x4x3, Y = (X1 + X2) mod 3 plus noise of 1e-6, gained 5e-11 a step and
# stopped 4.7e-8 short of V after 5 such steps (285 Newton steps to certify 1e-8 without the
# stall rule); 256 times its direction further, one such step gained 7e-9. C++, 240 such
# joints (4x4x3 to 6x6x5, noise 1e-8 to 1e-5): 13 short of 1e-8 and 117 of 1e-10 before, 0
# and 5 now (PyTorch, 60 of them: 8 and 41, 0 and 7); 2,300 others
# (Dirichlet(1), peaked, masses over 20-60 decades, half the cells empty, deterministic plus
# noise of 1e-12 to 1e-2) take the same steps as before at both tols.
EXTRAPOLATE_DOUBLINGS = 20
# At most EXTRAPOLATE_MOST extrapolations a solve (1 to 13 served each of the 240 joints above
# at 1e-8), and only where mu's floor is tol's (0.05 tol a cell), not the absolute _MU_MIN:
# there float64's rounding sets the limit, rounding alone raised the bound now and then, and
# each restart's multipliers mu / (1 - s), which lose their digits there, set off a cycle of
# rejected barrier steps and rises of mu (a Dirichlet(1) 50x50x4 joint at tol 1e-10: 471
# iterations to the gap of 1.53e-10 it had after 31; clustered 48x48x8: 398 for 37).
EXTRAPOLATE_MOST = 20
# How far inside the domain max s < 1 a point is moved (f lowered) where a barrier starts or
# restarts: max s = exp(-DOMAIN_MARGIN) (_inside).
DOMAIN_MARGIN = 1e-3
# The barrier step's line search starts where no potential moves by more than
# MAX_POTENTIAL_STEP nats (_line_search). Potentials of masses about 1e-30 below the others
# have almost no curvature, and their Newton steps reached 1e30 to 1e67 nats, so 60 trials
# from a step of 1 (down to ~1e-17) rejected every step: joints whose masses spread over 30
# to 60 decades stalled with gaps of 1.8e-7 to 9.2e-4 (5 of ~1,300 such random joints of
# 2x9x2 to 12x4x7). With the cap all five certify 1e-8 (22 to 65 iterations for the four in
# tests/data/wide_range_masses.npz); caps of 20 to 300 did as well. Iterations on the 448
# random, peaked and clustered test joints: the same at 1e-8 and 1e-10 (a cap of 30 already
# changed two).
MAX_POTENTIAL_STEP = 100.0
KAPPA = 10.0  # multipliers after a barrier step stay within [1/KAPPA, KAPPA] times mu / (1 - s)
OMEGA = 1.5  # over-relaxation of the Blahut–Arimoto mixture update
STRUCTURED_SCHUR_MIN_CLASSES = 20  # see _structured_schur
# The projected multipliers certify once the barrier's gap mu * ncells is about tol: within
# 10x of tol, 200 primal bounds went to 131 test and bench joints at 1e-8 (226 at 1e-6), within
# 1x 173 (188), with the same iterations (one more in all at 1e-10) and, one problem per call,
# 0.96-0.99x the time on real and dense joints.
PRIMAL_BOUND_RANGE = 1.0  # see _primal_bound_due
# How far from its centre an iterate may be and still get a primal bound (dec2 <= this x mu;
# was 10): the predictor-corrector reaches certifiable multipliers a step or two before
# dec2 falls to 10 mu (168 problems: 3518 -> 3362 iterations at tol 1e-8, 3780 -> 3647 at
# 1e-10, as many short; 8x8x8 ~10 % faster, the extra Sinkhorn sweeps included).
PRIMAL_BOUND_CENTRING = 1000.0
# ... or dec2 <= this x tol: the bound of an iterate certifies at gaps of about dec2 / 7
# (clustered 40x40x6 traced: 4.3e-9 at dec2 = 2.9e-8, two steps before dec2 <= 1000 mu).
# Instructions per solve (valgrind, C++): 8x8x8 -4.4 %, 10x10x10 -5.8 %, 12x12x6 -6.4 %,
# clustered 20x20x10 -4.2 %, 40x40x6 -9.8 % (1, 30 and 100: less on some of these). Was 10
# until dual_bound's shifts: its bound now certifies a step earlier where the primal one is
# there to meet it (C++, with the shifts, 10 -> 100: 24 joints each of dense 8x8x8 845 -> 810
# iterations, peaked 8x8x8 803 -> 772, clustered 20x20x10 454 -> 439; 1,200 wide-range and
# 2,000 peaked joints -3 to -5 %; short of 1e-8 1 -> 1, of 1e-10 4 -> 1 over these sets;
# instructions per solve on the bench's 8x8x8 to 40x40x6 -8 % to +1 %; 1000: 1-3 % more
# instructions than 100 for a few fewer iterations).
PRIMAL_BOUND_DECREMENT = 100.0
# Low-rank Newton systems: up to REFINE_MORE_STEPS more refinement steps where the relative
# residual is still above REFINE_RESIDUAL (see _refine_further).
REFINE_RESIDUAL = 1e-6
REFINE_MORE_STEPS = 8
# The gauge potential of each y is fixed at the first x2 with at least this fraction of the
# largest P(x2, y) (see _gauge_fixed).
GAUGE_MASS_FRACTION = 0.5


@dataclass
class Problem:
    """Derived quantities of a flat batch of normalised joints ``P[B, n1, n2, ny]``."""

    p1y: torch.Tensor  # (B, n1, ny)  P(x1, y)
    p2y: torch.Tensor  # (B, n2, ny)  P(x2, y)
    py: torch.Tensor  # (B, ny)
    logpy: torch.Tensor  # (B, ny), 0 where p(y) = 0 (masked anyway)
    m1: torch.Tensor  # (B, n1, ny) bool, P(x1, y) > 0
    m2: torch.Tensor  # (B, n2, ny) bool, P(x2, y) > 0
    mask: torch.Tensor  # (B, n1, n2, ny) bool, cells where Q may be positive
    ncells: torch.Tensor  # (B,) number of (x1, x2) cells with some admissible y
    la: torch.Tensor  # (B, n1, ny) log P(x1 | y), -inf where zero
    lb: torch.Tensor  # (B, n2, ny) log P(x2 | y), -inf where zero

    @staticmethod
    def from_joint(P: torch.Tensor) -> "Problem":
        p1y, p2y, py = marginals(P)
        m1, m2 = p1y > 0, p2y > 0
        mask = m1[:, :, None, :] & m2[:, None, :, :]
        logpy = torch.log(torch.where(py > 0, py, torch.ones_like(py)))
        ncells = mask.any(-1).sum((1, 2))
        la = torch.where(m1, torch.log(torch.where(m1, p1y, 1.0)) - logpy[:, None, :], _NEG_INF)
        lb = torch.where(m2, torch.log(torch.where(m2, p2y, 1.0)) - logpy[:, None, :], _NEG_INF)
        return Problem(p1y, p2y, py, logpy, m1, m2, mask, ncells, la, lb)

    def take(self, idx: torch.Tensor) -> "Problem":
        return Problem(*(getattr(self, k)[idx] for k in self.__dataclass_fields__))


# ----------------------------------------------------------------------------- bounds


def _log_weights(prob: Problem, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``log(p(y) exp(f_y(x1) + g_y(x2)))`` on admissible cells, ``-inf`` elsewhere."""
    z = prob.logpy[:, None, None, :] + f[:, :, None, :] + g[:, None, :, :]
    return torch.where(prob.mask, z, _NEG_INF)


def _dual_objective(prob: Problem, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``sum P(x1,y) f + sum P(x2,y) g`` with masked entries counted as zero."""
    t1 = torch.where(prob.m1, prob.p1y * f, 0.0).sum((1, 2))
    t2 = torch.where(prob.m2, prob.p2y * g, 0.0).sum((1, 2))
    return t1 + t2


def dual_bound(prob: Problem, f: torch.Tensor, g: torch.Tensor, logs=None) -> torch.Tensor:
    """Lower bound on V from any potentials (weak duality), shape ``(B,)``.

    The bound ``sum P(x1,y) f + sum P(x2,y) g - log max s`` holds for any potentials; it is
    taken at ``(f + c, g + d)``, shifted by a constant per x1 (``c``) and per x2 (``d``):
    ``c(x1) = -max log s`` over its cells, then ``d(x2) = -max (log s + c)`` over its cells,
    so that each row and then each column of cells has one with ``s = 1``. Such a shift adds
    ``sum p(x1) c + sum p(x2) d`` to the objective; the largest ``log s`` after it (0 up to
    rounding) is subtracted as before. Near the optimum the cells of a row keep slacks
    ``1 - s`` of about mu / R, which one shift for all cells (the plain bound) leaves in the
    gap: traced one step before certifying, a 10x10x10 joint's bound was 1.3e-8 below V
    plainly and 3.9e-9 shifted, a clustered 20x20x10 joint's 3.6e-8 and 3.3e-9 (the primal
    bound there: 1.1e-9 and 1.3e-9 above V). A second round of shifts changed nothing.

    ``logs``: ``log s`` of ``(f, g)`` when the caller already has it.
    """
    if logs is None:
        logs = torch.logsumexp(_log_weights(prob, f, g), dim=-1)
    ls = torch.where(prob.mask.any(-1), logs, _NEG_INF)
    c = -ls.amax(2)
    c = torch.where(torch.isfinite(c), c, 0.0)
    d = -(ls + c[:, :, None]).amax(1)
    d = torch.where(torch.isfinite(d), d, 0.0)
    top = (ls + c[:, :, None] + d[:, None, :]).amax((1, 2))
    shift = (prob.p1y.sum(-1) * c).sum(1) + (prob.p2y.sum(-1) * d).sum(1)
    return _dual_objective(prob, f, g) + shift - top


def round_to_feasible(prob: Problem, Q: torch.Tensor) -> torch.Tensor:
    """Project an almost-feasible coupling exactly onto ``Δ_P``.

    Altschuler–Weed–Rigollet rounding per target value ``y``: scale rows down to
    at most ``P(x1,y)``, columns down to at most ``P(x2,y)``, then add the rank-one
    outer product of the remaining deficits. Shapes: ``Q[B, n1, n2, ny]``.
    """
    Q = torch.where(prob.mask, Q, 0.0)
    rows = Q.sum(2)
    Q = Q * _shrink(prob.p1y, rows)[:, :, None, :]
    cols = Q.sum(1)
    Q = Q * _shrink(prob.p2y, cols)[:, None, :, :]
    d1 = (prob.p1y - Q.sum(2)).clamp_min(0.0)
    d2 = (prob.p2y - Q.sum(1)).clamp_min(0.0)
    total = d1.sum(1)  # (B, ny); equals d2.sum(1) up to rounding
    # d2 / total <= ~1, whereas 1 / total overflows when total is subnormal.
    share = torch.where(total[:, None, :] > 0, d2 / torch.where(total > 0, total, 1.0)[:, None, :], 0.0)
    return Q + d1[:, :, None, :] * share[:, None, :, :]


def _shrink(target: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    ratio = target / torch.where(current > 0, current, 1.0)
    return torch.where(current > target, ratio, torch.ones_like(ratio))


def coupling_mi(Q: torch.Tensor) -> torch.Tensor:
    """``I_Q(Y; X1, X2)`` of couplings ``Q[B, n1, n2, ny]`` (nats)."""
    return mutual_informations(Q)[0]


def primal_bound(prob: Problem, Q: torch.Tensor, best=None, idx=None) -> torch.Tensor:
    """Upper bound on V: ``I`` of the exactly feasible rounding of ``Q``.

    ``best``: a :class:`BestCoupling` that keeps the rounding of problems ``idx`` (all if
    ``None``) whose bound it improves.
    """
    feasible = round_to_feasible(prob, Q)
    # A Q with a NaN or infinite entry (on an admissible cell) has no such rounding: the
    # rounding turns it into NaN, which the entropies' sums would skip as if it were no mass,
    # and the "bound" could fall below V. Its bound is +inf, always valid.
    finite = torch.isfinite(feasible.sum((1, 2, 3)))
    value = torch.where(finite, coupling_mi(feasible), math.inf)
    if best is not None:
        best.offer(value, feasible, idx)
    return value


class BestCoupling:
    """The exactly feasible coupling behind each problem's upper bound, ``(B, n1, n2, ny)``.

    Starts from the better of the two closed-form feasible couplings, ``P`` itself and the
    proxy ``Q0``; :meth:`offer` replaces the couplings whose ``I`` is lower.
    """

    def __init__(self, P: torch.Tensor, prob: Problem):
        mi = coupling_mi(P)
        q0 = prob.p1y[:, :, None, :] * given_y(prob.p2y, prob.py)[:, None, :, :]
        mi_q0 = coupling_mi(q0)
        proxy = mi_q0 <= mi
        self.value = torch.where(proxy, mi_q0, mi)
        self.coupling = torch.where(proxy[:, None, None, None], q0, P).clone()

    def offer(self, value: torch.Tensor, Q: torch.Tensor, idx=None):
        current = self.value if idx is None else self.value[idx]
        better = value < current
        if idx is None:
            self.value = torch.where(better, value, self.value)
            self.coupling = torch.where(better[:, None, None, None], Q, self.coupling)
        else:
            keep = idx[better]
            self.value[keep] = value[better]
            self.coupling[keep] = Q[better]


# -------------------------------------------------------------- Blahut–Arimoto steps


def _lse(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(x, dim=dim)


def proxy_log_r(prob: Problem) -> torch.Tensor:
    """``log Q0(x1, x2)`` of the analytic proxy, ``-inf`` on cells without an admissible y."""
    return torch.log(torch.einsum("biy,bjy->bij", prob.p1y, given_y(prob.p2y, prob.py)))


def sinkhorn_sweeps(prob: Problem, logR, g, sweeps: int):
    """``sweeps`` log-domain Sinkhorn sweeps projecting kernel ``R`` onto each ``y``'s couplings.

    The coupling of ``y`` is ``diag(e^f) R diag(e^g)`` scaled to rows ``P(x1|y)`` and columns
    ``P(x2|y)``; ``g`` (``None``: cold) is the starting column potential. The last update
    is the row one, so rows are exact. Returns ``(f, g)``, ``-inf`` on masked entries.
    """
    if g is None:
        g = torch.where(prob.m2, torch.zeros_like(prob.lb), _NEG_INF)
    f = _row_update(prob, logR, g)
    for _ in range(sweeps - 1):
        g = torch.where(prob.m2, prob.lb - _lse(logR[:, :, :, None] + f[:, :, None, :], 1), _NEG_INF)
        f = _row_update(prob, logR, g)
    return f, g


def _row_update(prob: Problem, logR, g):
    return torch.where(prob.m1, prob.la - _lse(logR[:, :, :, None] + g[:, None, :, :], 2), _NEG_INF)


def alternation_steps(prob: Problem, logR, g, steps: int, omega: float = OMEGA):
    """Blahut–Arimoto: ``steps`` rounds of a Sinkhorn sweep and an over-relaxed update
    ``R <- R * s^omega`` (normalised) of the mixture. Returns ``(f, g, logR)``.
    """
    for _ in range(steps):
        g, _, logR = _alternation_step(prob, logR, g, omega)
    f = _row_update(prob, logR, g)
    return f, g, logR


def _alternation_step(prob: Problem, logR, g, omega: float):
    """One step of :func:`alternation_steps`: ``(g, logs, logR)`` after it, with ``logs`` the
    ``log s`` of the sweep's potentials, which the mixture's update ``logR`` took."""
    f, g = sinkhorn_sweeps(prob, logR, g, 1)
    g = torch.where(prob.m2, prob.lb - _lse(logR[:, :, :, None] + f[:, :, None, :], 1), _NEG_INF)
    logs = _lse(_log_weights(prob, f, g), -1)
    new = torch.where(torch.isfinite(logR), logR + omega * logs, logR)
    return g, logs, new - _lse(new.flatten(1), 1)[:, None, None]


def stationarity(logR, logs) -> torch.Tensor:
    """How far the alternation's mixture ``R`` is from stationary, ``(B,)``: ``max log s -
    sum R log s`` over the cells, from ``log R`` and the ``log s`` of its sweep. It is 0 at the
    optimum (``log s = 0`` on R's support, below elsewhere) and, on dense joints, falls at about
    the gap's rate (see WARM_BLOCK), for ``n1 n2`` exponentials where a primal bound takes
    ``n1 n2 ny`` and a projection."""
    finite = torch.isfinite(logs)
    top = torch.where(finite, logs, _NEG_INF).amax((1, 2))
    weighted = torch.where(finite & torch.isfinite(logR), torch.exp(logR) * logs, 0.0)
    return top - weighted.sum((1, 2))


def _warm_more(end, e, e_before, tol: float):
    """The alternation's new ends ``(B,)`` after the blocks that ended at step ``end``:
    WARM_BLOCK steps later where the stationarity ``e``, above ``tol`` (below it, its rate is
    rounding's) and falling at the rate ``e / e_before`` of that block, would reach ``tol`` by
    WARM_MOST steps."""
    r = e / e_before
    more = (e > tol) & (r > 0) & (r < 1) & (end + WARM_BLOCK <= WARM_MOST)
    more &= e * r ** torch.div(WARM_MOST - end, WARM_BLOCK, rounding_mode="floor") <= tol
    return torch.where(more, end + WARM_BLOCK, end)


def warm_start(prob: Problem, tol: float, steps: int = WARM_STEPS, omega: float = OMEGA):
    """The alternation before Newton: :func:`alternation_steps` from the proxy, ``steps`` of
    them, then WARM_BLOCK more at a time for each problem whose stationarity, probed WARM_BLOCK
    steps before its end and at it, would reach ``tol`` by WARM_MOST steps at that rate (only
    where ``steps > WARM_BLOCK``). Returns ``(f, g, logR, taken, e)``, ``taken`` the steps of
    each problem ``(B,)`` and ``e`` its stationarity at its end ``(B,)`` (NaN where it was not
    probed)."""
    logR = proxy_log_r(prob)
    g = torch.where(prob.m2, torch.zeros_like(prob.lb), _NEG_INF)
    extend = steps > WARM_BLOCK
    e = e_before = None
    for s in range(steps):
        g_next, logs, logR_next = _alternation_step(prob, logR, g, omega)
        if extend and s + 1 in (steps - WARM_BLOCK, steps):
            e_before, e = e, stationarity(logR, logs)
        g, logR = g_next, logR_next
    end = torch.full((logR.shape[0],), steps, dtype=torch.int64, device=logR.device)
    if extend:
        end = _warm_more(end, e, e_before, tol)
    # Blocks of WARM_BLOCK steps for the problems that go on (the rest keep their iterates).
    for done in range(steps, WARM_MOST, WARM_BLOCK):
        active = end > done
        if not bool(active.any()):
            break
        keep = active[:, None, None]
        for k in range(WARM_BLOCK):
            g_next, logs, logR_next = _alternation_step(prob, logR, g, omega)
            if k == WARM_BLOCK - 1:
                e_before, e = e, torch.where(active, stationarity(logR, logs), e)
            g, logR = torch.where(keep, g_next, g), torch.where(keep, logR_next, logR)
        end = torch.where(active, _warm_more(end, e, e_before, tol), end)
    if e is None:
        e = torch.full_like(prob.py[:, 0], math.nan)
    return _row_update(prob, logR, g), g, logR, end, e


def _warm_bound_due(e, tol: float) -> torch.Tensor:
    """Which problems get the alternation's primal bound: those whose stationarity ``e`` at
    its end is within WARM_BOUND_RANGE of ``tol``, or was not probed (NaN)."""
    return ~(e > WARM_BOUND_RANGE * tol)


def _start_gap(e, tol: float, lower, upper) -> torch.Tensor:
    """The gap Newton's mu starts from (per cell, at least ``tol``): the bounds' where the
    alternation's primal bound was due, else ``e / STATIONARITY_PER_GAP``."""
    return torch.where(_warm_bound_due(e, tol), upper - lower, e / STATIONARITY_PER_GAP)


def alternation_coupling(prob: Problem, f, g, logR) -> torch.Tensor:
    """``Q = R p(y) exp(f + g)`` from alternation iterates, shape ``(B, n1, n2, ny)``."""
    return torch.exp(logR[:, :, :, None] + _log_weights(prob, f, g))


# -------------------------------------------------------------------- barrier Newton


def _barrier_value(prob: Problem, f, g, mu):
    """Barrier objective (to maximise) and ``log s``; ``-inf`` where infeasible."""
    logs = _lse(_log_weights(prob, f, g), -1)
    one_minus_s = -torch.expm1(logs)
    cells = prob.mask.any(-1)
    bar = torch.where(cells, torch.log(one_minus_s.clamp_min(0.0)), 0.0).sum((1, 2))
    val = _dual_objective(prob, f, g) + mu * bar
    feasible = (logs.amax((1, 2)) < 0) & torch.isfinite(val)
    return torch.where(feasible, val, _NEG_INF), logs


def native_product_form(n2: int, ny: int) -> bool:
    """Whether the C++ solver's Schur complement factorises its f-blocks in product form
    (``product_form_suits`` in csrc/solver_core.hpp): above 10 target values, where the second
    source has at most a quarter as many values as Y."""
    return ny > 10 and 4 * n2 <= ny


def newton_cost(n1: int, n2: int, ny: int, mf: int | None = None, mg: int | None = None,
                native: bool = False, schur_unknowns: int | None = None) -> dict:
    """Flops of one Newton direction of a problem ``n1 x n2 x ny`` (``n2 <= n1``, as the
    solvers orient it) by each elimination: ``"schur"`` (the dense Schur complement on the
    ``n2 ny`` unknowns g; for the C++ solver (``native``), with its f-blocks in product form
    where :func:`native_product_form`; ``schur_unknowns`` of them where given: the C++ solver's
    are the admissible ones), ``"lowrank"`` (per-y blocks plus a correction over the
    ``n1 n2`` cells, :func:`_newton_system_lowrank`) and, given the numbers ``mf``, ``mg`` of
    admissible potentials (pairs ``(x, y)`` with mass), ``"sparse"`` (the Hessian over those
    only, :func:`_newton_system_sparse`)."""
    if (mf is None) != (mg is None):
        raise ValueError(f"newton_cost needs both mf and mg (or neither); got mf={mf}, mg={mg}")
    m, v, C = n2 * ny if schur_unknowns is None else schur_unknowns, n1 + n2, n1 * n2
    if native and native_product_form(n2, ny):
        f_blocks = n1 * (ny * (n2 + ny) * (4 * n2 + 1) + 2 * m * m)  # their solves, then S's update
    else:
        f_blocks = n1 * ny * ny * m
    cost = {
        "schur": m**3 / 3 + f_blocks,
        "lowrank": ny * v**3 / 3 + ny * v * v * C + ny * v * C * C + C**3 / 3,
    }
    if mf is not None:
        cost["sparse"] = (mf + mg) ** 3 / 3 + 20 * (mf + mg) ** 2 + n1 * n2 * ny * ny
    return cost


def newton_floats(structure: str, n1: int, n2: int, ny: int, mf: int = 0, mg: int = 0) -> int:
    """Floats one problem's Newton direction holds by ``structure`` (``n2 <= n1``)."""
    if structure == "schur":
        # The Schur complement on the n2 ny potentials of g and its factor, and the couplings
        # C_i (n1 ny x n2 ny) with H^-1 C; equal to ((n1 + n2) ny)^2, the whole Hessian, for
        # n1 = n2, which as the count for every shape had asked 112 GiB of a 2x2000x50
        # solve that peaked at 0.4 GB.
        return 2 * (n2 * ny) ** 2 + 2 * n1 * ny * n2 * ny
    if structure == "lowrank":
        # _newton_system_lowrank holds D, its factor and inverse (ny (n1 + n2)^2 each), Z
        # (ny (n1 + n2) n1 n2, built from two products of its size), one capacitance matrix K
        # over the n1 n2 cells with its factor, and a few per-cell arrays. Z counted twice and
        # K, D twice, times the 4 of fastpid._resources.estimate_bytes, stays above the
        # measured peaks (growth of peak RSS, one thread): 20x20x101 96 MB (estimate 126 MiB),
        # 8x8x2000 124 MB (180 MiB), 20x25x500 452 MB (809 MiB), 100x10x1000 3.87 GiB
        # (7.5 GiB); in chunks of several, 4x20x20x101 342 MB (503 MiB), 2x8x8x2000 288 MB
        # (360 MiB). The count before, ny (n1 n2)^2 (a K per target value), asked 36.5 GiB
        # of 100x10x1000 and 4.5 GB of 20x25x500.
        v, C = n1 + n2, n1 * n2
        return 2 * ny * v * C + 2 * C * C + 2 * ny * v * v + 6 * C * ny
    return 6 * (mf + mg) ** 2 + (n1 + n2) * ny * ny  # H over the free potentials; hff, hgg


@dataclass
class NewtonPlan:
    """How a flat batch's Newton directions are computed, and what that costs per problem."""

    structure: str  # "schur", "lowrank" or "sparse"
    flops: float
    floats: int
    # Admissible potentials on the side of the Schur complement (the largest in the batch;
    # between sources of equal size, the side with fewer, as fastpid.api orients them).
    schur_free: int = 0
    # Per problem (B,): admissible potentials of X1 and of X2 (pairs (x, y) of positive
    # mass), in the batch's own orientation; fastpid.api orients each problem by them.
    free1: Optional[torch.Tensor] = None
    free2: Optional[torch.Tensor] = None
    # Planned for the C++ solver (True) or this module's (False), which choose differently.
    native: bool = True

    def for_torch(self, P: torch.Tensor) -> "NewtonPlan":
        """The plan of this module's solver for the same batch ``P`` (itself where it is one)."""
        if not self.native:
            return self
        if self.free1 is None:
            return newton_plan(P, native=False)
        n1, n2, ny = P.shape[1:]
        return plan_for_counts(n1, n2, ny, int(self.free1.max()), int(self.free2.max()), self.free1, self.free2,
                               native=False)


def free_potentials(P: torch.Tensor):
    """``(free1, free2)``, each ``(B,)``: the pairs ``(x1, y)`` and ``(x2, y)`` of positive
    mass of each problem of a flat batch ``P[B, n1, n2, ny]``."""
    with torch.no_grad():
        return (P.sum(2) > 0).sum((1, 2)), (P.sum(1) > 0).sum((1, 2))


def newton_plan(P: torch.Tensor, native: bool = True) -> NewtonPlan:
    """The cheapest elimination for a flat batch ``P[B, n1, n2, ny]``, by its sizes and its
    largest numbers of admissible potentials (oriented with the smaller source second), for
    the C++ solver (``native``) or this module's."""
    B, n1, n2, ny = P.shape
    free1, free2 = free_potentials(P)
    most1, most2 = torch.stack([free1, free2]).amax(1).tolist() if B else (0, 0)
    return plan_for_counts(n1, n2, ny, most1, most2, free1, free2, native)


# In the C++ solver the low-rank elimination works through many small per-y systems and
# refines each of its solves (three solves and two or three residuals a direction), so per
# flop it is slower on small problems, and on large ones, where its loops over the target
# values run in long vector lanes, the faster: plan_for_counts counts its flops
# max(LOWRANK_PENALTY_FLOOR, (LOWRANK_PENALTY_AT / Schur flops) ** LOWRANK_PENALTY_POWER) times
# over and chooses it where that is below the other eliminations' flops. Not for this
# module's solver, whose batched low-rank elimination was the faster one on 6x6x20 (0.73x) and
# 10x5x25 (0.60x). Fitted to C++ solve times of both eliminations (one thread, AMD EPYC with
# AVX-512, four joints per shape and Dirichlet(1) or Dirichlet(0.2); the low-rank elimination
# with the smaller source first, which takes the time of the other way round, see
# fastpid.api.swap_rule) on the 492 shapes n1 in 2-32, n2 in 2-8, ny in 8-200 whose low-rank
# flops are at most 5x the Schur complement's: the chosen elimination took 1.0055x the time of
# the faster one on average and 1.28x at worst (18 of 984 joints above 1.1x); on 188 other
# shapes (n1 3-28, n2 2-8, ny 10-180, other seeds) 1.0046x and 1.19x (7 of 376). The
# constants before (4e8, 0.6, no floor), fitted while the low-rank elimination ran its loops
# over n1, n2 or n1 + n2 and took no predictor, take 1.335x and 3.46x (426 of 984) on the
# same runs; (1e6, 0.25, 0.5), fitted with the predictor but before Z was kept for the solves
# (lowrank_factor in csrc/solver_core.hpp), 1.023x and 1.51x (85 of 984).
LOWRANK_PENALTY_AT = 2.5e3
LOWRANK_PENALTY_POWER = 0.15
LOWRANK_PENALTY_FLOOR = 0.35
#: The native plan weighs the C++ Schur complement over admissible potentials up to this many
#: (the sparse clustered shapes it was measured on had 1,258-1,430; see newton_plan).
ADMISSIBLE_COST_MAX = 1800


def plan_for_counts(n1: int, n2: int, ny: int, most1: int, most2: int, free1=None, free2=None,
                    native: bool = True) -> NewtonPlan:
    """:func:`newton_plan` of a batch of ``n1 x n2 x ny`` problems whose largest numbers of
    admissible potentials are ``most1`` (X1) and ``most2`` (X2); ``free1``, ``free2``: the
    per-problem counts, kept in the plan. The cheapest by :func:`newton_cost`; for the C++
    solver (``native``), the low-rank elimination where its flops, weighted as
    LOWRANK_PENALTY_AT says, are below the other eliminations', and only there."""
    mf, mg = (most2, most1) if n2 > n1 else (most1, most2)
    n1, n2 = max(n1, n2), min(n1, n2)
    schur_free = min(mf, mg) if n1 == n2 else mg  # the Schur side's, as fastpid.api orients them
    cost = newton_cost(n1, n2, ny, mf, mg, native)
    structure = min(cost, key=cost.get)
    if native:
        other = min((k for k in cost if k != "lowrank"), key=cost.get)
        # The C++ solver's Schur complement is over the admissible potentials of its Schur side
        # (schur_free): its cost is what the low-rank elimination competes with. Counted over all n2 ny,
        # sparse clustered 32x32x50-60 joints (1,258-1,430 of 1,600-1,920 admissible) went to
        # the low-rank elimination at 1.3-2.0x the time; on dense joints the two counts agree
        # (the fit below). Only up to ADMISSIBLE_COST_MAX admissible potentials, where that
        # count was fitted: a 38x38x60 joint (2,010 admissible) went to the PyTorch solver
        # at 4x the time while the C++ route ended at 1,800, and in C++ its Schur complement
        # takes 0.92 s against the low-rank elimination's 0.76 s.
        schur = cost[other]
        if schur_free <= ADMISSIBLE_COST_MAX:
            schur = min(newton_cost(n1, n2, ny, native=True, schur_unknowns=schur_free)["schur"], schur)
        penalty = max(LOWRANK_PENALTY_FLOOR, (LOWRANK_PENALTY_AT / schur) ** LOWRANK_PENALTY_POWER)
        structure = "lowrank" if cost["lowrank"] * penalty < schur else other
        # Not a low-rank system beyond the C++ solver's automatic route where its Schur
        # complement is within it (e.g. 135x32x320, 30 % of the pairs (x, y) with mass): the
        # PyTorch solver would take it (a 44x44x70 joint past the route's former 1,800 cells,
        # 2,161 free potentials, took 4.1 s there, the C++ Schur complement 0.95 s).
        from .cpp import auto_max

        if structure == "lowrank" and n1 * n2 > auto_max("lowrank") and schur_free <= auto_max("schur"):
            structure = other
    return NewtonPlan(structure, cost[structure], newton_floats(structure, n1, n2, ny, mf, mg), schur_free,
                      free1, free2, native)


def _newton_direction(prob: Problem, f, g, mu, fixed_f, fixed_g, structure: str = "schur", R=None,
                      tau=None):
    """Newton ascent direction ``(df, dg)`` and the decrement², by the elimination
    ``structure`` (see :func:`newton_plan`); all three solve the same Jacobi-scaled equations.
    ``R``, ``tau``: the cells' multipliers and slacks (see :func:`_barrier_hessian_terms`;
    both ``None``: the Newton system of the barrier objective)."""
    return _newton_system(prob, f, g, mu, fixed_f, fixed_g, structure, R, tau)(mu)


def _newton_system(prob: Problem, f, g, mu, fixed_f, fixed_g, structure: str = "schur", R=None,
                   tau=None):
    """The Newton system at ``(f, g)``, factorised once by the elimination ``structure``:
    returns ``solve(target) -> (df, dg, dec2)``, the direction toward a complementarity
    target (``(B,)``, or per cell ``(B, n1, n2)``: ``mu`` plus the corrector's term, see
    :func:`_predict`). Other arguments as in :func:`_newton_direction`."""
    factorise = {"schur": _newton_system_schur, "lowrank": _newton_system_lowrank,
                 "sparse": _newton_system_sparse}[structure]
    return factorise(prob, f, g, mu, fixed_f, fixed_g, R, tau)


def _barrier_hessian_terms(prob: Problem, f, g, mu, fixed_f, fixed_g, R=None, tau=None):
    """Per-cell pieces of the Newton system shared by every elimination: ``W = p(y) e^{f+g}``,
    the Hessian weights ``t = R`` and ``t2 = R / tau``, the Jacobi scalings, and
    ``gradient(target) -> (grad_f, grad_g)``, the right-hand side (each cell weighted by
    ``(target - R rp) / tau``, ``rp = 1 - s - tau``; ``target``: ``(B,)`` or ``(B, n1, n2)``).
    ``R (B, n1, n2)``: the cells' multipliers; ``None``: their barrier values ``mu / tau``.
    ``tau (B, n1, n2)``: the cells' slacks (primal–dual path following, see
    :func:`solve_exact`); ``None``: ``1 - s`` itself, and with ``R = None`` the system is the
    Newton system of the barrier objective."""
    logw = _log_weights(prob, f, g)
    W = torch.exp(logw)  # (B, n1, n2, ny)
    one_minus_s = -torch.expm1(_lse(logw, -1))  # (B, n1, n2)
    slack = one_minus_s if tau is None else tau
    t = mu[:, None, None] / slack if R is None else R
    rp = None if tau is None else one_minus_s - tau
    t2 = t / slack
    tW = t[..., None] * W
    WWt2 = W * W * t2[..., None]
    sf = torch.where(fixed_f, 0.0, torch.rsqrt((WWt2.sum(2) + tW.sum(2)).clamp_min(1e-300)))
    sg = torch.where(fixed_g, 0.0, torch.rsqrt((WWt2.sum(1) + tW.sum(1)).clamp_min(1e-300)))

    def gradient(target):
        target = target[:, None, None] if target.dim() == 1 else target
        tb = target / slack if rp is None else (target - t * rp) / slack
        tbW = tb[..., None] * W
        return (torch.where(fixed_f, 0.0, prob.p1y - tbW.sum(2)),
                torch.where(fixed_g, 0.0, prob.p2y - tbW.sum(1)))

    return W, t, t2, tW, sf, sg, gradient


def _newton_system_sparse(prob: Problem, f, g, mu, fixed_f, fixed_g, R=None, tau=None):
    """The Newton system over the admissible potentials only (see :func:`_newton_system`).

    Real joints leave most pairs ``(x, y)`` empty (a class occupies a few clusters); their
    potentials are fixed, so the system over the ``mf + mg`` free ones (padded to the batch's
    largest count, padding rows set to the identity) is far smaller than the Schur complement
    over all ``n2 ny``. Entries, with ``a = (i, y)``, ``b = (i', y')``, ``c = (j, z)``:
    ``H_ff[a, b] = [i = i'] (sum_j t2 W_ijy W_ijy' + [y = y'] sum_j t W_ijy)``,
    ``H_fg[a, c] = t2_ij W_ijy W_ijz + [y = z] t_ij W_ijy``, and ``H_gg`` like ``H_ff``.
    """
    B, n1, ny = f.shape
    n2 = g.shape[1]
    W, t, t2, tW, sf, sg, gradient = _barrier_hessian_terms(prob, f, g, mu, fixed_f, fixed_g, R, tau)
    free_f, free_g = ~fixed_f.reshape(B, -1), ~fixed_g.reshape(B, -1)
    kf, kg = int(free_f.sum(1).max()), int(free_g.sum(1).max())
    # Indices of the free potentials, free ones first (stable), padded with fixed ones.
    of = torch.argsort((~free_f).to(torch.int8), dim=1, stable=True)[:, :kf]
    og = torch.argsort((~free_g).to(torch.int8), dim=1, stable=True)[:, :kg]
    vf = torch.gather(free_f, 1, of)  # (B, kf): a real free potential, not padding
    vg = torch.gather(free_g, 1, og)
    i, y = of // ny, of % ny  # (B, kf)
    j, z = og // ny, og % ny  # (B, kg)
    bb = torch.arange(B, device=f.device)[:, None, None]

    Wt2 = W * t2[..., None]
    hff = torch.einsum("bijy,bijz->biyz", Wt2, W) + torch.diag_embed(tW.sum(2))  # (B, n1, ny, ny)
    hgg = torch.einsum("bijy,bijz->bjyz", Wt2, W) + torch.diag_embed(tW.sum(1))
    Hff = torch.where(i[:, :, None] == i[:, None, :], hff[bb, i[:, :, None], y[:, :, None], y[:, None, :]], 0.0)
    Hgg = torch.where(j[:, :, None] == j[:, None, :], hgg[bb, j[:, :, None], z[:, :, None], z[:, None, :]], 0.0)
    ii, jj = i[:, :, None], j[:, None, :]
    Hfg = Wt2[bb, ii, jj, y[:, :, None]] * W[bb, ii, jj, z[:, None, :]] \
        + torch.where(y[:, :, None] == z[:, None, :], tW[bb, ii, jj, y[:, :, None]], 0.0)
    H = torch.cat([torch.cat([Hff, Hfg], 2), torch.cat([Hfg.transpose(1, 2), Hgg], 2)], 1)
    scale = torch.cat([torch.gather(sf.reshape(B, -1), 1, of), torch.gather(sg.reshape(B, -1), 1, og)], 1)
    valid = torch.cat([vf, vg], 1)
    scale = torch.where(valid, scale, 0.0)
    H = H * scale[:, :, None] * scale[:, None, :]
    H.diagonal(dim1=1, dim2=2).add_((~valid).to(H.dtype))
    L = _cholesky(H)

    def factor_solve(r):
        return torch.cholesky_solve(r, L)

    def apply(x):
        return H @ x

    def solve(target):
        grad_f, grad_g = gradient(target)
        r = torch.cat([torch.gather(grad_f.reshape(B, -1), 1, of), torch.gather(grad_g.reshape(B, -1), 1, og)], 1) * scale
        r = r[..., None]
        # Refined as the low-rank system's solves are: near the optimum H can be singular to
        # rounding, and the directions of the ridge _cholesky then adds were inexact (a sparse
        # 6x6x12 joint of 23 entries: 510 Newton steps at tol 1e-10 without certifying it, 80
        # refined; 36 by the Schur complement).
        d = _refined_solve(factor_solve, apply, r)[..., 0] * scale
        df = torch.zeros(B, n1 * ny, dtype=f.dtype, device=f.device).scatter_add_(1, of, d[:, :kf] * vf)
        dg = torch.zeros(B, n2 * ny, dtype=f.dtype, device=f.device).scatter_add_(1, og, d[:, kf:] * vg)
        df, dg = df.reshape(B, n1, ny), dg.reshape(B, n2, ny)
        return df, dg, (grad_f * df).sum((1, 2)) + (grad_g * dg).sum((1, 2))

    return solve


def _newton_system_lowrank(prob: Problem, f, g, mu, fixed_f, fixed_g, R=None, tau=None):
    """The Newton system by blocks per target value plus a low-rank correction (Woodbury; see
    :func:`_newton_system`).

    The Hessian of ``-mu sum_c log(1 - s_c)`` is ``D + U diag(t2) U^T``: ``D`` holds the
    ``t d²s`` terms, which never couple two target values (one ``(n1 + n2)``-square block
    ``D_y`` per ``y``), and each cell ``c = (x1, x2)`` adds one rank-one term ``t2 ds ds^T``.
    With few cells and many target values (small sources, many classes) factorising the
    ``ny`` small blocks and the ``n1 n2``-square capacitance matrix
    ``K = diag(1 / t2) + U^T D^-1 U`` is far cheaper than the dense Schur complement over
    ``n2 ny`` unknowns. The system is Jacobi-scaled and fixed variables get identity rows,
    as in :func:`_newton_system_schur`, so both solve the same equations.
    """
    B, n1, ny = f.shape
    n2 = g.shape[1]
    C = n1 * n2
    W, t, t2, tW, sf, sg, gradient = _barrier_hessian_terms(prob, f, g, mu, fixed_f, fixed_g, R, tau)

    # D_y, scaled: [[diag(sf² Σ_j tW), sf sg tW], [., diag(sg² Σ_i tW)]] per y, (B, ny, v, v).
    v = n1 + n2
    D = torch.zeros(B, ny, v, v, dtype=f.dtype, device=f.device)
    cross = (sf[:, :, None, :] * sg[:, None, :, :] * tW).permute(0, 3, 1, 2)  # (B, ny, n1, n2)
    D[:, :, :n1, n1:] = cross
    D[:, :, n1:, :n1] = cross.transpose(2, 3)
    diag = torch.cat([((sf * sf) * tW.sum(2) + fixed_f).transpose(1, 2),
                      ((sg * sg) * tW.sum(1) + fixed_g).transpose(1, 2)], -1)  # (B, ny, v)
    D.diagonal(dim1=2, dim2=3).add_(diag)
    Dinv = torch.cholesky_inverse(_cholesky(D.reshape(B * ny, v, v))).reshape(B, ny, v, v)

    # U_y, scaled: column c = (i, j) holds a = sf[i] W[c, y] at row i and b = sg[j] W[c, y] at
    # row n1 + j, so Z_y = D_y^-1 U_y costs two columns of D_y^-1 per cell, and
    # K[c, c'] = sum_y a_c Z_y[i, c'] + b_c Z_y[n1 + j, c'] is a gather, not a product.
    a = (W * sf[:, :, None, :]).permute(0, 3, 1, 2)  # (B, ny, n1, n2)
    b = (W * sg[:, None, :, :]).permute(0, 3, 1, 2)
    Z = Dinv[:, :, :, :n1, None] * a[:, :, None] + Dinv[:, :, :, None, n1:] * b[:, :, None]  # (B, ny, v, n1, n2)
    K = torch.einsum("byij,byiIJ->bijIJ", a, Z[:, :, :n1]) + torch.einsum("byij,byjIJ->bijIJ", b, Z[:, :, n1:])
    K = K.reshape(B, C, C)
    K.diagonal(dim1=1, dim2=2).add_((1.0 / t2).reshape(B, C))
    kd = torch.rsqrt(K.diagonal(dim1=1, dim2=2).clamp_min(1e-300))  # Jacobi scaling of K
    LK = _cholesky(K * kd[:, :, None] * kd[:, None, :])
    Zf = Z.reshape(B, ny, v, C)
    t2c = t2.reshape(B, C)

    def u_t(x):  # U^T x for x (B, ny, v): sum over y of a x[i] + b x[n1 + j], (B, C)
        return (a * x[:, :, :n1, None] + b * x[:, :, None, n1:]).sum(1).reshape(B, C)

    def solve(r):  # H^-1 r by Woodbury: D^-1 r - Z K^-1 U^T D^-1 r
        x0 = (Dinv @ r[..., None])[..., 0]
        z = torch.cholesky_solve((u_t(x0) * kd)[..., None], LK)[..., 0] * kd
        return x0 - torch.einsum("byvc,bc->byv", Zf, z)

    def apply(x):  # H x = D x + U diag(t2) U^T x
        w = (t2c * u_t(x)).reshape(B, 1, n1, n2)
        return (D @ x[..., None])[..., 0] + torch.cat([(a * w).sum(3), (b * w).sum(2)], -1)

    def direction(target):
        grad_f, grad_g = gradient(target)
        rhs = torch.cat([(grad_f * sf).transpose(1, 2), (grad_g * sg).transpose(1, 2)], -1)  # (B, ny, v)
        y = _refined_solve(solve, apply, rhs)  # Woodbury loses digits
        df = y[:, :, :n1].transpose(1, 2) * sf
        dg = y[:, :, n1:].transpose(1, 2) * sg
        return df, dg, (grad_f * df).sum((1, 2)) + (grad_g * dg).sum((1, 2))

    return direction


def _refined_solve(solve, apply, rhs):
    """``H^-1 rhs`` by ``solve`` (an approximate inverse), with one step of iterative
    refinement against ``apply`` (``H x``) and, where the residual is still large, the further
    steps of :func:`_refine_further`."""
    y = solve(rhs)
    return _refine_further(solve, apply, rhs, y + solve(rhs - apply(y)))


def _refine_further(solve, apply, rhs, y):
    """Up to ``REFINE_MORE_STEPS`` more steps of iterative refinement for the problems whose
    relative residual ``|rhs - H y| / |rhs|`` is still above ``REFINE_RESIDUAL``, keeping each
    one's ``y`` of smallest residual (the steps need not shrink it monotonically). Near mu's
    floor, with masses of 1e-13 next to O(1) ones, Woodbury leaves residuals of 1e2 and
    "directions" of negative decrement; the other problems keep ``y`` as it is."""
    def relative_residual(y):
        res = rhs - apply(y)
        rel = res.flatten(1).norm(dim=1) / rhs.flatten(1).norm(dim=1).clamp_min(1e-300)
        return res, torch.where(torch.isnan(rel), torch.inf, rel)

    res, best_rel = relative_residual(y)
    bad = best_rel > REFINE_RESIDUAL
    if not bool(bad.any()):
        return y
    best = y
    for _ in range(REFINE_MORE_STEPS):
        y = y + solve(res)
        res, rel = relative_residual(y)
        better = bad & (rel < best_rel)
        best = torch.where(better[:, None, None], y, best)
        best_rel = torch.where(better, rel, best_rel)
    return best


def _newton_system_schur(prob: Problem, f, g, mu, fixed_f, fixed_g, R=None, tau=None):
    """The Newton system by the Schur complement on ``g`` (see :func:`_newton_system`).

    The Hessian is ``t d²s + t2 ds ds^T`` per cell (weights from
    :func:`_barrier_hessian_terms`). Its ``f``–``f`` part is block diagonal (one
    ``ny x ny`` block ``H_i`` per ``x1 = i``), so the ``f`` block is eliminated and only the
    Schur complement on ``g`` (``n2 ny`` unknowns) is factorised densely. The ``f``–``g``
    coupling of block ``i`` is ``C_i[y, (j, z)] = a_ij[y] w_ij[z] + [y = z] d_ij[y]``, so
    ``sum_i C_i^T H_i^-1 C_i`` comes from :func:`_coupling_schur_sum`, and the back
    substitution from ``u_ij = H_i^-1 a_ij`` and ``H_i^-1`` without forming ``C``. The system
    is Jacobi-scaled (unit diagonal), which keeps Cholesky accurate when masses span many
    orders of magnitude; variables in ``fixed_f``/``fixed_g`` (masked entries and one gauge
    variable per ``y``) get scale 0 and an identity row instead.
    """
    B, n1, ny = f.shape
    n2 = g.shape[1]
    m = n2 * ny
    W, t, t2, tW, sf, sg, gradient = _barrier_hessian_terms(prob, f, g, mu, fixed_f, fixed_g, R, tau)
    Wt2 = W * t2[..., None]
    a = Wt2 * sf[:, :, None, :]  # (B, n1, n2, ny): a_ij, the scaled rank-one factors
    w = W * sg[:, None, :, :]  # w_ij
    d = sf[:, :, None, :] * sg[:, None, :, :] * tW  # d_ij, the diagonal coupling
    hff = torch.einsum("bijy,bijz->biyz", a, W * sf[:, :, None, :]) + torch.diag_embed((sf * sf) * tW.sum(2) + fixed_f)
    hgg = torch.einsum("bijy,bijz->bjyz", Wt2 * sg[:, None, :, :], w) + torch.diag_embed((sg * sg) * tW.sum(1) + fixed_g)

    L = _cholesky(hff.reshape(B * n1, ny, ny))
    Hinv = torch.cholesky_inverse(L).reshape(B, n1, ny, ny)
    # Solves, not products with Hinv: u and xf carry the step's accuracy at small mu.
    u = torch.cholesky_solve(a.transpose(2, 3).reshape(B * n1, ny, n2), L).reshape(B, n1, ny, n2).transpose(2, 3)
    S = -_coupling_schur_sum(a, w, d, u, Hinv, L)
    S.view(B, n2, ny, n2, ny).diagonal(dim1=1, dim2=3).add_(hgg.permute(0, 2, 3, 1))
    LS = _cholesky(S)

    def solve(target):
        grad_f, grad_g = gradient(target)
        xf = torch.cholesky_solve((grad_f * sf).reshape(B * n1, ny, 1), L).reshape(B, n1, ny)
        ax = torch.einsum("bijy,biy->bij", a, xf)
        rhs = grad_g * sg - torch.einsum("bijz,bij->bjz", w, ax) - torch.einsum("bijz,biz->bjz", d, xf)
        yg = torch.cholesky_solve(rhs.reshape(B, m, 1), LS).reshape(B, n2, ny)
        wy = torch.einsum("bijz,bjz->bij", w, yg)
        dy = torch.einsum("bijz,bjz->biz", d, yg)
        yf = xf - torch.einsum("bijy,bij->biy", u, wy) - torch.einsum("biyz,biz->biy", Hinv, dy)
        df = yf * sf
        dg = yg * sg
        return df, dg, (grad_f * df).sum((1, 2)) + (grad_g * dg).sum((1, 2))

    return solve


def _coupling_schur_sum(a, w, d, u, Hinv, L) -> torch.Tensor:
    """``sum_i C_i^T H_i^-1 C_i`` (B, n2 ny, n2 ny) for the couplings
    ``C_i[y, (j, z)] = a_ij[y] w_ij[z] + [y = z] d_ij[y]`` (``a, w, d, u = H^-1 a``: (B, n1, n2,
    ny); ``Hinv`` and its factors ``L``: the blocks ``H_i``).

    Entry ``((j, z), (J, Z))`` is ``T1 + T2 + T2^T + T4`` with ``T1 = sum_i (a_ij . u_iJ) w_ijz
    w_iJZ``, ``T2 = sum_i w_ijz u_ijZ d_iJZ`` and ``T4 = sum_i d_ijz d_iJZ Hinv_izZ``: two
    batched products of ``n1 (n2 ny)²`` (``T1 / 2 + T2`` per ``j``, ``T4`` per ``z``) plus
    elementwise work of ``~n1 n2² ny``. With few classes the elementwise work outweighs the
    saving, and one dense product ``C^T (H^-1 C)`` of ``n1 ny (n2 ny)²`` is faster (measured:
    2.2x faster at 64×64×10, 1.9x slower at 32×32×31). The structured products also hold
    ``n1 n2 (n2 ny)`` floats where the dense one holds ``n1 ny (n2 ny)``, so they are used only
    while ``n2 <= 2 ny`` (within the memory :func:`newton_floats` budgets)."""
    B, n1, n2, ny = a.shape
    m = n2 * ny
    if not _structured_schur(n2, ny):
        C = torch.einsum("bijy,bijz->biyjz", a, w)
        C.diagonal(dim1=2, dim2=4).add_(d)
        C = C.reshape(B * n1, ny, m)
        X = torch.cholesky_solve(C, L)
        return C.reshape(B, n1 * ny, m).mT @ X.reshape(B, n1 * ny, m)
    alpha = torch.einsum("bijy,biJy->bijJ", a, u)
    right = (0.5 * alpha.transpose(1, 2)[..., None] * w[:, None]
             + u.transpose(1, 2)[:, :, :, None, :] * d[:, None])  # (B, j, i, J, Z)
    half = (w.permute(0, 2, 3, 1).reshape(B * n2, ny, n1) @ right.reshape(B * n2, n1, m)).reshape(B, m, m)
    right = Hinv.transpose(1, 2)[:, :, :, None, :] * d[:, None]  # (B, z, i, J, Z)
    t4 = d.permute(0, 3, 2, 1).reshape(B * ny, n2, n1) @ right.reshape(B * ny, n1, m)
    return half + half.mT + t4.reshape(B, ny, n2, m).transpose(1, 2).reshape(B, m, m)


def _structured_schur(n2: int, ny: int) -> bool:
    """Whether :func:`_coupling_schur_sum` takes the structured products."""
    return ny >= STRUCTURED_SCHUR_MIN_CLASSES and n2 <= 2 * ny


def _cholesky(A: torch.Tensor) -> torch.Tensor:
    """Batched Cholesky factor. A matrix that is singular to rounding (sparse problems leave
    directions the gauge fixing does not remove) gets a 1e-12 ridge; one that still fails
    gets the identity, i.e. the Jacobi-scaled gradient as its direction."""
    L, info = torch.linalg.cholesky_ex(A)
    bad = info != 0
    if bool(bad.any()):
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        L2, info2 = torch.linalg.cholesky_ex(A[bad] + 1e-12 * eye)
        L = L.clone()
        L[bad] = torch.where((info2 != 0)[:, None, None], eye, L2)
    return L


def _gauge_fixed(prob: Problem):
    """Variables held fixed in Newton: masked entries and one ``g_y`` per ``y``.

    ``(f_y + c, g_y - c)`` leaves the problem unchanged; fixing one ``g_y(x2)`` per ``y``
    removes that direction and makes the Hessian definite. The fixed one is the first ``x2``
    with at least half of the largest ``P(x2, y)`` (half: so that rounding of the marginals
    cannot change the choice): fixed at an ``x2`` of tiny mass, moving mass into it takes a
    step of every other potential of that ``y``, whose curvature is lost to rounding next to
    the large masses' (singular joints stalled 1e-7 short of the optimum).
    """
    top = prob.p2y.amax(dim=1, keepdim=True)  # (B, 1, ny)
    chosen = torch.argmax((prob.p2y >= GAUGE_MASS_FRACTION * top).to(torch.int8), dim=1)  # (B, ny)
    gauge = torch.zeros_like(prob.m2)
    gauge.scatter_(1, chosen[:, None, :], True)
    return ~prob.m1, ~prob.m2 | gauge


@dataclass
class Solution:
    """Bounds and potentials of a flat batch; ``lower <= V <= upper``."""

    lower: torch.Tensor  # (B,)
    upper: torch.Tensor  # (B,)
    f: torch.Tensor  # (B, n1, ny), -inf on masked entries
    g: torch.Tensor  # (B, n2, ny)
    iterations: torch.Tensor  # (B,) int64
    coupling: Optional[torch.Tensor] = None  # (B, n1, n2, ny): feasible, I = best upper bound


def closed_form_bracket(P: torch.Tensor, closed_forms=None):
    """``(mi, mi1, mi2, lower, upper)``: the free bracket ``max(I1,I2) <= V <= min(I_Q0, I12, I1+I2)``.

    ``V <= I1 + I2`` is non-negativity of redundancy, a theorem of the BROJA PID.
    ``closed_forms(P) -> (mi, mi1, mi2, I_Q0)`` replaces the torch computation (a fused kernel).
    """
    mi, mi1, mi2, mi_q0 = (closed_forms or torch_closed_forms)(P)
    # Informations, so >= 0: where they are ~0 their differences of entropies leave rounding
    # of either sign, and a negative one would cross the bracket (and leak into the terms).
    mi, mi1, mi2, mi_q0 = (x.clamp_min(0.0) for x in (mi, mi1, mi2, mi_q0))
    lower = torch.maximum(mi1, mi2)
    upper = torch.minimum(torch.minimum(mi_q0, mi), mi1 + mi2)
    return mi, mi1, mi2, lower, upper


def _start_bracket(P: torch.Tensor, bracket):
    """Fresh copies of the closed-form ``(lower, upper)`` (the solvers update them in place)."""
    if bracket is None:
        return closed_form_bracket(P)[3:]
    return tuple(b.detach().clone() for b in bracket)


def _on_solver_threads(method: str):
    """Run the decorated solve of ``P`` under :func:`fastpid._resources.solver_threads`: one
    intra-op thread unless its operations are large enough to share out."""
    def decorate(solve):
        @functools.wraps(solve)
        def run(P, *args, **kwargs):
            from ._resources import solver_threads

            with solver_threads(P, method):
                return solve(P, *args, **kwargs)
        return run
    return decorate


@_on_solver_threads("exact")
def solve_exact(P: torch.Tensor, tol: float, max_iter: int = 500, warm_steps: int = WARM_STEPS,
                polish_sweeps: int = POLISH_SWEEPS, mu_factor: float = MU_FACTOR, bracket=None,
                return_coupling: bool = False) -> Solution:
    """Solve V for a flat float64 batch ``P[B, n1, n2, ny]`` to a certified ``tol``.

    Returns the best bounds seen (both are valid at every iterate) and the potentials
    of the last iterate. Problems stop individually once ``upper - lower <= tol``.
    ``bracket``: the ``(lower, upper)`` of :func:`closed_form_bracket` when the caller has it.
    ``return_coupling``: also the feasible couplings behind the upper bounds.
    """
    prob = Problem.from_joint(P)
    lower, upper = _start_bracket(P, bracket)
    best = BestCoupling(P, prob) if return_coupling else None
    B = P.shape[0]
    iters = torch.zeros(B, dtype=torch.int64, device=P.device)
    f, g, logR, taken, e = warm_start(prob, tol, warm_steps)
    iters += taken
    lower = torch.maximum(lower, dual_bound(prob, f, g))
    due = torch.nonzero(_warm_bound_due(e, tol)).flatten()
    if due.numel():
        sub = prob.take(due)
        Q = alternation_coupling(sub, f[due], g[due], logR[due])
        upper[due] = torch.minimum(upper[due], primal_bound(sub, Q, best, due))

    # Strictly feasible start for the barrier: shift f so that max s < 1.
    logs_max = _lse(_log_weights(prob, f, g), -1).amax((1, 2))
    f = torch.where(prob.m1, f - logs_max[:, None, None] - DOMAIN_MARGIN, 0.0)
    g = torch.where(prob.m2, g, 0.0)
    fixed_f, fixed_g = _gauge_fixed(prob)
    structure = newton_plan(P, native=False).structure
    ncells = prob.ncells.clamp_min(1).to(P.dtype)
    mu = _start_gap(e, tol, lower, upper).clamp_min(tol) / ncells
    # Below ~1e-13, R = mu / (1 - s) loses its digits to the cancellation in 1 - s.
    mu_floor = (0.05 * tol / ncells).clamp_min(_MU_MIN)

    # Primal-dual path following: slacks tau (which tend to 1 - s) and multipliers R of the
    # cells; each Newton step solves the perturbed optimality conditions s + tau = 1,
    # R tau = mu (and the marginals) linearised, and is not held to s < 1, only to tau, R > 0
    # (a barrier's line search, kept in the domain, took many short steps after each cut of
    # mu). After a primal-dual step the next one is Mehrotra's predictor-corrector (_predict);
    # a barrier step stands in where a primal-dual step is unfit. The multipliers start from
    # the alternation's mixture R, scaled by f's shift (so that R W keeps its marginals): the
    # primal estimate it reached (mu / tau where that is smaller); the slacks at 1 - s, cut
    # towards mu / R (SLACK_START_CUT).
    cells = prob.mask.any(-1)
    tau = torch.where(cells, -torch.expm1(_lse(_log_weights(prob, f, g), -1)), 1.0)
    mixture = torch.where(cells & torch.isfinite(logR), torch.exp(logR + logs_max[:, None, None] + DOMAIN_MARGIN), 0.0)
    R = torch.maximum(mixture, mu[:, None, None] / tau)
    tau = torch.where(cells, torch.minimum(tau, torch.maximum(mu[:, None, None] / R, SLACK_START_CUT * tau)), tau)
    predictor = torch.ones(B, dtype=torch.bool, device=P.device)
    # The predictor never aims above the last step's target, nor the first step above the
    # starting mu (a start whose multipliers are far off centre while its gap is already near
    # tol had the first step aim hundreds of times higher: on 2,800 peaked joints,
    # Dirichlet(0.02-0.2) over the cells of 2x2x2 to 8x8x8, 17 then stopped short of 1e-8 and
    # 37 of 1e-10; 3 and 9 with this cap). The starting mu also caps mu's rise (MU_RAISE).
    last_target = mu.clone()
    mu_start = mu.clone()
    stalled = torch.zeros(B, dtype=torch.int64, device=P.device)
    jumps = torch.zeros(B, dtype=torch.int64, device=P.device)  # extrapolations so far
    floor_before = torch.zeros(B, dtype=torch.bool, device=P.device)  # the last step was at mu's floor
    active = torch.nonzero(upper - lower > tol).flatten()
    for _ in range(max_iter):
        if active.numel() == 0:
            break
        sub = prob.take(active)
        fa, ga, mua = f[active], g[active], mu[active]
        gap_before = upper[active] - lower[active]
        Ra, taua = R[active], tau[active]
        solve = _newton_system(sub, fa, ga, mua, fixed_f[active], fixed_g[active], structure, Ra, taua)
        corr, soc = torch.zeros_like(Ra), torch.zeros_like(Ra)
        pa = predictor[active]
        if bool(pa.any()):
            mu_pc, corr_pc, soc_pc = _predict(sub, fa, ga, solve, mua, last_target[active], mu_floor[active], Ra, taua)
            mua = torch.where(pa, mu_pc, mua)
            corr = torch.where(pa[:, None, None], corr_pc, 0.0)
            soc = torch.where(pa[:, None, None], soc_pc, 0.0)
        last_target[active] = mua
        # The slacks' linearised s + tau = 1 with soc added to s: in the reduced system that is
        # R soc more on each cell's target (_barrier_hessian_terms), and soc less on dtau.
        df, dg, dec2 = solve(mua[:, None, None] + corr + Ra * soc)
        retry = pa & ~torch.isfinite(dec2)
        if bool(retry.any()):  # the predictor's terms overflowed next to a vanishing slack
            corr = torch.where(retry[:, None, None], 0.0, corr)
            soc = torch.where(retry[:, None, None], 0.0, soc)
            df, dg, dec2 = solve(mua[:, None, None] + corr + Ra * soc)
        alpha, fa, ga, logs, Ra, taua, barrier = _primal_dual_step(sub, fa, ga, df, dg, mua, Ra, taua, dec2, corr, soc)
        predictor[active] = ~barrier
        back = torch.nonzero(barrier).flatten()
        if back.numel():
            ab = active[back]
            alpha[back], fa[back], ga[back], logs[back], Ra[back], taua[back] = _barrier_step(
                sub.take(back), fa[back], ga[back], mua[back], Ra[back], fixed_f[ab], fixed_g[ab], structure)
        f[active], g[active], R[active], tau[active] = fa, ga, Ra, taua
        iters[active] += 1

        # Certificate from this iterate: its dual bound, and near a centre (where R is a good
        # primal estimate) R projected onto the constraints by Sinkhorn sweeps and rounding.
        lower[active] = torch.maximum(lower[active], dual_bound(sub, fa, ga, logs))
        due = _primal_bound_due(dec2, mua, mu_floor[active], ncells[active], tol)
        at_floor = mua <= mu_floor[active]
        centred = dec2 <= CENTRED * mua
        near = torch.nonzero(due).flatten()
        if near.numel():
            upper[active[near]] = torch.minimum(
                upper[active[near]],
                _barrier_primal_bound(sub.take(near), ga[near], Ra[near], polish_sweeps, best, active[near]))
        # At mu's floor a tol below float64's reach needs a closer projection (see
        # FLOOR_POLISH_SWEEPS for when).
        floor_polish = due & at_floor & (centred | floor_before[active])
        closer = floor_polish & (upper[active] - lower[active] > tol)
        near = torch.nonzero(closer).flatten()
        if near.numel() and polish_sweeps < FLOOR_POLISH_SWEEPS:
            upper[active[near]] = torch.minimum(
                upper[active[near]],
                _barrier_primal_bound(sub.take(near), ga[near], Ra[near], FLOOR_POLISH_SWEEPS, best, active[near]))
        near = torch.nonzero(floor_polish & (upper[active] - lower[active] > tol)).flatten()
        if near.numel():
            upper[active[near]] = torch.minimum(upper[active[near]], _barrier_primal_bound(
                sub.take(near), ga[near], Ra[near], FLOOR_POLISH_SWEEPS, best, active[near],
                shrink_below=SUPPORT_FACTOR * mua[near]))

        mu[active] = torch.where(barrier & (alpha < MU_RAISE_STEP), torch.minimum(MU_RAISE * mua, mu_start[active]),
                                 _next_mu(mua, _mean_complementarity(sub, Ra, taua), mu_factor, mu_floor[active]))
        # A problem whose tol is below what float64 can certify stops, with its honest
        # gap, once steps are refused or the bounds stop improving near a centre at the
        # smallest mu.
        gap = upper[active] - lower[active]
        floor_before[active] = at_floor
        stuck = (alpha == 0) | (at_floor & centred & (gap > 0.99 * gap_before))
        jump = torch.nonzero(stuck & (alpha > 0) & ~barrier & (jumps[active] < EXTRAPOLATE_MOST)
                             & (mu_floor[active] > _MU_MIN)).flatten()
        if jump.numel():
            aj = active[jump]
            moved, bound, f[aj], g[aj], R[aj], tau[aj] = _extrapolate(
                sub.take(jump), f[aj], g[aj], df[jump], dg[jump], mua[jump], R[aj], tau[aj])
            jumps[aj] += moved.to(jumps.dtype)
            lower[aj] = torch.maximum(lower[aj], bound)
            stuck[jump] &= ~moved
            predictor[aj] &= ~moved  # the next step aims at mu itself, from the new centre
            gap = upper[active] - lower[active]
        stalled[active] = torch.where(stuck, stalled[active] + 1, 0)
        active = active[(gap > tol) & (stalled[active] < 5)]

    # A solve stopped short (max_iter, a stall) gets its last iterate's bound as well: without
    # the alternation's (_warm_bound_due) it may have no primal bound but the closed forms'.
    short = torch.nonzero(upper - lower > tol).flatten()
    if short.numel():
        upper[short] = torch.minimum(
            upper[short], _barrier_primal_bound(prob.take(short), g[short], R[short], polish_sweeps, best, short))
    f = torch.where(prob.m1, f, _NEG_INF)
    g = torch.where(prob.m2, g, _NEG_INF)
    return Solution(lower, upper, f, g, iters, None if best is None else best.coupling)


def _extrapolate(prob: Problem, f, g, df, dg, mu, R, tau):
    """``(f, g)``, just reached along the Newton direction ``(df, dg)``, moved ``2^k`` times that
    direction further for ``k = 1, 2, ...`` (at most EXTRAPOLATE_DOUBLINGS) while the dual bound
    rises, where the last step stopped short at mu's floor (see EXTRAPOLATE_DOUBLINGS).
    Returns ``(moved, bound, f, g, R, tau)``: ``(B,)`` whether a longer step raised the bound,
    the best bound, and the iterate there, shifted inside the domain as the barrier starts
    (``max s = exp(-1e-3)``) with its slacks at ``1 - s`` and multipliers at their centre
    ``mu / (1 - s)`` (unmoved elsewhere)."""
    d_f, d_g = torch.where(prob.m1, df, 0.0), torch.where(prob.m2, dg, 0.0)
    best = dual_bound(prob, f, g)
    times = torch.zeros_like(best)
    rising = torch.ones_like(best, dtype=torch.bool)
    for k in range(1, EXTRAPOLATE_DOUBLINGS + 1):
        bound = dual_bound(prob, f + 2.0 ** k * d_f, g + 2.0 ** k * d_g)
        rising &= bound > best
        if not bool(rising.any()):
            break
        best, times = torch.where(rising, bound, best), torch.where(rising, 2.0 ** k, times)
    moved = times > 0
    t3 = times[:, None, None]
    g_new = g + t3 * d_g
    f_new, tau_new = _inside(prob, f + t3 * d_f, g_new, always=True)
    R_new = torch.where(prob.mask.any(-1), mu[:, None, None] / tau_new, R)
    m3 = moved[:, None, None]
    return (moved, best, torch.where(m3, f_new, f), torch.where(m3, g_new, g), torch.where(m3, R_new, R),
            torch.where(m3, tau_new, tau))


def _inside(prob: Problem, f, g, always: bool):
    """``(f, tau)``: ``f`` lowered by ``max log s + DOMAIN_MARGIN`` where ``max s`` reaches 1
    (``always``: in every problem), so that ``max s = exp(-DOMAIN_MARGIN)`` there, and the
    slacks ``1 - s`` of the point (1 off the cells)."""
    cells = prob.mask.any(-1)
    top = torch.where(cells, _lse(_log_weights(prob, f, g), -1), _NEG_INF).amax((1, 2))
    lowered = prob.m1 if always else prob.m1 & (top >= 0)[:, None, None]
    f = torch.where(lowered, f - (top + DOMAIN_MARGIN)[:, None, None], f)
    return f, torch.where(cells, -torch.expm1(_lse(_log_weights(prob, f, g), -1)), 1.0)


def _next_mu(mu, mean_complementarity, mu_factor: float, mu_floor):
    """The barrier parameter after a step: ``mu_factor`` times the cells' mean ``R tau``
    (:func:`_mean_complementarity`), never above ``mu`` nor below ``mu_floor``."""
    return torch.maximum(torch.minimum(mu, mu_factor * mean_complementarity), mu_floor)


def _mean_complementarity(prob: Problem, R, tau) -> torch.Tensor:
    """``(B,)``: the mean of ``R tau`` over each problem's cells, the ``mu`` its iterate is at."""
    cells = prob.mask.any(-1)
    return torch.where(cells, R * tau, 0.0).sum((1, 2)) / prob.ncells.clamp_min(1)


def _primal_bound_due(dec2, mu, mu_floor, ncells, tol: float) -> torch.Tensor:
    """Which iterates get a primal bound (Sinkhorn sweeps, the costliest part of a step on
    small problems): those near their centre (``dec2 <= PRIMAL_BOUND_CENTRING mu``) or near
    the optimum (``dec2 <= PRIMAL_BOUND_DECREMENT tol``) once the
    barrier's own gap ``mu * ncells`` is within ``PRIMAL_BOUND_RANGE`` of ``tol`` (the
    projected multipliers cannot certify much below that gap, so earlier bounds would only
    tighten the reported gap of a solve stopped by ``max_iter``), or ``mu`` within 10x of its
    floor (where a tol below float64's reach must still get its best bound)."""
    near = (dec2 <= PRIMAL_BOUND_CENTRING * mu) | (dec2 <= PRIMAL_BOUND_DECREMENT * tol)
    return near & ((mu * ncells <= PRIMAL_BOUND_RANGE * tol) | (mu <= 10.0 * mu_floor))


def _barrier_primal_bound(prob: Problem, g, R, sweeps: int, best=None, idx=None, shrink_below=None) -> torch.Tensor:
    """Upper bound from the multipliers ``R`` (the primal estimate of the coupling's cell
    masses) at an iterate with potentials ``g`` (``best``, ``idx`` as in :func:`primal_bound`);
    ``shrink_below`` ``(B,)``: scale the cells whose ``R`` is smaller by SUPPORT_SHRINK."""
    if shrink_below is not None:
        R = torch.where(R < shrink_below[:, None, None], SUPPORT_SHRINK * R, R)
    logR = torch.where(prob.mask.any(-1), torch.log(R), _NEG_INF)
    fp, gp = sinkhorn_sweeps(prob, logR, torch.where(prob.m2, g, _NEG_INF), sweeps)
    return primal_bound(prob, alternation_coupling(prob, fp, gp, logR), best, idx)


def _steps_to_target(prob: Problem, f, g, df, dg, target, R, tau, soc=None):
    """The slacks' and multipliers' steps that go with the direction ``(df, dg)`` from the
    linearised ``s + tau = 1`` and ``R tau = target`` (``(B, n1, n2)``): ``dtau = rp - ds``
    (``rp = 1 - s - tau``, ``ds`` the change of ``s`` along the direction; less ``soc``, the
    predictor's second-order term of ``s``, where given) and
    ``dR = (target - R tau - R dtau) / tau``. Returns ``(logs, dtau, dR, to_tau, to_R)``:
    ``log s`` at ``(f, g)`` and the step lengths (``(B,)``) at which a slack, and a
    multiplier, would reach zero (``inf`` where none falls)."""
    logw = _log_weights(prob, f, g)
    logs = _lse(logw, -1)
    cells = prob.mask.any(-1)
    ds = torch.where(prob.mask, torch.exp(logw) * (df[:, :, None, :] + dg[:, None, :, :]), 0.0).sum(-1)
    dtau = -torch.expm1(logs) - tau - ds
    dtau = torch.where(cells, dtau if soc is None else dtau - soc, 0.0)
    dR = torch.where(cells, (target - R * tau - R * dtau) / tau, 0.0)
    inf = torch.full_like(tau, math.inf)
    to_tau = torch.where(dtau < 0, -tau / dtau, inf).amin((1, 2))
    to_R = torch.where(dR < 0, -R / dR, inf).amin((1, 2))
    return logs, dtau, dR, to_tau, to_R


def _predict(prob: Problem, f, g, solve, mu, cap, mu_floor, R, tau):
    """Mehrotra's predictor from the factorised system ``solve`` (:func:`_newton_system`): the
    affine direction (target 0) and the mean complementarity its longest steps would reach
    (the slacks' and the multipliers' each up to where one of them would reach zero).
    Returns ``(mu, corr, soc)``: the corrector's target (:func:`_corrector_mu`, at most ``cap``,
    the last step's target or the starting mu; ``mu`` as given where the ratio is not finite),
    and per cell two second-order terms of the affine step: ``corr = -dR dtau``, that of ``R
    tau``, and ``soc = sum_y W (df + dg)^2 / 2``, that of ``s`` (the linearised ``s + tau = 1``
    under-predicts the convex ``s``, so full steps left ``s + tau > 1`` and the next steps
    short). Both are 0 at mu's floor, where they mislead more steps than they help."""
    now = _mean_complementarity(prob, R, tau)
    df, dg, _ = solve(torch.zeros_like(mu))
    _, dtau, dR, to_tau, to_R = _steps_to_target(prob, f, g, df, dg, torch.zeros_like(R), R, tau)
    step, step_R = to_tau.clamp_max(1.0)[:, None, None], to_R.clamp_max(1.0)[:, None, None]
    ratio = _mean_complementarity(prob, R + step_R * dR, tau + step * dtau) / now
    finite = (ratio >= 0) & (ratio < math.inf)
    mu = torch.where(finite, torch.minimum(_corrector_mu(now, ratio, mu_floor), cap), mu)
    corrected = prob.mask.any(-1) & (finite & (mu > mu_floor))[:, None, None]
    d = df[:, :, None, :] + dg[:, None, :, :]
    soc = 0.5 * torch.where(prob.mask, torch.exp(_log_weights(prob, f, g)) * d * d, 0.0).sum(-1)
    return mu, torch.where(corrected, -dR * dtau, 0.0), torch.where(corrected, soc, 0.0)


def _corrector_mu(now, ratio, mu_floor):
    """Mehrotra's centring: ``sigma`` times the mean complementarity ``now``, ``sigma =
    ratio^3`` within ``[CENTRING_MIN, 1]`` (``ratio``: the mean complementarity the affine
    step reaches, over ``now``), never below ``mu_floor``."""
    sigma = torch.clamp(ratio * ratio * ratio, max=1.0).clamp_min(CENTRING_MIN)
    return torch.maximum(sigma * now, mu_floor)


def _primal_dual_step(prob: Problem, f, g, df, dg, mu, R, tau, dec2, corr=None, soc=None):
    """One primal–dual step along the Newton direction ``(df, dg)`` toward the target
    ``mu`` (``(B,)``) plus ``corr`` per cell, with ``soc`` per cell added to the linearised
    ``s`` (``None``: 0; see :func:`_predict`).

    The slacks' and multipliers' steps are :func:`_steps_to_target`'s; ``(f, g)`` and the
    slacks move ``alpha``, ``FRACTION_TO_BOUNDARY`` of the way to where a slack would reach
    zero, at most 1, and the multipliers likewise by their own length. Returns ``(alpha, f,
    g, logs, R, tau, barrier)`` at the new point (``logs``: its ``log s``); where the
    direction is not finite, ``alpha = 0`` and nothing moves; where
    ``barrier`` (``(B,)`` bool) nothing moves either, and a barrier step must stand in: a
    step shorter than ``MIN_STEP``, no ascent (``dec2 <= 0``), or a point with a cell's
    ``log s`` above ``MAX_LOG_S`` or not finite.
    """
    target = mu[:, None, None] if corr is None else mu[:, None, None] + corr
    logs, dtau, dR, to_tau, to_R = _steps_to_target(prob, f, g, df, dg, target, R, tau, soc)
    cells = prob.mask.any(-1)
    alpha = (FRACTION_TO_BOUNDARY * to_tau).clamp_max(1.0)
    alpha_R = (FRACTION_TO_BOUNDARY * to_R).clamp_max(1.0)[:, None, None]
    alpha = torch.where(torch.isfinite(dec2) & (alpha > 0), alpha, 0.0)
    a3 = alpha[:, None, None]
    f_new, g_new = f + a3 * df, g + a3 * dg
    logs_new = _lse(_log_weights(prob, f_new, g_new), -1)
    inside = (~cells | (logs_new <= MAX_LOG_S)).all(-1).all(-1)  # NaN fails
    barrier = (alpha > 0) & ((alpha < MIN_STEP) | ~(dec2 > 0) | ~inside)
    moved = (alpha > 0) & ~barrier
    alpha = torch.where(moved, alpha, 0.0)
    m3 = moved[:, None, None]
    return (alpha, torch.where(m3, f_new, f), torch.where(m3, g_new, g), torch.where(m3, logs_new, logs),
            torch.where(m3, R + alpha_R * dR, R), torch.where(m3, tau + a3 * dtau, tau), barrier)


def _barrier_step(prob: Problem, f, g, mu, R, fixed_f, fixed_g, structure: str):
    """The barrier step that stands in for a primal–dual step (see :func:`_primal_dual_step`):
    from a point inside the domain ``max s < 1`` (``f`` shifted down where it is not), with
    the slacks at ``1 - s``, the Newton direction of the barrier objective, a backtracking
    line search that stays in the domain (:func:`_line_search`) and the multipliers' step
    (:func:`_multiplier_step`). Returns ``(alpha, f, g, logs, R, tau)`` at the new point, the
    slacks at its ``1 - s``."""
    f, tau = _inside(prob, f, g, always=False)
    df, dg, dec2 = _newton_direction(prob, f, g, mu, fixed_f, fixed_g, structure, R, tau)
    alpha, logs = _line_search(prob, f, g, mu, df, dg, dec2)
    R = _multiplier_step(prob, f, g, df, dg, mu, R, alpha, logs)
    moved = (alpha > 0)[:, None, None]
    f = torch.where(moved, f + alpha[:, None, None] * df, f)
    g = torch.where(moved, g + alpha[:, None, None] * dg, g)
    return alpha, f, g, logs, R, torch.where(prob.mask.any(-1), -torch.expm1(logs), 1.0)


def _multiplier_step(prob: Problem, f, g, df, dg, mu, R, alpha, logs_new) -> torch.Tensor:
    """The cells' multipliers ``R`` after a barrier step ``alpha (df, dg)`` from ``(f, g)``.

    ``R`` takes the full primal–dual step of the linearised centring condition
    ``R (1 - s) = mu``: ``dR = (mu - R t + R ds) / t`` with ``t = 1 - s`` and ``ds`` the change
    of ``s`` along the direction (whatever step ``(f, g)`` took; measured to save steps), kept
    above 1% of ``R`` and within ``[1 / KAPPA, KAPPA]`` times its barrier value ``mu / t`` at
    the new point (``log s = logs_new``). Wider bounds let multipliers of near-empty cells
    fall so far that the system turns singular (steps of 1e10 that every trial rejects).
    A rejected step (``alpha = 0``) resets ``R`` to the barrier values: the next step is then
    the pure barrier method's."""
    logw = _log_weights(prob, f, g)
    t = -torch.expm1(_lse(logw, -1))
    ds = torch.where(prob.mask, torch.exp(logw) * (df[:, :, None, :] + dg[:, None, :, :]), 0.0).sum(-1)
    mu3 = mu[:, None, None]
    stepped = torch.maximum(R + (mu3 - R * t + R * ds) / t, 0.01 * R)
    centre = mu3 / -torch.expm1(logs_new)
    bounded = torch.minimum(torch.maximum(stepped, centre / KAPPA), KAPPA * centre)
    return torch.where((alpha > 0)[:, None, None], bounded, centre)


def _shorter(alpha: torch.Tensor) -> torch.Tensor:
    """The next trial step of the backtracking: 1, 0.85, 0.7, 0.55, then halving (steps cut
    by the boundary ``s < 1`` often fit just short of 1)."""
    return torch.where(alpha > 0.6, alpha - 0.15, 0.5 * alpha)


def _line_search(prob: Problem, f, g, mu, df, dg, dec2, max_halvings: int = 60):
    """Backtracking (Armijo) step lengths that keep ``max s < 1``, one per problem (trial
    steps by :func:`_shorter`, from 1 or from where the largest move of a potential is
    :data:`MAX_POTENTIAL_STEP`).

    Returns ``(alpha, logs)``: the steps (0 where every trial failed) and ``log s`` at the
    points they lead to, which the certificate reuses.
    """
    phi0, logs_at = _barrier_value(prob, f, g, mu)
    # Near the optimum the gain is below rounding noise of phi; allow for it.
    slack = 1e-13 * (1.0 + phi0.abs())
    longest = torch.maximum(torch.where(prob.m1, df.abs(), 0.0).amax((1, 2)),
                            torch.where(prob.m2, dg.abs(), 0.0).amax((1, 2)))
    alpha = torch.where(longest > MAX_POTENTIAL_STEP, MAX_POTENTIAL_STEP / longest, 1.0)
    accepted = torch.zeros_like(mu, dtype=torch.bool)
    for _ in range(max_halvings):
        phi, logs = _barrier_value(prob, f + alpha[:, None, None] * df, g + alpha[:, None, None] * dg, mu)
        newly = ~accepted & (phi >= phi0 + 0.01 * alpha * dec2 - slack)
        logs_at = torch.where(newly[:, None, None], logs, logs_at)
        accepted = accepted | newly
        if bool(accepted.all()):
            break
        alpha = torch.where(accepted, alpha, _shorter(alpha))
    return torch.where(accepted, alpha, 0.0), logs_at


@_on_solver_threads("fast")
def solve_fast(P: torch.Tensor, steps: int, alternation=None, bracket=None,
               return_coupling: bool = False) -> Solution:
    """A fixed budget of ``steps`` alternation steps from the analytic proxy.

    Every step costs a few passes over ``P`` (no linear algebra), which suits a
    training loop; the bounds are still certified, just not tight. ``alternation(P, steps)
    -> (f, g, logR)`` replaces the torch steps (a fused kernel); ``bracket`` as in
    :func:`solve_exact`.
    """
    prob = Problem.from_joint(P)
    lower, upper = _start_bracket(P, bracket)
    best = BestCoupling(P, prob) if return_coupling else None
    if alternation is None:
        f, g, logR = alternation_steps(prob, proxy_log_r(prob), None, steps)
    else:
        f, g, logR = alternation(P, steps)
    lower = torch.maximum(lower, dual_bound(prob, f, g))
    upper = torch.minimum(upper, primal_bound(prob, alternation_coupling(prob, f, g, logR), best))
    iters = torch.full((P.shape[0],), steps, dtype=torch.int64, device=P.device)
    return Solution(lower, upper, f, g, iters, None if best is None else best.coupling)
