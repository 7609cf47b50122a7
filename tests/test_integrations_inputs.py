"""Inputs the integrations accept and reject (numpy, float labels, empty batches, NaN, huge
embeddings), the ECS fixes, and small API pieces (IndexedDataset, reprs, SynIBTerms)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fastpid
from fastpid.integrations import (DynCIM, DynCIMLoss, ECSAsyncController, IndexedDataset, PIDProbe,
                                  RootCompetence, SPICECurriculum, SPICESampler, SynIBLoss)
from fastpid.integrations.ecs_async import Decision
from fastpid.integrations.ogm_ge import ogm_ge_coefficients, ogm_ge_scores
from fastpid.integrations.spice_scores import SampleScores, local_scores


def clouds(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.randn(3, 4, generator=g, dtype=torch.float64) * 4
    return (centres[y] + torch.randn(n, 4, generator=g, dtype=torch.float64),
            torch.randn(n, 3, generator=g, dtype=torch.float64), y)


# ---------------------------------------------------------------- numpy and float labels

def test_probe_takes_numpy_and_integral_float_labels():
    e1, e2, y = clouds()
    probe = PIDProbe(n_clusters=4)
    ref = probe(e1, e2, y)
    for args in [(e1.numpy(), e2.numpy(), y.numpy()), (e1, e2, y.double()), (e1, e2, y.numpy().astype(np.float32))]:
        res = probe(*args)
        assert res.terms() == ref.terms() and torch.equal(res.codes1, ref.codes1)
    assert ref.mi1 > 0.5                                     # modality 1 carries the label
    with pytest.raises(ValueError, match=r"labels\[3\] = 0.5 is not an integer class id"):
        probe(e1, e2, torch.where(torch.arange(len(y)) == 3, 0.5, y.double()))
    base = probe.shuffled(ref.codes1.numpy(), ref.codes2.numpy(), y.double().numpy(), 2)
    assert base == probe.shuffled(ref.codes1, ref.codes2, y, 2)


def test_probe_result_repr_is_short():
    e1, e2, y = clouds()
    text = repr(PIDProbe(n_clusters=4)(e1, e2, y))
    assert text.startswith("ProbeResult(plug-in: redundancy=") and "N=200" in text
    assert len(text) < 250 and "tensor" not in text
    assert "units=nats; no interval" in text and "units=bits; " in repr(PIDProbe(n_clusters=4, base=2)(e1, e2, y))


def test_losses_and_curricula_take_numpy():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    fusion = lambda a, b: a + b  # noqa: E731
    loss_fn = SynIBLoss(lambda_uni=0.0, mask="zero", p=1.0)
    a = loss_fn(z1, z2, y, fusion).loss
    b = loss_fn(z1.numpy(), z2.numpy(), y.numpy().astype(np.float64), fusion).loss
    assert torch.equal(a, b)
    crit = DynCIMLoss()
    assert torch.equal(crit(z1, [z1, z2], y), crit(z1, [z1, z2], y.double().numpy()))
    p = torch.softmax(torch.randn(6, 3, generator=g, dtype=torch.float64), 1)
    dyn_t, dyn_n = DynCIM(6, 2, epochs=3), DynCIM(6, 2, epochs=3)
    dyn_t.update(p, [p, p.flip(0)], y)
    dyn_n.update(p.numpy(), np.stack([p.numpy(), p.flip(0).numpy()]), y.double().numpy())
    assert torch.equal(dyn_t.weights(), dyn_n.weights())
    s_t = local_scores(p, p.flip(0), y, z1, k=3)
    s_n = local_scores(p.numpy(), p.flip(0).numpy(), y.numpy(), z1.numpy(), k=3)
    assert torch.equal(s_t.synergy, s_n.synergy)
    cur = SPICECurriculum(6, epochs=3)
    assert torch.equal(cur.update(p.numpy(), p.numpy(), p.numpy(), y.numpy()).redundancy,
                       cur.update(p, p, p, y).redundancy)


def test_indexed_dataset_yields_the_indices():
    x, t = torch.arange(10.0)[:, None] * 3, torch.arange(10) % 2
    ds = IndexedDataset(TensorDataset(x, t))
    assert len(ds) == 10 and ds[4][0] == 4 and torch.equal(ds[4][1], x[4])
    for idx, xb, tb in DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert idx.dtype == torch.int64 and torch.equal(xb[:, 0], idx * 3.0) and torch.equal(tb, idx % 2)
    assert IndexedDataset(["a", "b"])[1] == (1, "b")
    with pytest.raises(TypeError, match="map-style"):
        IndexedDataset(iter([1, 2]))


def test_dyncim_loss_documents_its_keywords():
    doc = DynCIMLoss.__doc__
    for kw in ("sample_weights", "modality_weights", "unimodal_scale", "gate_target", "gate"):
        assert f"``{kw}" in doc, kw


# ---------------------------------------------------------------- ECS fixes

def terms(u1, u2, s):
    return {"redundancy": 0.1, "unique1": u1, "unique2": u2, "synergy": s}


def test_drop_rule_with_a_negative_peak():
    """Peak -1.0 (drop 0.8): the threshold is -1.2, not 0.8 × -1.0 = -0.8 (above the peak,
    which switched at once)."""
    ctrl = ECSAsyncController(warmup_epochs=0, baseline=None, min_score=float("-inf"), max_unimodal_epochs=100)
    d = [ctrl.step(e, terms(0.2, 0.2, s)) for e, s in enumerate((-1.0, -1.1, -1.19, -1.25))]
    assert ctrl.peak_score == -1.0 and ctrl.drop_threshold() == pytest.approx(-1.2)
    assert [x.stage for x in d] == ["unimodal"] * 3 + ["joint"]
    pos = ECSAsyncController(warmup_epochs=0, baseline=None, min_score=float("-inf"))
    pos.step(0, terms(0.2, 0.2, 0.5))
    assert pos.drop_threshold() == pytest.approx(0.4)              # drop × peak, as before


def test_no_pausing_during_warmup():
    ctrl = ECSAsyncController(warmup_epochs=2, baseline=None, max_unimodal_epochs=100)
    d = [ctrl.step(e, terms(0.9, 0.1, 0.1)) for e in range(3)]       # U1/U2 = 9 > 3 throughout
    assert [(x.train1, x.train2) for x in d] == [(True, True), (True, True), (False, True)]
    assert "warm-up" in d[0].reason and "pause modality 1" in d[2].reason


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=0), "eps must be > 0"), (dict(eps=-1e-3), "eps must be > 0"),
    (dict(ratio=float("nan")), "ratio must be a finite number"), (dict(drop=float("inf")), "drop"),
    (dict(min_score=float("nan")), "min_score"), (dict(fused_weight=-1.0), "fused_weight must be >= 0"),
    (dict(unimodal_weight="0.6"), "unimodal_weight"), (dict(probe_every=1.5), "probe_every"),
    (dict(baseline_seed=None), "baseline_seed"), (dict(warmup_epochs=True), "warmup_epochs"),
])
def test_constructor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ECSAsyncController(**kwargs)
    with pytest.raises(TypeError, match="PIDProbe"):
        ECSAsyncController(probe="pca")
    with pytest.raises(TypeError, match="nn.Module"):
        ECSAsyncController(modules=[object()])


# ---------------------------------------------------------------- NaN, empty batches, huge values

def test_nan_terms_and_nan_scores_raise():
    ctrl = ECSAsyncController(baseline=None)
    with pytest.raises(ValueError, match=r"NaN or infinite entries \['synergy'\]"):
        ctrl.step(0, terms(0.1, 0.1, float("nan")))
    with pytest.raises(ValueError, match="baseline's terms have NaN"):
        ECSAsyncController().step(0, terms(0.1, 0.1, 0.1), {"synergy": float("nan")})
    assert ctrl.history == []
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="modality 1 contain NaN"):
        ogm_ge_scores([torch.zeros(2, 3), torch.full((2, 3), float("nan"))], y)
    # -inf masks a class (its probability 0); +inf or a row with every class masked has no softmax.
    masked = torch.tensor([[0.0, 0.0, -math.inf], [math.log(3.0), 0.0, -math.inf]])
    assert ogm_ge_scores([torch.zeros(2, 3), masked], y).tolist() == pytest.approx([2 / 3, 1 / 2 + 1 / 4])
    for bad in (torch.tensor([[0.0, math.inf, 0.0], [0.0, 0.0, 0.0]]), torch.full((2, 3), -math.inf)):
        with pytest.raises(ValueError, match=r"modality 1 contain NaN, \+Inf or a row of only -Inf"):
            ogm_ge_scores([torch.zeros(2, 3), bad], y)
    with pytest.raises(ValueError, match="finite"):
        ogm_ge_coefficients(torch.tensor([1.0, float("nan")]))


def test_probe_names_the_embeddings_with_nan_rows():
    e1, e2, y = clouds()
    e2 = e2.clone()
    e2[7, 0] = float("nan")
    e2[9, 1] = float("inf")
    with pytest.raises(ValueError, match=r"emb2 has NaN or Inf entries \(2 of \d+ rows, the first at row 7\)"):
        PIDProbe(n_clusters=3)(e1, e2, y)


def test_empty_batches_raise():
    empty, y0 = torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="empty batch: SynIBLoss"):
        SynIBLoss()(empty, empty, y0, lambda a, b: a + b, lambda z: z, lambda z: z)
    with pytest.raises(ValueError, match="empty batch: the DynCIM loss"):
        DynCIMLoss()(empty, [empty, empty], y0)
    with pytest.raises(ValueError, match="empty batch: stage_loss"):
        ECSAsyncController().stage_loss(ECSAsyncController().current(0), empty, empty, empty, y0)
    with pytest.raises(ValueError, match="empty batch: the OGM-GE"):
        ogm_ge_scores([empty, empty], y0)
    with pytest.raises(ValueError, match=r"y\[1\] = 3 is not one of the 3 classes"):
        ogm_ge_scores([torch.zeros(2, 3), torch.zeros(2, 3)], torch.tensor([0, 3]))  # an IndexError before


def test_probe_handles_huge_embeddings():
    e1, e2, y = clouds()
    probe = PIDProbe(n_clusters=4)
    ref = probe(e1, e2, y)
    big = probe(e1 * 1e200, e2 * 1e200, y)
    assert torch.equal(big.codes1, ref.codes1) and torch.equal(big.codes2, ref.codes2)
    for k, v in ref.terms().items():
        assert getattr(big, k) == pytest.approx(v, abs=1e-12), k
    assert big.mi1 > 0.5 and math.isfinite(big.synergy)
    tiny = probe(e1 * 1e-200, e2 * 1e-200, y)                 # small magnitudes too
    assert torch.equal(tiny.codes1, ref.codes1)


# ---------------------------------------------------------------- SynIB's result and the sampler's shards

def test_synib_terms_say_how_to_backpropagate():
    z1 = torch.randn(4, 3, requires_grad=True)
    out = SynIBLoss(lambda_uni=0.0)(z1, torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), lambda a, b: a + b)
    with pytest.raises(AttributeError, match=r"\.loss\.backward\(\)"):
        out.backward()
    out.loss.backward()                                      # the documented way works
    assert z1.grad is not None


def test_sampler_shards_without_a_process_group():
    n = 41
    r = torch.linspace(1, 0, n, dtype=torch.float64)
    z = torch.zeros(n, dtype=torch.float64)
    cur = SPICECurriculum(n, epochs=3, pacing=lambda t, T: 1.0, estimator=lambda *a: SampleScores(r, z, z, z))
    cur.update(None, None, None, None)
    shards = [SPICESampler(cur, num_replicas=3, rank=k, seed=7) for k in range(3)]
    drawn = [list(s) for s in shards]
    assert sorted(sum(drawn, [])) == list(range(n)) and [len(s) for s in shards] == [14, 14, 13]
    before = drawn[0]
    shards[0].set_epoch(1)
    assert cur.epoch == 1 and list(shards[0]) != before                 # reshuffled by epoch
    even = [list(SPICESampler(cur, num_replicas=3, rank=k, drop_last=True)) for k in range(3)]
    assert [len(s) for s in even] == [13, 13, 13] and len(set(sum(even, []))) == 39
    ordered = [list(SPICESampler(cur, num_replicas=2, rank=k, shuffle=False)) for k in range(2)]
    assert ordered[0] == cur.indices()[0::2].tolist() and ordered[1] == cur.indices()[1::2].tolist()
    with pytest.raises(ValueError, match="seed"):
        SPICESampler(cur, torch.Generator(), num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="rank"):
        SPICESampler(cur, num_replicas=2, rank=2)
    for option in ("shuffle", "drop_last"):  # bool() had read "no" as True
        with pytest.raises(TypeError, match=option):
            SPICESampler(cur, **{option: "no"})
        assert getattr(SPICESampler(cur, **{option: np.False_}), option) is False


# ---------------------------------------------------------------- half precision, odd batches and epochs

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_softmax_rows_are_accepted(dtype):
    """A bfloat16 softmax row sums to 1 only within ~2^-8 (0.0024 off here), beyond the float32
    tolerance 1e-4: rows within the dtype's epsilon are accepted and renormalised."""
    from fastpid.integrations.predictions import check_probs
    from fastpid.integrations.spice_scores import pointwise_scores

    g = torch.Generator().manual_seed(0)
    p = torch.randn(200, 10, generator=g).to(dtype).softmax(-1)
    y = torch.randint(0, 10, (200,), generator=g)
    assert (p.double().sum(1) - 1).abs().max() > 1e-4      # the case the float32 tolerance refused
    q = check_probs(p, "p")
    assert q.dtype == torch.float64 and (q.sum(1) - 1).abs().max() < 1e-12
    ref = pointwise_scores(*(p.double() / p.double().sum(1, keepdim=True),) * 3, y)
    got = pointwise_scores(p, p, p, y)
    assert torch.allclose(got.synergy, ref.synergy, atol=1e-12)
    DynCIM(200, 2, 5).update(p, [p, p], y)
    # The index= path (one rank's rows, gathered) cast them to float64 before the check and
    # refused them ("off by 0.00234 (tolerance 0.0001)"): the same rows pass both paths now.
    perm = torch.randperm(200, generator=g)
    DynCIM(200, 2, 5).update(p[perm], [p[perm], p[perm]], y[perm], index=perm)
    cur = SPICECurriculum(200, 5)
    cur.update(p[perm], p[perm], p[perm], y[perm], index=perm)
    assert torch.allclose(cur.scores.synergy, ref.synergy, atol=1e-12)
    with pytest.raises(ValueError, match="half-precision softmax, cast up"):
        DynCIM(200, 2, 5).update(p.float(), [p.float(), p.float()], y)
    bad = torch.tensor([[0.5, 0.6]], dtype=dtype)           # off by 0.1: still refused
    with pytest.raises(ValueError, match="rows must sum to 1"):
        check_probs(bad, "p")


