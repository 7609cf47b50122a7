"""Paired comparisons over seeds: per-seed differences, their 95 % t-interval and two-sided
p-value, and Holm's adjustment of a family of such p-values for multiple comparisons."""
from __future__ import annotations

import numpy as np

__all__ = ["paired", "mean_interval", "holm"]


def mean_interval(values, level: float = 0.95) -> dict:
    """Mean of ``values`` with its two-sided t-interval (``lo``/``hi`` are NaN for one value)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"need a non-empty vector of values, got shape {v.shape}")
    mean = float(v.mean())
    if v.size < 2:
        return {"mean": mean, "lo": float("nan"), "hi": float("nan"), "n": int(v.size), "p": float("nan")}
    se = float(v.std(ddof=1) / np.sqrt(v.size))
    half = float(t.ppf(0.5 + level / 2, v.size - 1) * se)
    # Two-sided p-value of "mean = 0" (the interval excludes 0 iff p < 1 - level).
    p = float(2 * t.sf(abs(mean) / se, v.size - 1)) if se > 0 else (1.0 if mean == 0 else 0.0)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": int(v.size), "p": p}


def paired(a, b, level: float = 0.95) -> dict:
    """``a − b`` seed by seed (same seeds, same order): the mean difference with its
    t-interval, the per-seed differences and how many seeds ``a`` won (``wins``) or lost."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same seeds: shapes {a.shape} and {b.shape}")
    d = a - b
    return {**mean_interval(d, level), "diffs": d.tolist(), "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}


def holm(pvalues) -> list:
    """Holm's step-down adjustment of a family of p-values (same order; NaN stays NaN): reject
    where the adjusted value is below the level, and the chance of any false rejection in the
    family stays below it, whatever the dependence between the tests."""
    p = np.asarray(pvalues, dtype=np.float64)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.full(p.shape, np.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
