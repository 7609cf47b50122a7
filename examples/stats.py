"""Paired comparisons over seeds: per-seed differences and their 95 % t-interval."""
from __future__ import annotations

import numpy as np

__all__ = ["paired", "mean_interval"]


def mean_interval(values, level: float = 0.95) -> dict:
    """Mean of ``values`` with its two-sided t-interval (``lo``/``hi`` are NaN for one value)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"need a non-empty vector of values, got shape {v.shape}")
    mean = float(v.mean())
    if v.size < 2:
        return {"mean": mean, "lo": float("nan"), "hi": float("nan"), "n": int(v.size)}
    half = float(t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": int(v.size)}


def paired(a, b, level: float = 0.95) -> dict:
    """``a − b`` seed by seed (same seeds, same order): the mean difference with its
    t-interval, the per-seed differences and how many seeds ``a`` won (``wins``) or lost."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same seeds: shapes {a.shape} and {b.shape}")
    d = a - b
    return {**mean_interval(d, level), "diffs": d.tolist(), "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}