def test_probe_names_an_empty_probe_set():
    e = torch.zeros(0, 8)
    with pytest.raises(ValueError, match="emb1 has 0 samples; the probe needs at least n_clusters"):
        PIDProbe()(e, e, torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize("mask", ["zero", "noise", "learned_example", "random", "learned"])
def test_synib_batch_of_one(mask):
    """A last batch of one (N % B == 1 without drop_last) trains with every mask; the two that
    fill from another sample leave its penalty out and say so."""
    g = torch.Generator().manual_seed(1)
    fusion, h1, h2 = torch.nn.Linear(11, 3), torch.nn.Linear(5, 3), torch.nn.Linear(6, 3)
    fuse = lambda a, b: fusion(torch.cat([a, b], 1))  # noqa: E731
    z1, z2, y = torch.randn(16, 5, generator=g), torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    loss = SynIBLoss(mask=mask)
    loss(z1, z2, y, fuse, h1, h2)
    if mask in ("random", "learned"):
        with pytest.warns(UserWarning, match=f"mask='{mask}' fills a withheld modality from another sample"):
            out = loss(z1[:1], z2[:1], y[:1], fuse, h1, h2)
        assert float(out.synergy_kl) == 0.0
    else:
        out = loss(z1[:1], z2[:1], y[:1], fuse, h1, h2)
        assert math.isfinite(float(out.loss.detach())) and float(out.synergy_kl) > 0


def test_synib_learned_gate_is_frozen_outside_training():
    """Validation (eval mode, no_grad) must not refit the persistent gate, as "noise" keeps its
    running statistics: a run with validation would otherwise differ from one without."""
    g = torch.Generator().manual_seed(2)
    fusion, h1, h2 = torch.nn.Linear(11, 3), torch.nn.Linear(5, 3), torch.nn.Linear(6, 3)
    fuse = lambda a, b: fusion(torch.cat([a, b], 1))  # noqa: E731
    z1, z2, y = torch.randn(16, 5, generator=g), torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    loss = SynIBLoss(mask="learned")
    loss(z1, z2, y, fuse, h1, h2)
    gate = loss.gate(1).clone()
    loss.eval()
    with torch.no_grad():
        out = loss(z1[:8] + 1, z2[:8], y[:8], fuse, h1, h2)
    assert torch.equal(loss.gate(1), gate) and float(out.synergy_kl) > 0
    loss.train()
    loss(z1, z2, y, fuse, h1, h2)
    assert not torch.equal(loss.gate(1), gate)             # training still refits it


def test_dyncim_gate_target_must_be_on_the_simplex():
    from fastpid.integrations.dyncim_loss import dyncim_loss_terms

    g = torch.Generator().manual_seed(3)
    fl, u1, u2 = (torch.randn(4, 3, generator=g) for _ in range(3))
    y, gate = torch.tensor([0, 1, 2, 0]), torch.full((4, 2), 0.5)
    with pytest.raises(ValueError, match="on the simplex"):
        dyncim_loss_terms(fl, [u1, u2], y, gate=gate, gate_target=torch.tensor([3.0, 3.0]))
    kl = dyncim_loss_terms(fl, [u1, u2], y, gate=gate, gate_target=torch.tensor([0.25, 0.75]))["gate"]
    assert float(kl) == pytest.approx(0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75))


