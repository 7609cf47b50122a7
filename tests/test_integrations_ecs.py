"""ECS-async controller: decisions on scripted PID sequences, snapshots, state, loss."""
from __future__ import annotations

import io
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastpid.integrations import Decision, ECSAsyncController, PIDProbe


def terms(u1, u2, s, r=0.1):
    return {"redundancy": r, "unique1": u1, "unique2": u2, "synergy": s,
            "mi": r + u1 + u2 + s, "mi1": r + u1, "mi2": r + u2, "gap": 0.0}


#: The uncorrected rule (raw synergy, every probe counts), as before the warm-up and baseline.
RAW = dict(warmup_epochs=0, baseline=None, min_score=float("-inf"))


def run(ctrl, seq, baselines=None):
    return [ctrl.step(e, t, None if baselines is None else {"synergy": b})
            for e, (t, b) in enumerate(zip(seq, baselines or [None] * len(seq)))]


def test_pause_and_resume_with_hysteresis():
    ctrl = ECSAsyncController(ratio=3.0, resume_ratio=1.5, eps=1e-12, max_unimodal_epochs=100, **RAW)
    seq = [terms(0.2, 0.2, 0.10), terms(0.7, 0.2, 0.11),    # 3.5 > 3: pause 1
           terms(0.5, 0.2, 0.12), terms(0.35, 0.2, 0.13),   # 2.5, 1.75: still paused
           terms(0.28, 0.2, 0.14),                          # 1.4 < 1.5: resume
           terms(0.1, 0.5, 0.15)]                           # U2/U1 = 5: pause 2
    d = run(ctrl, seq)
    assert [(x.train1, x.train2) for x in d] == [(True, True), (False, True), (False, True),
                                                  (False, True), (True, True), (True, False)]
    assert all(x.stage == "unimodal" and x.probed for x in d)
    assert "resume" in d[4].reason


def test_never_resume_like_the_published_code():
    ctrl = ECSAsyncController(resume_ratio=None, eps=1e-12, max_unimodal_epochs=100, **RAW)
    d = run(ctrl, [terms(0.9, 0.1, 0.1), terms(0.1, 0.1, 0.11), terms(0.1, 0.1, 0.12)])
    assert [(x.train1, x.train2) for x in d] == [(False, True)] * 3


def test_balance_by_mi_proxy():
    ctrl = ECSAsyncController(balance_by="mi", eps=1e-12, max_unimodal_epochs=100, **RAW)
    # Unique terms are balanced, but I(Z2;Y) = 2.1 vs I(Z1;Y) = 0.6: pause modality 2.
    d = ctrl.step(0, terms(0.1, 0.1, 0.1, r=0.5) | {"mi2": 2.1})
    assert (d.train1, d.train2) == (True, False)


class _ScaledLinear(torch.nn.Sequential):
    """A container with a parameter of its own (a Sequential iterated gave its children only)."""

    def __init__(self):
        super().__init__(torch.nn.Linear(3, 2))
        self.scale = torch.nn.Parameter(torch.ones(1))


@pytest.mark.parametrize("given", ["list", "module", "module_dict", "container"])
def test_synergy_drop_switches_and_restores_peak_snapshot(given):
    """Stage 2 starts at the synergy drop from the peak's snapshot, the modules given as a list
    or as one module (which had raised "'Linear' object is not iterable"; a ModuleDict iterated
    its keys; a Sequential with a parameter of its own lost that parameter)."""
    enc = torch.nn.Linear(3, 2)
    whole = {"list": [enc], "module": enc, "module_dict": torch.nn.ModuleDict({"enc": enc}),
             "container": _ScaledLinear()}[given]
    if given == "container":
        enc = whole[0]
    ctrl = ECSAsyncController(drop=0.8, max_unimodal_epochs=100, modules=whole, **RAW)
    with torch.no_grad():
        enc.weight.fill_(1.0)
    ctrl.step(0, terms(0.2, 0.2, 0.30))
    with torch.no_grad():
        enc.weight.fill_(2.0)
    ctrl.step(1, terms(0.2, 0.2, 0.50))     # new peak: snapshot of weight == 2
    with torch.no_grad():
        enc.weight.fill_(3.0)
    d2 = ctrl.step(2, terms(0.2, 0.2, 0.41))  # 0.41 >= 0.8 * 0.5: keep going
    with torch.no_grad():
        enc.weight.fill_(4.0)
    d3 = ctrl.step(3, terms(0.2, 0.2, 0.39))  # 0.39 < 0.4: stage 2
    assert d2.stage == "unimodal" and not d2.restore_snapshot
    assert d3.stage == "joint" and d3.restore_snapshot and d3.train1 and d3.train2
    assert ctrl.peak_epoch == 1 and ctrl.switch_epoch == 3
    if given == "container":
        with torch.no_grad():
            whole.scale.fill_(5.0)  # after the peak: restore() takes it back
    ctrl.restore()
    assert torch.all(enc.weight == 2.0)
    if given == "container":
        assert float(whole.scale) == 1.0
    # Stage 2 is final: later probes are recorded but change nothing.
    d4 = ctrl.step(4, terms(5.0, 0.0, 0.0))
    assert (d4.stage, d4.train1, d4.train2, d4.restore_snapshot) == ("joint", True, True, False)
    assert len(ctrl.history) == 5


def test_min_unimodal_epochs_delays_the_drop_rule():
    ctrl = ECSAsyncController(min_unimodal_epochs=3, max_unimodal_epochs=100, **RAW)
    d = run(ctrl, [terms(0.2, 0.2, 0.5), terms(0.2, 0.2, 0.1), terms(0.2, 0.2, 0.1), terms(0.2, 0.2, 0.1)])
    assert [x.stage for x in d] == ["unimodal"] * 3 + ["joint"]


