"""examples/stats.py on degenerate inputs: NaN values and per-seed differences without spread
must give no p-value (NaN, left out of Holm's family), never p = 0."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("scipy")

from examples.stats import (SAME, legend, mean_interval, paired, paired_family, points, precision_note,  # noqa: E402
                            rate_interval)


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
    assert points(fam["B"]) == "+2.0 [0.0, 4.0] (4/5), p_Holm 0.047"   # 0.0474: "0.05" read as the level
    for p, shown in ((0.0996, "0.10"), (0.0302, "0.030"), (0.00951, "0.0095"), (0.104, "0.10"), (0.5, "0.50")):
        assert points({**fam["B"], "holm_p": p}).endswith(f"p_Holm {shown}"), p
    # A said "over the 1 paired comparisons of this table" of a table of two: now says A is outside.
    assert ("over the 1 paired comparisons of this table that have a p-value (1 more have none and are outside "
            "the family).") in legend(fam, "joint", "x")
    assert legend({"B": fam["B"]}, "joint", "x").endswith("over the 1 paired comparisons of this table.")


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


def test_difference_intervals_are_cut_to_the_possible_range():
    """Two seeds printed −12.7 [−89.3, 63.9] for a baseline of 41.0 %: the method's mean
    accuracy would lie in [−48.3, 104.9] %. A mean difference of fractions lies in
    [−base, 1 − base]."""
    d = paired_family({"x": ([0.50, 0.06], [0.41, 0.41])})["x"]
    assert d["lo"] < -0.41 and d["hi"] > 0.59
    assert points(d).startswith("−13.0 [−41.0, 59.0] (1/2)")
    inside = paired_family({"x": ([0.52, 0.50, 0.51], [0.40, 0.41, 0.40])})["x"]
    assert points(inside).startswith(f"+10.7 [{100 * inside['lo']:.1f}, {100 * inside['hi']:.1f}]")


def test_the_static_curriculum_ranks_tied_losses_the_same_on_every_cpu():
    """An unstable argsort ranked a tie among 2,800 losses by the CPU's sort kernel (AVX2 and
    the default build differed, and so did the committed accuracy)."""
    import torch

    from examples.curricula import StaticCurriculum

    class Out:
        fused = torch.zeros(300, 3)  # every loss tied
    cur = StaticCurriculum(300, 5, 2)
    cur.end_epoch(0, Out(), torch.zeros(300, dtype=torch.long))
    assert cur.order.tolist() == list(range(300))


def test_saved_runs_are_strict_json():
    """The runners wrote Python's NaN into their JSON (380 in results.json, from the ECS
    baseline's history), which other parsers refuse; null now, read back as NaN."""
    import json
    from pathlib import Path

    from examples.arguments import as_json

    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    for path in sorted((Path(__file__).resolve().parent.parent / "examples" / "results").glob("*.json")):
        json.loads(path.read_text(), parse_constant=refuse)
    assert json.loads(as_json({"a": [1.0, float("nan")], "b": (float("inf"), 2)})) == {"a": [1.0, None], "b": [None, 2]}
    assert points({"mean": 0.1, "lo": None, "hi": None, "wins": 1, "n": 1, "holm_p": None}) == "+10.0 (1/1)"


@pytest.mark.parametrize("k, n", [(0, 12), (1, 12), (6, 12), (12, 12), (3, 60), (57, 60), (21, 100)])
def test_rate_intervals_are_the_exact_binomial_tails(k, n):
    """Each end of the Clopper-Pearson interval leaves 2.5 % in its binomial tail: P(X >= k) at
    the lower end, P(X <= k) at the upper (an end at 0 or 1 where k is 0 or n)."""
    lo, hi = rate_interval(k, n)

    def cdf(x, p):  # P(X <= x), X ~ Binomial(n, p)
        return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(x + 1))

    assert lo == 0.0 if k == 0 else 1 - cdf(k - 1, lo) == pytest.approx(0.025, abs=1e-9)
    assert hi == 1.0 if k == n else cdf(k, hi) == pytest.approx(0.025, abs=1e-9)
    assert lo <= k / n <= hi
    for bad in ((n + 1, n), (0.5, n), (True, n)):
        with pytest.raises(ValueError, match="need integers 0 <= k <= n"):
            rate_interval(*bad)


def test_precision_note_names_each_replicate_count():
    note = precision_note([60, 12, 60])
    assert "with 12 replicates, 0/12 [0.00, 0.26]; 1/12 [0.002, 0.38]; 6/12 [0.21, 0.79]" in note
    assert "11/12 [0.62, 0.998]" in note and "with 60 replicates" in note
    assert note.endswith("about its row's RMSE / √(replicates).")