def test_epochs_may_be_numpy_or_tensor_integers():
    cur = SPICECurriculum(10, epochs=6)
    cur.set_epoch(np.int64(3))
    assert cur.epoch == 3 and type(cur.epoch) is int
    cur.set_epoch(torch.tensor(4))
    assert cur.epoch == 4 and type(cur.epoch) is int and cur.phase() == "synergy"
    for bad in (2.0, -1, True, "1"):
        with pytest.raises(ValueError, match="epoch must be a non-negative integer"):
            cur.set_epoch(bad)


def test_gated_fusion_takes_numpy_integer_sizes():
    from fastpid.integrations import GatedFusion

    fusion = GatedFusion(np.int64(4), np.int64(2), hidden=np.int32(8))
    assert (fusion.dim, fusion.n_modalities) == (4, 2) and type(fusion.dim) is int
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        GatedFusion(True, 2)


def test_fixes_for_edge_inputs_of_the_integrations():
    """float16 gate targets checked in float64 (the default target of 11 modalities sums to 1
    only within 2e-4 in float16); a pacing function returning float32 gives the same admitted
    count in the plot as in indices(); neighbours of rows near the largest float (the mean
    overflowed); an error of any type from one rank's ECS inputs is broadcast, not raised alone."""
    from fastpid.integrations.dyncim_loss import dyncim_loss_terms
    from fastpid.integrations.spice_scores import nearest_neighbours

    M = 11
    g = torch.Generator().manual_seed(5)
    logits = [torch.randn(4, 3, generator=g).half() for _ in range(M + 1)]
    gate = torch.full((4, M), 1.0 / M, dtype=torch.float16)
    terms = dyncim_loss_terms(logits[0], logits[1:], torch.zeros(4, dtype=torch.long), gate=gate)
    assert math.isfinite(float(terms["gate"]))
    cur = SPICECurriculum(40, epochs=6, pacing=lambda t, T: torch.tensor(0.3),
                          estimator=lambda *a: SampleScores(*torch.rand(4, 40, dtype=torch.float64, generator=g)))
    cur.update(None, None, None, None)
    for epoch in range(6):
        cur.set_epoch(epoch)
        assert cur.scheduled_fraction(epoch) * 40 == len(cur.indices())
    near_max = np.array([[1.7e308, 0.0], [1.6e308, 1.0], [-1.7e308, 0.0], [1.69e308, 0.5]])
    assert nearest_neighbours(near_max, 2).tolist() == [[0, 3], [1, 3], [2, 1], [3, 0]]
    parsed, error = ECSAsyncController()._parse({"unique1": 0.1, "unique2": 0.1, "synergy": 0.1}, ["synergy"], None)
    assert parsed is None and isinstance(error, AttributeError)


