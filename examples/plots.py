"""Matplotlib figures of the results (``pip install "fastpid[examples]"``)."""
from __future__ import annotations

import numpy as np

from .stats import missing, pct

#: A comparison counts where its Holm-adjusted p-value is below this.
HOLM_LEVEL = 0.05

__all__ = ["plot_pid_trajectory", "plot_accuracy_bars", "plot_fair_deltas", "plot_fair_probe_gaps",
           "plot_fair_fractions"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path) -> None:
    """Write ``fig`` to ``path`` and close it; the bounding box is fitted to what is drawn
    (tight_layout alone cut long axis labels at the right edge)."""
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _floats(values) -> np.ndarray:
    """A saved list of numbers as floats, ``None`` (how the JSON file holds NaN) as NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def plot_pid_trajectory(history: dict, path, title: str = "") -> None:
    """PID terms (nats) of the probe over epochs, from
    :meth:`ECSAsyncController.history_arrays`: the plug-in terms (no bias correction, no
    interval), the permutation baseline's plug-in synergy and the synergy score (synergy −
    baseline) where they were computed; where the synergy test ran (``synergy_ci_low`` /
    ``synergy_ci_high`` finite), its corrected estimate with its confidence interval as a band;
    shading marks epochs where a modality was paused, hatching the warm-up, a dashed line the
    start of stage 2, a dotted line the peak-score epoch (restored at stage 2)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ep = np.asarray(history["epoch"])
    for t, style in (("redundancy", "-"), ("unique1", "-"), ("unique2", "-"), ("synergy", "-"),
                     ("mi1", ":"), ("mi2", ":")):
        label = {"mi1": "I(Z1;Y)", "mi2": "I(Z2;Y)"}.get(t, t)
        ax.plot(ep, history[t], style, marker=".", label=f"{label}, plug-in")
    base = _floats(history["synergy_baseline"])
    if np.isfinite(base).any():
        ax.plot(ep, base, "--", color="C3", alpha=0.6, label="synergy baseline, plug-in")
        ax.plot(ep, np.where(np.isfinite(base), _floats(history["score"]), np.nan), "-", color="k", lw=1.5,
                label="synergy score (plug-in − baseline)")
        ax.axhline(0, color="k", lw=0.5)
    # The synergy test's interval (synergy_rule="test"): the plug-in lines carry none, and a
    # band missing where it was computed hid how uncertain the score the rule acts on is.
    lo, hi = (_floats(history.get(k, [None] * len(ep))) for k in ("synergy_ci_low", "synergy_ci_high"))
    band = np.isfinite(lo) & np.isfinite(hi)
    if band.any():
        ax.fill_between(ep, lo, hi, where=band, color="C5", alpha=0.25, lw=0,
                        label="synergy test: confidence interval")
        est = _floats(history.get("synergy_estimate", [None] * len(ep)))
        ax.plot(ep, np.where(band, est, np.nan), "-", color="C5", marker="x", label="synergy test: corrected estimate")
        ax.axhline(0, color="k", lw=0.5)
    if history.get("warmup_epochs"):
        ax.axvspan(ep.min() - 0.5, history["warmup_epochs"] - 0.5, color="grey", alpha=0.15, hatch="//",
                   lw=0, label="warm-up")
    for e, t1, t2, st in zip(ep, history["train1"], history["train2"], history["stage"]):
        if st == "unimodal" and not (t1 and t2):
            ax.axvspan(e - 0.5, e + 0.5, color="C0" if not t1 else "C1", alpha=0.12, lw=0)
    if history.get("switch_epoch") is not None:
        ax.axvline(history["switch_epoch"], color="k", ls="--", label="stage 2 starts")
    if history.get("peak_epoch") is not None:
        ax.axvline(history["peak_epoch"], color="grey", ls=":", label="peak score (restored)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats")
    ax.set_title(title or "ECS-async probe PID (shaded: a modality paused)")
    ax.legend(fontsize=7, ncol=2)
    _save(plt, fig, path)


