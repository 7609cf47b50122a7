"""SynIB loss: values on hand-made logits, gradients, and the four ways to withhold a modality."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastpid.integrations import SynIBLoss, kl_to_uniform


def test_kl_to_uniform_by_hand():
    logits = torch.tensor([[math.log(2.0), 0.0], [0.0, 0.0]])
    # Row 1: p = (2/3, 1/3); row 2: uniform (KL 0).
    by_hand = (2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)) / 2
    assert kl_to_uniform(logits).item() == pytest.approx(by_hand, rel=1e-6)


def test_kl_to_uniform_with_a_class_masked_by_minus_inf():
    # Masking a class with a -inf logit is common; 0 * log 0 had made the KL NaN.
    logits = torch.tensor([[math.log(2.0), 0.0, -math.inf]], requires_grad=True)
    by_hand = 2 / 3 * math.log(2 / 3 * 3) + 1 / 3 * math.log(1 / 3 * 3)
    kl = kl_to_uniform(logits)
    assert kl.item() == pytest.approx(by_hand, rel=1e-6)
    kl.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 2] == 0
    mask = torch.tensor([0.0, 0.0, -math.inf])
    out = SynIBLoss(mask="zero")(torch.randn(4, 2), torch.randn(4, 2), torch.tensor([0, 1, 0, 1]),
                                 lambda a, b: torch.cat([a, b], 1)[:, :3] + mask,
                                 lambda a: a @ torch.ones(2, 3), lambda b: b @ torch.ones(2, 3))
    assert math.isfinite(out.loss.item()) and math.isfinite(out.synergy_kl.item())


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
    with pytest.raises(ValueError, match="off_after_epoch=3 needs the epoch: pass epoch="):   # had stayed on
        loss_fn(z1, z2, y, fusion, head1, head2)


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
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64 - 1\]"):
        SynIBLoss(seed=-1)                    # accepted, where the probe and the controller refuse it
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


def test_labels_beyond_a_heads_classes_and_bad_epochs_raise():
    """Labels valid for the fused logits but not for a head with fewer classes gave a bare
    IndexError; a negative or non-numeric epoch was compared as it came; a 1-D embedding
    failed inside the fusion."""
    y = torch.tensor([0, 1, 2, 3])
    fusion = torch.nn.Linear(6, 4)
    cat = lambda a, b: fusion(torch.cat([a, b], 1))  # noqa: E731
    z = torch.randn(4, 3)
    small, full = torch.nn.Linear(3, 3), torch.nn.Linear(3, 4)
    with pytest.raises(ValueError, match=r"y \(for head1's logits\)\[3\] = 3 is not one of the 3 classes"):
        SynIBLoss(lambda_uni=1.0)(z, z, y, cat, small, full)
    for mask in ("learned", "learned_example"):
        with pytest.raises(ValueError, match=r"y \(for head2's logits\)\[3\] = 3 is not one of the 3 classes"):
            SynIBLoss(mask=mask, lambda_uni=0.0, gate_steps=2)(z, z, y, cat, full, small)
    # A head of other classes than the fusion's, whose count the labels fit, had trained silently.
    with pytest.raises(ValueError, match=r"head2 returned logits of shape \(4, 5\); the fusion's are \(B, 4\): every "
                                         r"head must score the same classes"):
        SynIBLoss(lambda_uni=1.0)(z, z, y, cat, full, torch.nn.Linear(3, 5))
    for mask in ("learned", "learned_example"):  # the gates' fits use the heads without lambda_uni too
        with pytest.raises(ValueError, match=r"head2 returned logits of shape \(4, 5\)"):
            SynIBLoss(mask=mask, lambda_uni=0.0, gate_steps=2)(z, z, y, cat, full, torch.nn.Linear(3, 5))
    loss_fn = SynIBLoss(off_after_epoch=2, lambda_syn=0.0)
    for epoch, err in ((-1, ValueError), ("3", ValueError), (float("nan"), ValueError)):
        with pytest.raises(err, match="epoch must be"):
            loss_fn(z, z, y, cat, full, full, epoch=epoch)
        with pytest.raises(err, match="epoch must be"):
            SynIBLoss().penalty_active(epoch)
    # a trainer's fractional epoch is one: the penalty is on before off_after_epoch, off from it
    assert SynIBLoss(off_after_epoch=2).penalty_active(1.5) and not SynIBLoss(off_after_epoch=2).penalty_active(2.5)
    with pytest.raises(ValueError, match=r"z1 must be embeddings of shape \(B, D\), got \(4,\)"):
        SynIBLoss()(z[:, 0], z, y, cat, full, full)


# ---------------------------------------------------------------- the repository variant

def _repo_model(seed=0):
    """Encoders, heads and a fusion that returns ``(logits, hidden features)``."""
    torch.manual_seed(seed)
    enc1, enc2 = torch.nn.Linear(5, 4), torch.nn.Linear(6, 4)
    head1, head2 = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    trunk, out = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU()), torch.nn.Linear(16, 3)

    def fusion(a, b):
        h = trunk(torch.cat([a, b], 1))
        return out(h), h
    return enc1, enc2, head1, head2, fusion, trunk, out


def _repo_loss(**kw):
    return SynIBLoss(variant="repository", num_classes=3, kl_features=16, gate_steps=3, **kw)


def _grads(modules):
    return [None if p.grad is None else p.grad.clone() for m in modules for p in m.parameters()]


def test_repository_variant_options():
    loss_fn = _repo_loss()
    assert (loss_fn.mask, loss_fn.penalty, loss_fn.detach_heads, loss_fn.detach_penalty) == \
        ("learned_example", "gaussian", True, True)
    assert loss_fn.masked_ce == 1.0 and loss_fn.lambda_uni == 1.0 and loss_fn.gate_steps == 3
    assert tuple(loss_fn.logvar_head.weight.shape) == (3, 16)
    # Any option can be overridden; the integration variant keeps its defaults.
    mixed = SynIBLoss(variant="repository", penalty="uniform", masked_ce=0.0)
    assert mixed.logvar_head is None and mixed.mask == "learned_example"
    plain = SynIBLoss()
    assert (plain.mask, plain.penalty, plain.masked_ce, plain.detach_heads, plain.lambda_uni) == \
        ("random", "uniform", 0.0, False, 0.6)


def test_repository_differences_from_the_public_code_as_documented():
    """The module docstring's list: off from epoch off_after_epoch on (the public
    ending_epoch=E is off_after_epoch=E + 1), masked cross-entropy on with lambda_syn=0, and
    one update of the running statistics per batch."""
    enc1, enc2, head1, head2, fusion, _, _ = _repo_model()
    x1, x2, y = torch.randn(16, 5), torch.randn(16, 6), torch.randint(0, 3, (16,))
    z1, z2 = enc1(x1).detach(), enc2(x2).detach()
    loss_fn = _repo_loss(off_after_epoch=3)
    on = loss_fn(z1, z2, y, fusion, head1, head2, epoch=2)
    assert on.synergy_kl.item() > 0 and on.masked_ce.item() > 0
    off = loss_fn(z1, z2, y, fusion, head1, head2, epoch=3)
    assert off.synergy_kl.item() == 0.0 and off.masked_ce.item() == 0.0
    no_syn = _repo_loss(lambda_syn=0.0)(z1, z2, y, fusion, head1, head2)
    assert no_syn.synergy_kl.item() == 0.0 and no_syn.masked_ce.item() > 0
    # Running statistics after two batches: first batch sets them, second moves them by 0.01.
    stats = _repo_loss()
    a, b = torch.randn(16, 4), torch.randn(16, 4) + 3.0
    stats(a, z2, y, fusion, head1, head2)
    stats(b, z2, y, fusion, head1, head2)
    torch.testing.assert_close(stats.running_mean1, 0.99 * a.mean(0) + 0.01 * b.mean(0))


def test_gaussian_kl_by_hand():
    from fastpid.integrations import gaussian_kl

    mean = torch.tensor([[1.0, -2.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # Row 1: ½ (1 + 1 − 1 − 0) + ½ (2 + 4 − 1 − log 2); row 2: a standard normal, 0.
    by_hand = (0.5 + 0.5 * (5 - math.log(2.0))) / 2
    assert gaussian_kl(mean, logvar).item() == pytest.approx(by_hand, rel=1e-6)
    assert gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_repository_value_with_input_independent_fusion():
    """A fusion with fixed logits and features: each masked pass has the same Gaussian KL,
    the masked cross-entropies equal the fused one, and the loss adds up as documented."""
    fixed, feats = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.5, -1.0])

    def fusion(a, b):
        pad = 0 * (a.sum() + b.sum())
        return fixed.expand(a.shape[0], 3) + pad, feats.expand(a.shape[0], 2) + pad
    head1, head2 = torch.nn.Linear(3, 3), torch.nn.Linear(4, 3)
    z1, z2, y = torch.randn(6, 3), torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    loss_fn = SynIBLoss(variant="repository", lambda_syn=0.7, num_classes=3, kl_features=2, gate_steps=2)
    out = loss_fn(z1, z2, y, fusion, head1, head2)
    with torch.no_grad():
        logvar = loss_fn.logvar_head(feats)
        kl = float(0.5 * (logvar.exp() + fixed ** 2 - 1 - logvar).sum())
        ce = float(F.cross_entropy(fixed.expand(6, 3), y))
        uni = float(F.cross_entropy(head1(z1), y) + F.cross_entropy(head2(z2), y))
    assert out.synergy_kl.item() == pytest.approx(2 * kl, rel=1e-5)
    assert out.masked_ce.item() == pytest.approx(2 * ce, rel=1e-6)
    assert out.unimodal_ce.item() == pytest.approx(uni, rel=1e-6)
    assert out.loss.item() == pytest.approx(ce + uni + 2 * ce + 1.4 * kl, rel=1e-5)


def test_repository_gradients_reach_what_they_should():
    enc1, enc2, head1, head2, fusion, trunk, out = _repo_model()
    x1, x2, y = torch.randn(16, 5), torch.randn(16, 6), torch.randint(0, 3, (16,))
    loss_fn = _repo_loss()
    loss_fn(enc1(x1), enc2(x2), y, fusion, head1, head2).loss.backward()
    for m in (enc1, enc2, head1, head2, trunk, out, loss_fn.logvar_head):
        for prm in m.parameters():
            assert prm.grad is not None and torch.isfinite(prm.grad).all() and prm.grad.abs().sum() > 0


@pytest.mark.parametrize("part", ["heads", "penalty"])
def test_repository_detached_parts_give_the_encoders_no_gradient(part):
    """Only the unimodal term (or only the penalty) on top of the fused loss: the encoders'
    gradient is the fused cross-entropy's alone, while the heads (or the fusion and the
    log-variance head) do get a gradient from the extra term."""
    kw = dict(masked_ce=0.0, lambda_syn=0.0) if part == "heads" else dict(masked_ce=0.0, lambda_uni=0.0, lambda_syn=1.0)
    enc1, enc2, head1, head2, fusion, trunk, out = _repo_model()
    x1, x2, y = torch.randn(16, 5), torch.randn(16, 6), torch.randint(0, 3, (16,))
    loss_fn = _repo_loss(**kw)
    terms = loss_fn(enc1(x1), enc2(x2), y, fusion, head1, head2)
    assert (terms.unimodal_ce if part == "heads" else terms.synergy_kl).item() > 0
    terms.loss.backward()
    with_term = _grads([enc1, enc2, trunk, out])
    if part == "heads":
        assert all(p.grad.abs().sum() > 0 for p in [*head1.parameters(), *head2.parameters()])
    else:
        assert all(p.grad.abs().sum() > 0 for p in loss_fn.logvar_head.parameters())
        assert all(p.grad is None for p in [*head1.parameters(), *head2.parameters()])   # the gate's head is frozen
    for m in (enc1, enc2, trunk, out):
        m.zero_grad()
    F.cross_entropy(fusion(enc1(x1), enc2(x2))[0], y).backward()
    plain = _grads([enc1, enc2, trunk, out])
    n_enc = len(list(enc1.parameters())) + len(list(enc2.parameters()))
    for a, b in zip(with_term[:n_enc], plain[:n_enc]):
        torch.testing.assert_close(a, b)
    differs = any(not torch.allclose(a, b) for a, b in zip(with_term[n_enc:], plain[n_enc:]))
    assert differs == (part == "penalty")


def test_masked_cross_entropy_reaches_the_encoders():
    grads = []
    for w in (0.0, 1.0):
        enc1, enc2, _, _, fusion, *_ = _repo_model()
        x1, x2, y = torch.randn(16, 5), torch.randn(16, 6), torch.randint(0, 3, (16,))
        _repo_loss(masked_ce=w, lambda_syn=0.0, lambda_uni=0.0)(enc1(x1), enc2(x2), y, fusion).loss.backward()
        grads.append(enc1.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_random_mask_replaces_features_from_the_batch():
    z = torch.arange(400.0 * 50).reshape(400, 50)                  # every entry distinct
    r = SynIBLoss(masked_ce_p=0.3).random_mask(z)
    changed = r != z
    assert changed.float().mean().item() == pytest.approx(0.3, abs=0.03)
    col = z[:, 7]
    assert torch.isin(r[:, 7], col).all()                           # column 7 takes column 7's values


def test_per_example_gate_masks_the_evidence():
    """The head reads feature 0 only: the gate closes feature 0 much more than feature 1,
    and the head does worse on the masked embeddings; every sample has its own gate."""
    torch.manual_seed(0)
    y = torch.randint(0, 2, (128,))
    z = torch.stack([3.0 * (2 * y - 1) + 0.1 * torch.randn(128), torch.randn(128)], 1)
    head = lambda h: torch.stack([-h[:, 0], h[:, 0]], 1)  # noqa: E731
    loss_fn = SynIBLoss(variant="repository", penalty="uniform", gate_sparsity=0.1)
    assert loss_fn.gate(1) is None
    loss_fn._update_stats(1, z)
    zt = loss_fn.withhold(z, 1, head, y)
    g = loss_fn.gate(1)
    assert g.shape == (128, 2) and g.std(0)[0] > 0
    # 20 Adam steps of 0.1 from logit 1: the evidence feature closes (0.73 -> about 0.54),
    # the unread one opens under the sparsity term (-> about 0.94).
    assert g[:, 0].mean() < 0.6 and g[:, 1].min() > 0.9
    assert F.cross_entropy(head(zt), y) > 50 * F.cross_entropy(head(z), y)
    # A larger sparsity weight masks less.
    sparse = SynIBLoss(variant="repository", penalty="uniform", gate_sparsity=1.0)
    sparse._update_stats(1, z)
    sparse.withhold(z, 1, head, y)
    assert sparse.gate(1)[:, 0].mean() > g[:, 0].mean() + 0.2
    assert not zt.requires_grad


def test_repository_state_dict_round_trip(tmp_path):
    enc1, enc2, head1, head2, fusion, *_ = _repo_model()
    x1, x2, y = torch.randn(16, 5), torch.randn(16, 6), torch.randint(0, 3, (16,))
    loss_fn = _repo_loss(seed=3)
    loss_fn(enc1(x1), enc2(x2), y, fusion, head1, head2)            # sizes the statistics, moves the stream
    state = loss_fn.state_dict()
    assert {"logvar_head.weight", "logvar_head.bias", "running_mean1", "running_var2"} <= set(state)
    torch.save(state, tmp_path / "loss.pt")
    fresh = _repo_loss(seed=99)
    fresh.load_state_dict(torch.load(tmp_path / "loss.pt", weights_only=True))
    torch.testing.assert_close(fresh.logvar_head.weight, loss_fn.logvar_head.weight)
    a = loss_fn(enc1(x1), enc2(x2), y, fusion, head1, head2)
    b = fresh(enc1(x1), enc2(x2), y, fusion, head1, head2)
    assert a.loss.item() == b.loss.item() and a.synergy_kl.item() == b.synergy_kl.item()


def test_repository_bad_options_raise():
    with pytest.raises(ValueError, match="variant"):
        SynIBLoss(variant="paper")
    with pytest.raises(ValueError, match="num_classes and kl_features"):
        SynIBLoss(variant="repository")
    with pytest.raises(ValueError, match="penalty"):
        SynIBLoss(penalty="entropy")
    with pytest.raises(ValueError, match="masked_ce must"):
        SynIBLoss(masked_ce=-1.0)
    with pytest.raises(ValueError, match="masked_ce_p"):
        SynIBLoss(masked_ce_p=1.5)
    with pytest.raises(ValueError, match="kl_features"):
        SynIBLoss(penalty="gaussian", num_classes=3, kl_features=0)
    with pytest.raises(TypeError, match="detach_heads"):
        SynIBLoss(detach_heads=1)
    with pytest.raises(ValueError, match="noise_std"):
        SynIBLoss(noise_std=0.0)
    # The log-variance head's width must match what the fusion gives it.
    *_, head1, head2, fusion, _, _ = _repo_model()
    wrong = SynIBLoss(variant="repository", num_classes=3, kl_features=8, gate_steps=1)
    with pytest.raises(ValueError, match="reads 8 features"):
        wrong(torch.randn(4, 4), torch.randn(4, 4), torch.tensor([0, 1, 2, 0]), fusion, head1, head2)
    with pytest.raises(ValueError, match="learned_example"):
        _repo_loss().withhold(torch.randn(4, 3), 1)
    with pytest.raises(RuntimeError, match="running statistics"):
        _repo_loss().withhold(torch.randn(4, 3), 1, head=lambda z: z, y=torch.tensor([0, 1, 2, 0]))


@pytest.mark.parametrize("kwargs", [dict(variant="repository", num_classes=3, kl_features=8),
                                    dict(mask="learned")])
def test_inference_mode_gives_the_no_grad_loss(kwargs):
    """The gates are fitted by gradient steps under torch.enable_grad(), which does not leave
    torch.inference_mode() (where PyTorch Lightning validates): variant="repository" (on every
    batch) and mask="learned" (before the first training step) raised "element 0 of tensors
    does not require grad" there. The loss must equal the one under no_grad, bit for bit, and
    the statistics sized in inference mode must still take a checkpoint."""
    g = torch.Generator().manual_seed(0)
    z1, z2, y = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
    h1, h2, hf = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3), torch.nn.Linear(8, 3)
    fuse = lambda a, b: hf(torch.cat([a, b], 1))  # noqa: E731
    out = []
    for mode in (torch.no_grad, torch.inference_mode):
        torch.manual_seed(1)                                   # the same logvar_head
        loss_fn = SynIBLoss(**kwargs).eval()
        with mode():
            out.append(loss_fn(z1, z2, y, fuse, h1, h2))
        loss_fn.load_state_dict(loss_fn.state_dict())
    assert float(out[1].synergy_kl) > 0
    assert out[1].loss.item() == out[0].loss.item() and out[1].synergy_kl.item() == out[0].synergy_kl.item()


def test_running_statistics_keep_tracking_in_bfloat16():
    """The running statistics were created in the embeddings' dtype: in bfloat16 the 1%
    updates (momentum 0.01) round to the nearest bfloat16 step (1/128 near 2) and the
    statistics stop tracking. On 300 batches whose mean moves from 0 to 2 after the first,
    bfloat16 ended at running_mean1 (1.961, 1.961), running_var1 (0.977, 1.164) against
    (1.896, 1.877), (0.938, 0.932) for the same inputs in float32. They are kept in float32
    now, as BatchNorm keeps its own, and match the float32 run."""
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 2, generator=g) + (0.0 if i == 0 else 2.0)).bfloat16() for i in range(300)]
    y = torch.randint(0, 2, (16,), generator=g)
    fuse = lambda a, b: (a + b).float()  # noqa: E731
    stats = []
    for dtype in (torch.bfloat16, torch.float32):
        loss_fn = SynIBLoss(mask="noise", momentum=0.01, lambda_uni=0.0)
        for z in batches:
            loss_fn(z.to(dtype), z.to(dtype), y, fuse)
        assert loss_fn.running_mean1.dtype == loss_fn.running_var1.dtype == torch.float32
        stats.append(torch.cat([loss_fn.running_mean1, loss_fn.running_var1]))
    torch.testing.assert_close(stats[0], stats[1], rtol=0, atol=1e-6)
    assert float(stats[1][:2].mean()) == pytest.approx(2 * (1 - 0.99 ** 299), abs=0.05)


def test_kl_terms_in_bfloat16_are_not_negative():
    """Computed in the logits' dtype, bfloat16 gave KL(uniform ‖ uniform) = -0.0156 and a
    Gaussian KL of -0.021 (0.0005 in float32): a KL below 0, in steps of 2⁻⁶ nats near 0,
    where the penalty drives the fused head. Both are computed in float32 now."""
    from fastpid.integrations import gaussian_kl
    logits = torch.zeros(8, 10, dtype=torch.bfloat16)
    assert float(kl_to_uniform(logits)) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    mean = (0.01 * torch.randn(8, 10, generator=g)).bfloat16()
    logvar = (0.01 * torch.randn(8, 10, generator=g)).bfloat16()
    exact = float(gaussian_kl(mean.double(), logvar.double()))
    assert float(gaussian_kl(mean, logvar)) == pytest.approx(exact, rel=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        near_uniform = torch.nn.functional.linear(1e-3 * torch.randn(8, 4, generator=g), torch.randn(10, 4, generator=g))
        assert near_uniform.dtype == torch.bfloat16
        assert float(kl_to_uniform(near_uniform)) >= -1e-6


@pytest.mark.parametrize("mask", ["random", "learned"])
def test_batch_of_one_leaves_the_penalty_out_with_a_warning(mask):
    """A shuffled loader's last batch of one sample raised ("B >= 2") with the default mask:
    these masks fill from another sample of the batch. Its penalty is 0 now, said once."""
    torch.manual_seed(0)
    head = torch.nn.Linear(3, 2)
    loss_fn = SynIBLoss(mask=mask)
    fusion = lambda a, b: head(a + b)  # noqa: E731
    z1, z2, y = torch.randn(1, 3, requires_grad=True), torch.randn(1, 3), torch.tensor([1])
    with pytest.warns(UserWarning, match="batch of one") as said:
        terms = loss_fn(z1, z2, y, fusion, head, head)
    assert said[0].filename == __file__   # the caller's line, not torch's Module.__call__
    assert float(terms.synergy_kl) == 0.0
    fused_only = F.cross_entropy(fusion(z1, z2), y) + loss_fn.lambda_uni * (
        F.cross_entropy(head(z1), y) + F.cross_entropy(head(z2), y))
    assert float(terms.loss) == pytest.approx(float(fused_only.detach()))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_fn(z1, z2, y, fusion, head, head)  # warned once
        assert float(loss_fn(torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), fusion,
                             head, head).synergy_kl) > 0


def test_gaussian_penalty_checks_the_number_of_classes():
    """A log-variance head of num_classes=4 on 3 logits failed inside torch ("size of tensor
    a (4) must match ..."), and num_classes=1 broadcast silently to a wrong KL."""
    enc1, enc2, head1, head2, fusion, *_ = _repo_model()
    z1, z2, y = enc1(torch.randn(6, 5)), enc2(torch.randn(6, 6)), torch.tensor([0, 1, 2, 0, 1, 2])
    for n in (1, 4):
        loss_fn = SynIBLoss(variant="repository", num_classes=n, kl_features=16, gate_steps=3)
        with pytest.raises(ValueError, match=f"num_classes={n} values but the fusion gives 3 logits"):
            loss_fn(z1, z2, y, fusion, head1, head2)


@pytest.mark.parametrize("kwargs", [dict(mask="learned"), dict(mask="learned_example"),
                                    dict(variant="repository", num_classes=4, kl_features=16)])
def test_gate_fits_leave_the_heads_batchnorm_statistics_alone(kwargs):
    """The gates are fitted with the model frozen: a head's BatchNorm takes one update per
    training batch (its own forward), not one per gate step on masked embeddings (the
    repository variant's 20 steps a batch left the running variance 24 % low); the loss
    still backpropagates through the heads' forward (the statistics are put back without
    moving their version)."""
    C, D, B = 4, 8, 32
    torch.manual_seed(0)
    fus = torch.nn.Linear(2 * D, C)
    heads = [torch.nn.Sequential(torch.nn.BatchNorm1d(D), torch.nn.Linear(D, C)) for _ in range(2)]
    twins = [torch.nn.Sequential(torch.nn.BatchNorm1d(D), torch.nn.Linear(D, C)) for _ in range(2)]
    for h, t in zip(heads, twins):
        t.load_state_dict(h.state_dict())
    loss_fn = SynIBLoss(**kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        y = torch.randint(0, C, (B,), generator=g)
        z1 = 2 * torch.randn(B, D, generator=g) + y[:, None].float()
        z2 = 2 * torch.randn(B, D, generator=g)
        loss_fn(z1, z2, y, lambda a, b: fus(torch.cat([a, b], 1)), *heads).loss.backward()
        for t, z in zip(twins, (z1, z2)):   # the heads' own forward, as the loss runs it
            t(z.detach() if loss_fn.detach_heads else z)
    for h, t in zip(heads, twins):
        assert int(h[0].num_batches_tracked) == int(t[0].num_batches_tracked) == 5
        torch.testing.assert_close(h[0].running_mean, t[0].running_mean, rtol=0, atol=0)
        torch.testing.assert_close(h[0].running_var, t[0].running_var, rtol=0, atol=0)


class _NormedFusion(torch.nn.Module):
    """A fusion with a BatchNorm over the concatenated embeddings; ``(logits, features)``
    where ``features`` is given."""

    def __init__(self, D: int, C: int, features: int = 0):
        super().__init__()
        self.bn, self.out = torch.nn.BatchNorm1d(2 * D, momentum=None), torch.nn.Linear(2 * D, C)
        self.feats = torch.nn.Linear(2 * D, features) if features else None

    def forward(self, a, b):
        h = self.bn(torch.cat([a, b], 1))
        return self.out(h) if self.feats is None else (self.out(h), self.feats(h))


@pytest.mark.parametrize("kwargs", [dict(mask="zero"), dict(mask="random", masked_ce=1.0), dict(mask="learned"),
                                    dict(variant="repository", num_classes=4, kl_features=16, gate_steps=2)])
def test_masked_passes_leave_the_fusions_batchnorm_statistics_alone(kwargs):
    """The penalty and the masked cross-entropy call the fusion on masked inputs; its
    running statistics follow its forward on the real ones only (with zero masks a mean
    of inputs around 3 had ended at 2.2 after one step, and a step counted 3 or 5
    batches), and the loss still backpropagates through it."""
    C, D, B = 4, 8, 32
    torch.manual_seed(0)
    features = kwargs.get("kl_features", 0)
    fus, twin = _NormedFusion(D, C, features), _NormedFusion(D, C, features)
    twin.load_state_dict(fus.state_dict())
    heads = torch.nn.Linear(D, C), torch.nn.Linear(D, C)
    loss_fn = SynIBLoss(**kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        y = torch.randint(0, C, (B,), generator=g)
        z1 = torch.randn(B, D, generator=g) + 3 + y[:, None].float()
        z2 = torch.randn(B, D, generator=g) + 3
        terms = loss_fn(z1, z2, y, fus, *heads)
        assert float(terms.synergy_kl) > 0
        terms.loss.backward()
        twin(z1, z2)
    assert int(fus.bn.num_batches_tracked) == 3
    torch.testing.assert_close(fus.bn.running_mean, twin.bn.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(fus.bn.running_var, twin.bn.running_var, rtol=0, atol=0)
    assert all(p.grad is not None for p in fus.out.parameters())


def _linear_heads(C: int, D: int):
    """A fusion of two D-wide embeddings into C logits and two unimodal heads, seeded."""
    torch.manual_seed(0)
    fus = torch.nn.Linear(2 * D, C)
    h1, h2 = torch.nn.Linear(D, C), torch.nn.Linear(D, C)
    return (lambda a, b: fus(torch.cat([a, b], 1))), h1, h2


@pytest.mark.parametrize("kwargs", [dict(mask="noise"),
                                    dict(variant="repository", num_classes=3, kl_features=8, gate_steps=2)])
def test_an_evaluation_before_training_leaves_no_running_statistics(kwargs):
    """A sanity-check validation before the first training step draws its noise from its own
    batch and stores nothing: training then runs as without it (a stored validation mean
    stayed at 36 % weight after 100 batches at momentum 0.01)."""
    C, D, B = 3, 4, 16
    fusion, h1, h2 = _linear_heads(C, D)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, C, (B,), generator=g)
    validated, fresh = SynIBLoss(**kwargs), SynIBLoss(**kwargs)
    validated.eval()
    with torch.inference_mode():
        out = validated(10 + torch.randn(B, D, generator=g), torch.randn(B, D, generator=g), y, fusion, h1, h2)
    assert torch.isfinite(out.synergy_kl) and validated.running_mean1.numel() == 0
    validated.train()
    for _ in range(3):
        z1, z2 = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
        validated(z1, z2, y, fusion, h1, h2)
        fresh(z1, z2, y, fusion, h1, h2)
    for name in ("running_mean1", "running_var1", "running_mean2", "running_var2"):
        torch.testing.assert_close(getattr(validated, name), getattr(fresh, name), rtol=0, atol=0)


def test_learned_example_gate_is_finite_in_float16():
    """The per-example gate's Adam moments were kept in the embeddings' dtype: in float16 eps
    (1e-8) rounds to 0 and an entry whose gradient underflowed to 0 stepped by 0 / 0, so the
    loss was NaN on every batch (96 of 1,024 gates NaN here). They are fitted in float32."""
    torch.manual_seed(0)
    z1, z2, y = torch.randn(64, 16).half(), torch.randn(64, 16).half(), torch.randint(0, 10, (64,))
    h1, h2, fuse = torch.nn.Linear(16, 10).half(), torch.nn.Linear(16, 10).half(), torch.nn.Linear(32, 10).half()
    loss_fn = SynIBLoss(mask="learned_example")
    out = loss_fn(z1, z2, y, lambda a, b: fuse(torch.cat([a, b], 1)), h1, h2)
    assert torch.isfinite(out.loss) and torch.isfinite(out.synergy_kl)
    assert loss_fn.gate(1).dtype == torch.float16 and torch.isfinite(loss_fn.gate(1)).all()


@pytest.mark.parametrize("kwargs", [dict(mask="noise"), dict(mask="learned_example"),
                                    dict(variant="repository", num_classes=3, kl_features=8)])
def test_a_non_finite_batch_leaves_the_running_statistics_alone(kwargs):
    """One batch with an infinite feature (an overflow under float16 autocast, a step GradScaler
    skips) was blended into the running statistics, and every later loss was NaN. Its
    non-finite features now leave them as they were."""
    torch.manual_seed(0)
    h1, h2, fuse = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3), torch.nn.Linear(8, 3)
    fusion = lambda a, b: fuse(torch.cat([a, b], 1))  # noqa: E731
    loss_fn = SynIBLoss(**kwargs)
    y = torch.randint(0, 3, (32,))
    losses = []
    for step in range(4):
        z1, z2 = torch.randn(32, 4), torch.randn(32, 4)
        if step == 1:
            z1[0, 0] = float("inf")
        losses.append(float(loss_fn(z1, z2, y, fusion, h1, h2).loss))
    assert math.isfinite(losses[0]) and math.isfinite(losses[2]) and math.isfinite(losses[3])
    for name in ("running_mean1", "running_var1", "running_mean2", "running_var2"):
        assert torch.isfinite(getattr(loss_fn, name)).all(), name


def test_running_variance_is_the_batches_own():
    """The running variance blends the batches' biased variances, as the committed experiments
    ran: (n - 1) / n of the features' for batches of n, 0 for batches of one (documented)."""
    g = torch.Generator().manual_seed(0)
    fuse = lambda a, b: (a + b)[:, :3]  # noqa: E731
    ends = {}
    for size in (64, 2, 1):
        loss_fn = SynIBLoss(mask="noise", momentum=0.01, lambda_uni=0.0)
        for _ in range(1500):
            z = 2 * torch.randn(size, 4, generator=g)
            loss_fn(z, z, torch.zeros(size, dtype=torch.int64), fuse)
        ends[size] = float(loss_fn.running_var1.mean())
    assert ends[64] == pytest.approx(4 * 63 / 64, rel=0.1) and ends[2] == pytest.approx(2.0, rel=0.25), ends
    assert ends[1] == 0.0


def test_a_fusion_that_returns_no_tensor_is_named():
    loss_fn = SynIBLoss()
    z = torch.randn(8, 4)
    with pytest.raises(TypeError, match="must return logits .* got dict"):
        loss_fn(z, z, torch.zeros(8, dtype=torch.int64), lambda a, b: {"logits": a + b})


@pytest.mark.parametrize("mask", ["random", "noise", "learned_example"])
def test_validation_leaves_training_as_it_was_and_repeats(mask):
    """Evaluation drew from the training stream: validating after each epoch changed the next
    epoch's masks (first loss 2.09793 against 2.09640 without validation). It draws from a
    stream of its own, restarted by eval(), so every validation pass draws alike."""
    C, D, B = 3, 6, 16
    fusion, h1, h2 = _linear_heads(C, D)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(B, D, generator=g), torch.randn(B, D, generator=g), torch.randint(0, C, (B,), generator=g))
               for _ in range(4)]
    validated, plain = SynIBLoss(mask=mask, seed=3), SynIBLoss(mask=mask, seed=3)

    def validate():
        validated.eval()
        with torch.no_grad():
            losses = [float(validated(*batch, fusion, h1, h2).loss) for batch in batches[2:]]
        validated.train()
        return losses

    for epoch in range(2):
        for z1, z2, y in batches[:2]:
            a = validated(z1, z2, y, fusion, h1, h2).loss
            b = plain(z1, z2, y, fusion, h1, h2).loss
            assert float(a) == float(b)
        validate()
    assert validate() == validate()


