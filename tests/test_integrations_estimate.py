"""The probe's bias-corrected estimate, its small-N warning, and ECS-async's synergy test rule.

Truths come from the construction of the embeddings (codes that determine ``a`` and ``b`` of
``y = a xor b`` carry log 2 nats of synergy) or from the certified PID of the joint the
samples are drawn from; no expected value comes from the code under test.
"""
from __future__ import annotations

import io
import math
import os
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastpid
from helpers import free_port
from fastpid.estimate import suggest_k
from fastpid.integrations import ECSAsyncController, PIDProbe

LOG2 = math.log(2)


def _cloud(codes: torch.Tensor, g: torch.Generator, dim: int = 4, spread: float = 0.1) -> torch.Tensor:
    """Embeddings ``(N, dim)``: one tight, well separated cloud per code value."""
    centres = torch.randn(int(codes.max()) + 1, dim, generator=g, dtype=torch.float64) * 5
    return centres[codes] + spread * torch.randn(codes.shape[0], dim, generator=g, dtype=torch.float64)


def _independent(n: int, n_classes: int, seed: int):
    """Random embeddings and labels, all independent: every PID term is 0."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return (torch.randn(n, 5, generator=g, dtype=torch.float64),
            torch.randn(n, 5, generator=g, dtype=torch.float64), y)


def _xor(n: int, seed: int):
    """``y = a xor b`` with clouds for ``a`` and ``b``: each modality alone says nothing about
    ``y``, together they determine it (synergy log 2 nats for any codes that refine a, b)."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
    return _cloud(a, g), _cloud(b, g), a ^ b


def _noisy_copies_joint(n_classes: int = 4, flip: float = 0.3) -> np.ndarray:
    """``Y`` uniform; ``X1``, ``X2`` independent noisy copies of ``Y`` (``X1 ⊥ X2 | Y``)."""
    ch = np.full((n_classes, n_classes), flip / (n_classes - 1))
    np.fill_diagonal(ch, 1 - flip)
    P = np.zeros((n_classes,) * 3)
    for y in range(n_classes):
        P[:, :, y] = np.outer(ch[y], ch[y]) / n_classes
    return P


def _noisy_copies(n: int, seed: int, n_classes: int = 4, flip: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (n,), generator=g)

    def copy():
        other = (y + torch.randint(1, n_classes, (n,), generator=g)) % n_classes
        return torch.where(torch.rand(n, generator=g) < flip, other, y)

    return _cloud(copy(), g), _cloud(copy(), g), y


def _quiet_probe(**kw) -> PIDProbe:
    return PIDProbe(min_samples_per_cell=0, **kw)


# ------------------------------------------------------------------ the probe's estimate

def test_probe_estimate_on_independent_embeddings_is_not_significant():
    """400 samples over 6 x 6 x 4 cells: the plug-in synergy is pure bias (about
    (k-1)²(C-1)/2N = 0.09 nats); the corrected synergy is about 0, its interval covers 0 and
    the test does not reject."""
    e1, e2, y = _independent(400, 4, seed=0)
    res = _quiet_probe(n_clusters=6, estimate=True)(e1, e2, y)
    est = res.estimate
    assert isinstance(est, fastpid.PIDEstimate)
    assert int(est.n) == 400 and est.cells == 6 * 6 * 4
    assert res.synergy > 0.05                                  # the plug-in's bias
    assert float(est.synergy) < 0.02
    assert float(est.ci_low.synergy) <= 0.0 <= float(est.ci_high.synergy)
    assert float(est.p_value.synergy) > 0.05
    # The result's information fields stay the plug-in decomposition.
    assert res.synergy == pytest.approx(float(est.plugin.synergy), abs=1e-6)
    assert "estimate (95% intervals): redundancy=" in repr(res) and "], p_synergy=" in repr(res)