def plot_accuracy_bars(table: dict, path, metric: str = "acc", title: str = "", deltas: dict | None = None,
                       baseline: str = "joint") -> None:
    """Grouped bars of ``metric`` (mean ± SD over seeds: their spread, not an interval to
    compare methods by): ``table[dataset][method] = {"mean": {...}, "std": {...}, "n_seeds":
    ...}``; one seed has no spread, so no error bar (its saved std of 0 had drawn one of zero
    length). ``deltas[dataset][method]``: paired differences to ``baseline`` (:func:`examples.stats.paired`,
    with ``holm_p`` where the comparison is in a Holm family), drawn in a second panel as
    :func:`plot_fair_deltas` draws them: the comparison the bars do not make."""
    plt = _pyplot()
    datasets = list(table)
    methods = list(dict.fromkeys(m for d in datasets for m in table[d]))
    width_bars = 1.6 + 1.4 * len(datasets) * len(methods) / 3
    rows = [(f"{d}: {m}", p) for d in datasets for m, p in (deltas or {}).get(d, {}).items()]
    if rows:
        fig, (ax, dax) = plt.subplots(1, 2, figsize=(width_bars + 6, max(4, 0.32 * len(rows) + 1.6)),
                                      gridspec_kw={"width_ratios": [width_bars, 5]})
    else:
        fig, ax = plt.subplots(figsize=(width_bars, 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        xs = [j + i * width for j, d in enumerate(datasets) if m in table[d]]
        mu = [table[d][m]["mean"][metric] for d in datasets if m in table[d]]
        sd = [table[d][m]["std"][metric] if table[d][m].get("n_seeds", 2) > 1 else float("nan")
              for d in datasets if m in table[d]]
        ax.bar(xs, mu, width, yerr=sd, capsize=3, label=m)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(datasets))], datasets)
    lo = min(table[d][m]["mean"][metric] for d in datasets for m in table[d])
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.set_ylabel(f"test {metric}\n(bar: mean; error bar: ± SD over seeds, a spread, not a comparison)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    if rows:
        for i, (_, p) in enumerate(rows):
            _delta_point(dax, i, p)
        dax.axvline(0, color="k", lw=0.8)
        dax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
        dax.invert_yaxis()
        dax.set_xlabel(f"Δ test {metric} vs {baseline}, points, paired by seed\n{DELTA_NOTE}", fontsize=8)
        dax.set_title(f"paired differences to {baseline}", fontsize=10)
        _colour_legend(fig, outside=any(missing(p.get("holm_p")) for _, p in rows))
        dax.grid(axis="x", alpha=0.3)
    _save(plt, fig, path)


#: What a deltas panel's error bars and colours mean (its axis label).
DELTA_NOTE = ("(mean; error bar: unadjusted 95 % t-interval;\n"
              f"colour: Holm-adjusted p < {HOLM_LEVEL} above / below 0, else not significant)")


def _colour(p: dict) -> str:
    """A paired difference's colour: by its Holm-adjusted p (the p-values the reports say
    count), not by whether its unadjusted interval excludes 0 (at 95 % each, about 1 in 20
    does by chance); grey outside a Holm family (no ``holm_p``)."""
    q = p.get("holm_p")
    if missing(q):
        return "grey"
    return ("C2" if p["mean"] > 0 else "C3") if q < HOLM_LEVEL else "C0"


def _delta_point(ax, y, p: dict) -> None:
    """``p`` (a :func:`examples.stats.paired` entry of fractions) at height ``y`` in points,
    with its unadjusted interval where it has one (one seed or no spread: none)."""
    if missing(p.get("mean")):
        return
    xerr = None if missing(p.get("lo")) else [[100 * (p["mean"] - p["lo"])], [100 * (p["hi"] - p["mean"])]]
    ax.errorbar([100 * p["mean"]], [y], xerr=xerr, fmt="o", color=_colour(p), capsize=3)


def _colour_legend(fig, outside: bool = False) -> None:
    """The deltas' colour key, once for the figure and below its panels: inside a panel
    ("best") it had covered an error bar."""
    from matplotlib.lines import Line2D

    keys = [("C2", f"p_Holm < {HOLM_LEVEL}, above 0"), ("C3", f"p_Holm < {HOLM_LEVEL}, below 0"),
            ("C0", f"p_Holm ≥ {HOLM_LEVEL}")]
    if outside:
        keys.append(("grey", "outside the Holm family (descriptive)"))
    fig.legend([Line2D([], [], marker="o", ls="", color=c) for c, _ in keys], [t for _, t in keys], fontsize=7,
               loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(keys))


# ---------------------------------------------------------------- the fair-protocol grid
# Each takes the results as :mod:`examples.run_fair` saves them in its JSON file.

def _panels(plt, n, width=5.5, height=4.5):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0]