@pytest.mark.parametrize("call, err, match", [
    (lambda: kl_to_uniform(torch.tensor(1.0)), ValueError, r"logits must have shape \(B, C\) .*got \(\)"),
    (lambda: kl_to_uniform(torch.randn(4, 0)), ValueError, r"got \(4, 0\)"),
    (lambda: kl_to_uniform(torch.randn(0, 3)), ValueError, r"got \(0, 3\)"),  # had been NaN
    (lambda: kl_to_uniform(np.zeros((4, 3))), TypeError, "logits must be a floating-point torch.Tensor"),
    (lambda: kl_to_uniform(torch.zeros(4, 3, dtype=torch.long)), TypeError, "of torch.int64"),
])
def test_kl_to_uniform_refuses_what_is_not_a_batch_of_logits(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_gaussian_kl_refuses_mismatched_or_empty_shapes():
    from fastpid.integrations import gaussian_kl

    with pytest.raises(ValueError, match=r"same shape \(B, C\), got \(4, 3\) and \(1, 3\)"):
        gaussian_kl(torch.randn(4, 3), torch.randn(1, 3))  # had been broadcast
    with pytest.raises(ValueError, match=r"mean must have shape \(B, C\)"):
        gaussian_kl(torch.randn(0, 3), torch.randn(0, 3))  # had been NaN


def test_a_fusion_of_the_wrong_shape_and_a_third_modality_are_refused():
    """A fusion returning (B,) failed inside cross_entropy ("Expected floating point type for
    target with class probabilities, got Long"); gate(3) raised an AttributeError from inside,
    and withhold(z, 3) went through."""
    z1, z2, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    loss_fn = SynIBLoss(mask="zero")
    wrong_shape = r"fusion\(a, b\) must return logits of shape \(B, C\) = \(4, C\), got \(4,\)"
    with pytest.raises(ValueError, match=wrong_shape):
        loss_fn(z1, z2, y, lambda a, b: (a + b).sum(1), lambda a: a, lambda b: b)
    for call in (lambda: loss_fn.gate(3), lambda: loss_fn.withhold(z1, 3), lambda: loss_fn.withhold(z1, True)):
        with pytest.raises(ValueError, match="m must be the modality, 1 or 2"):
            call()
    assert loss_fn.withhold(z1, 1).shape == z1.shape


def test_terms_that_are_off_are_zero_beside_an_infinite_fused_loss():
    """The terms left off (no unimodal heads, the penalty past its epoch, no masked
    cross-entropy) were the fused loss times 0: NaN where that loss is infinite (a -inf logit
    on the true class), where the docstring says 0."""
    def fusion(z1, z2):
        logits = torch.cat([z1, z2], 1)[:, :3].clone()
        logits[:, 0] = -math.inf
        return logits
    z = torch.zeros(4, 3)
    terms = SynIBLoss(lambda_uni=0.0, off_after_epoch=0)(z, z, torch.zeros(4, dtype=torch.long), fusion, epoch=5)
    assert math.isinf(float(terms.fused_ce))
    assert float(terms.unimodal_ce) == 0.0 and float(terms.synergy_kl) == 0.0
    assert terms.masked_ce is None or float(terms.masked_ce) == 0.0


@pytest.mark.parametrize("name", ["num_classes", "kl_features"])
@pytest.mark.parametrize("bad", [0, -1, 3.5, True, "3"])
def test_logvar_head_sizes_are_checked_whatever_the_penalty(name, bad):
    """num_classes=0 or 3.5 was taken unless penalty='gaussian' read it."""
    for penalty in ("uniform", "gaussian"):
        with pytest.raises(ValueError, match=rf"{name} must be a positive integer, got {re.escape(repr(bad))}"):
            SynIBLoss(penalty=penalty, **{"num_classes": 3, "kl_features": 4, name: bad})
    assert SynIBLoss(num_classes=np.int64(3), kl_features=None).logvar_head is None