def test_probe_estimate_on_xor_embeddings_is_significant():
    e1, e2, y = _xor(300, seed=1)
    res = _quiet_probe(n_clusters=4, estimate=True)(e1, e2, y)
    est = res.estimate
    assert float(est.p_value.synergy) <= 0.05
    assert float(est.p_value.synergy) == 1 / (est.n_null + 1)   # the test's smallest: shown as a bound
    assert f"p_synergy=≤{1 / (est.n_null + 1):.2g}" in repr(res)
    assert float(est.synergy) == pytest.approx(LOG2, abs=0.05)
    assert float(est.ci_low.synergy) > 0.5
    assert float(est.redundancy) < 0.05 and float(est.unique1) < 0.05 and float(est.unique2) < 0.05


def test_probe_repr_marks_an_unreliable_synergy_and_prints_four_decimals():
    """The repr printed an interval the estimate flags unreliable as any other, and rounding
    noise as values (synergy_estimate=5.5e-15 [0, 1.2e-14]); and only the synergy's interval,
    the other terms as bare plug-in values."""
    e1, e2, y = _independent(400, 10, seed=0)
    res = _quiet_probe(n_clusters=20, estimate=True)(e1, e2, y)
    assert not bool(res.estimate.reliable.synergy)
    text = repr(res)
    est = res.estimate
    assert text.startswith("ProbeResult(plug-in: redundancy=") and "; estimate (95% intervals): " in text
    for t in ("redundancy", "unique1", "unique2", "synergy"):
        flag = "" if bool(getattr(est.reliable, t)) else " unreliable at this N"
        assert (f"{t}={float(getattr(est, t)):.4f} [{float(getattr(est.ci_low, t)):.4f}, "
                f"{float(getattr(est.ci_high, t)):.4f}]{flag}") in text, t
    assert "] unreliable at this N, p_synergy=" in text
    from fastpid.estimate import term_text  # as the estimate's table: small values as 3.0e-05

    assert term_text(3e-5) == "3.0e-05" and term_text(5.5e-15) == "0.0000" == term_text(0.0)
    e1, e2, y = _xor(300, seed=1)
    res = _quiet_probe(n_clusters=4, estimate=True)(e1, e2, y)
    assert bool(res.estimate.reliable.synergy) and "unreliable" not in repr(res) and "], p_synergy=" in repr(res)


def test_estimate_is_off_by_default_and_estimated_follows_the_options():
    e1, e2, y = _xor(200, seed=2)
    probe = _quiet_probe(n_clusters=3, seed=7)
    res = probe(e1, e2, y)
    assert res.estimate is None and "p_synergy" not in repr(res)
    assert repr(res).endswith("; no interval: PIDProbe(estimate=True) gives them)")
    # estimated() is fastpid.estimate on the k x k x C joint of the codes, seeded by the probe.
    est = probe.estimated(res.codes1, res.codes2, res.labels)
    ref = fastpid.estimate(res.codes1.numpy(), res.codes2.numpy(), res.labels.numpy(), sizes=(3, 3, 2), seed=7)
    for t in ("redundancy", "unique1", "unique2", "synergy"):
        assert float(getattr(est, t)) == pytest.approx(float(getattr(ref, t)), abs=1e-9)
    assert float(est.p_value.synergy) == float(ref.p_value.synergy)
    # Options reach fastpid.estimate; n_classes widens the label axis.
    opt = _quiet_probe(n_clusters=3, estimate_options={"n_null": 9, "n_jackknife": 5, "confidence": 0.9})
    e = opt.estimated(res.codes1, res.codes2, res.labels, n_classes=4)
    assert e.n_null == 9 and e.n_jackknife == 5 and e.confidence == 0.9 and e.cells == 3 * 3 * 4
    assert float(e.p_value.synergy) >= 0.1                     # smallest p with 9 draws
    bits = _quiet_probe(n_clusters=3, base=2, seed=7).estimated(res.codes1, res.codes2, res.labels)
    assert float(bits.synergy) == pytest.approx(float(est.synergy) / LOG2, rel=1e-9)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(estimate_options={"sizes": (2, 2, 2)}), ValueError, "unknown keys"),
    (dict(estimate_options={"n_nul": 9}), ValueError, "unknown keys"),
    (dict(estimate_options=[("n_null", 9)]), TypeError, "mapping"),
    (dict(estimate=1), TypeError, "True or False"),
    (dict(min_samples_per_cell=-1), ValueError, "min_samples_per_cell"),
])
def test_bad_estimate_settings_raise(kwargs, err, match):
    with pytest.raises(err, match=match):
        PIDProbe(**kwargs)