def plot_fair_deltas(results: dict, path, baseline: str = "fused+heads") -> None:
    """Per data set (one panel): every arm's mean paired difference in final test accuracy
    to ``baseline`` (points, seed by seed) with its unadjusted 95 % t-interval, coloured by
    its Holm-adjusted p (the headline family's, the p-values the tables say count); the label
    gives the arm's own mean accuracy with its 95 % interval. The baseline itself sits at 0
    with its own interval's half width, for scale."""
    plt = _pyplot()
    datasets = results["datasets"]
    rows = max(len(d["summary"]["arms"]) for d in datasets.values())
    fig, axes = _panels(plt, len(datasets), height=0.42 * rows + 1.6)
    for ax, (dname, d) in zip(axes, datasets.items()):
        arms = d["summary"]["arms"]
        names = list(arms)
        for i, a in enumerate(names):
            v = arms[a]
            if a == baseline:
                iv = v["final"]
                if not missing(iv["lo"]):
                    ax.errorbar([0.0], [i], xerr=[[100 * (iv["mean"] - iv["lo"])], [100 * (iv["hi"] - iv["mean"])]],
                                fmt="s", color="grey", capsize=3)
                continue
            p = v["vs"].get(baseline, {}).get("final")
            if p is not None:
                _delta_point(ax, i, p)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(names)),
                      [f"{a} ({pct(arms[a]['final'])} %)" + (" — baseline, own CI" if a == baseline else "")
                       for a in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ final test accuracy vs {baseline}, points, paired by seed\n{DELTA_NOTE}", fontsize=8)
        if baseline in d["runs"]:
            ax.set_title(f"{dname} ({len(d['runs'][baseline])} paired seeds)", fontsize=10)
        else:
            ax.set_title(f"{dname}: {baseline} not run, no paired differences", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    if any(baseline in d["runs"] for d in datasets.values()):
        _colour_legend(fig)
    _save(plt, fig, path)


def plot_fair_probe_gaps(results: dict, path, arms) -> None:
    """Per data set (one panel): the probe gap of each modality (points: the linear-probe
    accuracy of the encoder trained alone minus that of the same encoder in the joint
    model) for ``arms`` that were run, with 95 % t-intervals."""
    plt = _pyplot()
    datasets = results["datasets"]
    fig, axes = _panels(plt, len(datasets), height=0.5 * len(arms) + 1.4)
    for ax, (dname, d) in zip(axes, datasets.items()):
        summ = d["summary"]["arms"]
        names = [a for a in arms if a in summ]
        for j, (m, color) in enumerate((("1", "C0"), ("2", "C1"))):
            for i, a in enumerate(names):
                iv = summ[a]["probe_gap"][m]
                y = i + (j - 0.5) * 0.3
                ax.errorbar([100 * iv["mean"]], [y], xerr=[[100 * (iv["mean"] - iv["lo"])], [100 * (iv["hi"] - iv["mean"])]],
                            fmt="o", color=color, capsize=2, label=f"modality {m}" if i == 0 else None)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("probe gap, points (alone − joint)")
        ax.set_title(f"{dname}: > 0 = the joint encoder learned less", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    _save(plt, fig, path)


def plot_fair_fractions(results: dict, path) -> None:
    """Per data set (one panel): for each arm whose epochs visit only part of the training
    set (the curricula), the fraction each epoch visited, drawn as a step over the part of
    the budget (passes, sample visits / N) the epoch spent; one line when every seed has the
    schedule up to rounding (the seeds' training sets differ by a few samples), else one thin
    line per seed. The last epoch is cut where the budget ends."""
    plt = _pyplot()
    datasets = results["datasets"]
    fig, axes = _panels(plt, len(datasets))
    for ax, (dname, d) in zip(axes, datasets.items()):
        shown = 0
        for k, (a, runs) in enumerate(d["runs"].items()):
            fr = [r.get("fractions") for r in runs]
            if not fr or any(f is None for f in fr) or all(min(f) >= 1.0 for f in fr):
                continue
            color = f"C{shown}"
            shown += 1
            same = len({len(f) for f in fr}) == 1 and all(np.allclose(f, fr[0], rtol=0, atol=0.02) for f in fr)
            for i, f in enumerate([np.mean(fr, 0)] if same else fr):
                f = np.asarray(f)
                ax.step(np.concatenate([[0.0], np.cumsum(f)]), np.concatenate([f[:1], f]), where="pre", color=color,
                        lw=1.5 if same else 0.6, alpha=1.0 if same else 0.5, label=a if i == 0 else None)
        ax.set_xlabel("budget spent (sample visits / N)")
        ax.set_ylabel("fraction of the training set in the epoch")
        ax.set_ylim(0, 1.05)
        ax.set_title(dname if shown else f"{dname}: no arm of this run visits part of the training set")
        if shown:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    _save(plt, fig, path)