def test_the_probe_refuses_meta_tensors_by_name():
    """Meta embeddings raised "Tensor.item() cannot be called on meta tensors", meta labels
    "Cannot copy out of meta tensor": the probe clusters values, which a meta tensor lacks."""
    e, y = torch.randn(60, 4), torch.arange(60) % 3
    meta = torch.empty(60, 4, device="meta")
    for args, name in (((meta, e, y), "emb1"), ((e, meta, y), "emb2"),
                       ((e, e, torch.empty(60, dtype=torch.long, device="meta")), "labels")):
        with pytest.raises(TypeError, match=rf"{name} is a meta tensor \(shape only, no data\)"):
            PIDProbe(n_clusters=3)(*args)


def test_losses_take_meta_tensors():
    """The label check read int(y.min()), which a meta tensor (shape-only tracing) does not
    have: DynCIMLoss, stage_loss and SynIBLoss raised "Tensor.item() cannot be called on meta
    tensors". Meta labels now skip the value checks (real ones are still checked)."""
    from fastpid.integrations import SynIBLoss

    logits, y = torch.empty(4, 3, device="meta"), torch.empty(4, dtype=torch.long, device="meta")
    ctrl = ECSAsyncController()
    head = lambda z: z  # noqa: E731
    meta_gate = torch.empty(4, 2, device="meta")
    losses = [DynCIMLoss()(logits, [logits, logits], y, gate=meta_gate),
              # the gate target and a tensor unimodal_scale had still been read by value
              DynCIMLoss()(logits, [logits, logits], y, gate=meta_gate, gate_target=torch.empty(2, device="meta"),
                           unimodal_scale=torch.empty((), device="meta")),
              ctrl.stage_loss(ctrl.current(0), logits, logits, logits, y),
              SynIBLoss(lambda_syn=0.0)(logits, logits, y, lambda a, b: a + b, head, head).loss]
    assert all(loss.is_meta and loss.shape == () for loss in losses)
    with pytest.raises(ValueError, match="is negative"):
        DynCIMLoss()(torch.zeros(2, 3), [torch.zeros(2, 3)], torch.tensor([0, -1]))


