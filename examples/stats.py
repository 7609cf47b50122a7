"""Paired comparisons over seeds: per-seed differences, their 95 % t-interval and two-sided
p-value, and Holm's adjustment of a family of such p-values for multiple comparisons; runs
paired by seed, and the differences as table cells in points."""
from __future__ import annotations

import math

import numpy as np

#: Values whose range is at most ``SAME · max(1, max |value|)`` count as equal (no spread):
#: accuracies are saved from float32, so equal per-seed differences can differ by ~1e-7.
SAME = 1e-6

__all__ = ["paired", "mean_interval", "rate_interval", "precision_note", "holm", "paired_runs", "paired_family",
           "points", "holm_text", "legend"]


def mean_interval(values, level: float = 0.95) -> dict:
    """Mean of ``values`` with its two-sided t-interval and the p-value of "mean = 0".

    ``lo``/``hi``/``p`` are NaN for one value, and where the values have no spread (all equal
    up to :data:`SAME`: the t statistic is undefined; ``no_spread`` is then True). A NaN or
    infinite value makes the mean, interval and p NaN (``n`` counts the finite values,
    ``non_finite`` the others)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"need a non-empty vector of values, got shape {v.shape}")
    nan = float("nan")
    finite = np.isfinite(v)
    if not finite.all():
        return {"mean": nan, "lo": nan, "hi": nan, "n": int(finite.sum()), "p": nan,
                "non_finite": int((~finite).sum())}
    mean = float(v.mean())
    if v.size < 2:
        return {"mean": mean, "lo": nan, "hi": nan, "n": int(v.size), "p": nan}
    if np.ptp(v) <= SAME * max(1.0, float(np.abs(v).max())):
        # Equal values: a zero-width interval and p = 0 (or 1 where all are 0), or a tiny p from
        # float32 rounding noise, would claim a certainty that a few equal values do not give.
        return {"mean": mean, "lo": nan, "hi": nan, "n": int(v.size), "p": nan, "no_spread": True}
    se = float(v.std(ddof=1) / np.sqrt(v.size))
    half = float(t.ppf(0.5 + level / 2, v.size - 1) * se)
    # Two-sided p-value of "mean = 0" (the interval excludes 0 iff p < 1 - level).
    p = float(2 * t.sf(abs(mean) / se, v.size - 1))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": int(v.size), "p": p}


def rate_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Clopper–Pearson interval of a rate of ``k`` events in ``n`` trials (a coverage, a
    rejection rate over replicates): exact, never narrower than ``level`` asks."""
    from scipy.stats import beta

    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (k, n)) \
            or not 0 <= k <= n or n < 1:
        raise ValueError(f"need integers 0 <= k <= n and n >= 1, got k={k!r}, n={n!r}")
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def precision_note(reps, level: float = 0.95) -> str:
    """What rates and mean biases over ``reps`` replicates (one count or several) are worth: the
    Clopper–Pearson intervals of a few rates, and the standard error of a mean bias."""
    def fmt(x: float) -> str:  # 3 decimals where 2 would round a bound to 0 or 1
        return f"{x:.3f}" if 0 < x < 0.01 or 0.99 < x < 1 else f"{x:.2f}"

    counts = sorted(set(int(r) for r in np.atleast_1d(reps)))
    parts = []
    for n in counts:
        shown = sorted({0, round(0.05 * n), n // 2, n - round(0.05 * n), n})
        parts.append(f"with {n} replicates, " + "; ".join(
            f"{k}/{n} [{fmt(lo)}, {fmt(hi)}]" for k in shown for lo, hi in [rate_interval(k, n, level)]))
    return (f"{level:.0%} Clopper–Pearson intervals of a rate (coverage, rejections, flags): " + "; ".join(parts)
            + ". The standard error of a mean bias is about its row's RMSE / √(replicates).")


def paired(a, b, level: float = 0.95) -> dict:
    """``a − b`` seed by seed (same seeds, same order): the mean difference with its
    t-interval, the per-seed differences and how many seeds ``a`` won (``wins``) or lost."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same seeds: shapes {a.shape} and {b.shape}")
    d = a - b
    return {**mean_interval(d, level), "diffs": d.tolist(), "wins": int((d > 0).sum()), "losses": int((d < 0).sum()),
            "base_mean": float(b.mean())}


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


def paired_runs(runs, base, value, seeds=None):
    """``([value(r) for r in runs], [value(r) for r in base])``, the arguments of :func:`paired`,
    once both lists of runs are known to hold the same seeds in the same order (each run's
    ``"seed"``; for runs without one, ``seeds`` in list order); otherwise, or where a run lacks
    the value, a string saying why there is no pair."""
    def order(rs):
        if all("seed" in r for r in rs):
            return [r["seed"] for r in rs]
        return list(seeds) if seeds is not None and len(rs) == len(seeds) else None

    if order(runs) is None or order(base) is None:
        return "seeds unknown"
    if order(runs) != order(base):
        return "seeds not paired"
    try:
        return [value(r) for r in runs], [value(r) for r in base]
    except KeyError:
        return "no per-seed values"


def paired_family(pairs: dict) -> dict:
    """``{key: (a, b)}`` -> ``{key: paired(a, b)}``, each with ``holm_p``: its p-value adjusted
    by Holm's method over the family, i.e. every key whose entry is a pair; an entry that is
    a string (why there is no pair) stays as it is."""
    out = {key: v if isinstance(v, str) else paired(*v) for key, v in pairs.items()}
    family = [d for d in out.values() if not isinstance(d, str)]
    for d, p in zip(family, holm([d["p"] for d in family])):
        d["holm_p"] = p
    return out


def missing(x) -> bool:
    """Whether a saved number is missing: NaN, or ``None`` (how a saved run's JSON holds NaN)."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def points(d) -> str:
    """A :func:`paired_family` entry of fractions, in points: ``+1.2 [−0.3, 2.7] (4/5), p_Holm 0.31``
    (mean [95 % interval, cut to the difference's possible range] (seeds won / seeds),
    Holm-adjusted p; one seed has no interval, equal
    differences on every seed are marked ``no spread``, a NaN value gives no number); a string
    entry as it is."""
    if isinstance(d, str):
        return d
    if d.get("non_finite"):
        return f"no value: NaN or infinite on {d['non_finite']} of {d['n'] + d['non_finite']} seeds"

    def num(x, sign=""):
        return f"{100 * x:{sign}.1f}".replace("-", "−")
    text = num(d["mean"], "+")
    if not missing(d["lo"]):
        lo, hi = _possible(d, signed=True)
        text += f" [{num(lo)}, {num(hi)}]"
    text += f" ({d['wins']}/{d['n']})"
    if d.get("no_spread"):
        return text + ", no spread: no interval, no p"
    p = d["holm_p"]
    if not missing(p):
        text += f", {holm_text(p)}"
    return text


def pct(iv: dict, signed: bool = False) -> str:
    """A :func:`mean_interval` (or, ``signed``, :func:`paired`) entry of fractions in %:
    ``89.8 [88.7, 91.0]`` (the interval cut to the possible range, :func:`_possible`: few seeds
    gave 87.9 [61.7, 114.1]), the mean alone where there is no interval, no value where a seed's was NaN."""
    fmt = "{:+.1f}" if signed else "{:.1f}"
    if iv.get("non_finite"):                        # a NaN or infinite value on some seed
        return f"no value (NaN or infinite on {iv['non_finite']} of {iv['n'] + iv['non_finite']} seeds)"
    if missing(iv["lo"]):                           # one seed, or no spread: no interval
        return fmt.format(100 * iv["mean"]) + (", no spread" if iv.get("no_spread") else "")
    lo, hi = _possible(iv, signed)
    return f"{fmt.format(100 * iv['mean'])} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _possible(iv: dict, signed: bool) -> tuple:
    """The interval of ``iv`` cut to the range its mean can take: [0, 1] for a fraction, and
    [−base, 1 − base] for a mean difference of fractions from a baseline of mean ``base``
    (:func:`paired`; two seeds printed −12.7 [−89.3, 63.9] on a base of 41.0 %)."""
    if not signed:
        return max(iv["lo"], 0.0), min(iv["hi"], 1.0)
    base = iv.get("base_mean")
    return (iv["lo"], iv["hi"]) if missing(base) else (max(iv["lo"], -base), min(iv["hi"], 1 - base))


def holm_text(p: float) -> str:
    """``p_Holm 0.10``: two decimals from 0.1 up, two significant digits below, zeros kept
    (``:.2g`` read 0.0549 as 0.05, 0.00951 as 0.01, and 0.0996 as 0.1 beside 0.10); more digits
    where those would put p on the other side of the 0.05 the reports test at (0.04996 had read
    0.050)."""
    text = f"{p:.2f}" if p >= 0.1 else f"{p:#.2g}"
    digits = 3
    while (float(text) < 0.05) != (p < 0.05) and digits < 17:
        text, digits = f"{p:#.{digits}g}", digits + 1
    return f"p_Holm {text}"


def legend(family: dict, baseline: str, what: str) -> str:
    """The text above a table of :func:`points` cells of ``family``, differences of ``what``."""
    n = sum(not isinstance(d, str) and not missing(d["p"]) for d in family.values())   # Holm's family
    # Cells without a p (no spread, one seed, no value) are outside it: said where there are any.
    rest = sum(not isinstance(d, str) and missing(d["p"]) for d in family.values())
    outside = f" that have a p-value ({rest} more have none and are outside the family)" if rest else ""
    return (f"Δ vs {baseline}: {what} minus {baseline}'s on the same seed (same split and initialisation seed), in "
            "points: mean [95 % t-interval] (seeds on which the method was ahead / seeds), p_Holm: two-sided "
            f"paired t-test, Holm-adjusted over the {n} paired comparisons of this table{outside}.")
