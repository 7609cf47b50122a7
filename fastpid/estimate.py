"""PID from samples: bias-corrected estimates, confidence intervals and a test of synergy.

:func:`estimate` takes N samples of two sources and a target (codes or soft rows, as
:func:`fastpid.joint` does) and returns, for each PID term, a corrected point estimate, a
confidence interval and (for synergy) the p-value of a test of "synergy > 0", next to the
certified plug-in decomposition of the empirical joint.

Why: the plug-in PID of the empirical joint of N samples is biased, synergy most of all —
the plug-in ``I(X1,X2;Y)`` sees structure in every sparsely filled cell of the
``n1 × n2 × ny`` table. The solver's certified ``gap`` bounds the optimisation error only;
the statistical error is usually far larger.

Method (the resampled joints are solved in batched :func:`fastpid.pid` calls):

* **Corrections and intervals: the delete-a-group jackknife.** The samples are split at
  random into ``n_jackknife`` parts; each part is left out in turn. For a term ``θ`` with
  plug-in ``θ̂`` and leave-one-part-out values ``θ_(i)``, the corrected estimate is
  ``g θ̂ − (g − 1) mean θ_(i)`` (it removes the ``1/N`` term of the bias) and its standard
  error ``sqrt((g − 1)/g Σ (θ_(i) − mean)²)``; the interval is estimate ± ``t_{g−1}`` · SE,
  cut to the term's possible range: at zero (every term is non-negative) and at its largest
  value for the alphabets (:func:`term_maxima`), an estimate past either end taken at that
  end first. R's upper end reaches that of ``I(Xm; Y) = R + Um``'s interval wherever
  ``Um``'s interval reaches 0 (R may then be the whole of that source's information; near
  that boundary the plug-in unique terms are lifted by noise the jackknife does not remove,
  and R's own interval sat below the truth); and there ``Um``'s reaches ``Uo``'s estimate
  plus the upper end of ``I(Xm; Y) − I(Xo; Y)``'s interval, at most ``I(Xm; Y)``'s (a sample
  can put ``Um`` at 0 in every part whatever the truth's small ``Um``).
* **Test of "synergy > 0": a parametric bootstrap of the likelihood-ratio test.** With
  optimal BROJA dual potentials ``f, g`` of the empirical joint ``P̂``, the plug-in
  synergy is exactly a likelihood-ratio statistic:

      Ŝ = I_P̂(Y; X1,X2) − V(P̂) = Σ P̂ log P̂(y|x) − max_{q ∈ M} Σ P̂ log q(y|x),

  where ``M`` is the set of conditionals ``q(y|x1,x2) = exp(F(x1,y) + G(x2,y))`` with
  ``Σ_y q(y|x) <= 1`` — the conditionals of the zero-synergy joints (a joint has synergy 0
  iff it is its own optimal coupling ``Q*``, whose conditional has this form; the maximum
  is the BROJA dual). So ``2N Ŝ`` is the generalised likelihood-ratio statistic of the null
  "synergy = 0", and its null distribution is simulated by a parametric bootstrap from the
  fitted zero-synergy model ``P̂(x1,x2) q̂(y|x)`` (:mod:`fastpid._resample`), with three
  choices that decide its calibration:

  1. the sources are kept as observed and only the target is redrawn, ``y*_n ~ q̂(·|x_n)``
     (the test conditions on the sources; drawing them from ``P̂(x1,x2)``, or from the sparser
     source marginal of the plug-in ``Q*(P̂)``, understates the null's plug-in synergy and
     gives false-positive rates far above the level);
  2. pairs ``(x1, y)``, ``(x2, y)`` never seen get a small positive weight, not zero (with few
     samples most zeros are sampling zeros);
  3. the fit's information is shrunk, ``q̂_λ ∝ p̂(y) exp(λ (f + g))``, so that the null world
     reproduces the data's plug-in ``V`` including its bias: ``n_pilot`` draws at ``λ = 1``
     measure that bias ``b``, and ``λ`` solves ``I(P̂0_λ) = V̂ − b`` (closed form).

  The p-value is the Monte-Carlo p-value ``(1 + #{Ŝ*_b >= Ŝ}) / (n_null + 1)``.
* **Synergy point estimate:** the plug-in synergy minus the bias of ``Ŝ`` in the null world
  (the mean plug-in synergy of the null draws less that world's own synergy, which is small
  but not 0: ``q̂_λ`` is shrunk and renormalised off the optimum's support; ``≈ df / 2N`` for
  the likelihood ratio), averaged with the jackknife estimate; see ``docs/estimation.md`` for
  the measurements behind this choice. With many samples a cell the jackknife's ``1/N`` term is
  most of the bias and the null world's, spread over every admissible target, overstates a
  synergistic joint's: the estimate moves to the jackknife's alone between
  :data:`JACKKNIFE_SYNERGY_FROM` and :data:`JACKKNIFE_SYNERGY_ALONE` samples an occupied cell
  (the interval still spans both corrections; with probability rows as sources every cell a row
  touches counts as occupied, so there the estimate stays near the mean). Where N is large
  against the ``(x1, y)`` and ``(x2, y)`` pairs, the unseen ones are mostly structural, and the
  test's world (choice 2) gives them more mass than Good-Turing's estimate from the pairs seen
  once, so it is denser than the data's: the bias is then that of draws from a second world
  whose unseen pairs carry that estimate (codes only; docs/estimation.md, "Sparse joints").
* **Reliability:** a term is flagged unreliable when its correction is not trustworthy at
  this N (the rules and the measurements behind them are in ``docs/estimation.md``).

What no correction can do: when N is small against the number of occupied cells, the
plug-in synergy is dominated by noise and every generic correction removes only part of it.
Fewer clusters (smaller ``n1``, ``n2``) cut the bias at its source; :func:`suggest_k` gives
a number of clusters for a given N.
"""
from __future__ import annotations

import contextlib
import functools
import math
import numbers
import secrets
import warnings
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from typing import Any, Optional, SupportsIndex

import numpy as np
import torch

from . import _resample, _resources
from ._resources import cpu_by_default, threads
from ._validate import _as_real_scalar, as_tensor, check_base, check_flag, check_rows, integral_scalar
from .api import _shows_bar, pid
from .joint import _parse_sizes, joint, joint_layout, sample_tensor
from .result import PIDResult, _index_for, _keep_array

__all__ = ["estimate", "PIDEstimate", "Terms", "suggest_k", "term_maxima"]

TERMS = ("redundancy", "unique1", "unique2", "synergy")
_SHORT = {"redundancy": "R", "unique1": "U1", "unique2": "U2", "synergy": "S"}

#: Share of the jackknife correction of R, U1, U2 added to their interval's half-width.
CORRECTION_WIDENING = 1.0
#: A jackknife standard error of synergy at most this (nats) is rounding: no resample moved it.
STABLE_SPREAD = 1e-12
#: Level of the jackknife half-width that the synergy's reliability rule compares the two
#: corrections with: the level it was validated at (docs/estimation.md), whatever the
#: ``confidence`` of the intervals, so that the flag says what N allows, not what was asked.
RELIABILITY_CONFIDENCE = 0.95
#: Samples per occupied cell over which the synergy's point estimate moves from the mean of its
#: two corrections to the jackknife's alone (linearly; docs/estimation.md, "Real joints").
JACKKNIFE_SYNERGY_FROM, JACKKNIFE_SYNERGY_ALONE = 5.0, 20.0
#: Defaults (see docs/estimation.md for the validation behind them).
DEFAULT_JACKKNIFE = 20
DEFAULT_NULL = 29
#: Pilot draws (from the unshrunk zero-synergy fit) that set the null model's shrinkage.
DEFAULT_PILOT = 10
#: Tolerance (nats) of the resampled solves: far below their statistical spread.
RESAMPLE_TOL = 1e-6
#: Problems per chunk of the resampled solves (one progress-bar step each).
_CHUNK = 64
# Joints of this many cells can take a second or more over the default estimate's 60 solves (a
# 20x20x50 joint of 5,000 uniform samples: 26 ms a solve on one core): a bar by default however
# few the solves (the 60 solves of a 64x64x100 estimate took minutes with none).
_LONG_SOLVE_CELLS = 20_000