def test_numpy_integers_are_taken_as_counts_and_sizes():
    """isinstance(v, int) refused np.int64(50) with "n_samples must be a positive integer, got
    np.int64(50)" (a size from an array's shape or a config); bools are still refused."""
    from fastpid.integrations import DynCIM, SPICECurriculum
    from fastpid.integrations.pacing import PhaseSchedule

    cur = SPICECurriculum(np.int64(50), epochs=np.int64(10))
    assert cur.n_samples == 50 and type(cur.n_samples) is int
    assert DynCIM(np.int64(10), np.int32(2), np.uint8(5)).n_samples == 10
    assert PhaseSchedule(np.int16(4)).epochs == 4
    for bad in (True, 0, 2.0):
        with pytest.raises(ValueError, match="n_samples must be a positive integer"):
            SPICECurriculum(bad, epochs=10)


# ---------------------------------------------------------------- epochs, label ranges, indices, numbers

def test_ecs_epochs_must_increase():
    """A run resumed at its checkpoint's own epoch (or two hooks calling update) recorded the
    probe twice; a negative epoch was taken for the warm-up."""
    e1, e2, y = clouds()
    ctrl = ECSAsyncController(PIDProbe(n_clusters=3), warmup_epochs=0)
    ctrl.update(5, e1, e2, y)
    for bad, match in ((5, "epoch 5 does not come after epoch 5"), (3, "epoch 3 does not come after epoch 5"),
                       (-1, "epoch must be an integer >= 0, got -1"), (1.5, "epoch must be an integer >= 0, got 1.5")):
        with pytest.raises(ValueError, match=match):
            ctrl.update(bad, e1, e2, y)
        with pytest.raises(ValueError, match=match):
            ctrl.step(bad, terms(0.1, 0.1, 0.1), {"synergy": 0.0})
    assert ctrl.history_arrays()["epoch"] == [5]
    ctrl.update(6, e1, e2, y)
    resumed = ECSAsyncController(PIDProbe(n_clusters=3), warmup_epochs=0)
    resumed.load_state_dict(ctrl.state_dict())
    with pytest.raises(ValueError, match="does not come after epoch 6"):
        resumed.update(6, e1, e2, y)


