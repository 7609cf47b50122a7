"""Matplotlib figures of PID terms during training, of curricula and of ECS decisions.

Needs matplotlib (``pip install "fastpid[plot]"``), imported on first use only. Every
function draws into ``ax`` (a new pyplot figure's axes when ``None``) and returns the axes;
the figure is ``ax.figure``. A figure made here stays open in pyplot, as
``plt.subplots`` leaves it: in a training loop, close it after saving
(``plt.close(ax.figure)``), or pass ``ax``. No backend is chosen here (use
``matplotlib.use("Agg")`` for files without a display).

* :func:`plot_pid_terms` — PID terms over epochs, with interval bands (hatched where an
  estimate flags the term unreliable);
* :func:`plot_curriculum` — the fraction of the training set a curriculum admits per epoch,
  with its phases;
* :func:`plot_ecs_decisions` — which modality ECS-async paused when, the warm-up and the
  start of stage 2.
"""
from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from ._caller import caller_level

__all__ = ["plot_pid_terms", "plot_curriculum", "plot_ecs_decisions"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("fastpid.plot needs matplotlib; install it with `pip install \"fastpid[plot]\"` "
                          "(or `pip install matplotlib`)") from e
    return plt


def _axes(ax, figsize=(6, 3.5)):
    if ax is not None:
        if not hasattr(ax, "plot"):  # ax="x" had failed deep inside with an AttributeError
            raise TypeError(f"ax must be matplotlib axes (e.g. plt.subplots()[1]) or None, got {ax!r}")
        return ax
    # Constrained layout: without a layout engine a plain savefig cut the axis labels (and the
    # ECS rows' tick labels) off the image.
    _, ax = _pyplot().subplots(figsize=figsize, layout="constrained")
    return ax


def _finite(a: np.ndarray, name: str, ep: np.ndarray) -> np.ndarray:
    """``a``, refused where it is NaN or infinite (matplotlib drops such points silently)."""
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{name} is {a[bad][0]} at epoch {ep[np.argmax(bad)]:g}: every value must be finite")
    return a


def _vector(v, name: str, n: int | None = None) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu()
    elif isinstance(v, (list, tuple)):  # e.g. a history of 0-d tensors that require grad
        v = [x.detach().cpu() if hasattr(x, "detach") else x for x in v]
    a = np.asarray(v)
    if np.iscomplexobj(a):  # float() of them had dropped the imaginary parts with a numpy warning
        raise TypeError(f"{name} must be real numbers, got complex ones")
    a = a.astype(float)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        raise ValueError(f"{name} must be a 1-D sequence{'' if n is None else f' of {n} values'}, "
                         f"got shape {a.shape}")
    return a


def _epoch(v, key: str) -> float:
    """History entry ``key`` as an epoch >= 0 (a number, or a 0-d array or tensor as a saved
    history holds); a NaN switch_epoch had drawn no pause at all."""
    try:
        x = float(v) if np.ndim(v) == 0 and not isinstance(v, (str, bytes, bool, np.bool_)) else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not (math.isfinite(x) and x >= 0):
        raise ValueError(f"history[{key!r}] must be an epoch >= 0{' or None' if key == 'switch_epoch' else ''}, "
                         f"got {v!r}")
    return x


def _spans(ep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of the sorted epochs ``ep`` starts and ends on the x axis: the midpoints
    between neighbours, and half the neighbouring gap beyond the first and the last (half an
    epoch for a single one), so that epochs logged every k cover the axis without gaps."""
    if len(ep) == 0:
        return ep, ep
    gaps = np.diff(ep)
    first, last = (gaps[0], gaps[-1]) if len(gaps) else (1.0, 1.0)
    mids = (ep[1:] + ep[:-1]) / 2
    return np.concatenate([[ep[0] - first / 2], mids]), np.concatenate([mids, [ep[-1] + last / 2]])


def _sorted_epochs(ep: np.ndarray, name: str) -> np.ndarray:
    if not np.all(np.isfinite(ep)) or np.any(np.diff(ep) <= 0):
        raise ValueError(f"{name} must be finite and strictly increasing, got {ep.tolist()}")
    return ep


def plot_pid_terms(epochs, terms, intervals: Mapping | None = None, *, ax=None, units: str | None = None,
                   band_label: str = "interval"):
    """PID terms over epochs: one line per term, one shaded band per interval.

    Args:
        epochs: ``(E,)`` epochs (x axis), strictly increasing.
        terms: ``{name: (E,) values}``, e.g. ``{"synergy": [...], "redundancy": [...]}``
            (in ``units``); or a :class:`fastpid.PIDResult` or :class:`fastpid.PIDEstimate`
            of batch shape ``(E,)`` (one problem per epoch, e.g. ``groups=epoch``), whose four
            PID terms are drawn in its units, an estimate's with its intervals and a result's
            with its certificate (each term within ``gap`` of its value) unless ``intervals``
            is given.
        intervals: ``{name: (lower (E,), upper (E,))}``, e.g. bootstrap or certified
            intervals (``lower <= upper``); each band takes its term's colour (a name without
            a term gets a grey band). The legend names what the bands are: an estimate's
            ``"95% interval"`` (its confidence), a result's ``"certified (± gap)"``, else
            ``band_label``.
        band_label: the legend's name of bands given in ``intervals`` (default
            ``"interval"``).
        ax: axes to draw into; units: the y-axis label (default: the result's units, else
            ``"nats"``).

    Where an estimate flags a term unreliable (its ``reliable`` false at an epoch) that band is
    hatched and lighter (a one-epoch bar dashed), each epoch's flag holding from halfway to the
    previous epoch to halfway to the next, under its own legend entry (e.g. ``"95% interval,
    flagged unreliable at this N"``): such an interval is not to be trusted. Terms drawn
    without a band (a mapping without ``intervals``, or terms they leave out) warn
    (``UserWarning``): a value from samples has an uncertainty the plot would not show.

    Returns the axes: ``len(terms)`` lines and a band per interval (``ax.collections``): one
    collection, or two for a term flagged at some epochs and not at others (its trusted
    stretches first, then its hatched ones).
    """
    if not isinstance(band_label, str):
        raise TypeError(f"band_label must be a string, got {type(band_label).__name__}")
    terms, intervals, units, band_label, flags = _terms_of(terms, intervals, units, band_label)
    ep = _sorted_epochs(_vector(epochs, "epochs"), "epochs")
    # Everything checked before anything is drawn: a refused call had left a figure open, or
    # half its lines in the caller's axes.
    lines = {name: _finite(_vector(v, f"terms[{name!r}]", len(ep)), f"terms[{name!r}]", ep)
             for name, v in terms.items()}
    bands = {}
    for name, band in (intervals or {}).items():
        try:
            entries = len(band)
        except TypeError:  # a number, a 0-d array or tensor ("float has no len()" had come from here)
            entries = None
        if entries != 2:
            raise ValueError(f"intervals[{name!r}] must be a pair (lower, upper) of per-epoch values, got "
                             + (repr(band) if entries is None else f"{entries} entries"))
        lo, hi = (_finite(_vector(b, f"intervals[{name!r}]", len(ep)), f"intervals[{name!r}]", ep) for b in band)
        if np.any(lo > hi):
            raise ValueError(f"intervals[{name!r}] has a lower end above its upper one at epoch "
                             f"{ep[np.argmax(lo > hi)]:g}; give (lower, upper)")
        bands[name] = lo, hi
    # An estimate's terms flagged unreliable per epoch (all False for bands without flags).
    flagged = {name: ~_vector(flags[name], f"reliable.{name}", len(ep)).astype(bool) if name in flags
               else np.zeros(len(ep), bool) for name in bands}
    ax = _axes(ax)
    bare = [name for name in lines if name not in bands]
    if bare:  # a bare number from samples hides its uncertainty
        warnings.warn(f"plot_pid_terms draws {bare} without an uncertainty band: pass intervals={{name: (lower, "
                      f"upper)}} (e.g. bootstrap intervals), or a PIDEstimate (fastpid.estimate) whose intervals are "
                      f"drawn, or a PIDResult of a known joint (its certificate)", stacklevel=caller_level())
    colours = {}
    for name, values in lines.items():
        (line,) = ax.plot(ep, values, marker=".", label=name)
        colours[name] = line.get_color()
    for name, (lo, hi) in bands.items():
        colour, bad = colours.get(name, "grey"), flagged[name]
        if len(ep) == 1:  # a band over one epoch has no width: a bar instead (dashed where flagged)
            ax.vlines(ep, lo, hi, color=colour, alpha=0.35, lw=6, ls=(0, (0.5, 0.5)) if bad[0] else "-")
            continue
        for unreliable in (False, True):
            mine = bad == unreliable
            if not mine.any():
                continue
            if mine.all():
                x, lo2, hi2, where = ep, lo, hi, None
            else:  # flagged at some epochs only: each epoch's look from halfway to its neighbours
                x, lo2, hi2 = (_with_midpoints(v) for v in (ep, lo, hi))
                where = _stretches(mine)
            ax.fill_between(x, lo2, hi2, where=where, lw=0,
                            **(_flagged_style(colour) if unreliable else {"color": colour, "alpha": 0.2}))
    ax.set_xlabel("epoch")
    ax.set_ylabel(units)
    handles = ax.get_legend_handles_labels()[0]
    if bands:  # one entry for every kind of band: an interval and a certificate's ± gap looked alike
        from matplotlib.patches import Patch

        if not all(bad.all() for bad in flagged.values()):
            handles.append(Patch(color="grey", alpha=0.35, label=band_label))
        if any(bad.any() for bad in flagged.values()):
            handles.append(Patch(label=f"{band_label}, flagged unreliable at this N", lw=0, **_flagged_style("grey")))
    if handles:
        ax.legend(handles=handles, fontsize=8)
    return ax


def _flagged_style(colour) -> dict:
    """A flagged band's look: a lighter face than a trusted band's (alpha 0.07, not 0.2), hatched in the
    term's colour."""
    from matplotlib.colors import to_rgba

    return {"facecolor": to_rgba(colour, 0.07), "edgecolor": to_rgba(colour, 0.6), "hatch": "///"}


def _with_midpoints(v: np.ndarray) -> np.ndarray:
    """``v`` with the midpoint between each two neighbours inserted (``2E - 1`` values), on the
    straight band edges: so that a band can change its look halfway between two epochs."""
    out = np.empty(2 * len(v) - 1)
    out[::2], out[1::2] = v, (v[1:] + v[:-1]) / 2
    return out


def _stretches(mine: np.ndarray) -> np.ndarray:
    """``fill_between``'s ``where`` on :func:`_with_midpoints`' grid that covers the epochs
    ``mine``, each from halfway to its previous epoch to halfway to its next (matplotlib fills
    between two grid points where both are ``True``)."""
    where = np.empty(2 * len(mine) - 1, bool)
    where[::2], where[1::2] = mine, mine[1:] | mine[:-1]
    return where


def _terms_of(terms, intervals, units, band_label):
    """``(terms, intervals, units, band_label, flags)`` for :func:`plot_pid_terms` from a mapping
    or a result (whose own bands name themselves); ``flags``: an estimate's ``reliable`` per
    term (the terms it flags, whatever the bands), else empty."""
    from fastpid import PIDEstimate, PIDResult

    if isinstance(terms, (PIDResult, PIDEstimate)):
        result = terms
        shape = tuple(np.shape(result.synergy))
        if len(shape) != 1:
            raise ValueError(f"terms: a {type(result).__name__} of batch shape {shape}; plot_pid_terms needs one "
                             "problem per epoch, batch shape (E,) (e.g. fastpid.pid of the stacked joints, or "
                             "fastpid.estimate with groups=epoch)")
        terms = {t: getattr(result, t) for t in ("redundancy", "unique1", "unique2", "synergy")}
        if intervals is None and isinstance(result, PIDEstimate):
            intervals = {t: (getattr(result.ci_low, t), getattr(result.ci_high, t)) for t in terms}
            band_label = f"{100 * result.confidence:g}% interval"
        elif intervals is None:  # a solve's certificate: each term lies within gap of the drawn value
            gap = _vector(result.gap, "gap")
            intervals = {t: (np.maximum(_vector(v, t) - gap, 0.0), _vector(v, t) + gap) for t, v in terms.items()}
            band_label = "certified (± gap)"
        flags = result.reliable.as_dict() if isinstance(result, PIDEstimate) else {}
        return terms, intervals, result.units if units is None else units, band_label, flags
    if not isinstance(terms, Mapping):
        raise TypeError(f"terms must be a mapping {{name: values}}, a PIDResult or a PIDEstimate, got "
                        f"{type(terms).__name__}")
    return terms, intervals, "nats" if units is None else units, band_label, {}


def plot_curriculum(curriculum, epochs=None, *, phases: Sequence[str] | None = None, ax=None):
    """The fraction of the training set admitted per epoch, with phase spans.

    Args:
        curriculum: a :class:`~fastpid.integrations.SPICECurriculum` (its pacing schedule:
            the fraction each epoch admits once scores exist, and the phase names), or a
            sequence of ``(E,)`` fractions in ``[0, 1]``.
        epochs: ``(E,)`` epochs for a sequence (default ``0 .. E-1``).
        phases: ``(E,)`` phase name per epoch for a sequence (default: no phases).
        ax: axes to draw into.

    Returns the axes: one line (the fraction; for a curriculum labelled as its schedule, as
    every sample is admitted until the first scores) and one shaded span per run of equal
    phase names (``ax.patches``).
    """
    from fastpid.integrations import SPICECurriculum

    if isinstance(curriculum, SPICECurriculum):
        if epochs is not None or phases is not None:  # they had been replaced without a word
            raise ValueError("epochs and phases are for a sequence of fractions: a SPICECurriculum gives "
                             "its own (its schedule's epochs 0 .. E-1 and phase names)")
        n = curriculum.schedule.epochs
        fractions = [curriculum.scheduled_fraction(e) for e in range(n)]
        phases = [curriculum.phase(e) for e in range(n)]
        epochs = range(n)
        # The schedule, not what a run admitted: before the first scores every sample is in.
        label = "scheduled fraction (once scores exist)"
    else:
        fractions, label = curriculum, "fraction admitted"
    frac = _vector(fractions, "fractions")
    if not np.all((frac >= 0) & (frac <= 1)):    # also NaN; e.g. percentages fell off the axis
        raise ValueError(f"fractions must lie in [0, 1] (a fraction of the training set, not a "
                         f"percentage), got {frac.tolist()}")
    ep = _sorted_epochs(_vector(range(len(frac)) if epochs is None else epochs, "epochs", len(frac)), "epochs")
    if phases is not None and len(phases) != len(ep):
        raise ValueError(f"phases must name one phase per epoch ({len(ep)}), got {len(phases)}")
    ax = _axes(ax)
    if phases is not None:
        colours = {}
        lo, hi = _spans(ep)
        start = 0
        for i in range(1, len(ep) + 1):
            if i == len(ep) or phases[i] != phases[start]:
                name = phases[start]
                first = name not in colours
                colours.setdefault(name, f"C{len(colours) + 1}")
                ax.axvspan(lo[start], hi[i - 1], color=colours[name], alpha=0.12, lw=0,
                           label=name if first else None)
                start = i
    ax.step(ep, frac, where="mid", color="C0", label=label, marker="o" if len(ep) == 1 else None)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction of training set")
    ax.legend(fontsize=8)
    return ax


def plot_ecs_decisions(history, *, ax=None):
    """Which modality ECS-async paused when: one row per modality, a bar over every probed
    epoch in which it was paused (to the next probe or the start of stage 2, whichever is
    first), a hatched warm-up span and a dashed line at the start of stage 2.

    Args:
        history: :meth:`ECSAsyncController.history_arrays()
            <fastpid.integrations.ECSAsyncController.history_arrays>` (a dict) or the
            controller itself.
        ax: axes to draw into.

    Returns the axes: two bar collections (``ax.collections``, modality 1 then 2), a
    warm-up patch when ``warmup_epochs > 0`` and a stage-2 line when stage 2 started.
    """
    if hasattr(history, "history_arrays"):
        history = history.history_arrays()
    missing = [k for k in ("epoch", "train1", "train2", "stage") if k not in history]
    if missing:
        raise ValueError(f"history lacks {missing}: give ECSAsyncController.history_arrays() or the controller")
    ep = _sorted_epochs(_vector(history["epoch"], "history['epoch']"), "history['epoch']")
    for key in ("train1", "train2", "stage"):
        if len(history[key]) != len(ep):
            raise ValueError(f"history[{key!r}] has {len(history[key])} entries, history['epoch'] "
                             f"{len(ep)}: one decision per probed epoch is needed")
    for key in ("train1", "train2"):  # "False" (a string) had drawn no pause at all
        values = history[key].tolist() if hasattr(history[key], "tolist") else history[key]  # bool tensors too
        if not all(isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and v in (0, 1))
                   for v in values):
            raise ValueError(f"history[{key!r}] must hold booleans (whether the modality trained)")
    stages = set(history["stage"]) - {"unimodal", "joint"}
    if stages:
        raise ValueError(f"history['stage'] holds {sorted(map(str, stages))}; the stages are 'unimodal' and 'joint'")
    switch, warmup = history.get("switch_epoch"), history.get("warmup_epochs") or 0
    switch, warmup = (None if v is None else _epoch(v, key)
                      for key, v in (("switch_epoch", switch), ("warmup_epochs", warmup)))
    ax = _axes(ax, figsize=(6, 2.2))
    # Each probe's decision holds until the next probe; the last one's for the probes' usual
    # interval (their median gap; one epoch for a single probe).
    step = float(np.median(np.diff(ep))) if len(ep) > 1 else 1.0
    ends = np.append(ep[1:], ep[-1] + step) if len(ep) else ep
    run_end = float(ends[-1]) if len(ep) else 1.0   # before stage 2 cuts the pauses
    if switch is not None:  # stage 2 ends every pause, probed or not
        ends = np.minimum(ends, switch)
    for row, key in ((1, "train1"), (2, "train2")):
        spans = [(s, e - s) for s, e, on, st in zip(ep, ends, history[key], history["stage"])
                 if not on and st == "unimodal" and e > s]
        ax.broken_barh(spans, (row - 0.35, 0.7), color=f"C{row - 1}", label=f"modality {row} paused")
    # The warm-up is epochs 0 .. warmup_epochs - 1, and ends where stage 2 starts.
    warm_end = warmup if switch is None else min(warmup, switch)
    if warm_end > 0:
        ax.axvspan(0, warm_end, color="grey", alpha=0.15, hatch="//", lw=0, label="warm-up")
    if switch is not None:
        ax.axvline(switch, color="k", ls="--", label="stage 2 starts")
    # The run's extent, its stage-2 probes included (a run that never paused had an axis of
    # one point).
    ax.set_xlim(0, max(run_end, switch if switch is not None else 0, 1.0))
    ax.set_yticks([1, 2], ["modality 1", "modality 2"])
    ax.set_ylim(0.4, 2.6)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the rows, not over them
    return ax
