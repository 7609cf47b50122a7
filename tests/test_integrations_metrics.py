"""fastpid.PIDMetric: accumulating a joint over batches equals the joint of all samples."""
from __future__ import annotations

import math
import re
import warnings

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


def test_a_metric_built_or_loaded_in_inference_mode_goes_on_outside_it():
    """A metric built lazily in a validation hook (or loaded in one) held an inference tensor,
    and update() and reset() outside inference mode raised torch's 'Inplace update to
    inference tensor' RuntimeError."""
    a, b = np.array([0, 1, 1, 0, 2]), np.array([0, 1, 0, 1, 2])
    with torch.inference_mode():
        metric = fastpid.PIDMetric((3, 3, 2))
        metric.update(a, b, a % 2)
        loaded = fastpid.PIDMetric((3, 3, 2))
        loaded.load_state_dict(metric.state_dict())
    for m in (metric, loaded):
        m.update(a, b, a % 2)
        assert float(m.counts.sum()) == 10
        m.reset()
        m.update(a, b, a % 2)
        assert float(m.counts.sum()) == 5


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
    with pytest.raises(ValueError, match=r"not a PIDMetric state .*: got a dict with keys \['state'\]"):
        metric.load_state_dict({"state": 1})                # a bare KeyError: 'counts'
    with pytest.raises(ValueError, match=r"not a PIDMetric state .*: got list"):
        metric.load_state_dict([1])
    # a table too large for the memory: said, not torch's allocator's RuntimeError
    with pytest.raises(MemoryError, match=r"PIDMetric accumulates a 100000x100000x1000 float64 table, 74,506 GiB"):
        fastpid.PIDMetric((10**5, 10**5, 10**3))
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


def test_weights_whose_total_overflows_raise_and_leave_the_state():
    """Finite weights of 1e308 sum to inf: update() raises and keeps the earlier batches (it
    had filled the counts with inf and NaN, and compute() then said 'no samples')."""
    x = np.array([0, 1, 1, 0])
    metric = fastpid.PIDMetric((2, 2, 2))
    metric.update(x, x, x)
    with pytest.raises(ValueError, match="sum to inf"):
        metric.update(x[:2], x[:2], x[:2], weights=[1e308, 1e308])
    assert float(metric.counts.sum()) == 4.0 and bool(torch.isfinite(metric.counts).all())


def test_loaded_states_are_checked_and_corrupt_totals_named():
    metric = fastpid.PIDMetric((2, 2, 2))
    for bad in (float("nan"), -1.0):
        state = {"counts": torch.full((2, 2, 2), bad, dtype=torch.float64)}
        with pytest.raises(ValueError, match="finite and non-negative"):
            metric.load_state_dict(state)
    # A histogram of samples holds whole counts: 0.5 each had read as 4 samples, then none.
    with pytest.raises(ValueError, match="not whole numbers"):
        metric.load_state_dict({"counts": torch.full((2, 2, 2), 0.5), "samples_only": torch.tensor(True)})
    metric.load_state_dict({"counts": torch.full((2, 2, 2), 0.5), "samples_only": torch.tensor(False)})
    assert not metric.samples_only
    metric.counts[0, 0, 0] = float("inf")                        # set behind the API's back
    with pytest.raises(ValueError, match="not finite"):
        metric.compute()


def test_bad_pid_options_raise_at_construction():
    """A misspelt option or a bad value raised only in compute(), after a whole epoch."""
    with pytest.raises(TypeError, match="bsae"):
        fastpid.PIDMetric((2, 2, 2), bsae=2)
    with pytest.raises(ValueError, match="exakt"):
        fastpid.PIDMetric((2, 2, 2), method="exakt")
    with pytest.raises(ValueError, match="base"):
        fastpid.PIDMetric((2, 2, 2), base=-1)


def test_hard_codes_count_exact_integers_and_float32_rows_lose_nothing():
    """One sample of a batch of 49 was stored as 0.9999999999999999 (count · (1/49) · 49)."""
    rng = np.random.default_rng(1)
    metric = fastpid.PIDMetric((5, 5, 3))
    for _ in range(200):
        n = int(rng.integers(1, 97))
        metric.update(rng.integers(0, 5, n), rng.integers(0, 5, n), rng.integers(0, 3, n))
    assert torch.equal(metric.counts, metric.counts.round())
    # float32 rows are summed in float64: the counts equal the float64 rows' exactly
    rows = torch.softmax(torch.randn(20_000, 4, generator=torch.Generator().manual_seed(0)), 1)
    y = torch.randint(0, 2, (20_000,), generator=torch.Generator().manual_seed(1))
    m32, m64 = fastpid.PIDMetric((4, 4, 2)), fastpid.PIDMetric((4, 4, 2))
    m32.update(rows, rows, y)
    m64.update(rows.double(), rows.double(), y)
    torch.testing.assert_close(m32.counts, m64.counts, rtol=0, atol=0)


