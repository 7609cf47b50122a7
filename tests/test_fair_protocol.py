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
from examples.stats import mean_interval, paired  # noqa: E402


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


def test_ogm_ge_public_coefficient():
    k = arms.ogm_ge_public_coefficients(torch.tensor([30.0, 10.0]), alpha=0.1)
    torch.testing.assert_close(k, torch.tensor([1 - math.tanh(0.3), 1.0]))
    k = arms.ogm_ge_public_coefficients(torch.tensor([10.0, 20.0]), alpha=0.5)
    torch.testing.assert_close(k, torch.tensor([1.0, 1 - math.tanh(1.0)]))


def test_ecs_published_schedule_lowers_the_stage2_learning_rate(small):
    res, _ = fair.fit(small, "ECS-async (published schedule)", {}, seed=0, epochs=6)
    assert res["summary"]["switch_epoch"] is not None
    arm = fair.make_arm("ECS-async (published schedule)", len(small.train), 6, 0, {})
    assert arm.method.controller_kwargs["probe_every"] == 5 and arm.method.controller_kwargs["resume_ratio"] is None


def test_runner_writes_paired_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(run_fair, "loader", lambda name, val: lambda seed: synthetic_views(
        n=300, seed=seed, val_fraction=val))
    names = ["fused", "fused+heads", "gated fused+heads", "DynCIM (gated)"]
    results = run_fair.main(["--name", "tiny", "--datasets", "synthetic", "--arms", *names, "--seeds", "2",
                             "--trials", "1", "--epochs", "2", "--out", str(tmp_path)])
    summ = results["datasets"]["synthetic"]["summary"]["arms"]
    assert set(summ["DynCIM (gated)"]["vs"]) == {"fused", "fused+heads", "gated fused+heads"}
    assert summ["fused+heads"]["vs"]["fused"]["final"]["n"] == 2
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert len(saved["datasets"]["synthetic"]["runs"]["fused"]) == 2
    md = (tmp_path / "tiny.md").read_text()
    assert "probe gap" in md and "DynCIM (gated) against gated fused+heads" in md
