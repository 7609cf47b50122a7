"""examples/stats.py on degenerate inputs: NaN values and per-seed differences without spread
must give no p-value (NaN, left out of Holm's family), never p = 0."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("scipy")

from examples.stats import SAME, legend, mean_interval, paired, paired_family, points  # noqa: E402


def test_a_nan_value_gives_no_p_value():
    """A NaN on one seed gave mean NaN and p 0.0, the cell "+nan (1/5), p_Holm 0"."""
    a, b = [0.90, float("nan"), 0.91, 0.92, 0.89], [0.90, 0.88, 0.91, 0.91, 0.90]
    d = paired(a, b)
    assert all(math.isnan(d[k]) for k in ("mean", "lo", "hi", "p"))
    assert (d["n"], d["non_finite"]) == (4, 1)
    m = mean_interval([float("nan"), 1.0, 2.0])
    assert math.isnan(m["p"]) and math.isnan(m["mean"]) and m["n"] == 2
    assert math.isnan(mean_interval([float("inf"), 1.0, 2.0])["p"])
    fam = paired_family({"A": (a, b), "B": ([0.9, 0.91, 0.92, 0.93, 0.94], [0.9] * 5)})
    assert math.isnan(fam["A"]["holm_p"]) and fam["B"]["holm_p"] == pytest.approx(fam["B"]["p"])   # B alone
    assert points(fam["A"]) == "no value: NaN or infinite on 1 of 5 seeds"
    assert points(fam["B"]) == "+2.0 [0.0, 4.0] (4/5), p_Holm 0.05"
    assert "over the 1 paired comparisons" in legend(fam, "joint", "x")


def test_equal_differences_have_no_spread():
    """Equal per-seed differences gave a zero-width interval and "p_Holm 0" (2 seeds of a real
    run: −18.2 [−18.2, −18.2] (0/2), p_Holm 0), all-zero differences p = 1."""
    joint = [0.7666666507720947, 0.6833333373069763]
    ecs_synib = [0.5849999785423279, 0.5016666650772095]          # both exactly 0.18166667 below
    fam = paired_family({"ecs+synib": (ecs_synib, joint), "synib": ([0.78, 0.69], joint)})
    d = fam["ecs+synib"]
    assert d["no_spread"] and math.isnan(d["p"]) and math.isnan(d["lo"]) and math.isnan(d["holm_p"])
    assert points(d) == "−18.2 (0/2), no spread: no interval, no p"
    assert fam["synib"]["holm_p"] == pytest.approx(fam["synib"]["p"])          # the family is synib alone
    tie = paired([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert tie["no_spread"] and math.isnan(tie["p"]) and tie["mean"] == 0.0
    # float32 accuracies: equal differences up to rounding (~1e-7) have no spread either,
    # instead of a p-value of ~1e-6 from the rounding noise alone.
    a32, b32 = np.float32([0.585, 0.5016667]), np.float32([0.7666667, 0.6833333])
    d32 = paired(a32.astype(np.float64), b32.astype(np.float64))
    assert 0 < np.ptp(d32["diffs"]) < SAME and d32["no_spread"] and math.isnan(d32["p"])
    # A real spread, however small against the mean, keeps its t-test.
    assert mean_interval([0.1, 0.1 + 1e-4, 0.1])["p"] < 1e-3
