"""Matplotlib figures of the results (``pip install "fastpid[examples]"``)."""
from __future__ import annotations

import numpy as np

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


def plot_pid_trajectory(history: dict, path, title: str = "") -> None:
    """PID terms (nats) of the probe over epochs, from
    :meth:`ECSAsyncController.history_arrays`: the terms, the permutation baseline's
    synergy and the synergy score (synergy − baseline) where they were computed; shading
    marks epochs where a modality was paused, hatching the warm-up, a dashed line the start
    of stage 2, a dotted line the peak-score epoch (restored at stage 2)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ep = np.asarray(history["epoch"])
    for t, style in (("redundancy", "-"), ("unique1", "-"), ("unique2", "-"), ("synergy", "-"),
                     ("mi1", ":"), ("mi2", ":")):
        label = {"mi1": "I(Z1;Y)", "mi2": "I(Z2;Y)"}.get(t, t)
        ax.plot(ep, history[t], style, marker=".", label=label)
    base = np.asarray(history["synergy_baseline"], dtype=float)
    if np.isfinite(base).any():
        ax.plot(ep, base, "--", color="C3", alpha=0.6, label="synergy baseline")
        ax.plot(ep, np.where(np.isfinite(base), history["score"], np.nan), "-", color="k", lw=1.5,
                label="synergy score")
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


def plot_accuracy_bars(table: dict, path, metric: str = "acc", title: str = "") -> None:
    """Grouped bars of ``metric`` (mean ± std over seeds): ``table[dataset][method] =
    {"mean": {...}, "std": {...}, "n_seeds": ...}``; one seed has no spread, so no error bar
    (its saved std of 0 had drawn one of zero length)."""
    plt = _pyplot()
    datasets = list(table)
    methods = list(dict.fromkeys(m for d in datasets for m in table[d]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(datasets) * len(methods) / 3, 4))
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
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(plt, fig, path)


# ---------------------------------------------------------------- the fair-protocol grid
# Each takes the results as :mod:`examples.run_fair` saves them in its JSON file.

def _panels(plt, n, width=5.5, height=4.5):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0]


def plot_fair_deltas(results: dict, path, baseline: str = "fused+heads") -> None:
    """Per data set (one panel): every arm's mean paired difference in final test accuracy
    to ``baseline`` (points, seed by seed) with its 95 % t-interval; the label gives the
    arm's own mean accuracy. The baseline itself sits at 0 with its own interval's half
    width, for scale."""
    plt = _pyplot()
    datasets = results["datasets"]
    fig, axes = _panels(plt, len(datasets), height=0.42 * max(len(d["summary"]["arms"]) for d in datasets.values()) + 1.2)
    for ax, (dname, d) in zip(axes, datasets.items()):
        arms = d["summary"]["arms"]
        names = list(arms)
        for i, a in enumerate(names):
            v = arms[a]
            if a == baseline:
                iv = v["final"]
                ax.errorbar([0.0], [i], xerr=[[100 * (iv["mean"] - iv["lo"])], [100 * (iv["hi"] - iv["mean"])]],
                            fmt="s", color="grey", capsize=3)
                continue
            p = v["vs"].get(baseline, {}).get("final")
            if p is None:
                continue
            lo, hi = 100 * (p["mean"] - p["lo"]), 100 * (p["hi"] - p["mean"])
            color = "C2" if p["lo"] > 0 else "C3" if p["hi"] < 0 else "C0"
            ax.errorbar([100 * p["mean"]], [i], xerr=[[lo], [hi]], fmt="o", color=color, capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(names)),
                      [f"{a} ({100 * arms[a]['final']['mean']:.1f}%)" + (" — baseline, own CI" if a == baseline else "")
                       for a in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ final test accuracy vs {baseline}, points\n(mean paired difference, 95 % t-interval)")
        if baseline in d["runs"]:
            ax.set_title(f"{dname} ({len(d['runs'][baseline])} paired seeds)", fontsize=10)
        else:
            ax.set_title(f"{dname}: {baseline} not run, no paired differences", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
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
