"""examples/stats.py on degenerate inputs: NaN values and per-seed differences without spread
must give no p-value (NaN, left out of Holm's family), never p = 0; and the integration
figures' comparisons (paired, Holm-coloured) and intervals."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("scipy")

from examples.stats import (SAME, legend, mean_interval, paired, paired_family, pct, points,  # noqa: E402
                            precision_note, rate_interval)


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
    # The fair grid's cells (pct, signed) are cut alike: they had printed −13.0 [−141.7, 71.2].
    assert pct(paired([0.50, 0.06], [0.41, 0.41]), True) == "-13.0 [-41.0, 59.0]"


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


def _record(monkeypatch, name):
    """Calls of ``matplotlib.axes.Axes.<name>`` as (args, kwargs), the figure still drawn."""
    import matplotlib.axes

    calls, real = [], getattr(matplotlib.axes.Axes, name)

    def record(self, *args, **kwargs):
        calls.append((args, kwargs))
        return real(self, *args, **kwargs)
    monkeypatch.setattr(matplotlib.axes.Axes, name, record)
    return calls


def test_accuracy_figures_compare_methods_by_paired_differences(tmp_path, monkeypatch):
    """accuracy_real.png compared the methods by unpaired mean ± std bars alone; the runs are
    paired by seed, and the table's comparison is the paired difference with Holm's p."""
    pytest.importorskip("matplotlib")
    import json
    from pathlib import Path

    from scipy.stats import t, ttest_rel

    from examples.run_integrations import write

    results = json.loads((Path(__file__).resolve().parent.parent / "examples" / "results" / "results.json")
                         .read_text())
    points_drawn = _record(monkeypatch, "errorbar")
    ticks = _record(monkeypatch, "set_yticks")
    ylabels = _record(monkeypatch, "set_ylabel")
    write(results, tmp_path, stem="x")
    real = [d for d in results["table"] if d != "synthetic"]
    methods = [m for m in results["table"][real[0]] if m != "joint"]
    labels = next(args[1] for args, _ in ticks if len(args) > 1 and args[1] and "digits: synib" in args[1])
    points_drawn = [c for c in points_drawn if c[1].get("fmt") == "o"]     # not the bars' own error bars
    drawn = {label: (args, kwargs) for label, (args, kwargs) in zip(labels, points_drawn)}
    # By hand: each method's per-seed differences to joint, a t-interval, Holm over the 8 of the table.
    ps = {}
    for d in real:
        for m in methods:
            a, b = ([r["acc"] for r in results["runs"][d][k]] for k in (m, "joint"))
            ps[f"{d}: {m}"] = ttest_rel(a, b).pvalue
            diff = np.subtract(a, b)
            half = t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
            args, kwargs = drawn[f"{d}: {m}"]
            assert args[0][0] == pytest.approx(100 * diff.mean())
            assert kwargs["xerr"][0][0] == pytest.approx(100 * half)
    order = sorted(ps, key=ps.get)
    holm_p, running = {}, 0.0
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * ps[key]))
        holm_p[key] = running
    for key, (args, kwargs) in drawn.items():
        mean = args[0][0]
        assert kwargs["color"] == (("C2" if mean > 0 else "C3") if holm_p[key] < 0.05 else "C0"), key
    assert any(holm_p[k] < 0.05 for k in holm_p) and any(holm_p[k] >= 0.05 for k in holm_p)
    # Synthetic: overall and XOR are the table's family of 2; the other types lie outside it (grey).
    syn = next(args[1] for args, _ in ticks if len(args) > 1 and args[1] and "overall: synib" in args[1])
    colours = {label: kw["color"] for label, (_, kw) in zip(syn, points_drawn[len(labels):])}
    runs = results["runs"]["synthetic"]
    pairs = {k: [[r[k] for r in runs[m]] for m in ("synib", "joint")] for k in ("acc", "acc_synergy")}
    p = {k: ttest_rel(*ab).pvalue for k, ab in pairs.items()}
    lo, hi = sorted(p.values())
    holm2 = {k: 2 * lo if v == lo else max(2 * lo, hi) for k, v in p.items()}
    for label, k in (("overall: synib", "acc"), ("synergy: synib", "acc_synergy")):
        up = np.mean(np.subtract(*pairs[k])) > 0
        assert colours[label] == ("C0" if holm2[k] >= 0.05 else "C2" if up else "C3"), label
    assert colours["redundant: synib"] == colours["unique1: synib"] == "grey"
    # The bars say what they are: a spread over seeds, not a comparison.
    assert any("spread, not a comparison" in args[0] for args, _ in ylabels)


def test_trajectory_draws_the_synergy_tests_interval_and_names_plug_in_terms(tmp_path, monkeypatch):
    """The history's synergy_ci_low / synergy_ci_high were ignored, and the plug-in terms were
    drawn as bare lines, as if they were estimates."""
    pytest.importorskip("matplotlib")
    from examples.plots import plot_pid_trajectory

    bands = _record(monkeypatch, "fill_between")
    lines = _record(monkeypatch, "plot")
    n = [None, None, None]
    history = {"epoch": [0, 1, 2], "redundancy": [0.1, 0.2, 0.3], "unique1": [0.1] * 3, "unique2": [0.1] * 3,
               "synergy": [0.4, 0.3, 0.2], "mi1": [0.5] * 3, "mi2": [0.5] * 3, "synergy_baseline": n,
               "score": [0.1, 0.1, 0.1], "stage": ["unimodal"] * 3, "train1": [True] * 3, "train2": [True] * 3,
               "synergy_estimate": [None, 0.15, 0.05], "synergy_ci_low": [None, 0.05, -0.02],
               "synergy_ci_high": [None, 0.25, 0.12], "warmup_epochs": 0, "switch_epoch": None, "peak_epoch": None}
    plot_pid_trajectory(history, tmp_path / "t.png")
    (ep, lo, hi), _ = bands[0]
    assert list(ep) == [0, 1, 2] and np.isnan(lo[0]) and list(lo[1:]) == [0.05, -0.02] and list(hi[1:]) == [0.25, 0.12]
    labels = [kwargs.get("label", "") for _, kwargs in lines]
    for term in ("redundancy", "unique1", "unique2", "synergy", "I(Z1;Y)", "I(Z2;Y)"):
        assert f"{term}, plug-in" in labels
    # No test ran (the baseline rule): no band, rather than one of NaN.
    bands.clear()
    plot_pid_trajectory({**history, "synergy_ci_low": n, "synergy_ci_high": n}, tmp_path / "u.png")
    assert bands == []


def test_holm_text_keeps_p_on_its_side_of_the_levels():
    """Two significant digits had rounded 0.04996 to 0.050: a p below the reports' level printed
    at it. More digits where the rounding would cross 0.05."""
    from examples.stats import holm_text

    assert holm_text(0.04996) == "p_Holm 0.04996" and holm_text(0.049999999) == "p_Holm 0.049999999"
    assert holm_text(0.0996) == "p_Holm 0.10" and holm_text(0.05) == "p_Holm 0.050"
    assert holm_text(0.0549) == "p_Holm 0.055" and holm_text(0.0312) == "p_Holm 0.031"
    assert holm_text(0.1) == "p_Holm 0.10" and holm_text(0.00951) == "p_Holm 0.0095"