# ------------------------------------------------------------------ the small-N warning

def test_small_n_warns_once_with_samples_per_cell_and_a_smaller_k():
    e1, e2, y = _independent(200, 5, seed=3)
    probe = PIDProbe(n_clusters=10)                           # 10 x 10 x 5 = 500 cells > 200
    with pytest.warns(UserWarning, match=r"200 probe samples .* 500 joint cells") as rec:
        probe(e1, e2, y)
    msg = str(rec[0].message)
    assert "0.4 samples per cell" in msg
    assert f"n_clusters={suggest_k(200, 5)}" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe(e1, e2, y)                                      # once per probe instance
        PIDProbe(n_clusters=10, min_samples_per_cell=0)(e1, e2, y)   # switched off


def test_the_small_n_warning_names_the_callers_line_through_the_controller():
    """Raised in PIDProbe, called by ECSAsyncController.update, it named the controller's line."""
    e1, e2, y = _independent(200, 5, seed=3)
    ctrl = ECSAsyncController(PIDProbe(n_clusters=10), warmup_epochs=0, baseline_permutations=2)
    with pytest.warns(UserWarning, match="500 joint cells") as said:
        ctrl.update(0, e1, e2, y)
    assert [w.filename for w in said if "joint cells" in str(w.message)] == [__file__]


