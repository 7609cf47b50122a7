"""Matplotlib figures of the results (``pip install "fastpid[examples]"``)."""
from __future__ import annotations

import numpy as np

__all__ = ["plot_pid_trajectory", "plot_accuracy_bars"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_bars(table: dict, path, metric: str = "acc", title: str = "") -> None:
    """Grouped bars of ``metric`` (mean ± std over seeds): ``table[dataset][method] =
    {"mean": {...}, "std": {...}}``."""
    plt = _pyplot()
    datasets = list(table)
    methods = list(dict.fromkeys(m for d in datasets for m in table[d]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(datasets) * len(methods) / 3, 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        xs = [j + i * width for j, d in enumerate(datasets) if m in table[d]]
        mu = [table[d][m]["mean"][metric] for d in datasets if m in table[d]]
        sd = [table[d][m]["std"][metric] for d in datasets if m in table[d]]
        ax.bar(xs, mu, width, yerr=sd, capsize=3, label=m)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(datasets))], datasets)
    lo = min(table[d][m]["mean"][metric] for d in datasets for m in table[d])
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
