"""ECS-async controller: decisions on scripted PID sequences, snapshots, state, loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastpid.integrations import Decision, ECSAsyncController, PIDProbe


def terms(u1, u2, s, r=0.1):
    return {"redundancy": r, "unique1": u1, "unique2": u2, "synergy": s,
            "mi": r + u1 + u2 + s, "mi1": r + u1, "mi2": r + u2, "gap": 0.0}


def run(ctrl, seq):
    return [ctrl.step(e, t) for e, t in enumerate(seq)]


def test_pause_and_resume_with_hysteresis():
    ctrl = ECSAsyncController(ratio=3.0, resume_ratio=1.5, eps=0.0, max_unimodal_epochs=100)
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
    ctrl = ECSAsyncController(resume_ratio=None, eps=0.0, max_unimodal_epochs=100)
    d = run(ctrl, [terms(0.9, 0.1, 0.1), terms(0.1, 0.1, 0.11), terms(0.1, 0.1, 0.12)])
    assert [(x.train1, x.train2) for x in d] == [(False, True)] * 3


def test_balance_by_mi_proxy():
    ctrl = ECSAsyncController(balance_by="mi", eps=0.0, max_unimodal_epochs=100)
    # Unique terms are balanced, but I(Z2;Y) = 2.1 vs I(Z1;Y) = 0.6: pause modality 2.
    d = ctrl.step(0, terms(0.1, 0.1, 0.1, r=0.5) | {"mi2": 2.1})
    assert (d.train1, d.train2) == (True, False)


def test_synergy_drop_switches_and_restores_peak_snapshot():
    enc = torch.nn.Linear(3, 2)
    ctrl = ECSAsyncController(drop=0.8, max_unimodal_epochs=100, modules=[enc])
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
    ctrl.restore()
    assert torch.all(enc.weight == 2.0)
    # Stage 2 is final: later probes are recorded but change nothing.
    d4 = ctrl.step(4, terms(5.0, 0.0, 0.0))
    assert (d4.stage, d4.train1, d4.train2, d4.restore_snapshot) == ("joint", True, True, False)
    assert len(ctrl.history) == 5


def test_min_unimodal_epochs_delays_the_drop_rule():
    ctrl = ECSAsyncController(min_unimodal_epochs=3, max_unimodal_epochs=100)
    d = run(ctrl, [terms(0.2, 0.2, 0.5), terms(0.2, 0.2, 0.1), terms(0.2, 0.2, 0.1), terms(0.2, 0.2, 0.1)])
    assert [x.stage for x in d] == ["unimodal"] * 3 + ["joint"]


def test_max_unimodal_epochs_without_probe():
    ctrl = ECSAsyncController(probe_every=4, max_unimodal_epochs=6)
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
    ctrl = ECSAsyncController(PIDProbe(n_clusters=6), eps=1e-3, max_unimodal_epochs=10)
    d = ctrl.update(0, emb1, emb2, y)
    rec = ctrl.history[0]
    assert rec.terms["mi1"] == pytest.approx(math.log(3), abs=0.02)   # codes determine y
    assert rec.terms["unique1"] > 1.0 and d.probed
    assert (d.train1, d.train2) == (False, True)   # modality 1 dominates: pause it


def test_state_dict_roundtrip_continues_identically():
    seq = [terms(0.9, 0.1, 0.3), terms(0.5, 0.2, 0.5), terms(0.3, 0.25, 0.45), terms(0.3, 0.3, 0.2)]
    a = ECSAsyncController(max_unimodal_epochs=100, modules=[torch.nn.Linear(2, 2)])
    run(a, seq[:2])
    b = ECSAsyncController(max_unimodal_epochs=100, modules=[torch.nn.Linear(2, 2)])
    b.load_state_dict(a.state_dict())
    for e in (2, 3):
        assert a.step(e, seq[e]) == b.step(e, seq[e])
    assert a.history_arrays() == b.history_arrays()
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


@pytest.mark.parametrize("kwargs", [dict(ratio=1.0), dict(resume_ratio=4.0), dict(drop=1.2),
                                    dict(probe_every=0), dict(balance_by="x"), dict(max_unimodal_epochs=-1)])
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