def test_max_unimodal_epochs_without_probe():
    ctrl = ECSAsyncController(probe_every=4, max_unimodal_epochs=6, **RAW)
    ctrl.step(0, terms(0.2, 0.2, 0.3))
    assert not ctrl.wants_probe(5)
    assert ctrl.update(5).stage == "unimodal"
    d = ctrl.update(6)
    assert d.stage == "joint" and d.restore_snapshot and not d.probed
    with pytest.raises(ValueError, match="probe epoch"):
        ctrl.update(8)


def test_update_probes_real_embeddings():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    centres = torch.randn(3, 4, generator=g) * 5
    emb1 = centres[y] + 0.1 * torch.randn(300, 4, generator=g)
    emb2 = torch.randn(300, 4, generator=g)                  # no label information
    ctrl = ECSAsyncController(PIDProbe(n_clusters=6), eps=1e-3, max_unimodal_epochs=10, warmup_epochs=0)
    d = ctrl.update(0, emb1, emb2, y)
    rec = ctrl.history[0]
    assert rec.terms["mi1"] == pytest.approx(math.log(3), abs=0.02)   # codes determine y
    assert rec.terms["unique1"] > 1.0 and d.probed
    assert (d.train1, d.train2) == (False, True)   # modality 1 dominates: pause it


def test_state_dict_roundtrip_continues_identically():
    seq = [terms(0.9, 0.1, 0.3), terms(0.5, 0.2, 0.5), terms(0.3, 0.25, 0.45), terms(0.3, 0.3, 0.2)]
    a = ECSAsyncController(max_unimodal_epochs=100, modules=[torch.nn.Linear(2, 2)], **RAW)
    run(a, seq[:2])
    b = ECSAsyncController(max_unimodal_epochs=100, modules=[torch.nn.Linear(2, 2)], **RAW)
    b.load_state_dict(a.state_dict())
    for e in (2, 3):
        assert a.step(e, seq[e]) == b.step(e, seq[e])
    assert json.dumps(a.history_arrays()) == json.dumps(b.history_arrays())   # NaN == NaN
    h = a.history_arrays()
    assert h["epoch"] == [0, 1, 2, 3] and h["switch_epoch"] == 3 and h["peak_epoch"] == 1
    assert h["stage"] == ["unimodal"] * 3 + ["joint"]


def test_stage_loss():
    torch.manual_seed(0)
    f, l1, l2 = (torch.randn(8, 5, requires_grad=True) for _ in range(3))
    y = torch.randint(0, 5, (8,))
    ctrl = ECSAsyncController(fused_weight=1.0, unimodal_weight=0.6)
    ce = lambda z: F.cross_entropy(z, y)  # noqa: E731
    joint = ctrl.stage_loss(Decision(0, "joint", True, True), f, l1, l2, y)
    assert joint.item() == pytest.approx((ce(f) + 0.6 * (ce(l1) + ce(l2))).item())
    only2 = ctrl.stage_loss(Decision(0, "unimodal", False, True), f, l1, l2, y)
    only2.backward()
    assert only2.item() == pytest.approx(ce(l2).item())
    assert l1.grad is None and f.grad is None and l2.grad is not None
    both = ctrl.stage_loss(Decision(0, "unimodal", True, True), f, l1, l2, y)
    assert both.item() == pytest.approx((ce(l1) + ce(l2)).item())
    # A hand-built decision that trains neither modality gave the int 0 (no .backward()).
    with pytest.raises(ValueError, match="trains neither modality"):
        ctrl.stage_loss(Decision(0, "unimodal", False, False), f, l1, l2, y)

    # Labels are checked against each unimodal head's classes too, not only the fused ones'
    # (a bare IndexError on the CPU, a device-side assert on a GPU).
    for d in (Decision(0, "joint", True, True), Decision(0, "unimodal", True, False)):
        with pytest.raises(ValueError, match=r"labels \(for logits1\)\[\d+\] = 4 is not one of the 3 classes"):
            ctrl.stage_loss(d, f, l1[:, :3], l2, torch.full((8,), 4))
    with pytest.raises(ValueError, match="logits2 has 7 rows but fused_logits has 8"):
        ctrl.stage_loss(Decision(0, "joint", True, True), f, l1, l2[:7], y)
    # a head that stage 1 does not train is not read
    alone = ctrl.stage_loss(Decision(0, "unimodal", False, True), f, l1[:, :3], l2, torch.full((8,), 4))
    assert alone.item() == pytest.approx(F.cross_entropy(l2, torch.full((8,), 4)).item())


@pytest.mark.parametrize("kwargs", [dict(ratio=1.0), dict(resume_ratio=4.0), dict(drop=1.2),
                                    dict(probe_every=0), dict(balance_by="x"), dict(max_unimodal_epochs=-1),
                                    dict(warmup_epochs=-1), dict(baseline="shuffle"),
                                    dict(baseline_permutations=0)])
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError):
        ECSAsyncController(**kwargs)


def test_bad_terms_raise():
    ctrl = ECSAsyncController()
    with pytest.raises(ValueError, match="missing"):
        ctrl.step(0, {"unique1": 0.1})
    with pytest.raises(TypeError):
        ctrl.step(0, [0.1, 0.2])
    with pytest.raises(RuntimeError, match="no modules"):
        ctrl.restore()
    # A string term had been parsed as a number (float("0.1")), and a negative epoch taken.
    with pytest.raises(TypeError, match=r"the PID term 'unique1' must be a real number, got str \('0.1'\)"):
        ctrl.step(0, dict(terms(0.1, 0.1, 0.2), unique1="0.1"))
    with pytest.raises(TypeError, match=r"the baseline's 'synergy' must be a real number, got str"):
        ctrl.step(0, terms(0.1, 0.1, 0.2), {"synergy": "0.0"})
    with pytest.raises(ValueError, match="epoch must be an integer >= 0, got -5"):
        ctrl.current(-5)
    assert not ctrl.history
    assert ctrl.step(0, {k: np.float32(v) for k, v in terms(0.1, 0.1, 0.2).items()}, {"synergy": torch.tensor(0.0)})


