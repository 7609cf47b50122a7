"""SynIB loss: values on hand-made logits, gradients, and the four ways to withhold a modality."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastpid.integrations import SynIBLoss, kl_to_uniform


def test_kl_to_uniform_by_hand():
    logits = torch.tensor([[math.log(2.0), 0.0], [0.0, 0.0]])
    # Row 1: p = (2/3, 1/3); row 2: uniform (KL 0).
    by_hand = (2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)) / 2
    assert kl_to_uniform(logits).item() == pytest.approx(by_hand, rel=1e-6)


def test_value_with_input_independent_fusion():
    """A fusion head that ignores its input gives the same logits with or without a modality,
    so the penalty is exactly 2 KL(softmax(l) || U) for every masking variant."""
    fixed = torch.tensor([2.0, 0.0, -1.0])
    fusion = lambda a, b: fixed.expand(a.shape[0], 3) + 0 * (a.sum() + b.sum())  # noqa: E731
    head1 = lambda z: z[:, :3]  # noqa: E731
    head2 = lambda z: -z[:, :3]  # noqa: E731
    z1, z2 = torch.randn(6, 3), torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    p = torch.softmax(fixed, 0)
    kl = float((p * torch.log(p * 3)).sum())
    ce_fused = float(-torch.log(p[y]).mean())
    ce_uni = float(F.cross_entropy(head1(z1), y) + F.cross_entropy(head2(z2), y))
    for mask in ("random", "zero", "noise", "learned"):
        out = SynIBLoss(lambda_uni=0.3, lambda_syn=0.7, mask=mask)(z1, z2, y, fusion, head1, head2)
        assert out.fused_ce.item() == pytest.approx(ce_fused, rel=1e-6)
        assert out.unimodal_ce.item() == pytest.approx(ce_uni, rel=1e-6)
        assert out.synergy_kl.item() == pytest.approx(2 * kl, rel=1e-6)
        assert out.loss.item() == pytest.approx(ce_fused + 0.3 * ce_uni + 1.4 * kl, rel=1e-6)


def test_zero_mask_on_additive_fusion():
    """fusion(a, b) = a + b with z̃ = 0 (p = 1): the penalty is KL(softmax(z2)) + KL(softmax(z1))."""
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    y = torch.randint(0, 4, (5,))
    out = SynIBLoss(lambda_uni=0.0, lambda_syn=1.0, mask="zero", p=1.0)(z1, z2, y, lambda a, b: a + b)
    assert out.synergy_kl.item() == pytest.approx((kl_to_uniform(z1) + kl_to_uniform(z2)).item(), rel=1e-6)
    assert out.unimodal_ce.item() == 0.0


def _model(seed=0):
    torch.manual_seed(seed)
    enc1, enc2 = torch.nn.Linear(5, 4), torch.nn.Linear(6, 4)
    head1, head2 = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    fuse = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    return enc1, enc2, head1, head2, (lambda a, b: fuse(torch.cat([a, b], 1))), fuse


@pytest.mark.parametrize("mask", ["random", "zero", "noise", "learned"])
def test_gradients_flow_to_every_part(mask):
    enc1, enc2, head1, head2, fusion, fuse = _model()
    x1, x2, y = torch.randn(16, 5), torch.randn(16, 6), torch.randint(0, 3, (16,))
    loss_fn = SynIBLoss(mask=mask, p=0.5)
    out = loss_fn(enc1(x1), enc2(x2), y, fusion, head1, head2)
    out.loss.backward()
    for m in (enc1, enc2, head1, head2, fuse):
        for prm in m.parameters():
            assert prm.grad is not None and torch.isfinite(prm.grad).all() and prm.grad.abs().sum() > 0


def test_penalty_gradient_reaches_fusion_only_through_penalty():
    """With lambda_syn > 0 the gradient differs from the plain loss's gradient."""
    grads = []
    for lam in (0.0, 1.0):
        enc1, enc2, head1, head2, fusion, fuse = _model()
        x1, x2, y = torch.randn(16, 5), torch.randn(16, 6), torch.randint(0, 3, (16,))
        SynIBLoss(lambda_syn=lam, mask="zero", p=1.0)(enc1(x1), enc2(x2), y, fusion, head1, head2).loss.backward()
        grads.append(fuse[0].weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_off_after_epoch():
    enc1, enc2, head1, head2, fusion, _ = _model()
    z1, z2, y = torch.randn(8, 4), torch.randn(8, 4), torch.randint(0, 3, (8,))
    loss_fn = SynIBLoss(off_after_epoch=3)
    assert loss_fn(z1, z2, y, fusion, head1, head2, epoch=2).synergy_kl.item() > 0
    off = loss_fn(z1, z2, y, fusion, head1, head2, epoch=3)
    assert off.synergy_kl.item() == 0.0
    assert off.loss.item() == pytest.approx((off.fused_ce + 0.6 * off.unimodal_ce).item(), rel=1e-6)


def test_random_mask_takes_features_from_other_samples():
    z = torch.arange(40.0).reshape(10, 4) * 10 + torch.arange(4.0)   # every entry distinct
    full = SynIBLoss(mask="random", p=1.0).withhold(z, 1)
    # Each row is a different sample's row, column by column (a derangement).
    assert torch.equal(full.sort(0).values, z.sort(0).values)
    assert not (full == z).any()
    assert torch.equal(full - full[:, :1], z[:, :4] - z[:, :1])   # whole rows move together
    half = SynIBLoss(mask="random", p=0.5, seed=1).withhold(torch.randn(400, 50), 1)
    assert half.shape == (400, 50)
    zz = torch.randn(400, 50)
    frac = (SynIBLoss(mask="random", p=0.3).withhold(zz, 1) != zz).float().mean().item()
    assert frac == pytest.approx(0.3, abs=0.02)


def test_zero_and_noise_masks():
    z = torch.randn(500, 8) * 3 + 5
    zero = SynIBLoss(mask="zero", p=0.25).withhold(z, 1)
    assert ((zero == 0) | (zero == z)).all()
    assert (zero == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    loss_fn = SynIBLoss(mask="noise", p=1.0, momentum=1.0)
    loss_fn._update_stats(1, z)
    noise = loss_fn.withhold(z, 1)
    assert not torch.isclose(noise, z).any()
    torch.testing.assert_close(noise.mean(0), z.mean(0), atol=0.5, rtol=0)
    torch.testing.assert_close(noise.std(0), z.std(0), atol=0.5, rtol=0)


def test_learned_gate_masks_the_evidence_and_keeps_the_rest():
    """The head reads only feature 0; the gate should half-close feature 0 (mixing with a
    random other sample: at g = 0.5 a partner of the other class gives a logit of 0, and any
    smaller g makes the head worse than chance) and keep feature 1 open."""
    torch.manual_seed(0)
    y = torch.randint(0, 2, (256,))
    z = torch.stack([4.0 * (2 * y - 1) + 0.1 * torch.randn(256), torch.randn(256)], 1)
    head = lambda h: torch.stack([-h[:, 0], h[:, 0]], 1)  # noqa: E731
    loss_fn = SynIBLoss(mask="learned", gate_steps=10)
    for _ in range(5):
        zt = loss_fn.withhold(z, 1, head, y)
    g = loss_fn.gate(1)
    assert g[0] < 0.6 and g[1] > 0.95
    assert F.cross_entropy(head(z), y) < 0.01
    assert F.cross_entropy(head(zt), y) > 0.25
    assert loss_fn.gate(2) is None


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="mask"):
        SynIBLoss(mask="dropout")
    with pytest.raises(ValueError, match="p must"):
        SynIBLoss(p=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        SynIBLoss(lambda_syn=-1)
    loss_fn = SynIBLoss()
    fusion = lambda a, b: a + b  # noqa: E731
    with pytest.raises(ValueError, match="batch sizes"):
        loss_fn(torch.randn(4, 3), torch.randn(5, 3), torch.zeros(4, dtype=torch.long), fusion)
    with pytest.raises(ValueError, match="heads"):
        loss_fn(torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4, dtype=torch.long), fusion)
    with pytest.raises(ValueError, match="learned"):
        SynIBLoss(mask="learned").withhold(torch.randn(4, 3), 1, head=lambda z: z)
    with pytest.raises(ValueError, match="B >= 2"):
        SynIBLoss().withhold(torch.randn(1, 3), 1)
