"""The fair protocol (examples/fair.py, arms.py, stats.py, run_fair.py) on small synthetic
data: equal budgets, validation-only tuning grids, the published-rule arms, paired intervals."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("sklearn")

from examples import arms, fair, run_fair  # noqa: E402
from examples.curricula import MultiViewNet  # noqa: E402
from examples.data import synthetic_views  # noqa: E402
from examples import stats  # noqa: E402
from examples.stats import holm, mean_interval, paired  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread avoids oversubscription on a shared machine (10-50x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small():
    return synthetic_views(n=600, seed=0, val_fraction=0.2)


def test_paired_t_interval():
    p = paired([3.0, 4.0, 6.0], [2.0, 2.0, 3.0])             # differences 1, 2, 3
    half = 4.302652729911275 * 1.0 / math.sqrt(3)             # t(0.975, 2) · sd / sqrt(n)
    assert p["mean"] == pytest.approx(2.0) and p["hi"] - p["mean"] == pytest.approx(half)
    assert (p["wins"], p["losses"], p["n"]) == (3, 0, 3)
    assert math.isnan(mean_interval([0.5])["lo"])
    with pytest.raises(ValueError, match="same seeds"):
        paired([1.0, 2.0], [1.0])
    # two-sided p of the differences 1, 2, 3: t = 2 / (1 / sqrt 3) = 3.464 on 2 df
    assert p["p"] == pytest.approx(0.07417990022744858, rel=1e-9)


def test_holm_adjustment():
    """By hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, each at least the one before."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.2, float("nan"), 0.9])
    assert adjusted[0] == pytest.approx(0.4) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.9)


def test_every_arm_gets_the_same_number_of_trials():
    for name in arms.ARMS:
        grid = fair.trial_grid(name, 4)
        assert len(grid) == 4 and len({tuple(sorted(c.items())) for c in grid}) == 4
        assert all(set(fair.OPTIMISER_GRID) <= set(c) for c in grid)
        assert grid == fair.trial_grid(name, 4)               # the same draw every time
    with pytest.raises(ValueError, match="configurations"):
        fair.trial_grid("fused", 100)


@pytest.mark.parametrize("name", ["static curriculum", "SPICE (pointwise)", "fused"])
def test_equal_sample_visits(small, name):
    res, _ = fair.fit(small, name, {}, seed=0, epochs=3)
    n = len(small.train)
    assert res["visits"] == 3 * n
    assert res["epochs_run"] >= 3 and (res["epochs_run"] > 3) == (name != "fused")
    assert 0 <= res["best_epoch"] < res["epochs_run"] and len(res["val_curve"]) == res["epochs_run"]
    assert res["best_val"] == max(res["val_curve"])


def test_a_curriculum_schedule_is_the_shortest_that_plans_the_budget():
    """Planned visits are whole samples (what the sampler admits), and one epoch fewer
    falls short of the budget."""
    build = arms.ARMS["SPICE (pointwise)"]
    n, epochs = 97, 4
    length = fair.schedule_epochs(lambda e: build(n, e, 0), epochs)
    planned = build(n, length, 0).planned_fractions()
    assert all(abs(f * n - round(f * n)) < 1e-9 for f in planned)
    assert sum(planned) >= epochs > sum(build(n, length - 1, 0).planned_fractions())


def test_a_last_batch_of_one_sample_ends_the_budget(small):
    """A batch size that leaves one sample at the end of every pass: the lone sample cannot
    be trained on (batch statistics), but it is spent, so the run ends at the budget."""
    n = len(small.train)
    res, _ = fair.fit(small, "fused", {}, seed=0, epochs=2, batch_size=n - 1)
    assert res["visits"] == 2 * n and res["epochs_run"] == 2 and res["steps"] == 2