def test_infinite_negative_and_incomplete_terms_leave_no_trace():
    """An infinite synergy became the peak with a NaN drop threshold (the drop rule never
    fired again); unique terms a little below 0 gave a negative ratio (the dominant modality
    never paused) or divided by 0; and a step that raised on missing mi1/mi2 had already set
    the peak and taken the snapshot of that epoch."""
    ctrl = ECSAsyncController(**RAW, max_unimodal_epochs=100)
    with pytest.raises(ValueError, match="NaN or infinite entries \\['synergy', 'mi'\\]"):
        ctrl.step(0, terms(0.1, 0.1, float("inf")))
    with pytest.raises(ValueError, match="the baseline's terms have NaN or infinite"):
        ECSAsyncController(warmup_epochs=0, max_unimodal_epochs=100).step(0, terms(0.1, 0.1, 0.3),
                                                                          {"synergy": float("-inf")})
    assert ctrl.peak_epoch is None and not ctrl.history
    for u1, u2, paused in ((-0.002, 0.5, 2), (0.5, -0.002, 1), (0.5, -1e-12, 1)):
        d = ECSAsyncController(**RAW, eps=1e-12, max_unimodal_epochs=100).step(0, terms(u1, u2, 0.3))
        assert (d.train1, d.train2) == (paused == 2, paused == 1), (u1, u2, d.reason)
    lin = torch.nn.Linear(1, 1)
    ctrl = ECSAsyncController(**RAW, balance_by="mi", modules=[lin], max_unimodal_epochs=100)
    bare = {"unique1": 0.1, "unique2": 0.1, "synergy": 0.9}
    with pytest.raises(ValueError, match="needs 'mi1' and 'mi2'"):
        ctrl.step(7, bare)
    assert ctrl.peak_epoch is None and ctrl.peak_score is None and ctrl.snapshot is None


# ----------------------------------------------------------------- warm-up and baseline
def test_warmup_keeps_untrained_epochs_out_of_the_peak():
    """Raw synergy that is largest on the untrained model (epochs 0-1) must not become the
    peak during the warm-up; without warm-up it does, and stage 2 starts at once."""
    seq = [terms(0.2, 0.2, s) for s in (0.9, 0.7, 0.3, 0.4, 0.5, 0.35)]
    enc = torch.nn.Linear(2, 2)
    ctrl = ECSAsyncController(**(RAW | dict(warmup_epochs=2)), max_unimodal_epochs=100, modules=[enc])
    d = []
    for e, t in enumerate(seq):
        with torch.no_grad():
            enc.weight.fill_(float(e))
        d.append(ctrl.step(e, t))
    assert [x.counted for x in d] == [False, False, True, True, True, True]
    assert "warm-up" in d[0].reason and "warm-up" not in d[2].reason
    assert [x.stage for x in d] == ["unimodal"] * 5 + ["joint"]       # 0.35 < 0.8 * 0.5
    assert ctrl.peak_epoch == 4 and ctrl.switch_epoch == 5 and d[5].restore_snapshot
    ctrl.restore()
    assert torch.all(enc.weight == 4.0)
    old = ECSAsyncController(**RAW, max_unimodal_epochs=100)
    run(old, seq)
    assert (old.peak_epoch, old.switch_epoch) == (0, 1)                 # 0.7 < 0.8 * 0.9


def test_baseline_is_subtracted_before_synergy_counts():
    """Raw synergy falls monotonically, but the bias floor falls faster: the score
    (synergy - baseline) peaks at epoch 3, and the drop rule fires on the score."""
    seq = [terms(0.2, 0.2, s) for s in (0.9, 0.8, 0.7, 0.65, 0.6)]
    base = [0.9, 0.75, 0.55, 0.45, 0.55]                 # scores 0, 0.05, 0.15, 0.2, 0.05
    ctrl = ECSAsyncController(warmup_epochs=0, baseline="labels", min_score=0.05, max_unimodal_epochs=100)
    d = run(ctrl, seq, base)
    h = ctrl.history_arrays()
    assert h["score"] == pytest.approx([0.0, 0.05, 0.15, 0.2, 0.05])
    assert h["synergy_baseline"] == pytest.approx(base)
    assert ctrl.peak_epoch == 3 and ctrl.peak_score == pytest.approx(0.2)
    assert [x.stage for x in d] == ["unimodal"] * 4 + ["joint"] and d[4].restore_snapshot
    raw = ECSAsyncController(**RAW, max_unimodal_epochs=100)
    run(raw, seq)
    assert (raw.peak_epoch, raw.switch_epoch) == (0, 2)                 # 0.7 < 0.8 * 0.9
    # The baselines survive a state round trip; stage 2 computes none and needs none.
    b = ECSAsyncController(warmup_epochs=0, baseline="labels", max_unimodal_epochs=100)
    b.load_state_dict(ctrl.state_dict())
    assert b.history_arrays()["synergy_baseline"] == h["synergy_baseline"]
    assert b.step(5, terms(0.2, 0.2, 0.1)).stage == "joint"


