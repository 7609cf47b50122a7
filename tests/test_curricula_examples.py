"""Smoke runs of the curriculum example methods (examples/curricula.py) and the results
writer of examples/run_curricula.py on tiny data."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")

from examples.curricula import (OGMGE, SPICE, DynCIMMethod, MultiViewNet, Plain,  # noqa: E402
                                StaticCurriculum, train_curriculum)
from examples.data import synthetic_views  # noqa: E402
from examples.run_curricula import markdown, score_recovery  # noqa: E402

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
    train_curriculum(MultiViewNet([x.shape[1] for x in xs], c), xs, y, method, epochs=1)
    assert method.history["fraction"] == [1.0]
    first = method.epoch_indices(1)
    assert len(first) == round(0.2 * len(y))
    assert set(first.tolist()) == set(method.order[:len(first)].tolist())


def test_score_recovery_and_markdown():
    rec = score_recovery([0], epochs=2, n=300, k=4)
    assert rec["epochs_scored"] == [2]
    run = rec["runs"][0]["2"]
    for est in ("pointwise", "local_exact_k4", "local_fast_k4", "local_exact_k16"):
        assert all(0.0 <= v <= 1.0 for v in run[est].values())
    text = markdown({"seeds": [0], "epochs": 2, "machine": "test", "recovery": rec, "accuracy": {}})
    assert "| 2 | local, exact, k=4 |" in text