def test_fused_arm_heads_give_no_gradient_to_the_encoders(small):
    x1, x2, y = small.split("train")
    torch.manual_seed(0)
    model = MultiViewNet([x1.shape[1], x2.shape[1]], small.n_classes)
    out = model([x1[:32], x2[:32]])
    arms.Fused(len(y), 1).loss(0, model, out, y[:32], None).backward()
    with_probes = [p.grad.clone() for p in model.encoders.parameters()]
    model.zero_grad()
    F.cross_entropy(model([x1[:32], x2[:32]]).fused, y[:32]).backward()
    for a, b in zip(with_probes, model.encoders.parameters()):
        torch.testing.assert_close(a, b.grad)


def _former_public_rule(scores, alpha):
    """The public OGM-GE rule as examples/arms.py computed it before it used the library's
    ``rule="published"`` (tanh in float32), kept as the reference the library must match."""
    s1, s2 = (float(v) for v in scores)
    ratio = s1 / max(s2, 1e-12)
    if ratio > 1:
        return torch.tensor([1.0 - torch.tanh(torch.tensor(alpha * ratio)).item(), 1.0])
    inverse = s2 / max(s1, 1e-12)
    if inverse > 1:
        return torch.tensor([1.0, 1.0 - torch.tanh(torch.tensor(alpha * inverse)).item()])
    return torch.ones(2)


def test_ogm_ge_public_arm_uses_the_library_rule():
    assert (arms.OGMGEPublic.rule, arms.OGMGE.rule) == ("published", "shifted")
    assert not hasattr(arms, "ogm_ge_public_coefficients")


# Dominant first or second, ties (zero included), a zero score, near-ties, ratio < 1 both ways.
SCORE_PAIRS = [(30.0, 10.0), (10.0, 20.0), (5.0, 5.0), (0.0, 0.0), (0.0, 3.0), (3.0, 0.0),
               (1.0001, 1.0), (1.0, 1.0001), (0.25, 7.5), (7.5, 0.25), (40.0, 1.0), (17.3, 41.9)]