def test_no_score_above_min_score_switches_without_restore():
    ctrl = ECSAsyncController(warmup_epochs=1, min_score=0.05, max_unimodal_epochs=4,
                              modules=[torch.nn.Linear(2, 2)])
    d = run(ctrl, [terms(0.2, 0.2, 0.5)] * 5, [0.2, 0.48, 0.46, 0.5, 0.49])   # only epoch 0 is > 0.05
    assert ctrl.peak_epoch is None and ctrl.snapshot is None
    assert [x.stage for x in d] == ["unimodal"] * 4 + ["joint"]
    assert not d[4].restore_snapshot and "max_unimodal_epochs" in d[4].reason
    with pytest.raises(RuntimeError, match="no snapshot"):
        ctrl.restore()


def test_baseline_argument_must_match_the_configuration():
    with pytest.raises(ValueError, match="pass the permutation baseline"):
        ECSAsyncController().step(0, terms(0.2, 0.2, 0.3))
    with pytest.raises(ValueError, match="baseline=None"):
        ECSAsyncController(baseline=None).step(0, terms(0.2, 0.2, 0.3), {"synergy": 0.1})
    with pytest.raises(ValueError, match="'synergy'"):
        ECSAsyncController().step(0, terms(0.2, 0.2, 0.3), {"mi": 0.1})


def _xor_and_noise(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    c1 = torch.randint(0, 4, (n,), generator=g)
    centres = torch.randn(4, 3, generator=g) * 6
    jitter = lambda: 0.05 * torch.randn(n, 3, generator=g)  # noqa: E731
    xor = (centres[c1] + jitter(), centres[c1 ^ y] + jitter())   # each alone independent of y
    noise = (torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g))
    return y, xor, noise


def test_within_class_baseline_removes_spurious_but_keeps_real_synergy():
    """Random embeddings: the plug-in synergy is large and all of it is bias, so the score is
    about 0. XOR embeddings: log 2 nats of genuine synergy survive the baseline."""
    y, xor, noise = _xor_and_noise()
    scores = {}
    for name, (e1, e2) in (("xor", xor), ("noise", noise)):
        ctrl = ECSAsyncController(PIDProbe(n_clusters=4), warmup_epochs=0, baseline_permutations=4)
        ctrl.update(0, e1, e2, y)
        scores[name] = (ctrl.history[0].terms["synergy"], ctrl.history[0].score)
    assert scores["xor"][0] == pytest.approx(math.log(2), abs=0.02)
    assert scores["xor"][1] > 0.6
    y10 = torch.randint(0, 10, (300,), generator=torch.Generator().manual_seed(1))
    ctrl = ECSAsyncController(PIDProbe(n_clusters=10), warmup_epochs=0)
    ctrl.update(0, noise[0][:300], noise[1][:300], y10)
    rec = ctrl.history[0]
    assert rec.terms["synergy"] > 0.5 and abs(rec.score) < 0.1


def test_shuffled_baselines():
    y, (e1, e2), _ = _xor_and_noise()
    probe = PIDProbe(n_clusters=4)
    res = probe(e1, e2, y)
    wc = probe.shuffled(res.codes1, res.codes2, y, 3, seed=5)
    # Within-class permutation keeps the (code_m, y) pairs: the unimodal MIs are unchanged.
    assert wc["mi1"] == pytest.approx(res.mi1, abs=1e-9) and wc["mi2"] == pytest.approx(res.mi2, abs=1e-9)
    assert wc["synergy"] < 0.05
    assert wc == probe.shuffled(res.codes1, res.codes2, y, 3, seed=5)       # seeded
    lab = probe.shuffled(res.codes1, res.codes2, y, 3, seed=5, within_class=False)
    assert lab["mi"] < 0.05                                                   # labels carry nothing
    with pytest.raises(ValueError, match="n_permutations"):
        probe.shuffled(res.codes1, res.codes2, y, 0)
    with pytest.raises(ValueError, match="1-D of one length"):
        probe.shuffled(res.codes1, res.codes2[:-1], y, 1)


def probe_set(n=60):
    """Random embeddings (n, 4) of two modalities and labels in 0..2."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_shuffled_baselines_carry_their_standard_errors(monkeypatch):
    """The baseline's mean terms came with no uncertainty (its own SE, 0.006-0.011 nats on the
    digits probes, is what a score near min_score is worth). Each "<term>_se" is the sample SD
    of the permutations' terms over sqrt(n), the terms recorded as fastpid.pid returns them."""
    import fastpid.integrations.probe as probe_module

    y, (e1, e2), _ = _xor_and_noise()
    probe = PIDProbe(n_clusters=4)
    res = probe(e1, e2, y)
    solved, pid = [], probe_module.fastpid.pid

    def recording(*args, **kwargs):
        out = pid(*args, **kwargs)
        solved.append(out)
        return out

    monkeypatch.setattr(probe_module.fastpid, "pid", recording)
    wc = probe.shuffled(res.codes1, res.codes2, y, 5, seed=5)
    assert len(solved) == 5
    for t in ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2"):
        draws = [float(getattr(r, t)) for r in solved]
        assert wc[t] == pytest.approx(np.mean(draws), abs=1e-15)
        assert wc[f"{t}_se"] == pytest.approx(np.std(draws, ddof=1) / math.sqrt(5), rel=1e-12, abs=1e-15), t
    assert wc["synergy_se"] > 0 and "gap_se" not in wc
    one = probe.shuffled(res.codes1, res.codes2, y, 1, seed=5)
    assert "synergy_se" not in one and one == probe.shuffled(res.codes1, res.codes2, y, 1, seed=5)  # no spread


