"""DynCIM (difficulty, sample weights, GMR / HMIR, modality weights), the gated fusion, the
loss, OGM-GE, and seconds-long training runs."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fastpid.integrations.dyncim import (DynCIM, LinearTemperature, generalized_js,
                                         geometric_mean_ratio, harmonic_mean_improvement)
from fastpid.integrations.dyncim_loss import DynCIMLoss, dyncim_loss_terms
from fastpid.integrations.gated_fusion import GatedFusion
from fastpid.integrations.ogm_ge import modulate_gradients, ogm_ge_coefficients, ogm_ge_scores

LOG2 = math.log(2.0)
D64 = torch.float64


def rows(*ps):
    p = torch.tensor(ps, dtype=D64)
    return torch.stack([p, 1 - p], 1)


# ---------------------------------------------------------------- building blocks

def test_generalized_js():
    same = rows(0.3, 0.9)[None].expand(3, 2, 2)
    torch.testing.assert_close(generalized_js(same), torch.zeros(2, dtype=D64))
    disjoint = torch.stack([rows(1.0), rows(0.0)])               # two one-hots
    torch.testing.assert_close(generalized_js(disjoint), torch.tensor([LOG2], dtype=D64))


def test_geometric_mean_ratio():
    torch.testing.assert_close(geometric_mean_ratio(torch.tensor([0.8, 0.2], dtype=D64)),
                               torch.tensor([2.0, 0.5], dtype=D64))
    torch.testing.assert_close(geometric_mean_ratio(torch.tensor([0.5, 0.5, 0.5], dtype=D64)),
                               torch.ones(3, dtype=D64))


def test_harmonic_mean_improvement():
    L = [torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.9]), torch.tensor([0.25, 0.9])]
    assert harmonic_mean_improvement(L[:1], window=5) is None
    h = harmonic_mean_improvement(L, window=5)
    assert float(h[0]) == pytest.approx(0.5)                     # halves every epoch
    assert float(h[1]) == pytest.approx(2 / (1 / 0.1 + 1 / 1e-6))  # one stalled epoch dominates
    # Only the last `window` improvements count.
    assert float(harmonic_mean_improvement(L, window=1)[1]) == pytest.approx(1e-6)


def test_linear_temperature():
    t = LinearTemperature(0.1, 1.0)
    assert t(0, 10) == pytest.approx(0.1) and t(9, 10) == pytest.approx(1.0) and t(20, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        LinearTemperature(0.0, 1.0)


# ---------------------------------------------------------------- the DynCIM state

def test_first_update_by_hand():
    # Sample 0: every head certain and right. Sample 1: fused p(y)=0.5, both unimodal
    # heads uniform -> deviation 1/2, consistency 0, stability 0, d = 1/6.
    # Modality confidences: (1 + 0.5)/2 = 0.75 for both -> GMR = 1... make them differ:
    # modality 1 is right on sample 1 (conf 1), modality 2 is uniform there (conf 0.75).
    pf = rows(1.0, 0.5)
    p1 = rows(1.0, 1.0)
    p2 = rows(1.0, 0.5)
    y = torch.tensor([0, 0])
    dyn = DynCIM(2, 2, epochs=10)
    assert dyn.weights().tolist() == [1.0, 1.0] and dyn.unimodal_scale() == 1.0
    dyn.update(pf, [p1, p2], y)
    # consistency of sample 1: JS of (onehot, uniform, uniform) / log 3
    mix = torch.tensor([2 / 3, 1 / 3], dtype=D64)
    js = float(-(mix * mix.log()).sum()) - 2 / 3 * LOG2
    d1 = (0.5 + js / math.log(3)) / 3
    torch.testing.assert_close(dyn.difficulty, torch.tensor([0.0, d1], dtype=D64))
    e = math.exp(-d1 / 0.1)
    torch.testing.assert_close(dyn.weights(), torch.tensor([2 / (1 + e), 2 * e / (1 + e)], dtype=D64))
    # GMR: conf = (1, 0.75); geometric mean sqrt(0.75).
    g = 1 / math.sqrt(0.75)
    torch.testing.assert_close(dyn.gmr, torch.tensor([g, 1 / g], dtype=D64))
    # No HMIR yet: the dominant modality keeps weight 1, the lagging one gets GMR^-1 = g.
    lam = torch.tensor([1.0, g], dtype=D64)
    torch.testing.assert_close(dyn.modality_weights(), lam / lam.mean())
    torch.testing.assert_close(dyn.gate_target(), lam / lam.sum())
    assert dyn.unimodal_scale() == pytest.approx(1 + 2 * math.log(g))


def test_stability_is_the_running_spread():
    dyn = DynCIM(1, 2, epochs=10, window=3, difficulty_weights=(0, 0, 1))
    p = rows(0.5)
    dyn.update(rows(0.2), [p, p], torch.tensor([0]))
    assert float(dyn.difficulty) == 0.0
    dyn.update(rows(0.8), [p, p], torch.tensor([0]))
    a = 2 / (3 + 1)
    assert float(dyn.difficulty) == pytest.approx(2 * math.sqrt(a * (1 - a)) * 0.6)


def test_a_stalled_dominant_modality_loses_weight():
    pf, p1, p2 = rows(0.9, 0.9), rows(0.8, 0.8), rows(0.2, 0.2)
    y = torch.tensor([0, 0])
    dyn = DynCIM(2, 2, epochs=10)
    dyn.update(pf, [p1, p2], y)
    first = dyn.modality_weights()
    torch.testing.assert_close(first, torch.tensor([2 / 3, 4 / 3], dtype=D64))    # GMR (2, 1/2)
    for _ in range(3):                                           # same predictions: no progress
        dyn.update(pf, [p1, p2], y)
    lam = torch.tensor([0.5, 2.0], dtype=D64)                    # dominant: GMR^-1 once stalled
    torch.testing.assert_close(dyn.modality_weights(), lam / lam.mean(), atol=1e-3, rtol=0)


def test_an_improving_dominant_modality_keeps_weight():
    y = torch.tensor([0, 0])
    dyn = DynCIM(2, 2, epochs=10, stall=0.01)
    for conf in (0.5, 0.6, 0.72):                                # CE falls by > 20 % per epoch
        dyn.update(rows(0.9, 0.9), [rows(conf, conf), rows(0.2, 0.2)], y)
    # By hand from the confidences (the expectation had been built from dyn.gmr and dyn.hmir):
    # CE -log(conf) falls by 26.3 % and 35.7 %, HMIR their harmonic mean; GMR of the last
    # epoch's confidences 0.72 and 0.2 over their geometric mean.
    ce = [-math.log(c) for c in (0.5, 0.6, 0.72)]
    rel = [(a - b) / a for a, b in zip(ce, ce[1:])]
    hmir = len(rel) / sum(1 / r for r in rel)
    gmr = [0.72 / math.sqrt(0.72 * 0.2), 0.2 / math.sqrt(0.72 * 0.2)]
    kappa = 0.01 / (0.01 + hmir)
    assert gmr[0] > 1 and kappa < 0.05
    lam_raw = torch.tensor([gmr[0] ** -kappa, 1 / gmr[1]], dtype=D64)
    torch.testing.assert_close(dyn.modality_weights(), lam_raw / lam_raw.mean())
    assert float(dyn.hmir[0]) == pytest.approx(hmir)


def test_weights_flatten_as_temperature_grows():
    dyn = DynCIM(2, 2, epochs=5, difficulty_weights=(1, 0, 0))
    pf, p = rows(0.9, 0.4), rows(0.5, 0.5)
    y = torch.tensor([0, 0])
    ratios = []
    for _ in range(5):
        dyn.update(pf, [p, p], y)
        w = dyn.weights()
        assert float(w.mean()) == pytest.approx(1.0)
        ratios.append(float(w[1] / w[0]))
    # d = (0.1, 0.6): w1/w0 = exp(-0.5 / τ), τ from 0.1 to 1.0.
    assert ratios[0] == pytest.approx(math.exp(-5.0)) and ratios[-1] == pytest.approx(math.exp(-0.5))
    assert ratios == sorted(ratios)


def test_three_modalities_and_stacked_input():
    y = torch.tensor([0, 1, 1])
    pm = torch.stack([rows(0.9, 0.1, 0.1), rows(0.5, 0.5, 0.5), rows(0.6, 0.3, 0.4)])
    dyn = DynCIM(3, 3, epochs=4)
    dyn.update(rows(0.8, 0.2, 0.3), pm, y)
    assert dyn.modality_weights().shape == (3,)
    assert float(dyn.gate_target().sum()) == pytest.approx(1.0)
    assert int(dyn.gmr.argmax()) == 0 and int(dyn.modality_weights().argmin()) == 0
    kw = dyn.loss_inputs(torch.tensor([2, 0]))
    torch.testing.assert_close(kw["sample_weights"], dyn.weights()[[2, 0]])


@pytest.mark.parametrize("call, err", [
    (lambda: DynCIM(2, 1, 5), "n_modalities"),
    (lambda: DynCIM(2, 2, 5, difficulty_weights=(0, 0, 0)), "difficulty_weights"),
    (lambda: DynCIM(2, 2, 5, temperature="x"), "temperature must be a schedule"),  # failed at update()
    (lambda: DynCIM(2, 2, 5, temperature=-1.0), "temperature must be a schedule"),
    (lambda: DynCIM(2, 2, 5).update(rows(0.5, 0.5), [rows(0.5, 0.5)], torch.tensor([0, 1])), "2 unimodal"),
    (lambda: DynCIM(2, 2, 5).update(torch.randn(2, 2), [rows(0.5, 0.5)] * 2, torch.tensor([0, 1])), "logits|sum to 1"),
    (lambda: DynCIM(2, 2, 5).update(rows(0.5, 0.5), [rows(0.5, 0.5)] * 2, torch.tensor([0, 3])), r"\[0, 2\)"),
    (lambda: DynCIM(3, 2, 5).update(rows(0.5, 0.5), [rows(0.5, 0.5)] * 2, torch.tensor([0, 1])), "3"),
])
def test_dyncim_bad_input(call, err):
    with pytest.raises((ValueError, TypeError), match=err):
        call()


# ---------------------------------------------------------------- gate and loss

def test_gated_fusion_starts_uniform_and_learns():
    torch.manual_seed(0)
    fuse = GatedFusion(4, 3, hidden=8)
    zs = [torch.randn(5, 4) for _ in range(3)]
    fused, g = fuse(zs)
    torch.testing.assert_close(g, torch.full((5, 3), 1 / 3))
    torch.testing.assert_close(fused, sum(zs) / 3)
    # Push the gate towards modality 2: its weight must rise.
    opt = torch.optim.SGD(fuse.parameters(), lr=0.5)
    for _ in range(20):
        _, g = fuse(zs)
        loss = -g[:, 2].log().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(fuse(zs)[1][:, 2].mean()) > 0.6
    with pytest.raises(ValueError, match="shape"):
        fuse([torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 3)])
    with pytest.raises(ValueError, match="3 embeddings"):
        fuse(zs[:2])


def test_loss_terms_by_hand():
    B, C = 2, 2
    zero = torch.zeros(B, C)
    y = torch.tensor([0, 1])
    gate = torch.full((B, 2), 0.5)
    t = dyncim_loss_terms(zero, [zero, zero], y, sample_weights=torch.tensor([1.0, 3.0]),
                          modality_weights=torch.tensor([1.0, 2.0]), unimodal_scale=0.5,
                          gate=gate, gate_target=torch.tensor([0.25, 0.75]))
    assert float(t["fused"]) == pytest.approx(2 * LOG2)            # mean(1, 3) · log 2
    assert float(t["unimodal"]) == pytest.approx(0.5 * 3 * 2 * LOG2)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(t["gate"]) == pytest.approx(kl)
    loss = DynCIMLoss(beta=0.1)(zero, [zero, zero], y, sample_weights=torch.tensor([1.0, 3.0]),
                                modality_weights=torch.tensor([1.0, 2.0]), unimodal_scale=0.5,
                                gate=gate, gate_target=torch.tensor([0.25, 0.75]))
    assert float(loss) == pytest.approx(2 * LOG2 + 3 * LOG2 + 0.1 * kl, rel=1e-6)
    # Defaults: unit weights, no gate -> plain sum of mean cross-entropies.
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    plain = DynCIMLoss()(logits, [zero, logits], y)
    expect = 2 * F.cross_entropy(logits, y) + LOG2
    assert float(plain) == pytest.approx(float(expect))


def test_loss_bad_input():
    z = torch.zeros(2, 2)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="sample_weights"):
        dyncim_loss_terms(z, [z, z], y, sample_weights=torch.ones(3))
    with pytest.raises(ValueError, match="modality_weights"):
        dyncim_loss_terms(z, [z, z], y, modality_weights=torch.ones(3))
    with pytest.raises(ValueError, match="unimodal_logits"):
        dyncim_loss_terms(z, [torch.zeros(2, 3)], y)
    with pytest.raises(ValueError, match="gate_target"):
        dyncim_loss_terms(z, [z, z], y, gate=torch.full((2, 2), 0.5), gate_target=torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("gate, row", [(torch.full((2, 2), 5.0), 0), (torch.tensor([[0.5, 0.5], [1.5, -0.5]]), 1),
                                       (torch.tensor([[0.5, 0.5], [float("nan"), 1.0]]), 1)])
def test_gate_rows_off_the_simplex_raise(gate, row):
    """The gate's KL is over rows on the simplex; rows of 5s gave a loss of 5.73 silently."""
    z = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=f"gate rows must lie on the simplex.*row {row}"):
        dyncim_loss_terms(z, [z, z], torch.tensor([0, 1]), gate=gate)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_softmax_gates_pass_in_any_precision(dtype):
    """Softmax rows sum to 1 only to their dtype's rounding, and a gate that needs a gradient
    keeps it."""
    logits = torch.randn(64, 7, generator=torch.Generator().manual_seed(0)).requires_grad_()
    for g in (torch.softmax(logits, 1).to(dtype), torch.softmax(logits.to(dtype), 1)):
        zz = torch.zeros(64, 2, dtype=dtype)
        terms = dyncim_loss_terms(zz, [zz] * 7, torch.zeros(64, dtype=torch.long), gate=g)
        terms["gate"].backward()
        assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
        logits.grad = None