@pytest.mark.parametrize("alpha", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("pair", SCORE_PAIRS)
def test_ogm_ge_published_rule_matches_the_former_arm_rule(pair, alpha):
    from fastpid.integrations.ogm_ge import ogm_ge_coefficients

    scores = torch.tensor(pair)                    # float32, as ogm_ge_scores gives for float32 logits
    k = ogm_ge_coefficients(scores, alpha, rule="published")
    s1, s2 = (float(v) for v in scores)
    # Eq. (10), two modalities, in float64: the dominant one gets 1 - tanh(alpha * its ratio).
    want = [1.0, 1.0]
    if s1 / max(s2, 1e-12) > 1:
        want[0] = 1 - math.tanh(alpha * s1 / max(s2, 1e-12))
    elif s2 / max(s1, 1e-12) > 1:
        want[1] = 1 - math.tanh(alpha * s2 / max(s1, 1e-12))
    torch.testing.assert_close(k, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    # The former copy computed tanh in float32: equal up to that rounding.
    former = _former_public_rule(scores, alpha)
    torch.testing.assert_close(k.float(), former, rtol=0, atol=1e-7)
    assert torch.equal(k == 1, former == 1)        # the same modality (or none) is slowed


@pytest.mark.parametrize("name, rule", [("OGM-GE", "shifted"), ("OGM-GE (public rule)", "published")])
def test_each_ogm_ge_arm_modulates_by_its_own_rule(small, name, rule):
    from fastpid.integrations.ogm_ge import ogm_ge_coefficients, ogm_ge_scores

    x1, x2, y = small.split("train")
    torch.manual_seed(0)
    model = MultiViewNet([x1.shape[1], x2.shape[1]], small.n_classes)
    arm = fair.make_arm(name, len(y), 2, 0, {"alpha": 0.3})
    out = model([x1[:64], x2[:64]])
    out.heads[0].data[:, :] = 0.0  # modality 1 at chance, modality 2 far from it
    out.heads[1].data[:, :] = 5.0 * F.one_hot(y[:64], small.n_classes)
    arm.loss(0, model, out, y[:64], None).backward()
    arm.after_backward(model, out, y[:64])
    want = ogm_ge_coefficients(ogm_ge_scores(out.heads, y[:64]), 0.3, rule=rule)
    torch.testing.assert_close(torch.tensor(arm.coefficients[-1]), want.float(), rtol=1e-6, atol=1e-7)
    assert float(want[1]) < 1.0  # the dominant modality is slowed by both rules


def test_ecs_published_schedule_lowers_the_stage2_learning_rate(small):
    res, _ = fair.fit(small, "ECS-async (published schedule)", {}, seed=0, epochs=6)
    assert res["summary"]["switch_epoch"] is not None
    arm = fair.make_arm("ECS-async (published schedule)", len(small.train), 6, 0, {})
    assert arm.method.controller_kwargs["probe_every"] == 5 and arm.method.controller_kwargs["resume_ratio"] is None


def test_runner_writes_paired_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(run_fair, "loader", lambda name, val: lambda seed: synthetic_views(
        n=300, seed=seed, val_fraction=val))
    names = ["fused", "fused+heads", "gated fused+heads", "DynCIM (gated)", "pre-training", "ECS-async"]
    results = run_fair.main(["--name", "tiny", "--datasets", "synthetic", "--arms", *names, "--seeds", "2",
                             "--trials", "1", "--epochs", "3", "--out", str(tmp_path)])
    summ = results["datasets"]["synthetic"]["summary"]["arms"]
    assert set(summ["DynCIM (gated)"]["vs"]) == {"fused", "fused+heads", "gated fused+heads"}
    assert summ["fused+heads"]["vs"]["fused"]["final"]["n"] == 2
    # The XOR subset's accuracy, and its paired differences to both baselines.
    for a in names:
        assert 0 <= summ[a]["xor"]["mean"] <= 1
    assert summ["pre-training"]["vs"]["fused+heads"]["xor"]["n"] == 2 and "xor" in summ["fused"]["vs"]["fused+heads"]
    # The headline family (final accuracy against fused+heads) carries Holm-adjusted p-values.
    family = [a for a in names if "fused+heads" in summ[a]["vs"]]
    expected = holm([summ[a]["vs"]["fused+heads"]["final"]["p"] for a in family])
    assert [summ[a]["vs"]["fused+heads"]["final"]["holm_p"] for a in family] == pytest.approx(expected, nan_ok=True)
    rule = summ["ECS-async"]["synergy_rule"]
    assert rule["rule"] == "test" and len(rule["fired"]) == 2
    assert all(0 <= f <= t for f, t in zip(rule["fired"], rule["tests"]))
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert "--out" not in saved["config"]["argv"]          # where it wrote is no part of the record
    runs = saved["datasets"]["synthetic"]["runs"]
    assert len(runs["fused"]) == 2
    assert {r["visits"] for a in names for r in runs[a]} == {runs["fused"][0]["visits"]}   # equal budgets
    md = (tmp_path / "tiny.md").read_text()
    assert "probe gap" in md and "DynCIM (gated) against gated fused+heads" in md
    assert "XOR subset (final)" in md and "| pre-training |" in md and "synergy rule `test`" in md
    assert "p_Holm" in md and "Holm's method" in md
    assert "`python -m examples.run_fair --name tiny --datasets synthetic --arms" in md and "--out" not in md
    for fig in ("tiny_deltas.png", "tiny_probe_gaps.png", "tiny_fractions.png"):
        assert (tmp_path / fig).stat().st_size > 0
    # The tables again from the JSON file alone, identical.
    again = run_fair.main(["--replot", str(tmp_path / "tiny.json"), "--no-plots"])
    assert again["datasets"]["synthetic"]["summary"]["arms"]["pre-training"]["xor"] == summ["pre-training"]["xor"]
    assert (tmp_path / "tiny.md").read_text() == run_fair.markdown(saved)


def test_rerun_replaces_the_named_arms_and_says_so(tmp_path, monkeypatch, capsys):
    """--rerun trains the given arms again with a saved run's settings: their results replace
    the saved ones, the others stay, the per-seed encoders trained alone are checked against
    the saved ones, and the report names the rerun and why."""
    monkeypatch.setattr(run_fair, "loader", lambda name, val: lambda seed: synthetic_views(
        n=200, seed=seed, val_fraction=val))
    run_fair.main(["--name", "tiny", "--datasets", "synthetic", "--arms", "fused", "fused+heads", "--seeds", "2",
                   "--trials", "1", "--epochs", "2", "--no-plots", "--out", str(tmp_path)])
    path = tmp_path / "tiny.json"
    saved = json.loads(path.read_text())
    runs = saved["datasets"]["synthetic"]["runs"]
    runs["fused"][0]["test"]["acc"] = -1.0                      # marks a result the rerun must replace
    runs["fused+heads"][0]["test"]["acc"] = -2.0                # and one it must keep
    saved["datasets"]["synthetic"]["alone"][1]["2"]["probe"] += 0.01   # as another host's arithmetic would
    path.write_text(json.dumps(saved))
    again = run_fair.main(["--rerun", str(path), "--arms", "fused", "--note", "a test", "--no-plots"])
    runs = again["datasets"]["synthetic"]["runs"]
    assert runs["fused"][0]["test"]["acc"] >= 0 and runs["fused+heads"][0]["test"]["acc"] == -2.0
    rerun = again["config"]["reruns"][0]
    assert rerun["arms"] == ["fused"] and rerun["note"] == "a test"
    assert rerun["alone_compared"] == 2 * 2 * 2 and rerun["alone_differ"] == 1    # seeds, modalities, acc/probe
    assert rerun["alone_max_difference"] == pytest.approx(0.01)
    md = (tmp_path / "tiny.md").read_text()
    assert "fused run again later (`python -m examples.run_fair --rerun" in md and "--note 'a test' --no-plots`)" in md
    # The rerun arm's probe gaps are against the saved encoders trained alone, as every arm's.
    alone = again["datasets"]["synthetic"]["alone"][1]["2"]["probe"]
    assert runs["fused"][1]["probe_gap"]["2"] == pytest.approx(alone - runs["fused"][1]["probe"]["2"])
    assert "reproduced 7 of the 8 saved accuracies, the others by 1 points or less" in md
    assert json.loads(path.read_text())["config"]["reruns"] == again["config"]["reruns"]
    for argv, message in ((["--arms", "fused"], "and --note saying why"),
                          (["--note", "x"], "needs --arms naming the arms"),
                          (["--arms", "fused", "--note", "x", "--seeds", "4"], "--seeds would be ignored")):
        capsys.readouterr()
        with pytest.raises(SystemExit):
            run_fair.main(["--rerun", str(path), *argv])
        assert message in capsys.readouterr().err


def test_new_arms_visit_the_same_budget_and_report_the_xor_subset(small):
    n = len(small.train)
    for name in ("pre-training", "SynIB (repository variant)", "ECS-async"):
        res, _ = fair.fit(small, name, {}, seed=0, epochs=3)
        assert res["visits"] == 3 * n and res["fractions"] == [1.0, 1.0, 1.0]
        assert {"acc_synergy", "acc_redundant", "acc_unique1", "acc_unique2"} <= set(res["test"])
        assert sum(res["test_counts"].values()) == len(small.test)
    kind = small.meta["type"][small.test]
    assert res["test_counts"]["synergy"] == int((kind == 3).sum()) > 0


def test_pretraining_trains_one_modality_at_a_time(small):
    x1, x2, y = small.split("train")
    arm = fair.make_arm("pre-training", len(y), 10, 0, {"pretrain_fraction": 0.4})
    assert (arm.per_modality, arm.joint_from) == (2, 4)            # 2 + 2 of the 10 passes unimodal
    assert [arm.stage(e) for e in range(6)] == [1, 1, 2, 2, 0, 0]
    torch.manual_seed(0)
    model = MultiViewNet([x1.shape[1], x2.shape[1]], small.n_classes)
    for epoch, trained in ((0, 0), (2, 1)):
        model.zero_grad(set_to_none=True)
        arm.loss(epoch, model, model([x1[:32], x2[:32]]), y[:32], None).backward()
        for m in (0, 1):
            got = [p.grad is not None for p in [*model.encoders[m].parameters(), *model.heads[m].parameters()]]
            assert all(got) if m == trained else not any(got)
        assert all(p.grad is None for p in model.fusion.parameters())
    arm.start_epoch(4, model, small)
    assert arm.reset_optimizer                                       # a fresh optimizer for the fused stage
    with pytest.raises(ValueError, match="at least 3 passes"):
        fair.make_arm("pre-training", len(y), 2, 0, {})


def test_synib_repository_arm_trains_its_log_variance_head(small):
    x1, x2, y = small.split("train")
    arm = fair.make_arm("SynIB (repository variant)", len(y), 3, 0, {"lambda_syn": 0.1})
    assert arm.extra_parameters() == []
    torch.manual_seed(0)
    model = MultiViewNet([x1.shape[1], x2.shape[1]], small.n_classes)
    arm.start_epoch(0, model, small)
    assert arm.reset_optimizer and arm.loss_fn.variant == "repository"
    head = arm.loss_fn.logvar_head
    assert tuple(head.weight.shape) == (small.n_classes, model.fusion[0].out_features)
    assert {id(p) for p in arm.extra_parameters()} == {id(p) for p in head.parameters()}
    arm.loss(0, model, model([x1[:32], x2[:32]]), y[:32], None).backward()
    assert head.weight.grad.abs().sum() > 0


def test_tables_mark_values_without_spread_or_value():
    """Equal values on every seed have no interval and no p ("no spread"), not "p_Holm 0" or a
    zero-width interval; a NaN on a seed gives no number, not "nan"."""
    assert stats.pct(mean_interval([0.5, 0.5, 0.5])) == "50.0, no spread"
    assert stats.pct(paired([0.6, 0.7], [0.5, 0.6]), True) == "+10.0, no spread"
    assert stats.pct(mean_interval([0.5])) == "50.0"
    assert stats.pct(mean_interval([0.5, float("nan")])) == "no value (NaN or infinite on 1 of 2 seeds)"

    def runs(accs):
        return [{"seed": s, "test": {"acc": a, "acc1": 0.5, "acc2": 0.5}, "best_test": a, "probe_gap": {1: 0.0, 2: s},
                 "visits": 10, "steps": 5, "epochs_run": 1, "seconds": 1.0, "summary": {}} for s, a in enumerate(accs)]
    out = {"runs": {"fused+heads": runs([0.80, 0.85, 0.90]), "A": runs([0.82, 0.86, 0.93]),
                    "B": runs([0.81, 0.86, 0.91])},                      # B: +1 point on every seed
           "alone": [{1: {"acc": 0.5, "probe": 0.5}, 2: {"acc": 0.6 + s / 10, "probe": 0.6}} for s in range(3)],
           "tuning": {a: {"best": {}} for a in ("fused+heads", "A", "B")}}
    out["summary"] = json.loads(json.dumps(run_fair.summarise(out, list(out["runs"]))))
    head = out["summary"]["arms"]["A"]["vs"]["fused+heads"]["final"]
    assert head["holm_p"] == pytest.approx(head["p"])                   # B is out of the family
    cfg = {"name": "t", "argv": [], "seeds": 3, "trials": 1, "tune_seeds_list": [1000], "epochs": 1,
           "batch_size": 8, "wall_seconds": 60.0, "machine": "test"}
    md = run_fair.markdown({"config": cfg, "datasets": {"synthetic": out}})
    assert "| B | 86.0 [73.6, 98.4] | 86.0 [73.6, 98.4] | — | +1.0, no spread (3/3) | +1.0, no spread (3/3) |" in md
    assert "nan" not in md and "modality 1 50.0, no spread" in md
    # avdigits' test split is fixed: said where the grid holds it, not of other data.
    assert "the same on every seed" not in md
    fixed = run_fair.markdown({"config": cfg, "datasets": {"avdigits": out}})
    assert "avdigits' test speakers and images are the same on every seed" in fixed


def test_committed_tables_name_only_committed_figures():
    """fair_10seeds.md and avdigits_reduced.md listed *_deltas.png, *_probe_gaps.png and
    *_fractions.png figures that were never committed."""
    import re
    from pathlib import Path

    results = Path(run_fair.__file__).parent / "results"
    missing = [(md.name, png) for md in sorted(results.glob("*.md"))
               for png in re.findall(r"`([\w.-]+\.png)`", md.read_text()) if not (results / png).exists()]
    assert missing == []


T2 = 4.302652729911275                                          # t(0.975, 2 degrees of freedom)


def test_tables_give_heads_types_and_seconds_their_spread():
    """The heads and the XOR table's other types printed means alone, "s / run" a mean with no
    spread (29 where the SD was 13.8 s), and p_Holm 0.0996 read "0.1" beside 0.10."""
    def runs(accs, heads):
        return [{"seed": s, "test": {"acc": a, "acc1": h, "acc2": 0.5, "acc_synergy": a, "acc_redundant": h,
                                     "acc_unique1": 0.9, "acc_unique2": 0.9},
                 "best_test": a, "probe_gap": {1: 0.0, 2: 0.0}, "visits": 10, "steps": 5, "epochs_run": 1,
                 "seconds": sec, "summary": {}} for s, (a, h, sec) in enumerate(zip(accs, heads, (1.0, 2.0, 6.0)))]
    out = {"runs": {"fused+heads": runs([0.80, 0.85, 0.90], [0.6, 0.6, 0.6]),
                    "A": runs([0.82, 0.86, 0.93], [0.5, 0.6, 0.7])},
           "alone": [{1: {"acc": 0.5, "probe": 0.5}, 2: {"acc": 0.6 + s / 10, "probe": 0.6}} for s in range(3)],
           "tuning": {a: {"best": {}} for a in ("fused+heads", "A")}}
    out["summary"] = json.loads(json.dumps(run_fair.summarise(out, list(out["runs"]))))
    out["summary"]["arms"]["A"]["vs"]["fused+heads"]["final"]["holm_p"] = 0.0996
    cfg = {"name": "t", "argv": [], "seeds": 3, "trials": 1, "tune_seeds_list": [1000], "epochs": 1,
           "batch_size": 8, "wall_seconds": 60.0, "machine": "test"}
    md = run_fair.markdown({"config": cfg, "datasets": {"synthetic": out}})
    # Head 1 of A: 50, 60, 70 %: mean 60, half-width t · 10 / √3 = 24.8. Seconds 1, 2, 6: mean 3,
    # SD √((4 + 1 + 9) / 2) = 2.6. Head 2 and the unique types: no spread.
    half = T2 * 10 / math.sqrt(3)
    heads_a = f"{60 - half:.1f}, {60 + half:.1f}"
    row = next(line for line in md.splitlines() if line.startswith("| A | 87.0"))
    assert f"| 60.0 [{heads_a}] / 50.0, no spread | 10 | 5 | 3.0 ± 2.6 |" in row, row
    assert "p_Holm 0.10)" in row
    assert "s / run (mean ± SD)" in md and "mean ± SD over seeds" in md
    xor_row = next(line for line in md.splitlines() if line.startswith("| A | 87.0") and line.count("|") == 6)
    assert xor_row.endswith(f"| 60.0 [{heads_a}] / 90.0, no spread / 90.0, no spread |"), xor_row


def test_deltas_figure_colours_by_holm_and_labels_intervals(tmp_path, monkeypatch):
    """Points were red/green where the unadjusted 95 % interval excluded 0 (avdigits fused at
    p_Holm 0.078 drawn red), though only Holm-adjusted p-values count; the labels' accuracies
    had no interval."""
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    from examples import plots

    drawn, ticks = [], []
    real_errorbar, real_ticks = matplotlib.axes.Axes.errorbar, matplotlib.axes.Axes.set_yticks

    def errorbar(self, x, y, xerr=None, **kwargs):
        drawn.append((y[0], x[0], xerr, kwargs.get("color")))
        return real_errorbar(self, x, y, xerr=xerr, **kwargs)

    def set_yticks(self, positions, labels=None, **kwargs):
        ticks.extend(labels or [])
        return real_ticks(self, positions, labels, **kwargs)
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", errorbar)
    monkeypatch.setattr(matplotlib.axes.Axes, "set_yticks", set_yticks)

    def arm(mean, lo, hi, vs=None):
        return {"final": {"mean": mean, "lo": lo, "hi": hi}, "vs": {"fused+heads": {"final": vs}} if vs else {}}
    summary = {"fused+heads": arm(0.9, 0.88, 0.92),
               # unadjusted interval below 0, but p_Holm 0.078: not significant (was red)
               "fused": arm(0.898, 0.887, 0.910, {"mean": -0.012, "lo": -0.021, "hi": -0.003, "p": 0.01,
                                                   "holm_p": 0.078}),
               "up": arm(0.93, 0.92, 0.94, {"mean": 0.03, "lo": 0.02, "hi": 0.04, "p": 0.001, "holm_p": 0.004}),
               "down": arm(0.85, 0.84, 0.86, {"mean": -0.05, "lo": -0.06, "hi": -0.04, "p": 0.001, "holm_p": 0.003})}
    results = {"datasets": {"d": {"runs": {"fused+heads": [{}] * 3}, "summary": {"arms": summary}}}}
    plots.plot_fair_deltas(results, tmp_path / "deltas.png")
    by_row = {y: (x, xerr, c) for y, x, xerr, c in drawn}
    x, xerr, colour = by_row[1]                                       # fused
    assert colour == "C0" and x == pytest.approx(-1.2)
    assert xerr[0][0] == pytest.approx(0.9) and xerr[1][0] == pytest.approx(0.9)   # the unadjusted interval
    assert by_row[2][2] == "C2" and by_row[3][2] == "C3"
    assert "fused (89.8 [88.7, 91.0] %)" in ticks and "up (93.0 [92.0, 94.0] %)" in ticks


def test_summaries_refuse_arms_on_other_seeds():
    """Paired differences pair runs by position: arms whose runs are on other seeds (a merged or
    edited results file) were silently mispaired. They are refused now."""
    def run(seed, acc):
        return {"seed": seed, "test": {"acc": acc, "acc1": acc, "acc2": acc}, "best_test": acc,
                "probe_gap": {"1": 0.0, "2": 0.0}, "visits": 1, "steps": 1, "epochs_run": 1, "seconds": 1.0,
                "summary": {}}
    alone = [{"1": {"acc": 0.5, "probe": 0.5}, "2": {"acc": 0.5, "probe": 0.5}}] * 2
    out = {"runs": {"fused": [run(0, 0.8), run(1, 0.9)], "fused+heads": [run(1, 0.7), run(0, 0.6)]}, "alone": alone}
    with pytest.raises(ValueError, match="not on the same seeds in the same order"):
        run_fair.summarise(out, ["fused", "fused+heads"])