def test_the_score_carries_the_baselines_standard_error():
    """history_arrays() had the score and the baseline without the baseline's error, and the
    reason for stage 2 compared a bare score with the threshold."""
    y, (e1, e2), _ = _xor_and_noise()
    probe = PIDProbe(n_clusters=4)
    ctrl = ECSAsyncController(probe, warmup_epochs=0, baseline_permutations=3, min_score=-1.0, drop=0.999)
    for epoch in range(3):
        ctrl.update(epoch, e1, e2, y)
    h = ctrl.history_arrays()
    res = probe(e1, e2, y)
    for epoch in range(3):
        base = probe.shuffled(res.codes1, res.codes2, y, 3, seed=epoch)
        assert h["synergy_baseline_se"][epoch] == pytest.approx(base["synergy_se"], rel=1e-12)
    switch = [r.decision for r in ctrl.history if r.decision.reason.startswith("stage 2: synergy score")]
    se = h["synergy_baseline_se"][switch[0].epoch]
    assert f"(baseline's standard error {se:.2g}) < " in switch[0].reason
    # Without a baseline there is none to carry.
    raw = ECSAsyncController(warmup_epochs=0, baseline=None, min_score=float("-inf"))
    raw.step(0, terms(0.2, 0.2, 0.3))
    assert math.isnan(raw.history_arrays()["synergy_baseline_se"][0])
    with pytest.raises(ValueError, match=r"the baseline's synergy_se must be >= 0 and finite, or NaN, got -0.1"):
        ECSAsyncController(warmup_epochs=0).step(0, terms(0.2, 0.2, 0.3), {"synergy": 0.0, "synergy_se": -0.1})


def test_a_pause_that_leaves_only_an_uninformative_modality_is_said(recwarn):
    """A collapsed modality 2 (I(Z2;Y) = 0) made modality 1 look dominant: the controller paused
    the only informative encoder for the rest of stage 1 without a word."""
    ctrl = ECSAsyncController(**RAW)
    collapsed = terms(0.5, 0.0, 0.05, r=0.0)
    assert collapsed["mi2"] == 0.0
    with pytest.warns(UserWarning, match=r"epoch 0 pauses modality 1, leaving only modality 2 training, whose probe "
                                         r"codes carry I\(Z2;Y\) = 0 nats \(<= eps = 0.001\)"):
        d = ctrl.step(0, collapsed)
    assert d.train2 and not d.train1
    ctrl.step(1, collapsed)                                   # once
    resumed = ECSAsyncController(**RAW)                       # and once in a run resumed from a checkpoint
    resumed.load_state_dict(ctrl.state_dict())
    recwarn.clear()
    resumed.step(2, terms(0.0, 0.5, 0.05, r=0.0))             # pauses modality 2, leaving collapsed modality 1
    assert resumed.paused == 2 and not [w for w in recwarn if "pauses modality" in str(w.message)]
    informative = ECSAsyncController(**RAW)
    recwarn.clear()
    informative.step(0, terms(0.5, 0.0, 0.05, r=0.1))        # modality 2 carries the redundancy
    assert not [w for w in recwarn if "pauses modality" in str(w.message)]
    # raised as an error, the warning comes after the step is recorded (it had left the pause
    # set and the epoch unrecorded; the retried step then said "modality 1 paused")
    strict = ECSAsyncController(**RAW)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="epoch 0 pauses modality 1"):
            strict.step(0, collapsed)
    assert strict.paused == 1 and [r.epoch for r in strict.history] == [0]
    assert strict.history[0].decision.reason.endswith("pause modality 1")


def test_load_state_dict_refuses_a_dict_of_another_kind():
    """A model's state_dict given by mistake raised KeyError: 'history'."""
    ctrl = ECSAsyncController(modules=[torch.nn.Linear(2, 2)])
    not_a_state = (r"state is not an ECSAsyncController.state_dict\(\) \(missing stage, .*history\); "
                   r"got OrderedDict with keys \['bias', 'weight'\]")
    with pytest.raises(ValueError, match=not_a_state):
        ctrl.load_state_dict(torch.nn.Linear(2, 2).state_dict())
    with pytest.raises(ValueError, match="got list"):
        ctrl.load_state_dict([])
    assert ctrl.history == [] and ctrl.snapshot is None


def test_load_state_dict_rejects_a_snapshot_of_other_modules():
    """load_state_dict took a snapshot of 4 modules (encoders and heads) into a controller with
    only the 2 encoders registered, and restore() then loaded the first 2 (zip): a head set to
    7.0 stayed 7.0, with no error. Loading must check the count, the keys and the shapes, name
    what differs, and leave the controller as it was."""
    e1, e2, y = probe_set()
    kw = dict(warmup_epochs=0, min_score=-float("inf"))
    mods = [torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)]
    saved = ECSAsyncController(PIDProbe(2, 3), modules=mods, **kw)
    saved.update(0, e1, e2, y)
    state = saved.state_dict()
    for modules, match in ((mods[:2], "holds 4 modules but 2 are registered"),
                           (mods[:3] + [torch.nn.Linear(4, 5)], r"module 3 \(Linear\) has other shapes: weight: "
                                                                r"\(3, 4\) saved, \(5, 4\) registered"),
                           (mods[:3] + [torch.nn.Linear(4, 3, bias=False)], r"module 3 .* unexpected keys \['bias'\]")):
        ctrl = ECSAsyncController(PIDProbe(2, 3), modules=modules, **kw)
        with pytest.raises(ValueError, match=match):
            ctrl.load_state_dict(state)
        assert ctrl.snapshot is None and ctrl.history == []
    ctrl = ECSAsyncController(PIDProbe(2, 3), modules=mods, **kw)
    ctrl.load_state_dict(state)
    with torch.no_grad():
        mods[2].weight.fill_(7.0)
    ctrl.restore()
    assert torch.equal(mods[2].weight, saved.snapshot[2]["weight"])