@pytest.mark.parametrize("kwargs, match", [
    ({"sample_weights": torch.tensor([1.0, float("nan")])}, r"sample_weights must be finite and >= 0, got \[nan\]"),
    ({"sample_weights": torch.tensor([-1.0, 1.0])}, r"sample_weights must be finite and >= 0, got \[-1.0\]"),
    ({"modality_weights": [-1.0, 3.0]}, "modality_weights must be finite and >= 0"),
    ({"modality_weights": [float("inf"), 1.0]}, "modality_weights must be finite and >= 0"),
    ({"unimodal_scale": float("nan")}, "unimodal_scale must be a finite number"),
    ({"gate_target": [2.0, 3.0]}, "gate_target must be a positive"),   # without a gate too
])
def test_loss_refuses_weights_that_would_poison_or_reverse_the_step(kwargs, match):
    """A NaN sample weight gave a NaN loss (and NaN parameters after the step), a negative one
    a loss of -3.56 (ascent on its samples), negative modality weights and an off-simplex
    gate target without a gate passed unchecked."""
    z = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=match):
        dyncim_loss_terms(z, [z, z], torch.tensor([0, 1]), **kwargs)
    with pytest.raises(ValueError, match=match):
        DynCIMLoss()(z, [z, z], torch.tensor([0, 1]), **kwargs)