def test_estimate_equals_the_estimate_of_the_samples():
    """metric.estimate() is fastpid.estimate of the samples the batches held (hard codes,
    no weights), with its intervals; after soft rows or weights it says why it cannot."""
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 4, 600), rng.integers(0, 4, 600)
    y = (a + b + (rng.random(600) < 0.2)) % 3
    metric = fastpid.PIDMetric((4, 4, 3), base=2)
    for s in range(0, 600, 128):
        metric.update(torch.as_tensor(a[s:s + 128]), torch.as_tensor(b[s:s + 128]), torch.as_tensor(y[s:s + 128]))
    est = metric.estimate(seed=0, n_null=5, n_pilot=3)
    # the same samples, ordered by cell as the metric rebuilds them
    order = np.lexsort((y, b, a))
    ref = fastpid.estimate(torch.as_tensor(a[order]), torch.as_tensor(b[order]), torch.as_tensor(y[order]),
                           sizes=(4, 4, 3), seed=0, n_null=5, n_pilot=3, base=2)
    for term in ("redundancy", "unique1", "unique2", "synergy"):
        got = [float(getattr(f, term)) for f in (est, est.ci_low, est.ci_high)]
        want = [float(getattr(f, term)) for f in (ref, ref.ci_low, ref.ci_high)]
        assert got == pytest.approx(want, abs=1e-9)
        assert got[1] <= got[0] <= got[2]
    # Arguments given per sample would meet the samples rebuilt in cell order (groups by
    # a's value gave plug-in synergies 1.02/1.00 nats against the samples' own 0.69/0.69).
    for kwargs in ({"groups": (a >= 2).astype(int)}, {"weights": np.ones(600)}, {"counts": np.ones(600, int)},
                   {"num_groups": 2}, {"sizes": (4, 4, 3)}):
        with pytest.raises(ValueError, match=f"cannot take {next(iter(kwargs))}"):
            metric.estimate(seed=0, **kwargs)
    state = metric.state_dict()
    metric.update(a[:3], b[:3], y[:3], weights=np.ones(3))
    with pytest.raises(ValueError, match="hard codes without weights"):
        metric.estimate()
    metric.load_state_dict(state)                                 # the flag is part of the state
    assert metric.samples_only
    metric.reset()
    with pytest.raises(ValueError, match="no samples"):
        metric.estimate()


def test_half_precision_rows_are_taken_as_fastpid_joint_takes_them():
    """A bfloat16 softmax row is off by up to 2^-8: update() cast the rows to float64 first and
    refused them at 1e-4, though fastpid.joint takes them (to the dtype's eps, renormalised).
    Rows off by more than that are still refused, with joint's message."""
    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(60, 3, generator=g)
    y = torch.randint(0, 3, (60,), generator=g)
    for dtype in (torch.bfloat16, torch.float16):
        p = torch.softmax(logits.to(dtype), 1)
        metric = fastpid.PIDMetric((3, 3, 3))
        metric.update(p, p, y)
        assert float(metric.counts.sum()) == pytest.approx(60, abs=1e-9)
        ref = fastpid.joint(p, p, y, sizes=(3, 3, 3))
        torch.testing.assert_close(metric.counts / 60, ref.double(), rtol=0, atol=1e-6)
    bf16 = torch.softmax(logits.to(torch.bfloat16), 1)
    assert float((bf16.double().sum(1) - 1).abs().max()) > 1e-4        # what float64 refused
    bf16[3] *= 1.05
    with pytest.raises(ValueError, match=r"x1\[3\] sums to .*, not 1"):
        fastpid.PIDMetric((3, 3, 3)).update(bf16, bf16, y)


def test_to_moves_the_joint_and_checks_the_options_there_first():
    a, b = np.tile([0, 0, 1, 1], 25), np.tile([0, 1, 0, 1], 25)
    metric = fastpid.PIDMetric((2, 2, 2), base=2)
    metric.update(a, b, a ^ b)
    assert metric.to("cpu") is metric and metric.device == torch.device("cpu")
    with pytest.raises(TypeError, match="meta tensor"):  # nothing can be solved there
        metric.to("meta")
    assert metric.device == torch.device("cpu") and float(metric.counts.sum()) == 100  # left as it was
    assert float(metric.compute().synergy) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_a_gpu_adds_and_solves_there():
    a, b = np.tile([0, 0, 1, 1], 25), np.tile([0, 1, 0, 1], 25)
    metric = fastpid.PIDMetric((2, 2, 2), base=2).to("cuda")
    metric.update(a, b, a ^ b)
    res = metric.compute()
    assert metric.counts.is_cuda and res.synergy.is_cuda
    assert float(res.synergy) == pytest.approx(1.0, abs=1e-6)