def test_snapshots_of_modules_with_extra_state():
    """A registered module whose state dict holds more than tensors (SynIBLoss keeps its
    generator's state as extra state, a dict) failed the snapshot (AttributeError: 'dict'
    object has no attribute 'detach') after setting the peak, leaving a peak without a
    snapshot, and failed load_state_dict's check of it."""
    from fastpid.integrations import SynIBLoss

    loss, enc = SynIBLoss(), torch.nn.Linear(3, 2)
    assert not isinstance(loss.state_dict()["_extra_state"], torch.Tensor)
    ctrl = ECSAsyncController(max_unimodal_epochs=100, modules=[enc, loss], **RAW)
    with torch.no_grad():
        enc.weight.fill_(2.0)
    ctrl.step(0, terms(0.2, 0.2, 0.50))
    assert ctrl.peak_epoch == 0 and ctrl.snapshot is not None
    fresh = ECSAsyncController(max_unimodal_epochs=100, modules=[enc, loss], **RAW)
    fresh.load_state_dict(ctrl.state_dict())
    with torch.no_grad():
        enc.weight.fill_(5.0)
    fresh.restore()
    assert torch.all(enc.weight == 2.0)

    class Broken(torch.nn.Module):  # a state dict that cannot be copied
        def state_dict(self, *args, **kwargs):
            raise RuntimeError("no state")

    ctrl = ECSAsyncController(max_unimodal_epochs=100, modules=[Broken()], **RAW)
    with pytest.raises(RuntimeError, match="no state"):
        ctrl.step(0, terms(0.2, 0.2, 0.50))
    assert ctrl.peak_epoch is None and ctrl.snapshot is None


@pytest.mark.parametrize("sized_at_peak", [True, False])
def test_snapshot_of_a_loss_sized_on_first_use_loads_in_either_order(sized_at_peak):
    """SynIBLoss sizes its running statistics on first use, and to a checkpoint's on loading.
    The snapshot's check refused them: a controller loaded before the loss saw (8,) saved and
    (0,) registered; a peak taken before the loss's first batch, loaded after the loss, (0,)
    saved and (8,) registered. Either order loads, and restore() puts back the peak's state."""
    from fastpid.integrations import SynIBLoss

    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 2
    heads = torch.nn.Linear(8, 2), torch.nn.Linear(8, 2)
    fusion = lambda a, b: heads[0](a) + heads[1](b)  # noqa: E731

    def run():
        enc, loss = torch.nn.Linear(3, 2), SynIBLoss(mask="noise")
        return enc, loss, ECSAsyncController(max_unimodal_epochs=100, modules=[enc, loss], **RAW)

    enc, loss, ctrl = run()
    if sized_at_peak:
        loss(z, z, y, fusion, *heads)
    ctrl.step(0, terms(0.2, 0.2, 0.50))
    loss(z + 1, z, y, fusion, *heads)
    state = {"ctrl": ctrl.state_dict(), "loss": loss.state_dict()}
    peak = ctrl.snapshot[1]["running_mean1"]
    assert peak.shape == ((8,) if sized_at_peak else (0,))
    for controller_first in (True, False):
        enc2, loss2, ctrl2 = run()
        if controller_first:
            ctrl2.load_state_dict(state["ctrl"])
        loss2.load_state_dict(state["loss"])
        if not controller_first:
            ctrl2.load_state_dict(state["ctrl"])
        assert loss2.running_mean1.shape == (8,)
        ctrl2.restore()
        assert torch.equal(loss2.running_mean1, peak)
    bad = {**state["ctrl"], "snapshot": [state["ctrl"]["snapshot"][0], {**state["ctrl"]["snapshot"][1], "extra": 1}]}
    with pytest.raises(ValueError, match=r"module 1 \(SynIBLoss\) has unexpected keys \['extra'\]"):
        run()[2].load_state_dict(bad)


def test_snapshot_loads_into_lazy_modules_not_yet_materialised():
    """A resumed run may load the controller before its lazy layers see a batch: the check
    read the shapes of uninitialised parameters (RuntimeError); loading sets them."""
    model = torch.nn.Sequential(torch.nn.LazyLinear(3))
    model(torch.ones(2, 5))
    ctrl = ECSAsyncController(max_unimodal_epochs=100, modules=[model], **RAW)
    ctrl.step(0, terms(0.2, 0.2, 0.50))
    fresh = torch.nn.Sequential(torch.nn.LazyLinear(3))
    resumed = ECSAsyncController(max_unimodal_epochs=100, modules=[fresh], **RAW)
    resumed.load_state_dict(ctrl.state_dict())
    resumed.restore()
    assert torch.equal(fresh[0].weight, model[0].weight)
    # A lazy layer that has loaded another state (7 features, not 5) keeps its class until
    # its first forward: its shapes are checked, not skipped (restore() had failed late).
    other = torch.nn.Sequential(torch.nn.LazyLinear(3))
    other.load_state_dict(torch.nn.Sequential(torch.nn.Linear(7, 3)).state_dict())
    assert isinstance(other[0], torch.nn.LazyLinear)
    with pytest.raises(ValueError, match=r"weight: \(3, 5\) saved, \(3, 7\) registered"):
        ECSAsyncController(max_unimodal_epochs=100, modules=[other], **RAW).load_state_dict(ctrl.state_dict())