def test_labels_past_the_logits_classes_are_named():
    """A label of C with (B, C) logits was cross-entropy's bare 'IndexError: Target 3 is out of
    bounds' (a device-side assert on a GPU)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 5, generator=g)
    head, fused = torch.nn.Linear(5, 3), torch.nn.Linear(10, 3)
    fusion = lambda a, b: fused(torch.cat([a, b], 1))  # noqa: E731
    y = torch.tensor([0, 1, 2, 3])
    ctrl = ECSAsyncController()
    for loss, name in ((lambda: SynIBLoss()(z, z, y, fusion, head, head), "y"),
                       (lambda: DynCIMLoss()(head(z), [head(z), head(z)], y), "y"),
                       (lambda: ctrl.stage_loss(ctrl.current(0), head(z), head(z), head(z), y), "labels")):
        with pytest.raises(ValueError, match=rf"{name}\[3\] = 3 is not one of the 3 classes"):
            loss()
    assert torch.isfinite(DynCIMLoss()(head(z), [head(z), head(z)], y.clamp_max(2)))


def test_dyncim_loss_inputs_checks_the_indices():
    """A negative index wrapped to the end and a boolean mask was read as indices 0 and 1."""
    d = DynCIM(30, 2, 5)
    for index, error, match in (([-1], ValueError, r"index must lie in \[0, 30\), got values in \[-1, -1\]"),
                                ([30], ValueError, r"index must lie in \[0, 30\)"),
                                (torch.tensor([False, True]), TypeError, "integer sample indices"),
                                (torch.tensor([0.0, 1.0]), TypeError, "integer sample indices"),
                                (torch.zeros(2, 2, dtype=torch.long), ValueError, "1-D vector")):
        with pytest.raises(error, match=match):
            d.loss_inputs(index)
    assert d.loss_inputs([0, 29])["sample_weights"].shape == (2,)
    assert d.loss_inputs([])["sample_weights"].shape == (0,)
    assert d.loss_inputs(np.array([3]))["sample_weights"].shape == (1,)


def test_numbers_from_numpy_and_tensors_are_taken():
    """numpy floats and 0-d tensors (a config's or a schedule's values) were refused with
    messages such as 'drop must be a finite number, got np.float32(0.8)'."""
    assert RootCompetence(np.float32(0.25)).c0 == 0.25
    assert DynCIMLoss(torch.tensor(0.5)).beta == 0.5
    assert ECSAsyncController(drop=np.float32(0.5), eps=np.float64(1e-3)).drop == 0.5
    assert SPICECurriculum(torch.tensor(10), np.int64(5)).n_samples == 10
    assert SynIBLoss(p=np.float32(0.5), lambda_syn=torch.tensor(0.25)).lambda_syn == 0.25
    assert type(SynIBLoss(gate_steps=np.int64(3)).gate_steps) is int
    with pytest.raises(ValueError, match=r"c0 \(the initial competence\) must be in \(0, 1\], got 1.5"):
        RootCompetence(1.5)
    with pytest.raises(ValueError, match="drop must be a finite number"):
        ECSAsyncController(drop=torch.ones(2))
    with pytest.raises(ValueError, match="n_samples must be a positive integer, got tensor"):
        SPICECurriculum(torch.tensor(True), 5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(off_after_epoch=-1), "off_after_epoch must be an epoch >= 0 or None, got -1"),
    (dict(off_after_epoch=2.5), "off_after_epoch must be an epoch >= 0 or None"),
    (dict(off_after_epoch="3"), "off_after_epoch"),
    (dict(gate_lr=0), "gate_lr must be > 0"), (dict(gate_sparsity=-1), "gate_sparsity must be >= 0"),
    (dict(lambda_syn=float("nan")), "lambda_syn must be a finite number"), (dict(seed=1.5), "seed"),
])
def test_synib_checks_every_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SynIBLoss(**kwargs)


def test_probe_density_counts_the_classes_present():
    """Labels {0, 7, 20000}: the warning counted 20,001 classes (0.0006 samples per cell) where
    the probe set holds 3."""
    e1, e2, _ = clouds()
    n = e1.shape[0]
    y = torch.tensor([0, 7, 20000]).repeat(n // 3 + 1)[:n]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PIDProbe(n_clusters=3, min_samples_per_cell=n / 27 - 1)(e1, e2, y)   # 3x3x3 cells: no warning
    with pytest.warns(UserWarning, match=r"over 3x3x3 = 27 joint cells"):
        PIDProbe(n_clusters=3, min_samples_per_cell=n / 27 + 1)(e1, e2, y)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
def test_wide_unsigned_labels_and_indices_are_read(dtype):
    """uint16/32/64 labels failed in every integration with torch's bare NotImplementedError
    ("min_all" not implemented for 'UInt16'); uint8 and signed ones worked."""
    from fastpid.integrations import DynCIMLoss, PIDProbe
    from fastpid.integrations.predictions import as_labels, check_indices

    y = np.array([0, 1, 2, 0, 1, 2] * 10, dtype=dtype)
    e, logits = torch.randn(60, 4, generator=torch.Generator().manual_seed(0)), torch.randn(60, 3)
    probe = PIDProbe(2, 3, min_samples_per_cell=0)
    assert probe(e, e, y).mi == probe(e, e, y.astype(np.int64)).mi
    assert torch.equal(DynCIMLoss()(logits, [logits, logits], y), DynCIMLoss()(logits, [logits, logits], y.astype(int)))
    assert check_indices(np.array([0, 3], dtype=dtype), 5).tolist() == [0, 3]
    if dtype == np.uint64:
        with pytest.raises(ValueError, match=r"y\[1\] = 9223372036854775808 is too large"):
            as_labels(np.array([1, 2 ** 63], dtype=np.uint64))


@pytest.mark.parametrize("noise", [False, True])
def test_ogm_ge_modulates_sparse_gradients(noise):
    """modulate_gradients computed std() of every gradient, which torch has no sparse version
    of: an nn.Embedding(sparse=True) encoder raised, even with noise=False. The gradient stays
    sparse (SparseAdam takes it), its entries scaled, the untouched rows still absent."""
    from fastpid.integrations.ogm_ge import modulate_gradients

    emb, lin = torch.nn.Embedding(100, 8, sparse=True), torch.nn.Linear(4, 8)
    w = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))   # entries of some spread
    ((emb(torch.tensor([1, 2, 3])) * w).sum() + lin(torch.randn(3, 4)).sum()).backward()
    before = emb.weight.grad.coalesce()
    modulate_gradients([emb.parameters(), lin.parameters()], [0.5, 1.0], noise=noise,
                       generator=torch.Generator().manual_seed(0))
    after = emb.weight.grad.coalesce()
    assert after.is_sparse and torch.equal(after.indices(), before.indices())
    if not noise:
        assert torch.equal(after.values(), before.values() * 0.5)
    else:
        assert not torch.equal(after.values(), before.values() * 0.5)
    torch.optim.SparseAdam(list(emb.parameters())).step()


@pytest.fixture
def meta_default_device():
    """torch's default device set elsewhere (LLM code sets "cuda"): "meta" stands in for it on a
    CPU-only machine, as both turn every tensor made without a device into one off the CPU."""
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def test_cpu_inputs_stay_on_the_cpu_under_another_default_device(meta_default_device):
    """Tensors made without a device went to torch's default device and met the CPU inputs:
    the ECS baseline and PIDProbe.shuffled drew permutations there with a CPU generator (on
    CUDA: 'Expected a cuda device type for generator'), SPICESampler too, estimate() refused
    its own jackknife groups ('x1 on cpu ... groups on meta'), local_scores mixed devices, and
    weights(), state dicts and OGM-GE coefficients came back on the default device."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    y = torch.as_tensor((x1 + x2) % 2, device="cpu")
    g = torch.Generator(device="cpu").manual_seed(0)
    e1, e2 = torch.randn(200, 6, generator=g, device="cpu"), torch.randn(200, 5, generator=g, device="cpu")
    p = torch.softmax(torch.randn(200, 2, generator=g, device="cpu"), 1)
    est = fastpid.estimate(torch.as_tensor(x1, device="cpu"), torch.as_tensor(x2, device="cpu"), y, seed=0,
                           n_null=5)
    assert est.synergy.device.type == "cpu" and math.isfinite(float(est.synergy))
    assert math.isfinite(float(fastpid.estimate(x1, x2, y.numpy(), seed=0, n_null=5).synergy))
    metric = fastpid.PIDMetric((3, 3, 2))
    metric.update(x1, x2, y.numpy(), weights=np.ones(200))
    metric.load_state_dict(metric.state_dict())
    assert metric.state_dict()["samples_only"].device.type == "cpu"
    metric.reset()
    metric.update(x1, x2, y.numpy())
    assert math.isfinite(float(metric.estimate(seed=0, n_null=5).synergy))
    probe = PIDProbe(n_clusters=3, estimate=True, estimate_options={"n_null": 5})
    res = probe(e1, e2, y)
    assert set(probe.shuffled(res.codes1, res.codes2, y, 2)) >= {"synergy"}
    assert ECSAsyncController(PIDProbe(n_clusters=3), warmup_epochs=0).update(0, e1, e2, y).probed
    assert local_scores(p, p, y, e1, k=4).synergy.device.type == "cpu"
    cur = SPICECurriculum(200, 9)
    assert cur.weights().device.type == "cpu" and cur.indices().device.type == "cpu"
    cur.update(p, p, p, y)
    cur.load_state_dict(cur.state_dict())
    order = list(iter(SPICESampler(cur, generator=torch.Generator(device="cpu").manual_seed(0))))
    assert sorted(order) == sorted(cur.indices().tolist())
    shards = [list(iter(SPICESampler(cur, num_replicas=2, rank=r))) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(cur.indices().tolist())  # a meta draw indexed garbage
    assert set(probe.shuffled(res.codes1, res.codes2, y, 2, within_class=False)) >= {"synergy"}
    dyncim = DynCIM(200, 2, 5)
    assert dyncim.weights().device.type == "cpu" and dyncim.modality_weights().device.type == "cpu"
    assert ogm_ge_coefficients(np.array([1.0, 2.0])).device.type == "cpu"


def test_index_lists_and_the_gate_target_stay_on_the_cpu_under_another_default_device(meta_default_device):
    """Made without a device, DynCIMLoss's default gate target, DynCIM.update's index and
    loss_inputs' index list went to torch's default device: under a meta default, the loss with
    a gate and both calls raised NotImplementedError on CPU inputs."""
    g = torch.Generator(device="cpu").manual_seed(0)
    n = 12
    p = torch.softmax(torch.randn(n, 3, generator=g, device="cpu"), 1)
    y = torch.randint(0, 3, (n,), generator=g, device="cpu")
    dyn = DynCIM(n, 2, 5)
    dyn.update(p, [p, p], y, index=torch.arange(n, device="cpu"))
    dyn.update(p, [p, p], y, index=np.arange(n))
    inputs = dyn.loss_inputs([0, 1, 2])
    logits = torch.randn(3, 3, generator=g, device="cpu")
    gate = torch.full((3, 2), 0.5, device="cpu")
    loss = DynCIMLoss()(logits, [logits, logits], y[:3], gate=gate, **inputs)
    assert loss.device.type == "cpu" and math.isfinite(float(loss))
    loss = DynCIMLoss()(logits, [logits, logits], y[:3], gate=gate)  # the default (uniform) target
    assert loss.device.type == "cpu" and math.isfinite(float(loss))


@pytest.mark.parametrize("mask", ["zero", "random"])
def test_synib_masks_do_not_follow_the_default_dtype(mask):
    """The masks' uniform draws took torch's default dtype: under a float64 default the same
    seed and the same float32 embeddings gave other masks."""
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    draws = []
    for default in (torch.float32, torch.float64):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(default)
        try:
            loss = SynIBLoss(mask=mask, seed=3)
            draws.append((loss.withhold(z, 1), loss.random_mask(z)))
        finally:
            torch.set_default_dtype(previous)
    assert all(torch.equal(a, b) for a, b in zip(*draws))


def test_logits_must_be_floating_point_tensors():
    """OGM-GE's scores, the DynCIM loss and ECS's stage loss took logits unchecked: numpy ones raised
    "'numpy.ndarray' object has no attribute 'dim'", integer, bool or complex ones torch's
    "softmax_lastdim_kernel_impl not implemented for 'Long'", meta ones (OGM-GE, which reads
    their values) "Tensor.item() cannot be called on meta tensors". Said as SynIB says it."""
    from fastpid.integrations.dyncim_loss import dyncim_loss_terms

    y, good = torch.tensor([0, 1, 0, 1]), torch.randn(4, 2)
    calls = [(lambda l: ogm_ge_scores([good, l], y), r"logits\[1\]"),
             (lambda l: ogm_ge_scores([l, good], y, all_ranks=False), r"logits\[0\]"),
             (lambda l: dyncim_loss_terms(l, [good, good], y), "fused_logits"),
             (lambda l: DynCIMLoss()(good, [good, l], y), r"unimodal_logits\[1\]"),
             (lambda l: ECSAsyncController().stage_loss(Decision(0, "unimodal", False, True), good, good, l, y),
              "logits2")]
    for bad, what in [(np.zeros((4, 2)), "got ndarray"),
                      (torch.zeros(4, 2, dtype=torch.long), "got one of torch.int64"),
                      (torch.zeros(4, 2, dtype=torch.complex64), "got one of torch.complex64"),
                      (torch.zeros(4, 2, dtype=torch.bool), "got one of torch.bool")]:
        for call, name in calls:
            with pytest.raises(TypeError, match=rf"^{name} must be a floating-point torch.Tensor \(B, C\), {what}$"):
                call(bad)
    meta = torch.empty(4, 2, device="meta")
    with pytest.raises(TypeError, match=r"logits\[1\] is a meta tensor \(shape only, no data\)"):
        ogm_ge_scores([good, meta], y)
    assert DynCIMLoss()(meta, [meta, meta], y.to("meta")).is_meta      # shapes only, as before
    assert ogm_ge_scores([good.half(), good.double()], y).dtype == torch.float64