def test_loss_keeps_the_gradient_of_a_tensor_unimodal_scale():
    z = torch.zeros(2, 2)
    alpha = torch.tensor(0.5, requires_grad=True)
    dyncim_loss_terms(z, [z, z], torch.tensor([0, 1]), unimodal_scale=alpha)["unimodal"].backward()
    assert alpha.grad is not None and float(alpha.grad) == pytest.approx(2 * math.log(2))



def test_gate_term_is_finite_in_float16_when_the_gate_collapses():
    """The gate term clamped ḡ at 1e-12, which is 0 in float16: a gate collapsed onto one
    modality (softmax([20, 0]) = (1, 0) in float16) gave 0 · log 0 and the loss was NaN
    (finite in float32 and bfloat16). The KL is now computed in float32: log 2 against the
    uniform target, returned in float16 like the other terms."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=g).half().requires_grad_()
    y = torch.tensor([0, 1, 2, 0])
    gate = torch.tensor([[20.0, 0.0]] * 4, dtype=torch.float16).softmax(-1).requires_grad_()
    t = dyncim_loss_terms(logits, [logits, logits], y, gate=gate)
    assert t["gate"].dtype == torch.float16 and float(t["gate"]) == pytest.approx(LOG2, rel=1e-3)
    loss = DynCIMLoss(beta=0.1)(logits, [logits, logits], y, gate=gate)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(gate.grad).all() and torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- OGM-GE

def test_ogm_ge_scores_and_coefficients():
    y = torch.tensor([0, 1])
    l1 = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)]])   # p(y) = 3/4 each
    l2 = torch.zeros(2, 2)                                             # p(y) = 1/2 each
    s = ogm_ge_scores([l1, l2], y)
    torch.testing.assert_close(s, torch.tensor([1.5, 1.0], dtype=D64))  # float64 whatever the logits
    k = ogm_ge_coefficients(s, alpha=0.5)
    torch.testing.assert_close(k, torch.tensor([1 - math.tanh(0.25), 1.0], dtype=D64))
    k3 = ogm_ge_coefficients(torch.tensor([2.0, 1.0, 1.0]), alpha=1.0)    # ratios 2, 2/3, 2/3
    torch.testing.assert_close(k3, torch.tensor([1 - math.tanh(1.0), 1.0, 1.0], dtype=D64))
    with pytest.raises(ValueError, match="M >= 2"):
        ogm_ge_coefficients(torch.tensor([1.0]))


def test_ogm_ge_says_when_given_probabilities_or_called_before_backward():
    """Probabilities for logits flattened the scores (coefficients 0.565 against 0.080 from the
    logits) without a word; a call before backward() modulated nothing without a word."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (64,), generator=g)
    l1, l2 = torch.randn(64, 10, generator=g), torch.randn(64, 10, generator=g)
    l1[range(64), y] += 6
    with pytest.warns(UserWarning, match="every row of modality 0's logits lies in"):
        ogm_ge_scores([l1.softmax(-1), l2], y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ogm_ge_scores([l1, l2], y)                                # logits: no warning
    enc = torch.nn.Linear(3, 2)
    with pytest.warns(UserWarning, match="no parameter has a gradient"):
        modulate_gradients([enc.parameters(), []], torch.tensor([0.5, 1.0]))


def test_ogm_ge_coefficient_rules():
    s = torch.tensor([3.0, 1.0])
    shifted = ogm_ge_coefficients(s, alpha=0.5)
    assert torch.equal(shifted, ogm_ge_coefficients(s, alpha=0.5, rule="shifted"))   # the default
    torch.testing.assert_close(shifted, torch.tensor([1 - math.tanh(1.0), 1.0], dtype=D64), rtol=0, atol=1e-15)
    torch.testing.assert_close(ogm_ge_coefficients(s, alpha=0.5, rule="published"),
                               torch.tensor([1 - math.tanh(1.5), 1.0], dtype=D64), rtol=0, atol=1e-15)
    torch.testing.assert_close(ogm_ge_coefficients(torch.tensor([1.0, 4.0]), alpha=0.1, rule="published"),
                               torch.tensor([1.0, 1 - math.tanh(0.4)], dtype=D64), rtol=0, atol=1e-15)
    # M = 3: ratios 2, 2/3, 2/3; only the first exceeds 1.
    torch.testing.assert_close(ogm_ge_coefficients(torch.tensor([2.0, 1.0, 1.0]), alpha=1.0, rule="published"),
                               torch.tensor([1 - math.tanh(2.0), 1.0, 1.0], dtype=D64), rtol=0, atol=1e-15)
    # Ties leave every coefficient at 1 under both rules.
    for rule in ("shifted", "published"):
        assert torch.equal(ogm_ge_coefficients(torch.tensor([2.0, 2.0]), rule=rule), torch.ones(2, dtype=D64))
        assert torch.equal(ogm_ge_coefficients(torch.zeros(3), rule=rule), torch.ones(3, dtype=D64))
    # The discontinuity the shifted default avoids: just above a tie the published rule
    # already gives 1 - tanh(alpha) = 0.538 at alpha = 0.5 (and 1 at the tie itself).
    near = torch.tensor([1.0 + 1e-9, 1.0], dtype=D64)
    assert float(ogm_ge_coefficients(near, alpha=0.5, rule="published")[0]) == pytest.approx(0.5378828427, abs=1e-9)
    assert float(ogm_ge_coefficients(near, alpha=0.5)[0]) == pytest.approx(1.0, abs=1e-9)
    assert float(1 - math.tanh(0.5)) == pytest.approx(0.538, abs=5e-4)
    for bad in ("public", "Published", None, 1):
        with pytest.raises(ValueError, match="rule must be one of"):
            ogm_ge_coefficients(s, rule=bad)


def test_modulate_gradients():
    a = nn.Parameter(torch.zeros(20000))
    b = nn.Parameter(torch.zeros(3))
    ga = torch.randn(20000, generator=torch.Generator().manual_seed(0))
    a.grad, b.grad = ga.clone(), torch.tensor([1.0, 2.0, 3.0])
    modulate_gradients([[a], [b]], [0.25, 1.0], noise=False)
    torch.testing.assert_close(a.grad, 0.25 * ga)
    torch.testing.assert_close(b.grad, torch.tensor([1.0, 2.0, 3.0]))
    a.grad = ga.clone()
    modulate_gradients([[a], [b]], [0.5, 1.0], generator=torch.Generator().manual_seed(1))
    noise = a.grad - 0.5 * ga
    assert float(noise.std()) == pytest.approx(float(ga.std()), rel=0.03)
    with pytest.raises(ValueError, match="one coefficient"):
        modulate_gradients([[a], [b]], [1.0])
    # NaN had made every gradient NaN, -1 turned them round; scores passed for coefficients too
    a.grad = ga.clone()
    for bad in ([float("nan"), 1.0], [-1.0, 1.0], [154.2, 120.5], [float("inf"), 1.0]):
        with pytest.raises(ValueError, match=r"coefficients must be in \[0, 1\]"):
            modulate_gradients([[a], [b]], bad, noise=False)
    assert torch.equal(a.grad, ga)


# ---------------------------------------------------------------- smoke training runs

class ThreeViewNet(nn.Module):
    def __init__(self, dims, c, h=16):
        super().__init__()
        self.encs = nn.ModuleList(nn.Sequential(nn.Linear(d, h), nn.ReLU()) for d in dims)
        self.heads = nn.ModuleList(nn.Linear(h, c) for _ in dims)
        self.fuse = GatedFusion(h, len(dims), hidden=8)
        self.head = nn.Linear(h, c)

    def forward(self, xs):
        zs = [e(x) for e, x in zip(self.encs, xs)]
        fused, g = self.fuse(zs)
        return self.head(fused), [h(z) for h, z in zip(self.heads, zs)], g


def three_view_data(n=240, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    centres = torch.randn(c, 4, generator=g) * 2
    # View 0 is strong, view 1 weak, view 2 noise: an imbalanced set.
    xs = [centres[y] * s + torch.randn(n, 4, generator=g) for s in (1.5, 0.5, 0.0)]
    return xs, y


def test_dyncim_smoke_training():
    torch.manual_seed(0)
    xs, y = three_view_data()
    n, epochs = len(y), 6
    model = ThreeViewNet([4, 4, 4], 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    dyn, crit = DynCIM(n, 3, epochs), DynCIMLoss(beta=0.1)
    for epoch in range(epochs):
        for idx in torch.randperm(n).split(32):
            fused, uni, g = model([x[idx] for x in xs])
            loss = crit(fused, uni, y[idx], gate=g, **dyn.loss_inputs(idx))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            fused, uni, _ = model(xs)
        dyn.update(fused.softmax(1), [u.softmax(1) for u in uni], y)
    assert torch.isfinite(loss)
    assert float((fused.argmax(1) == y).float().mean()) > 0.7
    assert int(dyn.gmr.argmax()) == 0 and int(dyn.gmr.argmin()) == 2   # strong view dominates
    assert int(dyn.modality_weights().argmax()) == 2


def test_ogm_ge_smoke_training():
    torch.manual_seed(0)
    xs, y = three_view_data()
    model = ThreeViewNet([4, 4, 4], 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    coefs = []
    for epoch in range(6):
        for idx in torch.randperm(len(y)).split(32):
            fused, uni, _ = model([x[idx] for x in xs])
            loss = F.cross_entropy(fused, y[idx]) + sum(F.cross_entropy(u, y[idx]) for u in uni)
            opt.zero_grad()
            loss.backward()
            k = ogm_ge_coefficients(ogm_ge_scores(uni, y[idx]))
            modulate_gradients([e.parameters() for e in model.encs], k, generator=gen)
            opt.step()
            coefs.append(k)
    with torch.no_grad():
        acc = (model(xs)[0].argmax(1) == y).float().mean()
    assert acc > 0.7
    assert float(torch.stack(coefs[-10:])[:, 0].mean()) < 1.0         # the strong view is slowed


def test_update_with_its_epoch_refuses_a_repeated_or_skipped_epoch():
    """update() advances one epoch a call: two hooks calling it in one epoch counted it twice
    (a zero loss change, read as both modalities stalled: HMIR about 4e-6). With epoch= the
    second call raises and leaves the state as it was; without it nothing changes."""
    N, C = 40, 3
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, C, (N,), generator=g)

    def preds():
        return torch.softmax(torch.randn(N, C, generator=g), 1), [torch.softmax(torch.randn(N, C, generator=g), 1)
                                                                  for _ in range(2)]

    d = DynCIM(N, 2, epochs=5)
    for e in range(2):
        d.update(*preds(), y, epoch=e)
    state = d.state_dict()
    for bad in (1, 3):
        with pytest.raises(ValueError, match=rf"update\(epoch={bad}\): the next epoch is 2"):
            d.update(*preds(), y, epoch=bad)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        d.update(*preds(), y, epoch=True)
    _assert_same_state(d.state_dict(), state)
    d.update(*preds(), y)   # without epoch=: the next epoch
    assert d.epoch == 2


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        elif isinstance(a[k], list):
            assert len(a[k]) == len(b[k]) and all(torch.equal(x, z) for x, z in zip(a[k], b[k])), k
        else:
            assert a[k] == b[k], k


def test_a_refused_temperature_leaves_the_epoch_to_try_again():
    """A temperature schedule that returned 0 raised after the epoch had advanced and the
    running moments had moved: the same epoch could not be tried again."""
    N, C = 30, 3
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, C, (N,), generator=g)
    p = torch.softmax(torch.randn(N, C, generator=g), 1)
    schedule = [1.0, 0.0, 1.0]
    d = DynCIM(N, 2, epochs=5, temperature=lambda e, total: schedule.pop(0))
    d.update(p, [p, p], y, epoch=0)
    state = d.state_dict()
    with pytest.raises(ValueError, match="temperature schedule returned 0.0"):
        d.update(p, [p, p], y, epoch=1)
    _assert_same_state(d.state_dict(), state)
    d.update(p, [p, p], y, epoch=1)
    assert d.epoch == 1


def test_a_starting_unimodal_scale_above_its_cap_is_refused():
    """alpha_0 = 6 above alpha_max = 4 gave alpha 6 before the first update and 4 after it, with
    balanced modalities, where min(alpha_max, alpha_0 (1 + spread)) can never give alpha_0."""
    with pytest.raises(ValueError, match=r"unimodal_scale \(alpha_0 = 6\) must not exceed max_unimodal_scale "
                                         r"\(alpha_max = 4\)"):
        DynCIM(10, 2, 5, unimodal_scale=6.0, max_unimodal_scale=4.0)
    DynCIM(10, 2, 5, unimodal_scale=4.0, max_unimodal_scale=4.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_difficulty_weights_must_be_finite(bad):
    """NaN and inf passed `(dw < 0).any() or dw.sum() <= 0`: after three updates every sample
    weight was NaN."""
    with pytest.raises(ValueError, match=r"difficulty_weights must be 3 numbers \(deviation, consistency, "
                                         r"stability\), finite and >= 0 with a positive sum; got \((nan|inf), 1, 1\)"):
        DynCIM(4, 2, 5, difficulty_weights=(bad, 1, 1))
    p = torch.full((4, 2), 0.5, dtype=torch.float64)
    d = DynCIM(4, 2, 5, difficulty_weights=(2, 1, 0))
    for _ in range(3):
        d.update(p, [p, p], torch.tensor([0, 1, 0, 1]))
    assert bool(torch.isfinite(d.weights()).all())