@pytest.mark.parametrize("rule", ["baseline", "test"])
@pytest.mark.parametrize("epochs", [np.arange(2), torch.arange(2)], ids=["numpy", "tensor"])
def test_update_takes_numpy_and_tensor_epochs(rule, epochs):
    """update(epoch) passed the epoch on as given: a numpy integer broke the baseline's seed
    (torch.Generator().manual_seed(baseline_seed + epoch): TypeError), a 0-d tensor too
    (RuntimeError), and with synergy_rule="test" the history kept them: numpy integers made
    torch.load(..., weights_only=True) of the state fail, tensors stayed tensors. Epochs are
    Python ints now."""
    e1, e2, y = probe_set()
    ctrl = ECSAsyncController(PIDProbe(2, 3), synergy_rule=rule)
    for epoch in epochs:
        ctrl.update(epoch, e1, e2, y)
    buf = io.BytesIO()
    torch.save(ctrl.state_dict(), buf)
    buf.seek(0)
    history = torch.load(buf, weights_only=True)["history"]
    assert [(type(h["epoch"]), type(h["decision"]["epoch"])) for h in history] == [(int, int)] * 2


def test_estimate_error_in_update_raises_and_records_nothing(monkeypatch):
    """With synergy_rule="test" update() runs the estimate inside step()'s error sharing (so
    that under torch.distributed rank 0's error raises on every rank); alone, it raises as is."""
    e1, e2, y = probe_set()
    ctrl = ECSAsyncController(PIDProbe(2, 3), synergy_rule="test", warmup_epochs=0)

    def fail(*args, **kwargs):
        raise ValueError("estimate failed")

    monkeypatch.setattr(ctrl.probe, "estimated", fail)
    with pytest.raises(ValueError, match="estimate failed"):
        ctrl.update(0, e1, e2, y)
    assert ctrl.history == []
    monkeypatch.undo()
    assert ctrl.update(0, e1, e2, y).probed and ctrl.history[0].test is not None


def test_load_state_dict_refuses_a_history_of_another_synergy_rule():
    """A history scored by the baseline rule (raw synergy peaks) loaded into a controller with
    synergy_rule='test', whose scores are corrected synergies: a peak of 1.35 against a score
    of 0.2 switched to stage 2 at once. The rule is now checked, and the controller left as it was."""
    saved = ECSAsyncController(warmup_epochs=0, baseline=None)
    for epoch, s in enumerate([1.30, 1.35]):
        saved.step(epoch, {"unique1": 0.5, "unique2": 0.5, "synergy": s})
    state = saved.state_dict()
    ctrl = ECSAsyncController(warmup_epochs=0, synergy_rule="test")
    with pytest.raises(ValueError, match="scored with synergy_rule='baseline', but this controller uses 'test'"):
        ctrl.load_state_dict(state)
    assert ctrl.history == [] and ctrl.peak_score is None
    same = ECSAsyncController(warmup_epochs=0, baseline=None)
    same.load_state_dict(state)
    assert same.peak_score == saved.peak_score and len(same.history) == 2


def test_load_state_dict_refuses_a_history_scored_against_another_baseline():
    """Raw synergies (baseline=None, peak 1.43) loaded into a controller whose scores are less
    a permutation baseline: the first score switched to stage 2 against the raw peak."""
    saved = ECSAsyncController(warmup_epochs=0, baseline=None, min_score=-math.inf)
    saved.step(0, {"unique1": 0.5, "unique2": 0.5, "synergy": 1.43})
    state = saved.state_dict()
    ctrl = ECSAsyncController(warmup_epochs=0)
    with pytest.raises(ValueError, match="scored against baseline=None, but this controller uses "
                                         "baseline='within_class'"):
        ctrl.load_state_dict(state)
    assert ctrl.history == [] and ctrl.peak_score is None
    del state["baseline"]  # a state saved before the baseline was: loaded as it was
    ctrl.load_state_dict(state)
    assert ctrl.peak_score == saved.peak_score
    # under the test rule the baseline is not used, and not compared
    tested = ECSAsyncController(warmup_epochs=0, synergy_rule="test").state_dict()
    ECSAsyncController(warmup_epochs=0, synergy_rule="test", baseline=None).load_state_dict(tested)


def test_baseline_seed_is_checked_when_built():
    """shuffled() takes seeds in [0, 2**64 - 1]: a baseline_seed of -1 failed at the first
    probe; the largest one wraps instead of overflowing at baseline_seed + epoch."""
    with pytest.raises(ValueError, match=r"baseline_seed must be an integer in \[0, 2\*\*64 - 1\], got -1"):
        ECSAsyncController(baseline_seed=-1)
    ECSAsyncController(baseline_seed=2 ** 64 - 1)


def test_a_run_resumed_within_a_probed_epoch_takes_its_decision_from_current():
    """update(e) refuses a probed epoch twice; a state saved after it, loaded within epoch e,
    gives that epoch's decision through current(e) (the README's checkpoint paragraph)."""
    for seq in ([terms(0.2, 0.2, 0.5), terms(0.9, 0.1, 0.5)],      # modality 1 paused at epoch 1
                [terms(0.2, 0.2, 0.5), terms(0.2, 0.2, 0.1)]):     # stage 2 at epoch 1
        ctrl = ECSAsyncController(ratio=2.0, max_unimodal_epochs=100, **RAW)
        decision = run(ctrl, seq)[-1]
        resumed = ECSAsyncController(ratio=2.0, max_unimodal_epochs=100, **RAW)
        resumed.load_state_dict(ctrl.state_dict())
        with pytest.raises(ValueError, match="does not come after epoch 1"):
            resumed.step(1, seq[-1])
        again = resumed.current(1)
        assert (again.epoch, again.stage, again.train1, again.train2) == \
            (decision.epoch, decision.stage, decision.train1, decision.train2)
    assert decision.stage == "joint"