@dataclass(frozen=True, eq=False)  # identity: == of array fields has no single truth value
class Terms:
    """One value per PID term; each field has the batch shape of the estimate."""

    redundancy: Any
    unique1: Any
    unique2: Any
    synergy: Any

    def as_dict(self) -> dict:
        """``{"redundancy": ..., "unique1": ..., "unique2": ..., "synergy": ...}``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __iter__(self):
        return iter(getattr(self, t) for t in TERMS)


@dataclass(frozen=True, eq=False)  # identity: == of array fields has no single truth value
class PIDEstimate:
    """Estimate of the BROJA PID of the distribution behind N samples.

    Every array field has the batch shape ``(G,)`` for ``groups=``, else ``()`` (``est[i]``
    is group ``i``'s estimate; ``len`` and iteration go over the groups); numpy
    ``float64`` for numpy input, torch ``float64`` on the input's device for torch input
    (``reliable`` holds booleans, ``occupied`` integers, and ``n`` integers too without
    weights); :meth:`numpy` and :meth:`cpu` convert every field, :meth:`in_base` the units.
    Units: nats, or ``base``.

    Attributes:
        redundancy, unique1, unique2, synergy: corrected point estimates, cut to the term's
            possible range (0 to :func:`term_maxima` of the joint's sizes, as given or as
            inferred from the samples; so are the intervals).
        ci_low, ci_high: :class:`Terms`, the ``confidence`` interval of each term.
        se: :class:`Terms`, the intervals' half-widths over their ``t`` quantile: the
            jackknife standard error, widened as the intervals are (by the jackknife
            correction for R, U1, U2, by half the two synergy corrections' difference for S),
            so that ``estimate ± t se`` is the interval before the cuts (for S, the mean of
            its two corrections ± t se: above 5 samples an occupied cell its estimate
            moves from that centre towards the jackknife's; R's upper end can reach
            further, to ``I(Xm; Y)``'s where ``Um``'s interval reaches 0).
        bias: :class:`Terms`, the estimated bias of the plug-in terms (plug-in − estimate
            before the cuts to the range).
        p_value: :class:`Terms`; ``synergy``: p-value of the test of "synergy > 0"
            (parametric bootstrap of the likelihood-ratio test, ``n_null`` draws; the
            smallest possible value is ``1 / (n_null + 1)``). The other terms have no test
            (NaN).
        reliable: :class:`Terms` of booleans: whether the term can be estimated at this N
            (its corrected estimate and interval are trustworthy, except where the plug-in's
            bias shrinks more slowly than 1/N, near a boundary of the terms (e.g. both unique
            terms 0), or where rare events the sample missed make the synergy:
            docs/estimation.md measures the flags). A sample in which Y, or a source,
            takes one value (one code, or one probability row repeated) of several possible
            (its size in ``sizes``, its rows' width, or any number for codes of an inferred
            size) flags the terms that this pins at
            0 unreliable (all four; or the redundancy, that source's unique term and the
            synergy); so does a sample of codes in which one source is a function of the
            other while a cell holds one sample (the synergy and that source's unique term),
            or Y a function of a source (the synergy and the other source's unique term).
            The flags do not depend on ``confidence``: the synergy's rule uses the 95% jackknife
            half-width, the level it was validated at.
            The synergy *test* does not depend on this flag, and its level is not assured:
            measured false-positive rates at 5% run from 0.02 to 0.08 on most validation
            joints, but about 0.35 at 0.125 samples a cell (6 of 12 in the validation run,
            95% interval 0.21-0.79; 69, 71 and 75 of 200 in three runs of 200, 0.28-0.45;
            30 of 100 on independent 20x20x10 samples, 0.21-0.40), 0.13 at 0.5 samples a cell
            (independent 20x20x10 at N = 2,000: 13 of 100, 0.07-0.21), and
            0.13-0.36 where one source is pure noise or on couplings of noisy copies and 0.48
            on nearly pure class clusters with 1% strays at N = 10,000 (29 of 60), flagged
            reliable, 0.25 with a 2% class weighted back on a sparse joint (flagged
            unreliable); and it is conservative on nearly pure class clusters without strays
            (docs/estimation.md).
        plugin: the certified :class:`PIDResult` of the empirical joint(s), in the units and
            array type of the other fields.
        n: samples per problem (effective sample size ``(Σw)²/Σw²`` with weights).
        cells: ``n1 * n2 * ny``; ``occupied``: non-zero cells of the empirical joint.
        confidence, n_jackknife, n_null, seed, base: the settings used.
        group: with ``groups=``, each problem's group index ``(G,)`` (kept by ``est[...]``,
            so that a slice's table names the groups it holds); else ``None``.
    """

    redundancy: Any
    unique1: Any
    unique2: Any
    synergy: Any
    ci_low: Terms
    ci_high: Terms
    se: Terms
    bias: Terms
    p_value: Terms
    reliable: Terms
    plugin: PIDResult
    n: Any
    cells: int
    occupied: Any
    confidence: float
    n_jackknife: int
    n_null: int
    seed: int
    base: Optional[float] = None
    group: Any = None

    @property
    def units(self) -> str:
        """The units of the information fields: ``"nats"``, ``"bits"`` or ``"log base b"``."""
        if self.base is None or self.base == math.e:
            return "nats"
        return "bits" if self.base == 2 else f"log base {self.base:g}"

    @property
    def estimates(self) -> Terms:
        """The four corrected point estimates as one :class:`Terms`."""
        return Terms(self.redundancy, self.unique1, self.unique2, self.synergy)

    @property
    def shape(self) -> tuple:
        """The batch shape: ``(G,)`` with ``groups=``, else ``()``."""
        return self.plugin.shape

    def __bool__(self) -> bool:
        """Always ``True``, as for :class:`PIDResult` (``len`` has no meaning ungrouped)."""
        return True

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of an ungrouped PIDEstimate (it has batch shape ())")
        return self.shape[0]

    def __iter__(self):
        """The estimates of the groups in turn (a ``TypeError`` ungrouped, as ``len`` is)."""
        if not self.shape:
            raise TypeError("iteration over an ungrouped PIDEstimate (it has batch shape ())")
        return (self[i] for i in range(self.shape[0]))

    def __getitem__(self, index) -> "PIDEstimate":
        """The estimates of ``groups[index]`` (an integer, slice or mask, indexed like the
        batch arrays); the settings are shared."""
        if not self.shape:
            raise IndexError("an ungrouped PIDEstimate (batch shape ()) cannot be indexed")
        plugin = self.plugin[index]
        if len(plugin.shape) > 1:
            raise IndexError(f"an index of a grouped PIDEstimate picks groups (an estimate of shape () or "
                             f"(k,)); {index!r} gives shape {plugin.shape}")

        return self._map(lambda v: _keep_array(v[_index_for(v, index)]), plugin)

    def _map(self, fn, plugin: PIDResult) -> "PIDEstimate":
        """This estimate with ``fn`` applied to every array field, and ``plugin``."""
        def terms(t: Terms) -> Terms:
            return Terms(*(fn(v) for v in t))

        group = getattr(self, "group", None)  # None in estimates pickled before it existed
        return replace(self, **{t: fn(getattr(self, t)) for t in TERMS}, n=fn(self.n),
                       occupied=fn(self.occupied), plugin=plugin, group=None if group is None else fn(group),
                       **{f: terms(getattr(self, f)) for f in ("ci_low", "ci_high", "se", "bias", "p_value",
                                                                 "reliable")})

    def in_base(self, base: float) -> "PIDEstimate":
        """The same estimate in logarithm base ``base`` (> 1; ``math.e`` for nats): the point
        estimates, intervals, standard errors, biases and ``plugin`` rescaled; p-values,
        flags and counts as they are."""
        base = check_base(base)  # None for nats
        factor = math.log(math.e if self.base is None else self.base) / math.log(math.e if base is None else base)

        def scaled(v):
            return _keep_array(v * factor)

        def terms(t: Terms) -> Terms:
            return Terms(*(scaled(v) for v in t))

        return replace(self, base=base, plugin=self.plugin.in_base(math.e if base is None else base),
                       **{t: scaled(getattr(self, t)) for t in TERMS},
                       **{f: terms(getattr(self, f)) for f in ("ci_low", "ci_high", "se", "bias")})

    def to_bits(self) -> "PIDEstimate":
        """The same estimate in bits (base 2)."""
        return self.in_base(2.0)

    def to_nats(self) -> "PIDEstimate":
        """The same estimate in nats."""
        return self.in_base(math.e)

    def as_dict(self) -> dict:
        """Every field by name, each :class:`Terms` as its own dict (arrays as they are, not
        copied; ``plugin`` the :class:`PIDResult`), e.g. for logging."""
        return {f.name: v.as_dict() if isinstance(v, Terms) else v
                for f in fields(self) for v in (getattr(self, f.name),)}

    def numpy(self) -> "PIDEstimate":
        """The same estimate with numpy arrays (of an estimate of torch tensors, on any device)."""
        return self._map(lambda v: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v),
                         self.plugin.numpy())

    def cpu(self) -> "PIDEstimate":
        """The same estimate with its tensors on the CPU (numpy fields unchanged)."""
        return self._map(lambda v: v.cpu() if isinstance(v, torch.Tensor) else v, self.plugin.cpu())

    def __str__(self) -> str:
        return _format(self)

    def __repr__(self) -> str:
        return _format(self)


def estimate(x1, x2, y, *, sizes=None, weights=None, counts=None, groups=None, num_groups=None,
             confidence: float = 0.95, n_jackknife: int = DEFAULT_JACKKNIFE,
             n_null: int = DEFAULT_NULL, n_pilot: int = DEFAULT_PILOT, seed: Optional[int] = None, base=None,
             progress=None) -> PIDEstimate:
    """Bias-corrected PID with confidence intervals and a test of synergy, from samples.

    Args:
        x1, x2, y: the N samples, as for :func:`fastpid.joint`: each a length-N vector of
            integer codes in ``[0, n)`` or an ``(N, n)`` matrix of probability rows (numpy,
            torch or lists).
        sizes, weights, groups, num_groups: as for :func:`fastpid.joint`. With ``groups``,
            one estimate per group (all groups are resampled and solved together).
            ``weights`` weigh single draws: the resampling treats each weighted sample as
            one draw, and ``n`` is the effective sample size ``(Σw)²/Σw²``. An inferred
            size is the largest code + 1, so codes with gaps (labels counted from 1) add
            values no sample takes to ``cells``, the terms' ceilings and the reliability rule:
            number them from 0 without gaps (``np.unique(x, return_inverse=True)``);
            ``sizes`` can add values, never remove them.
        counts: ``(N,)`` integers >= 0, how many times each sample was observed: the same
            as passing sample ``n`` ``counts[n]`` times (default: once each). Counts of
            repeated samples belong here, not in ``weights``: as weights, 400 samples
            condensed into 12 distinct rows counted as 12.8 draws, and their synergy test
            lost all its power.
        confidence: level of the intervals, in (0, 1 - 1e-6] (default 0.95; the
            ``reliable`` flags do not depend on it).
        n_jackknife: parts of the delete-a-group jackknife (default 20; at most the
            number of samples: fewer samples give each its own part, the leave-one-out
            jackknife, ``PIDEstimate.n_jackknife`` says how many; with ``groups``, at most
            the smallest group's sample count, which then sets every group's parts, with a
            warning: estimate small groups in a call of their own).
        n_null: draws from the zero-synergy fit for the synergy test (default 29; 0 skips
            the test and the null-based part of the synergy correction, and the synergy is
            then flagged reliable only where no resample moves it). The draws are hard
            target codes: with probability rows as ``y`` the test is skipped, with a
            warning, as with 0.
        n_pilot: pilot draws from the unshrunk zero-synergy fit that set the null model's
            shrinkage (default 10; at most ``n_null`` are used).
        seed: seed of the random partition and the null draws: an integer >= 0, or
            ``None`` for fresh entropy (the result's ``seed`` holds the integer drawn, which
            repeats the run). With ``groups`` one stream serves every group, so a group's
            estimate repeats with the whole call, not alone with the same seed. The null
            draws pick targets in the order of Y's codes: Y's values relabelled, the same
            seed draws other null samples, and the synergy's estimate, interval and p-value
            move within their Monte-Carlo noise (relabelling X1 or X2 changes nothing).
        base: logarithm base of the results (``2`` for bits); default nats.
        progress: progress bar over the resampled solves (tqdm; ``True``: always,
            ``False``: never). Default: on when stderr is a terminal and the resampled
            solves take more than one chunk of 64 or the joints of the values seen have 20,000
            cells or more (tqdm is imported only when a bar is shown).

    Returns:
        :class:`PIDEstimate`. numpy in → numpy out (the ``plugin`` result too); torch in →
        torch ``float64`` out on the input's device (no gradients: an estimate is not a
        training loss).

    Raises:
        ValueError / TypeError: bad samples (from :func:`fastpid.joint`), ``counts`` that
        are not ``N`` integers >= 0, fewer than 2 samples in a problem, ``confidence`` not a
        number in (0, 1 - 1e-6], ``n_jackknife < 2``, ``n_null < 0``, ``n_pilot < 1``, ``seed``
        neither ``None`` nor an integer >= 0.

    Cost: one certified solve of each empirical joint, one for its zero-synergy fit, and
    ``n_jackknife + n_pilot + n_null + 1`` resampled solves per problem (to ``tol=1e-6``; the
    last is the null world itself) in two batches, and ``n_null + 1`` more for each problem
    whose correction's world differs from the test's (above), in a third; ``n_jackknife``
    alone with ``n_null=0``.

    Threads: called on the main thread, the estimate sets PyTorch's intra-op threads to 1
    while it runs (its small tensor operations ran ten times slower on two threads of a busy
    machine) and restores them after; the batched solves keep the caller's count. The setting
    is the process's: a thread whose first PyTorch operation falls inside the call keeps one
    intra-op thread (``torch.set_num_threads`` in that thread resets it).
    """
    # PyTorch's intra-op threads cost more than they give on the estimate's small tensor
    # operations (4,000-cell softmaxes took 7 ms each with 2 threads on a busy 2-core
    # machine, the whole estimate 650 ms against 66 ms on one): they run on one thread, and
    # the batched solves on the caller's setting.
    progress = None if progress is None else check_flag(progress, name="progress")
    caller_threads = torch.get_num_threads()
    with threads(1), cpu_by_default():
        if counts is not None:
            # The samples as given are checked first, so that an error names their own index;
            # by joint_layout(), not joint(), which built the table at the declared sizes
            # (sizes (700, 700, 50): 383 MB and 1.3 s against 14 MB and 0.016 s without counts).
            joint_layout(x1, x2, y, sizes=sizes, weights=weights, groups=groups, num_groups=num_groups)
            # Each repeated sample is held again by every null draw at once (the check after
            # the repeat came when 10^8 repeats had grown the process by 7 GB).
            draws = _check_int(n_null, "n_null", 0) if np.ndim(y) == 1 else 0  # rows as y: no draws
            rows = sum(np.shape(v)[1] for v in (x1, x2) if np.ndim(v) == 2)  # soft sources' values
            x1, x2, y, weights, groups = _repeated_samples(counts, x1, x2, y, weights, groups,
                                                           _resample.draw_bytes(rows) * draws)
        return _estimate(x1, x2, y, sizes, weights, groups, num_groups, confidence, n_jackknife, n_null,
                         n_pilot, seed, base, progress, caller_threads)


def _estimate(x1, x2, y, sizes, weights, groups, num_groups, confidence, n_jackknife, n_null, n_pilot, seed,
              base, progress, solve_threads: int) -> PIDEstimate:
    """:func:`estimate`, on one intra-op thread except for the solves (``solve_threads``)."""
    confidence = _check_confidence(confidence)
    base = check_base(base)
    n_jackknife = _check_int(n_jackknife, "n_jackknife", 2)
    n_null = _check_int(n_null, "n_null", 0)
    n_pilot = _check_int(n_pilot, "n_pilot", 1)
    seed = _check_seed(seed)
    any_torch = any(isinstance(v, torch.Tensor) for v in (x1, x2, y, weights, groups))

    # fastpid.joint's checks; the joint over the declared values is never built (the values the
    # samples take are what the PID sees; sizes (3000, 3000, 50) had grown the process by
    # 10.4 GB before the resampling's memory check refused the estimate).
    G, (n1, n2, ny), device, dtype = joint_layout(x1, x2, y, sizes=sizes, weights=weights, groups=groups,
                                                  num_groups=num_groups)
    grouped = groups is not None
    # The resampling reads the samples again: converted once as joint() read them (native
    # byte order, unsigned and list inputs), on the joint's device.
    x1, x2, y = (sample_tensor(_exact_ranks(v), name, device) for v, name in ((x1, "x1"), (x2, "x2"), (y, "y")))
    # How many values each variable could take: its declared size, else its probability
    # rows' width, else (codes of an inferred size) any number.
    possible = [n if n is not None else v.shape[1] if v.dim() == 2 else math.inf
                for n, v in zip(_parse_sizes(sizes), (x1, x2, y))]
    weights, groups = (None if v is None else as_tensor(v, name, device=device)[0]
                       for v, name in ((weights, "weights"), (groups, "groups")))
    if weights is not None:  # samples of weight 0 are in no joint: the resampling skips them
        x1, x2, y, weights, groups = _positive_weight_samples(x1, x2, y, weights, groups)
    if y.dim() == 2 and n_null > 0:
        # The null draws redraw hard target codes; the data's joint spreads each sample's
        # target over its row: the two are not comparable (every p-value was 1 on 40 of 40
        # zero-synergy samples with rows of 0.6/0.2/0.2, and the correction moved the synergy
        # away from the truth).
        warnings.warn("the synergy test and its correction redraw hard target codes: with probability "
                      "rows as y they are skipped (n_null=0; the synergy is corrected by the jackknife "
                      "alone and has no p-value); pass hard labels for the test", stacklevel=3)
        n_null = 0
    # The resampling and the solves work over the values the samples take: a PID does not
    # see values of no mass (50 samples declared over 256x256x64 values: 33 s, 0.5-0.8 s so).
    # The declared alphabets still bound the terms and set the reliability rule.
    (x1, x2, y), kept = _resample.observed_values(x1, x2, y)
    m1, m2, my = (len(k) for k in kept)
    n_samples = int(x1.shape[0])
    counts = _resample.group_sizes(groups, n_samples, G)
    if counts.min() < 2:
        bad = int(np.argmin(counts))
        of_weight = (" of positive weight (a weight that is 0 beside its problem's largest, in float64, counts "
                     "as 0)") if weights is not None else ""
        raise ValueError(f"estimate needs at least 2 samples{of_weight} per problem; group {bad} has "
                         f"{int(counts[bad])}" if grouped else
                         f"estimate needs at least 2 samples{of_weight}; got {int(counts[0])}")
    n_eff = _resample.effective_sizes(groups, weights, n_samples, G)
    g = int(min(n_jackknife, counts.min()))
    if grouped and g < n_jackknife and counts.max() > g:
        # One g for every group: a small group cuts every group's parts (and widens its
        # intervals: 20 to 2 parts made 400-sample groups' synergy intervals 3.4 times as wide).
        small = int(np.argmin(counts))
        warnings.warn(f"estimate: group {small} has {int(counts[small])} samples, so every group's jackknife uses "
                      f"{g} parts, not n_jackknife={n_jackknife} (wider intervals for the larger groups); "
                      "estimate the small groups in a call of their own", stacklevel=3)
    pilot = min(n_pilot, n_null)
    weighted = pilot > 0 and weights is not None and y.dim() == 1  # the class factors' systems
    _check_resampling_memory(G, (m1, m2, my), g, pilot, n_null, device,
                             _resample.redraw_bytes(x1, x2, (m1, m2, my), max(pilot, n_null)),
                             _resample.factor_bytes(G, my) if weighted else 0, n_samples)
    # Probability rows as joint() of the caller's arguments reads them (checked, half-precision
    # ones divided by their sums) and in the dtype it sums them in: numpy float32 rows in
    # float64 (summed as the float32 tensors sample_tensor made, the plug-in had moved by 3e-10).
    rows_as_given = (check_rows(v, name).to(dtype) if v.dim() == 2 else v
                     for v, name in ((x1, "x1"), (x2, "x2"), (y, "y")))
    seen = torch.as_tensor(joint(*rows_as_given, sizes=(m1, m2, my), weights=weights, groups=groups,
                                 num_groups=G if grouped else None)).detach().to(torch.float64)
    seen = seen.reshape(G, m1, m2, my)
    rng = np.random.default_rng(seed)

    # Jackknife joints (G, g, ...) and the zero-synergy fit's draws (G, n_null, ...).
    jk = _resample.jackknife_joints(x1, x2, y, sizes=(m1, m2, my), weights=weights, groups=groups,
                                    G=G, g=g, rng=rng, device=device, joint_fn=joint)
    batch = [jk.reshape(G * g, m1, m2, my)]
    if pilot > 0:
        factors = _resample.weight_factors(x1, x2, y, weights, groups, G, m1, m2, my)
        log_w = _resample.null_log_weights(seen, tol=1e-7)
        ones = torch.ones(G, dtype=torch.float64, device=device)
        q1 = _resample.tempered_conditional(log_w, ones)
        batch.append(_resample.null_draws(q1, x1, x2, weights=weights, groups=groups, draws=pilot,
                                          rng=rng, joint_fn=joint, factors=factors).reshape(G * pilot, m1, m2, my))

    plug = pid(seen if grouped else seen[0])
    plug_v = np.stack([_np(getattr(plug, t)).reshape(G) for t in TERMS], -1)   # (G, 4)
    # The bar counts every resampled solve: jackknife, pilot and null draws, and the null
    # worlds themselves (solved with their draws).
    total = G * (g + (pilot + n_null + 1 if n_null > 0 else 0))
    with _progress(progress, total, m1 * m2 * my) as bar:
        # The jackknife's joints and the pilot draws apart: a solve plans a batch by its hardest
        # problem, and a draw fills every pair (x, y) the samples' joints leave empty (64x64x100,
        # 20,000 samples: a jackknife joint alone 0.16 s, by a Schur complement over 500 free
        # potentials; beside a draw, by the draw's elimination, as long as the draw).
        values = np.concatenate([_solve_batch(b, bar, solve_threads) for b in batch])  # (B, 5) nats, float64
        jk_v = values[:G * g, :4].reshape(G, g, 4)
        null_s, null_bias = None, None
        if n_null > 0:
            # Match the null model's information to the data: the pilot draws measure the bias
            # of the plug-in V in the fitted null world; the shrinkage λ makes the null world's
            # V equal to the data's plug-in V minus that bias.
            pv = values[G * g:, 4] - values[G * g:, 3]
            v_pilot = torch.as_tensor(pv.reshape(G, pilot).mean(1), device=device)
            px = seen.sum(-1)
            v_hat = plug_v[:, :3].sum(1)  # V = R + U1 + U2
            lam = _resample.match_shrinkage(log_w, px, v_pilot, v_hat, device)
            q = _resample.tempered_conditional(log_w, lam)

            def null_synergies(q, keep=None):
                """The synergy of n_null draws from the null world P̂(x) q(y|x) ``(G, n_null)``, and
                the bias of those draws: their mean less the world's own synergy, which is not
                exactly 0 (q is renormalised off the optimum's support, and shrunk), solved with
                them. Its P̂(x) is the draws'. ``keep`` (G,): of those problems only."""
                xs1, xs2, w, grp, fac, p_x = x1, x2, weights, groups, factors, px
                if keep is not None and grouped:  # their samples, the groups numbered anew
                    k = torch.as_tensor(keep, device=device)
                    rows = k[groups.long()]
                    xs1, xs2, grp = x1[rows], x2[rows], (torch.cumsum(k, 0) - 1)[groups[rows].long()]
                    w = None if weights is None else weights[rows]
                    fac = None if factors is None else (factors[0][k], factors[1][rows])
                    q, p_x = q[k], px[k]
                n = q.shape[0]
                draws = _resample.null_draws(q, xs1, xs2, weights=w, groups=grp, draws=n_null, rng=rng,
                                             joint_fn=joint, factors=fac)
                world = _resample.draws_marginal(q, xs1, xs2, grp, fac, p_x)[..., None] * q
                world = world / world.sum((1, 2, 3), keepdim=True)
                solved = _solve_batch(torch.cat([draws.reshape(n * n_null, m1, m2, my), world]), bar,
                                      solve_threads)
                s = solved[:n * n_null, 3].reshape(n, n_null)
                return s, s.mean(1) - solved[n * n_null:, 3]

            null_s, null_bias = null_synergies(q)  # the test's draws
            unseen_mass = _resample.unseen_pair_mass(x1, x2, y, groups, G, (m1, m2, my))
            if unseen_mass is not None:
                # The test's world keeps every unseen pair possible at the smallest held weight,
                # which keeps it near synergy 0; where N is large against the pairs it is denser
                # than the data's, and its draws' synergy bias the larger (README's 90-cell joint
                # at N = 2,000: the corrected synergy 0.061 nats low). The correction takes the
                # bias of draws from a world whose unseen pairs carry Good-Turing's estimate of
                # their mass, where the test's gives them more; drawn after the test's, which
                # stay as they were.
                sparse_q, lowered = _resample.unseen_lowered(q, seen, unseen_mass)
                lowered = lowered.cpu().numpy()
                if lowered.any():
                    if bar is not None:
                        bar.total += int(lowered.sum()) * (n_null + 1)
                        bar.refresh()
                    null_bias = null_bias.copy()
                    null_bias[lowered] = null_synergies(sparse_q, lowered)[1]

    occupied = (seen > 0).flatten(1).sum(1).cpu().numpy()
    est, se, lo, hi, bias, p_s, disagreement, spread = _combine(plug_v, jk_v, null_s, null_bias, g, confidence,
                                                                n_eff / np.maximum(occupied, 1),
                                                                term_maxima(n1, n2, ny))
    seen_once = _seen_once(x1, x2, y, groups, G, (m1, m2, my))
    reliable = _reliability(n_eff, (n1, n2, ny), occupied, disagreement if n_null > 0 else None, spread, g, seen_once)
    constant = _constant(x1, x2, y, groups, G)
    reliable &= ~_pinned_terms(constant, possible)
    reliable &= ~_pinned_by_a_map(_maps(x1, x2, y, groups, G), seen_once, constant)

    scale = 1.0 if base is None else 1.0 / math.log(base)
    shape = (G,) if grouped else ()

    def out(a, scaled=True, dtype=np.float64):
        a = np.asarray(a, dtype=dtype).reshape(shape)
        if scaled:
            a = np.asarray(a * scale)
        return torch.as_tensor(a, device=device) if any_torch else a

    def terms(a, scaled=True, dtype=np.float64):
        return Terms(*(out(a[:, i], scaled, dtype) for i in range(4)))

    pvals = np.full((G, 4), np.nan)
    if p_s is not None:
        pvals[:, 3] = p_s
    plugin = plug if base is None else plug.in_base(base)
    plugin = plugin if any_torch else plugin.numpy()  # solved on the float64 tensor
    return PIDEstimate(
        *(out(est[:, i]) for i in range(4)),
        ci_low=terms(lo), ci_high=terms(hi), se=terms(se), bias=terms(bias),
        p_value=terms(pvals, scaled=False), reliable=terms(reliable, False, bool),
        plugin=plugin, n=out(n_eff if weights is not None else counts, False,
                             np.float64 if weights is not None else np.int64),
        cells=n1 * n2 * ny, occupied=out(occupied, False, np.int64),
        confidence=confidence, n_jackknife=g, n_null=n_null, seed=seed, base=base,
        group=out(np.arange(G), False, np.int64) if grouped else None,
    )


def term_maxima(n1: int, n2: int, ny: int) -> np.ndarray:
    """The largest redundancy, unique1, unique2 and synergy (nats, ``(4,)``) of any joint of
    ``n1 x n2 x ny`` values: R <= min(I(X1;Y), I(X2;Y)) and U_i <= I(X_i;Y) <= log min(n_i, ny);
    S <= I(X1,X2;Y) <= log ny, and S <= I(X1,X2;Y) - I(X1;Y) = I(X2;Y|X1) <= log n2 (V is at
    least I(X1;Y)), likewise <= log n1.

    Raises:
        ValueError: a size that is not a positive integer.
    """
    for name, v in (("n1", n1), ("n2", n2), ("ny", ny)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} (a number of values) must be a positive integer, got {v!r}")
    return np.log([min(n1, n2, ny), min(n1, ny), min(n2, ny), min(n1, n2, ny)]).astype(np.float64)


# ----------------------------------------------------------------------------- internals


def _combine(plug_v, jk_v, null_s, null_bias, g, confidence, per_cell, most):
    """Point estimates, SEs, intervals, bias and the synergy p-value from the solved values.

    ``plug_v (G, 4)``, ``jk_v (G, g, 4)``, ``null_s (G, n_null)`` (the test's draws) or
    ``None`` with ``null_bias (G,)``, the synergy bias of the null draws; nats;
    ``per_cell (G,)``: samples per occupied cell; ``most (4,)``: each term's largest value
    (:func:`term_maxima`). Also returns, for the reliability rule, the half-difference of the
    two synergy corrections and the synergy's jackknife standard error before any widening
    (``(G,)`` each).
    """
    jack, se = _jackknife(plug_v, jk_v, g)
    est = jack.copy()
    p_s = None
    if null_s is not None:
        n_null = null_s.shape[1]
        # Monte-Carlo p-value; the tiny slack counts ties of equal plug-in synergy as ties.
        p_s = (1.0 + (null_s >= plug_v[:, 3:4] - 1e-9).sum(1)) / (n_null + 1.0)
        null_corrected = plug_v[:, 3] - null_bias
        est[:, 3] = 0.5 * (jack[:, 3] + null_corrected)
        disagreement = 0.5 * np.abs(jack[:, 3] - null_corrected)
    else:
        disagreement = np.zeros(plug_v.shape[0])
    t = t_quantile(0.5 + confidence / 2.0, g - 1)
    half = t * se
    # Synergy: the two corrections bracket the truth in the sparse regime (the jackknife
    # under-corrects, the null mean over-corrects when there is synergy), so the interval
    # spans both, each widened by the sampling half-width.
    half[:, 3] = half[:, 3] + disagreement
    # R, U1, U2: the jackknife removes the 1/N term of the bias, not all of it; where the
    # correction is large (sources that share much information, N small) the remainder is
    # of its order, so the interval also spans the correction itself.
    half[:, :3] = half[:, :3] + CORRECTION_WIDENING * np.abs(jack[:, :3] - plug_v[:, :3])
    spread = se[:, 3]  # the synergy's jackknife SE before the widening above
    se = half / t
    # A correction may pass what the alphabets allow (0 to `most`): the interval is then the
    # half-width from that end, not what is left of one centred past it (Y = X1 = X2 of
    # classes 0.55 / 0.45, R 0.688, N = 20: 32 of 200 samples balanced by chance had R's
    # [log 2, log 2]; a synergy whose two corrections both fell below 0 had [0, 0]).
    centre = np.clip(est, 0.0, most)
    lo, hi = np.clip(centre - half, 0.0, most), np.clip(centre + half, 0.0, most)
    # The upper ends of I(X1; Y)'s and I(X2; Y)'s intervals (R + Um in each part), which bound
    # R and Um near the unique terms' boundary (the ceilings below).
    info_top = {m: _upper_end(plug_v[:, 0] + plug_v[:, m], jk_v[:, :, 0] + jk_v[:, :, m], g, t) for m in (1, 2)}
    hi[:, 0] = np.minimum(np.maximum(hi[:, 0], _redundancy_ceiling(info_top, lo)), most[0])
    for m in (1, 2):
        ceiling = _unique_ceiling(plug_v, jk_v, g, t, lo, centre, info_top[m], m)
        hi[:, m] = np.minimum(np.maximum(hi[:, m], ceiling), most[m])
    # With many samples a cell the jackknife's 1/N term is most of the bias, and the null
    # world's conditional, spread over every admissible target, overstates a synergistic
    # joint's (real joints of k-means codes at 25-60 samples a cell: the mean of the two was
    # 0.002-0.014 nats low, the jackknife within 0.002): the synergy's point estimate moves
    # to the jackknife's, inside the same interval.
    w = np.clip((per_cell - JACKKNIFE_SYNERGY_FROM) / (JACKKNIFE_SYNERGY_ALONE - JACKKNIFE_SYNERGY_FROM), 0.0, 1.0)
    est[:, 3] = w * jack[:, 3] + (1.0 - w) * est[:, 3]
    bias = plug_v - est
    return np.clip(est, 0.0, most), se, lo, hi, bias, p_s, disagreement, spread


def _jackknife(plug, parts, g: int):
    """The delete-a-group jackknife of ``g`` groups: the bias-corrected value and its
    standard error, from the plug-in ``plug (G, ...)`` and the parts' values ``parts
    (G, g, ...)``."""
    mean = parts.mean(1)
    return g * plug - (g - 1) * mean, np.sqrt((g - 1) / g * ((parts - mean[:, None]) ** 2).sum(1))


def _redundancy_ceiling(info_top, lo) -> np.ndarray:
    """``(G,)``: how high R's interval must reach, ``-inf`` where it need not.

    ``R = I(Xm; Y) - Um <= I(Xm; Y)``: where ``Um``'s interval reaches 0, R may be as large as
    that source's own information, and R's interval reaches the upper end of ``I(Xm; Y)``'s
    (``info_top[m]``: its jackknife interval, widened as R's is; the smaller of the two
    sources' where both reach 0). Near that boundary the plug-in unique terms are lifted by
    noise, which the jackknife does not remove, and R's own interval sat below the truth:
    3x3x20 parity covered 0.55 / 0.63 at N = 300 / 1,000, 20x20x10 copies 0.53 at N = 2,000,
    a 3x3x1000 joint 0 of 20 at N = 20,000; 1.00, 1.00, 20 of 20 with it (docs/estimation.md,
    "R's ceiling")."""
    ceiling = np.full(lo.shape[0], -np.inf)
    for m in (1, 2):
        top = info_top[m]
        reach = lo[:, m] <= 0.0
        ceiling = np.where(reach, np.where(np.isfinite(ceiling), np.minimum(ceiling, top), top), ceiling)
    return ceiling


def _upper_end(plug, parts, g: int, t: float) -> np.ndarray:
    """The upper end of the jackknife interval of a sum or difference of terms (its plug-in
    ``plug (G,)`` and its parts' values ``parts (G, g)``), widened by its correction as the
    terms' are."""
    jack, se = _jackknife(plug, parts, g)
    return jack + t * se + CORRECTION_WIDENING * np.abs(jack - plug)


def _unique_ceiling(plug_v, jk_v, g, t, lo, centre, info_top, m: int) -> np.ndarray:
    """``(G,)``: how high ``Um``'s interval must reach, ``-inf`` where it need not.

    ``Um = Uo + I(Xm; Y) - I(Xo; Y)`` (``o`` the other source; R cancels). A sample puts
    ``Um`` at 0 in every jackknife part as soon as it shows ``I(Xm; Y) <= I(Xo; Y)`` by a
    margin, whatever the truth's small ``Um``, and its own interval then collapses onto 0
    (Dirichlet 4x4x2 joints at N = 500: true unique terms of 0.0007-0.026 nats covered in
    81-92 % of samples, all flagged reliable, some at [0, 0]). Where ``Um``'s interval
    reaches 0 it reaches ``Uo``'s estimate (``centre``) plus the upper end of that
    difference of informations' interval, but not past the upper end of ``I(Xm; Y)``'s
    (``info_top``; ``Um <= I(Xm; Y)``; a source of pure noise beside an informative one had
    its unique term's interval reach 0.16 nats at N = 500 without it): 94-100 % there
    (docs/estimation.md, "The unique terms' ceiling")."""
    o = 3 - m
    top = centre[:, o] + _upper_end(plug_v[:, m] - plug_v[:, o], jk_v[:, :, m] - jk_v[:, :, o], g, t)
    return np.where(lo[:, m] <= 0.0, np.minimum(top, info_top), -np.inf)


def _seen_once(x1, x2, y, groups, G: int, sizes) -> np.ndarray:
    """Per problem ``(G,)``: whether a cell of its joint holds exactly one sample (of positive
    weight, whatever its weight). Only hard codes put a sample in one cell: with probability
    rows, False."""
    if any(v.dim() != 1 for v in (x1, x2, y)):
        return np.zeros(G, dtype=bool)
    n1, n2, ny = sizes
    gid = torch.zeros_like(x1, dtype=torch.int64) if groups is None else groups.to(torch.int64)
    cell = ((gid * n1 + x1.to(torch.int64)) * n2 + x2.to(torch.int64)) * ny + y.to(torch.int64)
    counts = torch.bincount(cell, minlength=G * n1 * n2 * ny).reshape(G, -1)
    return (counts == 1).any(1).cpu().numpy()


def _reliability(n_eff, sizes, occupied, disagreement, spread, g, seen_once):
    """Per-term flags ``(G, 4)``: can the term be estimated at this N? (docs/estimation.md).

    R, U1, U2: at least two samples per cell of the larger pair marginal
    (``max(n1, n2) * ny`` of the declared ``sizes``). Synergy: at least two samples per occupied
    cell of the joint (``occupied``, per problem), and
    the two synergy corrections (jackknife, null draws; half their difference is
    ``disagreement``) agree to within the jackknife's 95% sampling half-width
    (:data:`RELIABILITY_CONFIDENCE`, not the intervals' level: the flag must not depend on
    what was asked) or to :data:`STABLE_SPREAD` (rounding), or no resample moves the synergy
    at all in a sample with no cell that holds a single sample (``seen_once``; its jackknife
    standard error ``spread`` is rounding: joints whose synergy no replicate changes, e.g. 0
    where Y = X1 = X2, while the null draws' synergy may move). ``disagreement=None`` (no null draws,
    ``n_null=0``): nothing to agree with, so the synergy is flagged reliable only where it does not move at all (its
    flag was always true there, and its intervals covered 0.85 where the full rule's gave
    0.99 on the redundant 8x8x4 joint at N = 400).
    """
    n1, n2, ny = sizes
    ok_ru = n_eff >= 2.0 * max(n1, n2) * ny
    half = t_quantile(0.5 + RELIABILITY_CONFIDENCE / 2.0, g - 1) * spread
    # A cell seen once (``seen_once``, by :func:`_seen_once`) says the sample misses events of
    # about its mass (Good-Turing): a synergy that no resample moves is then no sign that the
    # joint pins it (binary noisy copies at N = 40: the synergy stuck at 0 with a true 0.078,
    # in intervals [0, 0]).
    pinned = (spread <= STABLE_SPREAD) & ~seen_once
    # Corrections within rounding of each other agree, however little the jackknife moves:
    # where no pair is seen once the correction's world keeps no unseen pair (Good-Turing),
    # and on codes that pin the synergy both sides were ~1e-15, the flag a coin toss.
    agree = pinned | (False if disagreement is None else disagreement <= np.maximum(half, STABLE_SPREAD))
    ok_s = (n_eff >= 2.0 * np.maximum(occupied, 1)) & agree
    return np.stack([ok_ru, ok_ru, ok_ru, ok_s], -1)


def _constant(x1, x2, y, groups, G: int) -> np.ndarray:
    """``(G, 3)``: whether X1, X2, Y take one value in each problem's samples (of positive
    weight): one code, or one probability row repeated (a smoothed label of one class; rows
    within a few ulps of each other, as renormalised rows or softmaxes of shifted logits are,
    count as one)."""
    gid = torch.zeros(x1.shape[0], dtype=torch.int64, device=x1.device) if groups is None else groups.to(torch.int64)

    def constant(v):
        rows = v.reshape(v.shape[0], -1)  # codes: int64 ranks (observed_values)
        if v.dim() == 2:  # probability rows, compared as the joint reads them: normalised
            rows = rows.to(torch.promote_types(rows.dtype, torch.float32))
            rows = rows / rows.sum(1, keepdim=True)
        idx = gid[:, None].expand_as(rows)
        # Every problem has samples (two at least), so include_self=False leaves no zero behind.
        low = rows.new_zeros(G, rows.shape[1]).scatter_reduce(0, idx, rows, "amin", include_self=False)
        high = rows.new_zeros(G, rows.shape[1]).scatter_reduce(0, idx, rows, "amax", include_self=False)
        slack = 8 * torch.finfo(rows.dtype).eps * high if rows.dtype.is_floating_point else 0
        return ((high - low) <= slack).all(1).cpu().numpy()

    return np.stack([constant(v) for v in (x1, x2, y)], -1)


def _pinned_terms(constant: np.ndarray, possible) -> np.ndarray:
    """``(G, 4)``: the terms a sample pins at 0 only because a variable took one value in it
    (``constant``, by :func:`_constant`) of several possible: every resample keeps them at 0
    (intervals [0, 0]), and nothing in the sample measures what the unseen values hold
    (2x2x2 noisy copies, classes 95/5, N = 50: 27 of 300 samples of one class, each with
    every term [0, 0] and flagged reliable, around a true R of 0.080 and S of 0.054). One
    target value pins all four terms; one value of a source pins the redundancy, that
    source's unique term and the synergy. Only a variable with one possible value
    (``possible``: per variable, its declared size, its rows' width, or ``inf`` for codes of
    an inferred size) makes the zeros the truth's."""
    one = constant & (np.asarray(possible, dtype=np.float64) > 1)
    x1, x2, y = one[:, 0], one[:, 1], one[:, 2]
    return np.stack([y | x1 | x2, y | x1, y | x2, y | x1 | x2], -1)


def _maps(x1, x2, y, groups, G: int) -> np.ndarray:
    """``(G, 4)``: whether, in each problem's samples (of positive weight), X2 is a function of
    X1 (each X1 code met with one X2 code), X1 of X2, Y of X1 and Y of X2. Codes only (a
    variable given as rows: False)."""
    gid = torch.zeros_like(x1 if x1.dim() == 1 else x1[:, 0], dtype=torch.int64) if groups is None \
        else groups.to(torch.int64)

    def distinct(key, per_group):  # distinct keys in each problem
        return torch.bincount(torch.unique(key) // per_group, minlength=G)

    def of(a, b):  # b a function of a, in each problem
        if a.dim() != 1 or b.dim() != 1:
            return torch.zeros(G, dtype=torch.bool)
        a, b = a.to(torch.int64), b.to(torch.int64)
        na, nb = int(a.max()) + 1, int(b.max()) + 1
        return (distinct((gid * na + a) * nb + b, na * nb) == distinct(gid * na + a, na)).cpu()

    return torch.stack([of(x1, x2), of(x2, x1), of(x1, y), of(x2, y)], -1).numpy()


def _pinned_by_a_map(maps: np.ndarray, seen_once: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """``(G, 4)``: the terms a sample pins at 0 because a variable is a function of a source in
    it (``maps``, by :func:`_maps`) while a cell of it is seen once. ``X2 = f(X1)`` gives
    ``I(Y; X1, X2) = I(Y; X1) = V`` in every resample and null draw, so the synergy and U2 are
    0 in all of them (intervals [0, 0], p = 1), and U1 too where the map is one to one; but a
    cell seen once says the sample misses events of about its mass, among them pairs that
    would break the map (docs/estimation.md: on a 4x4x3 joint with X2 = X1 w.p. 0.9, S =
    0.18 nats, 10 of 200 samples of 30 held no pair off the diagonal; 9 had been flagged
    reliable at [0, 0]). ``Y = f(X1)`` likewise pins U2 and the synergy at 0 in every
    resample: ``I(X1; Y) = H(Y)`` under every coupling (2x2x2 copies of Y flipped with
    probability 0.025, N = 40: U1 and U2 now flagged reliable in 45 and 50 of 60 samples, 60
    before). Without a cell seen once the zeros stand, as for Y = X1 = X2
    (:func:`_reliability`'s ``pinned``; a sample whose map leaves no cell seen once is not
    caught: 3x3x2, Y = X1 mod 2 w.p. 0.97, S = 0.011 nats, N = 200). A map onto a variable
    that is constant in the sample is left to :func:`_pinned_terms` (``constant``), whose
    zeros are the truth's where that variable has one possible value."""
    onto_constant = constant[:, [1, 0, 2, 2]]  # the variable each map gives: X2, X1, Y, Y
    x2_of_x1, x1_of_x2, y_of_x1, y_of_x2 = (maps & seen_once[:, None] & ~onto_constant).T
    return np.stack([np.zeros_like(x2_of_x1), x1_of_x2 | y_of_x2, x2_of_x1 | y_of_x1,
                     x2_of_x1 | x1_of_x2 | y_of_x1 | y_of_x2], -1)


@functools.lru_cache(maxsize=64)  # 4 ms a call: one per estimate, with the same (p, df) each time
def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution (``0.5 < p < 1``), without SciPy: with
    ``x = sqrt(df) tan θ`` the CDF is ``1/2 + c ∫_0^θ cos^(df-1) φ dφ``, a smooth integrand
    on ``[0, π/2)`` (Simpson's rule), and ``θ`` is found by bisection (relative error below
    1e-8 for df from 1 to 1000 and p up to 1 - 1e-6, even df = 1, where the t density's tail
    defeats an integral over ``x``)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(math.pi)

    def cdf(theta):
        phi = np.linspace(0.0, theta, 4001)
        f = np.cos(phi) ** (df - 1)
        h = theta / 4000
        return 0.5 + c * h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    lo, hi = 0.0, math.pi / 2
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return math.sqrt(df) * math.tan(0.5 * (lo + hi))


def _progress(progress, total: int, cells: int):
    """A context manager that gives the tqdm bar over the resampled solves (``None`` when
    no bar is shown) and closes it on the way out, also on an error or an interrupt. By
    default (on a terminal) as pid()'s own rule says, more than one chunk of solves, or any
    number of solves of joints of at least :data:`_LONG_SOLVE_CELLS` ``cells``."""
    if not _shows_bar(progress, total, 0 if cells >= _LONG_SOLVE_CELLS else _CHUNK):
        return contextlib.nullcontext()
    from tqdm.auto import tqdm  # only here: no bar, no import

    return tqdm(total=total, desc="fastpid.estimate", unit="solve", leave=False, disable=False)


#: Peak memory of estimate() in float64 copies of the joints: each jackknife part held about 5
#: (the parts' joints, their sums before and after each part, the leave-one-out joints), each
#: null draw about 3.5 (counted as 4) with the jackknife's and the pilot's still held (peak growth measured on
#: 100x100x50 joints: 54.5, 104.6 and 204.6 copies at 10, 20 and 40 parts without the test,
#: 148 and 255 with 29 and 60 null draws at 20 parts).
_COPIES_PER_PART, _COPIES_PER_DRAW = 5, 4


def _check_resampling_memory(G: int, sizes, g: int, pilot: int, n_null: int, device, redrawn: int,
                             factors: int, n_samples: int) -> None:
    """Raise :class:`MemoryError` where the resampled joints, with the null draws' per-sample
    arrays (``redrawn`` bytes, of ``n_samples`` samples) and the weights' class factors
    (``factors`` bytes), would not fit in the free memory (``sizes``: the values the samples
    take; 50 samples over (1000, 1000, 50) declared values grew the process to 24 GB before
    the kernel killed it, when the declared ones counted; 10^6 samples grew it by 2 GB before
    the samples counted)."""
    draws = n_null + 1 if n_null > 0 else 0
    copies = max(_COPIES_PER_PART * (g + 1), g + pilot + _COPIES_PER_DRAW * draws)
    joints = 8 * G * math.prod(sizes) * copies
    need = joints + redrawn + factors
    if _resources.memory_unchecked(need):
        return
    have = _resources.available_bytes(device)
    if have is not None and need > have:
        parts = [f"{copies} resampled copies of each joint ({g} jackknife parts, {pilot + n_null} null draws), "
                 f"{_resources.gib(joints)}"]
        if redrawn:
            parts.append(f"the targets of its {n_samples} samples redrawn {max(pilot, n_null)} times at once, "
                         f"{_resources.gib(redrawn)}")
        if factors:
            parts.append(f"the weights' split by class (a system per problem over its classes), "
                         f"{_resources.gib(factors)}")
        # The redrawn targets grow with the samples: a subsample of this many fits beside the joints.
        fits = (have - joints - factors) * n_samples // redrawn if redrawn and have > joints + factors else 0
        raise MemoryError(
            f"estimate() of {G} joint(s) of {'x'.join(map(str, sizes))} values taken holds "
            f"{'; '.join(parts)}: {_resources.gib(need, have)} in all, but {_resources.gib(have, need)} is free "
            f"on {device}; merge rare values of X1, X2 or Y (suggest_k gives a number of clusters), lower "
            f"n_jackknife and n_null, or estimate from a subsample"
            + (f" (about {fits:,} of the {n_samples:,} samples fit)" if fits else ""))


def _repeated_samples(counts, x1, x2, y, weights, groups, per_sample: int = 0):
    """``x1, x2, y`` and the given ``weights`` and ``groups`` with sample ``n`` repeated
    ``counts[n]`` times (torch stays torch, on its device; anything else becomes numpy);
    refused up front where the repeated samples, with ``per_sample`` more bytes each (what the
    resampling holds per sample), would not fit."""
    c, _ = as_tensor(counts, "counts")
    n = len(x1)
    if c.dim() != 1 or c.shape[0] != n:
        raise ValueError(f"counts must be one count per sample, shape ({n},), got {tuple(c.shape)}")
    if c.dtype == torch.bool or c.is_complex() or c.is_meta:
        raise TypeError(f"counts must be integers >= 0, got dtype {getattr(counts, 'dtype', c.dtype)}")
    c = c.detach().cpu()
    bad = ~(torch.isfinite(c) & (c >= 0) & (c == c.round())) if c.is_floating_point() else c < 0
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"counts must be integers >= 0 (how many times each sample was observed), "
                         f"got counts[{i}] = {c[i].item()}")
    # Past int64 the cast below would wrap to negative counts. Compared in float64: against a
    # narrow integer tensor torch casts 2**62 into its dtype, where it wraps (every count of an
    # int32 tensor compared as too many).
    too_many = c.to(torch.float64) > 2.0 ** 62
    if bool(too_many.any()):
        i = int(too_many.nonzero()[0])
        raise ValueError(f"counts[{i}] = {c[i].item()} is too many samples to repeat; give the counts as "
                         "weights= instead (their ratios are what the estimate uses)")
    c = c.to(torch.int64)
    arrays = [v if isinstance(v, torch.Tensor) else np.asarray(v) for v in (x1, x2, y, weights, groups)
              if v is not None]
    total = int(c.sum())
    if total == 0:
        raise ValueError(f"counts are all 0: none of the {n} samples was observed")
    if groups is not None:  # a group left without samples would be reported as given none
        g, _ = as_tensor(groups, "groups")
        g = g.detach().cpu().reshape(-1)
        if g.is_floating_point() and bool((g == g.round()).all()):  # whole-number ids, as joint takes them
            g = g.to(torch.int64)
        if g.shape[0] == n and not g.is_floating_point() and not g.is_complex() and n and int(g.min()) >= 0:
            per_group = torch.zeros(int(g.max()) + 1, dtype=torch.int64).index_add_(0, g.long(), c)
            held = torch.bincount(g.long(), minlength=per_group.shape[0])
            unseen = ((held > 0) & (per_group == 0)).nonzero()
            if unseen.numel():
                k = int(unseen[0])
                raise ValueError(f"group {k}'s counts are all 0: none of its {int(held[k])} samples was observed "
                                 "(drop them, or give the group a sample with a positive count)")
    need: dict[torch.device, int] = {}  # bytes of the repeated samples, by the device they go to
    for v in arrays:
        if len(v):
            on = v.device if isinstance(v, torch.Tensor) else torch.device("cpu")
            row = v.element_size() * v[0].numel() if isinstance(v, torch.Tensor) else v.itemsize * v[0].size
            need[on] = need.get(on, 0) + total * row
    on = x1.device if isinstance(x1, torch.Tensor) else torch.device("cpu")  # where the joints are made
    need[on] = need.get(on, 0) + total * per_sample
    for on, size in need.items():
        have = None if _resources.memory_unchecked(size) else _resources.available_bytes(on)
        if have is not None and size > have:
            draws = " with what the null draws hold of each" if per_sample else ""
            raise MemoryError(f"counts repeat the {n} samples into {total}, which need {_resources.gib(size, have)} "
                              f"on {on}{draws}, but {_resources.gib(have, size)} is free; estimate from a subsample"
                              + (" (or n_null=0)" if per_sample else ""))

    def repeat(v):
        if v is None:
            return None
        if isinstance(v, torch.Tensor):
            return v.repeat_interleave(c.to(v.device), dim=0)
        return np.repeat(np.asarray(v), c.numpy(), axis=0)
    return tuple(repeat(v) for v in (x1, x2, y, weights, groups))


def _positive_weight_samples(x1, x2, y, weights, groups):
    """The samples (tensors on one device; their weights and groups) whose weight is
    positive, also beside the largest of its problem (``w / max w`` above 0 in float64: the
    joint has no mass of the others either, and a jackknife part of them alone had a total of
    0, then NaN); unchanged when every weight is (a part of zero-weight samples only would
    have no joint)."""
    gid = (np.zeros(weights.shape[0], dtype=np.int64) if groups is None
           else groups.detach().cpu().numpy().astype(np.int64))
    scaled = _resample.scaled_weights(weights, gid, int(gid.max(initial=0)) + 1)
    keep = torch.as_tensor(scaled > 0, device=weights.device)
    if bool(keep.all()):
        return x1, x2, y, weights, groups
    idx = keep.nonzero()[:, 0]
    return tuple(None if v is None else v[idx] for v in (x1, x2, y, weights, groups))


def _exact_ranks(v):
    """``v``, or the ranks of its values where ``v`` is a vector of integer codes that float64
    cannot tell apart (uint64 codes from 2^63 and Python integers past int64, which the
    samples' conversion turns into float64): the resampling works over the values seen, their
    order kept (2^63 + k for k < 4 had become one value, and a synergy of log 2 read 0, p = 1)."""
    if isinstance(v, torch.Tensor) and v.dtype == torch.uint64:
        arr = v.cpu().numpy()
    elif isinstance(v, np.ndarray) and v.dtype == np.uint64:
        arr = v
    elif isinstance(v, (list, tuple)):
        arr = np.asarray(v)  # uint64 for numpy uint64 scalars, objects past uint64 (joint_layout checked them)
        if arr.dtype not in (np.uint64, object):
            return v
    else:
        return v
    if arr.ndim != 1 or arr.size == 0 or (arr.dtype == np.uint64 and int(arr.max()) < 2**63):
        return v
    ranks = np.unique(arr, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return torch.from_numpy(ranks).to(v.device) if isinstance(v, torch.Tensor) else ranks


def _solve_batch(P: torch.Tensor, bar, n_threads: int) -> np.ndarray:
    """``(R, U1, U2, S, I12)`` ``(B, 5)`` (nats) of a batch of joints, solved in chunks on
    ``n_threads`` intra-op threads."""
    B = P.shape[0]
    # A bar moves about 20 times (in chunks of 64 the default estimate's 60 solves kept it at 0
    # to their end).
    chunk = _CHUNK if bar is None else max(1, min(_CHUNK, -(-bar.total // 20)))
    out = []
    for s in range(0, B, chunk):
        with threads(n_threads):
            r = pid(P[s:s + chunk], tol=RESAMPLE_TOL, progress=False)
        out.append(np.stack([_np(getattr(r, t)) for t in TERMS + ("mi",)], -1))
        if bar is not None:
            bar.update(min(chunk, B - s))
    return np.concatenate(out).reshape(B, 5)


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


#: Highest ``confidence`` taken: t_quantile() is accurate to p = 1 - 5e-7; past it its integral's
#: error reaches the tail mass and the quantile ran to infinity (at 1 - 1e-15 every interval was
#: [0, the most the term can be]).
MAX_CONFIDENCE = 1.0 - 1e-6


def _check_confidence(c) -> float:
    c = _as_real_scalar(c, "confidence")  # a string such as "0.9" is refused, not parsed
    if not 0.0 < c <= MAX_CONFIDENCE:
        raise ValueError(f"confidence must be in (0, 1 - 1e-6], got {c}")
    return c


def _check_int(v, name, minimum):
    v = integral_scalar(v)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def _check_seed(seed) -> int:
    """An integer >= 0 (numpy's own errors for others do not name ``seed``); for ``None``, one
    of 63 bits drawn from fresh entropy, so that the result records what repeats the run (and
    torch, numpy's legacy seeding and int64 columns take it: 128 bits they do not)."""
    if seed is None:
        return secrets.randbits(63)
    seed = integral_scalar(seed)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be None or an integer >= 0, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be None or an integer >= 0, got {seed}")
    return int(seed)


def suggest_k(n: SupportsIndex, ny: SupportsIndex, *, samples_per_cell: float = 4.0) -> int:
    """A number of clusters ``k`` per source for N samples and ``ny`` target values.

    The largest ``k`` with ``N >= samples_per_cell * k * k * ny`` (at least 2): at that
    ratio the synergy estimate of :func:`estimate` is flagged reliable on dense joints
    (docs/estimation.md). Redundancy and unique information tolerate much larger ``k``.
    Exact, in integer arithmetic (a float ``samples_per_cell`` is the decimal it prints as).

    Raises:
        ValueError: ``n`` or ``ny`` not a positive integer, ``samples_per_cell`` not a finite
        number > 0, or so small that ``n / (samples_per_cell * ny)`` overflows a float.
    """
    n, ny = integral_scalar(n), integral_scalar(ny)  # est.n is a 0-d array or tensor
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        hint = (" (an effective sample size, as est.n is with weights, can be passed as int(n))"
                if isinstance(n, numbers.Real) or getattr(n, "ndim", None) == 0 else "")
        raise ValueError(f"n (the number of samples) must be a positive integer, got {n!r}{hint}")
    if isinstance(ny, bool) or not isinstance(ny, numbers.Integral) or ny < 1:
        raise ValueError(f"ny (the number of target values) must be a positive integer, got {ny!r}")
    if not (isinstance(samples_per_cell, numbers.Real) and math.isfinite(samples_per_cell)
            and samples_per_cell > 0):
        raise ValueError(f"samples_per_cell must be a finite number > 0, got {samples_per_cell!r}")
    if not math.isfinite(n / (samples_per_cell * ny)):
        raise ValueError(f"samples_per_cell={samples_per_cell!r} is too small: n / (samples_per_cell * ny) "
                         "overflows")
    # Exact: k² <= n / (spc ny) in rationals, where k² <= m iff k² <= floor(m). A float
    # samples_per_cell is read as the decimal it prints as (0.1 is 1/10, so that
    # 0.1 * 30² * 3 = 270 admits k = 30). A float square root loses k's last digits from
    # k ~ 1e8 on, and settling k from it in steps of 1 never ended.
    spc = (Fraction(samples_per_cell) if isinstance(samples_per_cell, numbers.Rational)
           else Fraction(repr(float(samples_per_cell))))
    return max(2, math.isqrt(math.floor(Fraction(int(n)) / (spc * int(ny)))))


def _format(e: PIDEstimate) -> str:
    def arr(v):
        return np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v)

    shape = arr(e.redundancy).shape
    n_arr, occ = arr(e.n).reshape(-1), arr(e.occupied).reshape(-1)
    group = getattr(e, "group", None)  # None ungrouped, and in estimates pickled before it existed
    labels = np.arange(n_arr.size) if group is None else arr(group).reshape(-1)
    pct = f"{100 * e.confidence:g}%"
    head = (f"PIDEstimate ({e.units}; {e.n_jackknife}-part jackknife, {e.n_null} null draws, "
            f"{pct} intervals)")
    lines = [head]
    count = int(np.prod(shape)) if shape else 1
    show = min(count, 5)
    for i in range(show):
        idx = np.unravel_index(i, shape) if shape else ()
        if shape or group is not None:  # a group picked from a grouped estimate keeps its name
            lines.append(f"group {int(labels[i])}:")
        # N exact: counts as integers; with weights the effective sample size.
        size = (f"N = {int(n_arr[i])} samples" if np.issubdtype(n_arr.dtype, np.integer)
                else f"N = {n_arr[i]:.1f} effective samples (weighted)")
        gap = float(arr(e.plugin.gap)[idx])
        cells = f"{size}, {occ[i]} of {e.cells} cells occupied; plug-in solved within {gap:.1e} {e.units}"
        lines.append("  " + cells)
        lines.append(f"  {'term':<11}{'plug-in':>9}{'estimate':>10}   {pct + ' interval':<20}{'p (>0)':>8}  reliable")
        for t in TERMS:
            plug = arr(getattr(e.plugin, t))[idx]
            est = arr(getattr(e, t))[idx]
            lo, hi = arr(getattr(e.ci_low, t))[idx], arr(getattr(e.ci_high, t))[idx]
            p = arr(getattr(e.p_value, t))[idx]
            ok = bool(arr(getattr(e.reliable, t))[idx])
            ptxt = "—" if not np.isfinite(p) else p_value_text(p, e.n_null)
            interval = f"[{term_text(lo)}, {term_text(hi)}]"
            lines.append(f"  {t:<11}{term_text(plug):>9}{term_text(est):>10}   {interval:<20}{ptxt:>8}  "
                         f"{'yes' if ok else 'no'}")
    if count > show:
        lines.append(f"... {count - show} more groups (batch shape {shape})")
    if count == 0:
        lines.append(f"  no groups (batch shape {shape})")
    return "\n".join(lines)


def p_value_text(p: float, n_null: int, digits: int = 2) -> str:
    """The synergy test's p-value for printing: its smallest, ``1 / (n_null + 1)``, is a bound
    ("≤"), not a value."""
    return f"≤{p:.2g}" if p <= (1 + 1e-9) / (n_null + 1) else f"{p:.{digits}g}"


def term_text(v: float) -> str:
    """A term for the table: 4 decimals, or 2 significant digits where those would show 0 and
    the value is above the solves' certificates (1e-8 nats; below, 0.0000: rounding)."""
    return f"{v:.1e}" if 1e-8 <= abs(v) < 5e-5 else f"{v:.4f}"
