"""fastpid.PIDMetric: accumulating a joint over batches equals the joint of all samples."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fastpid


def test_batches_accumulate_to_the_whole_joint():
    order = np.random.default_rng(0).permutation(300)
    a, b = np.tile([0, 0, 1, 1], 75)[order], np.tile([0, 1, 0, 1], 75)[order]   # balanced XOR
    metric = fastpid.PIDMetric((2, 2, 2), base=2)
    for s in range(0, 300, 64):                                  # numpy codes, uneven last batch
        metric.update(a[s:s + 64], b[s:s + 64], (a ^ b)[s:s + 64])
    metric.update(a[:0], b[:0], a[:0])                            # an empty batch adds nothing
    res = metric.compute()
    assert float(res.synergy) == pytest.approx(1.0, abs=1e-6)    # XOR: one bit of synergy
    assert float(metric.counts.sum()) == 300
    ref = fastpid.pid(fastpid.joint(a, b, a ^ b, sizes=(2, 2, 2)), base=2)
    assert float(res.redundancy) == pytest.approx(float(ref.redundancy), abs=1e-9)


def test_soft_rows_and_weights():
    g = torch.Generator().manual_seed(0)
    p1 = torch.softmax(torch.randn(40, 3, generator=g, dtype=torch.float64), 1)
    p2 = torch.softmax(torch.randn(40, 2, generator=g, dtype=torch.float64), 1)
    y = torch.randint(0, 2, (40,), generator=g)
    w = torch.rand(40, generator=g, dtype=torch.float64)
    metric = fastpid.PIDMetric((3, 2, 2))
    metric.update(p1[:25], p2[:25], y[:25], weights=w[:25])
    metric.update(p1[25:], p2[25:], y[25:], weights=w[25:])
    whole = fastpid.joint(p1, p2, y, sizes=(3, 2, 2), weights=w)
    torch.testing.assert_close(metric.counts / metric.counts.sum(), whole, rtol=0, atol=1e-14)
    ref = fastpid.pid(whole)
    assert float(metric.compute().synergy) == pytest.approx(float(ref.synergy), abs=1e-10)
    metric.reset()
    with pytest.raises(ValueError, match="no samples"):
        metric.compute()
    with pytest.raises(ValueError, match="sizes"):
        fastpid.PIDMetric((2, 0, 2))
    assert "PIDMetric(sizes=(3, 2, 2)" in repr(metric) and math.isfinite(float(ref.synergy))


def test_masked_batches_add_nothing_and_inputs_are_checked():
    """A batch whose weights are all 0 (masked, padded) adds nothing, like an empty batch (it
    raised 'zero total weight'); sample counts are checked even when x1 is empty; scalars
    and numpy integer sizes get clear answers."""
    x = np.array([0, 1, 2, 1])
    metric = fastpid.PIDMetric((np.int64(3), 3, 3))
    assert metric.sizes == (3, 3, 3) and all(type(n) is int for n in metric.sizes)
    metric.update(x, x, x, weights=np.zeros(4))
    metric.update(x[:0], x[:0], x[:0])
    assert float(metric.counts.sum()) == 0.0
    metric.update(x, x, x, weights=torch.ones(4, requires_grad=True))
    assert float(metric.counts.sum()) == 4.0
    with pytest.raises(ValueError, match="same number of samples, got 0, 4, 4"):
        metric.update(x[:0], x, x)
    for scalar in (np.int64(1), torch.tensor(1)):
        with pytest.raises(ValueError, match="x1 must be a \\(B,\\) vector"):
            metric.update(scalar, x, x)
    with pytest.raises(ValueError, match=r"weights\[1\] = -1.0 is negative; sample weights must be finite and >= 0"):
        metric.update(x, x, x, weights=np.array([1.0, -1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="weights has length 3 but there are N=4 samples"):
        metric.update(x, x, x, weights=np.ones(3))


def test_collective_device_follows_the_backend(monkeypatch):
    """NCCL reduces CUDA tensors only: compute() moves the (CPU by default) counts to the
    current CUDA device for the all-reduce; other backends take the tensors where they are."""
    from fastpid import metrics

    monkeypatch.setattr(metrics.torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(metrics.dist, "get_backend", lambda group=None: "nccl")
    assert metrics._collective_device() == torch.device("cuda", 1)
    monkeypatch.setattr(metrics.dist, "get_backend", lambda group=None: "gloo")
    assert metrics._collective_device() is None