def test_sizes_are_read_as_joint_reads_them():
    """sizes as a numpy array or a tensor, as joint() takes them (a tensor was refused as
    "(tensor(2), tensor(2), tensor(2))"); a None to infer is refused: the table is fixed."""
    for sizes in (torch.tensor([2, 3, 2]), np.array([2, 3, 2]), [2, 3, 2]):
        metric = fastpid.PIDMetric(sizes=sizes)
        assert metric.sizes == (2, 3, 2) and all(type(s) is int for s in metric.sizes)
        assert metric.counts.shape == (2, 3, 2)
    with pytest.raises(ValueError, match="three positive integers"):
        fastpid.PIDMetric(sizes=(2, None, 2))
    with pytest.raises(ValueError, match="size of x1"):
        fastpid.PIDMetric(sizes=(0, 2, 2))


def test_the_options_check_does_not_warn_of_its_own_joint():
    """The constructor's trial solve of a uniform 2x2x2 joint warned that tol=1e-14 lies below
    that joint's rounding (its gap of 2.2e-14): a warning about a problem the caller never
    passed, again on every .to(device). The caller's own joints still warn in compute()."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric = fastpid.PIDMetric(sizes=(2, 2, 2), tol=1e-14)
        metric.to("cpu")
    metric.update(np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0]))
    with pytest.warns(fastpid.ConvergenceWarning, match="rounding"):
        metric.compute()


def test_the_options_check_leaves_the_warning_filters_alone(monkeypatch):
    """The check silenced its joint's warning under warnings.catch_warnings, whose filters are
    the process's: another thread's warnings were lost while a metric was made (970-980 of
    1,000 shown)."""
    def refused(*args, **kwargs):
        raise AssertionError("the options check changed the process's warning filters")

    monkeypatch.setattr(warnings, "catch_warnings", refused)
    fastpid.PIDMetric(sizes=(2, 2, 2), tol=1e-14).to("cpu")
    with pytest.raises(ValueError, match="tol must be a finite number > 0"):
        fastpid.PIDMetric(sizes=(2, 2, 2), tol=-1.0)


def test_loaded_state_entries_are_checked_by_type():
    """Complex counts lost their imaginary part, "samples_only": "no" loaded as True, a meta tensor
    raised NotImplementedError, a two-flag tensor "Boolean value of Tensor ... is ambiguous" and
    "counts": "abc" torch's "new(): invalid data type 'str'"."""
    metric = fastpid.PIDMetric((2, 2, 2))
    counts = torch.ones(2, 2, 2, dtype=torch.float64)
    for state, match in [
        ({"counts": counts.to(torch.complex128)}, r"state\['counts'\] has complex dtype torch.complex128"),
        ({"counts": "abc"}, r"state\['counts'\] must be numeric .*got a str: 'abc'"),
        ({"counts": torch.ones(2, 2, 2, device="meta")}, r"state\['counts'\] is a meta tensor"),
        ({"counts": counts, "samples_only": "no"}, r"state\['samples_only'\] must be True or False, got str \('no'\)"),
        ({"counts": counts, "samples_only": 1}, r"state\['samples_only'\] must be True or False, got int \(1\)"),
        ({"counts": counts, "samples_only": torch.tensor([True, False])},
         r"state\['samples_only'\] must be True or False, got Tensor"),
        ({"counts": counts, "samples_only": torch.tensor(True, device="meta")},
         r"state\['samples_only'\] must be True or False, got Tensor"),
    ]:
        with pytest.raises(TypeError, match=match):
            metric.load_state_dict(state)
    assert metric.samples_only is True and float(metric.counts.sum()) == 0.0
    for flag in (False, np.bool_(True), torch.tensor(True), torch.tensor([False])):
        metric.load_state_dict({"counts": counts.tolist(), "samples_only": flag})
        assert metric.samples_only is bool(flag) and torch.equal(metric.counts, counts)


def test_update_reads_weights_as_joint_does():
    """weights=["a", "b", "c", "d"] gave numpy's "could not convert string to float: 'a'" where
    fastpid.joint names the weights; complex ones float()'s TypeError."""
    x = np.array([0, 1, 1, 0])
    metric = fastpid.PIDMetric((2, 2, 2))
    for bad in (["a", "b", "c", "d"], [1 + 1j] * 4, "abcd", np.ma.masked_array([1.0] * 4, mask=[0, 1, 0, 0])):
        with pytest.raises(TypeError) as joint_error:
            fastpid.joint(x, x, x, weights=bad)
        assert "weights" in str(joint_error.value)
        with pytest.raises(TypeError, match=re.escape(str(joint_error.value))):
            metric.update(x, x, x, weights=bad)
    assert float(metric.counts.sum()) == 0.0
    metric.update(x, x, x, weights=[1, 0, 1, 2 ** 70])   # integers past int64, as joint takes them
    assert float(metric.counts.sum()) == pytest.approx(2.0 + 2.0 ** 70)