def test_stage_loss_refuses_what_is_not_a_decision():
    ctrl = ECSAsyncController()
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(TypeError, match="decision must be the Decision that update"):
        ctrl.stage_loss(None, logits, logits, logits, y)
    assert ctrl.stage_loss(ctrl.current(0), logits, logits, logits, y).dim() == 0


def test_a_pause_that_leaves_only_a_noise_modality_is_said():
    """A pure-noise modality 2 keeps ~0.17 nats of plug-in I(Z2;Y) (20 codes, 10 classes, 600
    samples), above eps, so its pause of the informative modality 1 went unsaid: with the
    probe's codes the check is a label-permutation test of I(Z2;Y)."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (600,), generator=g)
    informative = torch.nn.functional.one_hot(y, 10).double() + 0.3 * torch.randn(600, 10, generator=g,
                                                                                   dtype=torch.float64)
    noise = torch.randn(600, 10, generator=g, dtype=torch.float64)
    ctrl = ECSAsyncController(**RAW)
    with pytest.warns(UserWarning, match=r"epoch 0 pauses modality 1, leaving only modality 2 training, whose probe "
                                         r"codes carry I\(Z2;Y\) = 0\.\d+ nats \(no more than with shuffled labels "
                                         r"\(p = 0\.\d+ over 99 label permutations\)\)"):
        d = ctrl.update(0, informative, noise, y)
    assert d.train2 and not d.train1 and ctrl.history[0].terms["mi2"] > 0.1  # far above eps
    # A weaker modality that does inform (a noisy view of the label): paused alone, no warning.
    weaker = torch.nn.functional.one_hot(y, 10).double() + 0.8 * torch.randn(600, 10, generator=g,
                                                                            dtype=torch.float64)
    other = ECSAsyncController(**RAW)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = other.update(0, informative, weaker, y)
    assert d.train2 and not d.train1 and not [w for w in caught if "pauses modality" in str(w.message)]


def test_the_independence_check_holds_its_level():
    """The label-permutation p-value behind the uninformative-modality warning: about uniform for
    codes independent of the labels (rejections at 0.05 within a 95 % binomial range of 200
    draws: 4-17), and at its floor, 1/100, for codes that inform."""
    from fastpid.integrations.ecs_async import _independence_p

    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 10, (600,), generator=g)
    p = [_independence_p(torch.randint(0, 20, (600,), generator=g), y, seed) for seed in range(200)]
    assert 4 <= sum(v <= 0.05 for v in p) <= 17 and all(0.01 <= v <= 1.0 for v in p)
    assert _independence_p(2 * y + torch.randint(0, 2, (600,), generator=g), y, 0) == 0.01


def test_the_independence_check_gives_way_where_it_cannot_run():
    """The check only warns, but numpy codes or a -1 'no cluster' id in a ProbeResult made step()
    raise (AttributeError, bincount of a negative) on every rank. It falls back to the eps rule."""
    from fastpid.integrations import ProbeResult

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    for codes2 in (rng.integers(0, 4, 60), np.r_[-1, rng.integers(0, 4, 59)]):
        t = terms(0.5, 0.0, 0.05, r=0.1)
        res = ProbeResult(**{k: t[k] for k in ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2",
                                               "gap")}, codes1=y.copy(), codes2=codes2, labels=y)
        d = ECSAsyncController(**RAW).step(0, res)
        assert d.train2 and not d.train1


def test_synergy_test_values_are_numbers_as_the_terms_are():
    """float(v) had parsed the strings {"synergy": "0.3", "p_value": "0.01"} and taken bools,
    where the PID terms refuse both."""
    ctrl = ECSAsyncController(**RAW, synergy_rule="test")
    t = terms(0.1, 0.1, 0.2)
    with pytest.raises(TypeError, match=r"the synergy test's 'synergy' must be a real number, got str \('0.3'\)"):
        ctrl.step(0, t, test={"synergy": "0.3", "p_value": "0.01"})
    with pytest.raises(TypeError, match=r"the synergy test's 'p_value' must be a real number, got a bool \(True\)"):
        ctrl.step(0, t, test={"synergy": 0.3, "p_value": True})
    with pytest.raises(TypeError, match=r"the synergy test's 'ci_low' must be a real number, got str"):
        ctrl.step(0, t, test={"synergy": 0.3, "p_value": 0.01, "ci_low": "0.1"})
    for batch in (np.array([0.3, 0.2]), [0.3, 0.2], np.array([])):
        with pytest.raises(ValueError, match=r"one number per key \(one problem, not a batch\)"):
            ctrl.step(0, t, test={"synergy": batch, "p_value": 0.01})
    assert not ctrl.history
    # one problem's arrays, numpy's as torch's (a grouped estimate of one group)
    one = ECSAsyncController(**RAW, synergy_rule="test")
    assert one.step(0, t, test={"synergy": np.array([0.25]), "p_value": np.array([0.01])}).synergistic
    d = ctrl.step(0, t, test={"synergy": np.float32(0.25), "p_value": torch.tensor(0.01), "ci_low": np.array(0.1)})
    assert d.synergistic and ctrl.history[-1].test == pytest.approx(
        {"synergy": 0.25, "p_value": 0.01, "ci_low": 0.1, "ci_high": math.nan}, nan_ok=True)


@pytest.mark.parametrize("modules", [3, 2.5])
def test_modules_must_be_modules(modules):
    """modules=3 raised "'int' object is not iterable"."""
    with pytest.raises(TypeError, match=rf"modules must be a torch.nn.Module, a sequence of them or None, "
                                        rf"got {type(modules).__name__} \({modules}\)"):
        ECSAsyncController(modules=modules)
    with pytest.raises(TypeError, match=r"modules must be torch.nn.Module instances, got \['int'\]"):
        ECSAsyncController(modules=[3])