def test_large_n_does_not_warn():
    e1, e2, y = _independent(400, 2, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PIDProbe(n_clusters=3)(e1, e2, y)                     # 18 cells, 22.2 samples per cell
    # The threshold is configurable: 22.2 per cell is below 40.
    with pytest.warns(UserWarning, match="22.2 samples per cell"):
        PIDProbe(n_clusters=3, min_samples_per_cell=40)(e1, e2, y)


# ------------------------------------------------------------------ ECS: the test rule

def _stream(ctrl: ECSAsyncController, make, epochs: int):
    for epoch in range(epochs):
        ctrl.update(epoch, *make(200, seed=10 + epoch))
    return ctrl


def test_test_rule_fires_on_a_synergistic_stream_and_not_on_an_independent_one():
    def indep(n, seed):
        return _independent(n, 2, seed)

    runs = {}
    for name, make in (("xor", _xor), ("independent", indep)):
        enc = torch.nn.Linear(2, 2)
        ctrl = ECSAsyncController(_quiet_probe(n_clusters=3), synergy_rule="test", warmup_epochs=0,
                                  max_unimodal_epochs=2, modules=[enc])
        runs[name] = _stream(ctrl, make, 4)
    xor, ind = runs["xor"], runs["independent"]
    # Epochs 0-2 are stage-1 probes (epoch 2 also switches); epoch 3 is in stage 2: no test.
    assert xor.synergy_fired == 3 and ind.synergy_fired == 0
    h = xor.history_arrays()
    assert h["synergistic"] == [True, True, True, False] and h["synergy_fired"] == 3
    assert h["synergy_rule"] == "test" and h["stage"][3] == "joint"
    assert all(p <= 0.05 for p in h["synergy_p_value"][:3]) and math.isnan(h["synergy_p_value"][3])
    assert all(abs(s - LOG2) < 0.05 for s in h["score"][:3])
    assert xor.peak_epoch is not None and xor.snapshot is not None
    # No peak on the independent stream: stage 2 starts at max_unimodal_epochs, no restore.
    assert ind.peak_epoch is None and ind.switch_epoch == 2
    assert not ind.history[2].decision.restore_snapshot
    assert all(p > 0.05 for p in ind.history_arrays()["synergy_p_value"][:3])


def test_test_rule_keeps_the_synergy_the_within_class_baseline_removes():
    """``X1 ⊥ X2 | Y`` with true BROJA synergy 0.28 nats: the within-class permutation leaves
    the joint's distribution unchanged, so the baseline score is about 0; the test finds it."""
    truth = float(fastpid.pid(_noisy_copies_joint(), tol=1e-10).synergy)
    assert truth > 0.25
    e1, e2, y = _noisy_copies(400, seed=0)
    base = ECSAsyncController(_quiet_probe(n_clusters=4), warmup_epochs=0)
    base.update(0, e1, e2, y)
    test = ECSAsyncController(_quiet_probe(n_clusters=4), synergy_rule="test", warmup_epochs=0)
    test.update(0, e1, e2, y)
    b, t = base.history[0], test.history[0]
    assert b.terms["synergy"] == pytest.approx(truth, abs=0.1)    # the same codes for both rules
    assert abs(b.score) < 0.05 and not b.decision.synergistic and base.peak_epoch is None
    assert t.decision.synergistic and t.test["p_value"] <= 0.05 and test.peak_epoch == 0
    assert t.test["ci_low"] <= truth <= t.test["ci_high"]
    assert t.baseline is None                                    # the test rule skips the permutations


def _terms(s: float) -> dict:
    return {"redundancy": 0.1, "unique1": 0.2, "unique2": 0.2, "synergy": s, "mi": 0.5 + s,
            "mi1": 0.3, "mi2": 0.3, "gap": 0.0}


def test_test_rule_peak_and_drop_on_scripted_tests():
    """Only significant probes become peaks (whatever their corrected synergy); the drop rule
    compares the corrected synergy with ``drop × peak``."""
    enc = torch.nn.Linear(2, 2)
    ctrl = ECSAsyncController(synergy_rule="test", alpha=0.05, drop=0.8, warmup_epochs=0,
                              max_unimodal_epochs=100, modules=[enc])
    seq = [(0.5, 0.20), (0.30, 0.03), (0.35, 0.01), (0.30, 0.20), (0.2, 0.5)]
    decisions = []
    for e, (s, p) in enumerate(seq):
        with torch.no_grad():
            enc.weight.fill_(float(e))
        decisions.append(ctrl.step(e, _terms(s + 1.0), test={"synergy": s, "p_value": p}))
    assert [d.synergistic for d in decisions] == [False, True, True, False, False]
    assert ctrl.peak_epoch == 2 and ctrl.peak_score == pytest.approx(0.35)
    assert [d.stage for d in decisions] == ["unimodal"] * 4 + ["joint"]   # 0.30 > 0.28 > 0.2
    assert decisions[-1].restore_snapshot and ctrl.synergy_fired == 2
    ctrl.restore()
    assert float(enc.weight.detach()[0, 0]) == 2.0
    # The scores are the corrected synergies, not the raw terms.
    assert ctrl.history_arrays()["score"] == pytest.approx([s for s, _ in seq])


def test_baseline_rule_records_how_often_it_fired():
    ctrl = ECSAsyncController(warmup_epochs=0, min_score=0.05, max_unimodal_epochs=100)
    for e, (s, b) in enumerate([(0.3, 0.28), (0.5, 0.3), (0.4, 0.1)]):
        ctrl.step(e, _terms(s), {"synergy": b})
    assert ctrl.history_arrays()["synergistic"] == [False, True, True] and ctrl.synergy_fired == 2


def test_test_rule_inputs():
    ctrl = ECSAsyncController(synergy_rule="test", warmup_epochs=0)
    with pytest.raises(ValueError, match="synergy_rule='test'"):
        ctrl.step(0, _terms(0.3))
    with pytest.raises(ValueError, match="missing"):
        ctrl.step(0, _terms(0.3), test={"synergy": 0.3})
    with pytest.raises(ValueError, match="NaN"):
        ctrl.step(0, _terms(0.3), test={"synergy": float("nan"), "p_value": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ctrl.step(0, _terms(0.3), test={"synergy": 0.3, "p_value": 1.5})
    with pytest.raises(TypeError, match="PIDEstimate or a mapping"):
        ctrl.step(0, _terms(0.3), test=0.01)
    assert ctrl.history == []
    for kw, match in ((dict(synergy_rule="pvalue"), "synergy_rule"), (dict(alpha=0.0), "alpha"),
                      (dict(alpha=1.0), "alpha"), (dict(alpha=float("nan")), "alpha")):
        with pytest.raises(ValueError, match=match):
            ECSAsyncController(**kw)


def test_test_rule_uses_the_probes_own_estimate():
    """With ``PIDProbe(estimate=True)`` the controller takes the result's estimate (same
    values as a separate ``estimated`` call with the same seed)."""
    e1, e2, y = _xor(200, seed=5)
    own = ECSAsyncController(_quiet_probe(n_clusters=3, estimate=True), synergy_rule="test", warmup_epochs=0)
    own.update(0, e1, e2, y)
    sep = ECSAsyncController(_quiet_probe(n_clusters=3), synergy_rule="test", warmup_epochs=0)
    sep.update(0, e1, e2, y)
    assert own.history[0].test == sep.history[0].test


def test_test_rule_state_round_trips_through_weights_only_load():
    def make():
        return ECSAsyncController(synergy_rule="test", warmup_epochs=1, max_unimodal_epochs=100,
                                  modules=[torch.nn.Linear(2, 2)])

    tests = [(0.4, 0.01), (0.5, 0.02), (0.45, 0.3), (0.1, 0.6)]
    full, part = make(), make()
    for e, (s, p) in enumerate(tests):
        full.step(e, _terms(s), test={"synergy": s, "p_value": p, "ci_low": s - 0.1, "ci_high": s + 0.1})
    for e, (s, p) in enumerate(tests[:2]):
        part.step(e, _terms(s), test={"synergy": s, "p_value": p, "ci_low": s - 0.1, "ci_high": s + 0.1})
    buf = io.BytesIO()
    torch.save(part.state_dict(), buf)
    buf.seek(0)
    resumed = make()
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for e, (s, p) in enumerate(tests[2:], start=2):
        resumed.step(e, _terms(s), test={"synergy": s, "p_value": p, "ci_low": s - 0.1, "ci_high": s + 0.1})
    assert resumed.history == full.history and resumed.synergy_fired == full.synergy_fired == 2
    assert resumed.peak_epoch == full.peak_epoch == 1 and resumed.stage == full.stage
    # A state saved before the test rule existed (no "test"/"rule" entries) still loads.
    old = full.state_dict()
    for h in old["history"]:
        del h["test"], h["rule"]
        del h["decision"]["synergistic"]
    legacy = ECSAsyncController(modules=[torch.nn.Linear(2, 2)])
    legacy.load_state_dict(old)
    assert all(r.test is None and r.rule == "baseline" for r in legacy.history)


# ------------------------------------------------------------------ torch.distributed

WORLD = 2


def _run_ranks(worker, tmp_path) -> None:
    """``worker(rank, port, out_dir)`` in WORLD spawned processes; each must exit cleanly
    within two minutes."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, port, str(tmp_path))) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive and all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]


def _ddp_worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        out = {}
        ctrl = ECSAsyncController(_quiet_probe(n_clusters=4), synergy_rule="test", warmup_epochs=0,
                                  max_unimodal_epochs=10)
        for epoch in range(2):
            e1, e2, y = _xor(120, seed=20 + epoch)
            half = slice(rank * 60, (rank + 1) * 60)
            ctrl.update(epoch, e1[half], e2[half], y[half])
        # Rank 1's test (which would not fire) is overruled by rank 0's.
        p = 0.01 if rank == 0 else 0.9
        ctrl.step(2, _terms(0.3), test={"synergy": 0.3 + rank, "p_value": p, "ci_low": 0.1, "ci_high": 0.5})
        out["state"] = ctrl.state_dict()
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_test_rule_decisions_are_identical_on_every_rank(tmp_path):
    """Two gloo processes, each with half of the probe set: the same history on both ranks,
    equal to one process on the whole set (the estimate is computed on rank 0 only)."""
    _run_ranks(_ddp_worker, tmp_path)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["state"] for r in range(WORLD)]
    assert states[0] == states[1]
    ref = ECSAsyncController(_quiet_probe(n_clusters=4), synergy_rule="test", warmup_epochs=0,
                             max_unimodal_epochs=10)
    for epoch in range(2):
        ref.update(epoch, *_xor(120, seed=20 + epoch))
    ref.step(2, _terms(0.3), test={"synergy": 0.3, "p_value": 0.01, "ci_low": 0.1, "ci_high": 0.5})
    assert states[0]["history"] == ref.state_dict()["history"]
    assert [h["decision"]["synergistic"] for h in states[0]["history"]] == [True, True, True]


@pytest.mark.parametrize("rule", ["baseline", "test"])
def test_controller_reads_a_probe_in_bits_as_nats(rule):
    """min_score, eps and the history are nats: a probe built with base=2 gives the same
    scores (nats), the same synergy decisions and the same terms as one in nats (its bits were
    compared with min_score: a noisy-XOR score of 0.040 nats read 0.057 and fired at 0.05)."""
    def noisy_xor(n, seed):
        g = torch.Generator().manual_seed(seed)
        a, b = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
        return (torch.randn(n, 2, generator=g) + a[:, None], torch.randn(n, 2, generator=g) + b[:, None], a ^ b)

    runs = {}
    for base in (None, 2):
        ctrl = ECSAsyncController(_quiet_probe(n_clusters=2, base=base, estimate=rule == "test"),
                                  synergy_rule=rule, warmup_epochs=0, min_score=0.05, max_unimodal_epochs=10)
        runs[base] = _stream(ctrl, noisy_xor, 3).history_arrays()
    nats, bits = runs[None], runs[2]
    for key in ("score", "synergy", "unique1", "synergy_baseline", "synergy_estimate", "synergy_ci_high"):
        np.testing.assert_allclose(bits[key], nats[key], rtol=1e-9, atol=1e-12, err_msg=key)
    assert bits["synergistic"] == nats["synergistic"]
    if rule == "baseline":
        assert any(0.05 * LOG2 < s < 0.05 for s in nats["score"])   # a score that bits would pass


def test_probes_in_stage_2_are_not_scored():
    """Stage 2 computes no baseline or test: its probes' score is NaN, not the raw synergy (a
    jump from -0.002 to +0.45 on unchanged embeddings); the probe that switched keeps its score."""
    ctrl = ECSAsyncController(_quiet_probe(n_clusters=6), max_unimodal_epochs=2)
    e1, e2, y = _independent(300, 10, seed=0)
    for epoch in range(4):
        ctrl.update(epoch, e1, e2, y)
    h = ctrl.history_arrays()
    assert h["stage"] == ["unimodal", "unimodal", "joint", "joint"]
    assert all(math.isfinite(s) and abs(s) < 0.05 for s in h["score"][:3])   # epoch 2 switched
    assert math.isnan(h["score"][3]) and h["synergy"][3] > 0.3
    assert ctrl.history[3].rule is None and ctrl.history[2].rule == "baseline"


def test_test_rule_refuses_an_estimate_without_null_draws():
    """n_null=0 gives no p-value: refused when the controller is built with such a probe, and
    a PIDEstimate made so is refused by step() with the reason (it failed at the first probe
    with "NaN or infinite entries ['p_value']")."""
    probe = _quiet_probe(n_clusters=3, estimate_options={"n_null": 0})
    with pytest.raises(ValueError, match="n_null=0"):
        ECSAsyncController(probe, synergy_rule="test")
    e1, e2, y = _xor(200, seed=0)
    est = probe.estimated(*(torch.randint(0, 3, (200,), generator=torch.Generator().manual_seed(s))
                            for s in (1, 2)), y)
    ctrl = ECSAsyncController(_quiet_probe(n_clusters=3), synergy_rule="test", warmup_epochs=0)
    with pytest.raises(ValueError, match="n_null=0"):
        ctrl.step(0, {"unique1": 0.0, "unique2": 0.0, "synergy": 0.1}, test=est)


def test_step_reads_a_baseline_in_its_probe_results_units():
    """step() with a base-2 probe's ProbeResult and that probe's shuffled() baseline (bits):
    the baseline is converted with the terms, so the score is the one in nats (a nats
    synergy minus a bits baseline was recorded: 0.0017665 for 0.0012244)."""
    g = torch.Generator().manual_seed(3)
    n = 300
    a, b = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
    e1, e2, y = torch.randn(n, 2, generator=g) + a[:, None], torch.randn(n, 2, generator=g) + b[:, None], a ^ b
    scores = {}
    for base in (None, 2):
        probe = _quiet_probe(n_clusters=2, base=base)
        ctrl = ECSAsyncController(probe, warmup_epochs=0)
        res = probe(e1, e2, y)
        ctrl.step(0, res, baseline=probe.shuffled(res.codes1, res.codes2, res.labels, 4, seed=0))
        scores[base] = (ctrl.history[0].score, ctrl.history[0].baseline["synergy"])
    np.testing.assert_allclose(scores[2], scores[None], rtol=1e-9, atol=1e-12)


def test_the_baseline_rule_records_an_estimate_without_null_draws():
    """Under synergy_rule="baseline" the probe's estimate is only recorded: one made with
    n_null=0 (no p-value) stopped the controller at its first probe; it is recorded with a
    NaN p-value, and the baseline rule decides as without it."""
    e1, e2, y = _xor(200, seed=0)
    probe = _quiet_probe(n_clusters=2, estimate=True, estimate_options={"n_null": 0})
    ctrl = ECSAsyncController(probe, warmup_epochs=0)
    ctrl.update(0, e1, e2, y)
    h = ctrl.history_arrays()
    assert math.isnan(h["synergy_p_value"][0]) and math.isfinite(h["synergy_estimate"][0])
    assert h["synergistic"] == [True]   # XOR: the score passes min_score


def _seed_none_worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        e1, e2, y = _xor(200, seed=4)
        half = slice(rank * 100, (rank + 1) * 100)
        probe = _quiet_probe(n_clusters=3, estimate=True, estimate_options={"seed": None, "n_null": 9})
        est = probe(e1[half], e2[half], y[half]).estimate
        torch.save({t: float(getattr(est.ci_high, t)) for t in ("redundancy", "synergy")},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_probe_estimate_with_fresh_entropy_is_the_same_on_every_rank(tmp_path):
    """estimate_options={"seed": None}: each rank drew its own entropy and got another
    estimate of the same gathered codes; rank 0 now draws the seed for all."""
    _run_ranks(_seed_none_worker, tmp_path)
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert got[0] == got[1]


def test_probe_estimate_with_fresh_entropy_uses_the_seed_rank_0_draws(monkeypatch):
    """The estimate of a probe with estimate_options={"seed": None} is the one seeded with the
    value broadcast from rank 0 (here: the value the broadcast returns)."""
    from fastpid.integrations import probe as probe_module

    monkeypatch.setattr(probe_module, "broadcast_object", lambda obj: 12345)
    e1, e2, y = _xor(200, seed=4)
    probe = _quiet_probe(n_clusters=3, estimate=True, estimate_options={"seed": None, "n_null": 9})
    res = probe(e1, e2, y)
    ref = probe.estimated(res.codes1, res.codes2, res.labels, seed=12345)
    assert float(res.estimate.ci_high.synergy) == float(ref.ci_high.synergy)
    assert res.estimate.seed == 12345


def test_probe_seed_is_checked_when_built():
    """PIDProbe(seed=-1, estimate=True) failed only at its first probe, naming a seed the user
    never passed to estimate_options."""
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64 - 1\]"):
            PIDProbe(seed=bad)
