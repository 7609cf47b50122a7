"""Gradients of every method with respect to P (and through joint() to soft predictions)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import fastpid

from helpers import random_joint

TERMS = ("redundancy", "unique1", "unique2", "synergy")


def _terms(**kwargs):
    def fn(P):
        res = fastpid.pid(P, **kwargs)
        return torch.stack([getattr(res, k) for k in TERMS])
    return fn


@pytest.mark.parametrize("shape", [(2, 2, 2), (2, 3, 2), (3, 3, 3), (3, 2, 4)])
def test_exact_gradcheck_interior(shape):
    """Envelope-theorem gradient vs central differences; the solve is tight (1e-11) so the
    finite differences are not swamped by the solver's own error."""
    rng = np.random.default_rng(sum(shape))
    P = torch.tensor(random_joint(rng, shape, alpha=3.0), requires_grad=True)
    assert torch.autograd.gradcheck(_terms(tol=1e-11), (P,), eps=1e-5, atol=2e-5, rtol=1e-3)


def test_exact_gradcheck_unnormalised_counts():
    rng = np.random.default_rng(1)
    P = torch.tensor(50.0 * random_joint(rng, (3, 2, 3), alpha=3.0), requires_grad=True)
    assert torch.autograd.gradcheck(_terms(tol=1e-11), (P,), eps=1e-4, atol=2e-5, rtol=1e-3)


def test_proxy_gradcheck():
    """The proxy is closed form: its gradient is the exact derivative of its value."""
    rng = np.random.default_rng(2)
    P = torch.tensor(random_joint(rng, (3, 4, 3), alpha=3.0), requires_grad=True)
    assert torch.autograd.gradcheck(_terms(method="proxy"), (P,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_fast_gradient_approaches_exact_gradient():
    """``fast`` returns the envelope gradient at its refined potentials, an estimate of dV/dP
    that tends to the exact one as the step budget grows."""
    rng = np.random.default_rng(2)
    P0 = torch.tensor(random_joint(rng, (3, 4, 3), alpha=3.0))

    def grad(**kwargs):
        P = P0.clone().requires_grad_(True)
        fastpid.pid(P, **kwargs).synergy.backward()
        return P.grad

    exact = grad()
    errors = [float((grad(method="fast", steps=s) - exact).abs().max()) for s in (5, 100, 400)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-2


def test_batched_gradient_matches_single():
    rng = np.random.default_rng(3)
    P = torch.tensor(np.stack([random_joint(rng, (3, 3, 2), alpha=2.0) for _ in range(3)]), requires_grad=True)
    fastpid.pid(P).synergy.sum().backward()
    for b in range(3):
        Pb = P.detach()[b].clone().requires_grad_(True)
        fastpid.pid(Pb).synergy.backward()
        torch.testing.assert_close(P.grad[b], Pb.grad, atol=1e-6, rtol=1e-5)


def test_sparse_gradient_is_finite():
    rng = np.random.default_rng(4)
    P = torch.tensor(random_joint(rng, (6, 5, 4), alpha=0.3, sparsity=0.7, tiny=1e-13), requires_grad=True)
    res = fastpid.pid(P)
    (res.synergy + res.redundancy + res.unique1).backward()
    assert torch.isfinite(P.grad).all()


def test_a_sparse_layout_with_a_gradient_is_solved_as_its_dense_tensor():
    """A sparse COO P that needs a gradient failed in the zero-mass gradient's where() ("Could
    not run 'aten::gt.Scalar' ... 'SparseCPU'"); without a gradient it was already solved."""
    idx = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 0, 1, 2], [0, 1, 1, 0, 1]])
    vals = torch.tensor([0.3, 0.2, 0.25, 0.2, 0.05], dtype=torch.float64, requires_grad=True)
    sparse = torch.sparse_coo_tensor(idx, vals, (3, 3, 2), check_invariants=True)
    dense = sparse.detach().to_dense().requires_grad_(True)
    res, ref = fastpid.pid(sparse), fastpid.pid(dense)
    assert res.synergy.item() == ref.synergy.item()
    res.synergy.backward()
    ref.synergy.backward()
    torch.testing.assert_close(vals.grad, dense.grad[tuple(idx)], rtol=0, atol=1e-15)
    # Compressed layouts: solved without a gradient (is_contiguous had raised for CSR), refused
    # with one (torch has no backward pass into them: .backward() had failed after the solve).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "Sparse CSR tensor support is in beta"
        full = torch.rand(3, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.1
        # (within the gap: the dense tensor is read in place, the CSR one through a copy)
        assert fastpid.pid(full.to_sparse_csr()).synergy.item() == pytest.approx(fastpid.pid(full).synergy.item(),
                                                                                  abs=1e-12)
        with pytest.raises(TypeError, match="sparse_csr tensor that needs a gradient"):
            fastpid.pid(full.float().to_sparse_csr().requires_grad_(True))


def test_gradient_flows_to_soft_predictions_float32():
    torch.manual_seed(0)
    logits1 = torch.randn(256, 5, requires_grad=True)
    logits2 = torch.randn(256, 4, requires_grad=True)
    labels = torch.randint(0, 3, (256,))
    P = fastpid.joint(logits1.softmax(-1), logits2.softmax(-1), labels, sizes=(5, 4, 3))
    res = fastpid.pid(P)
    assert res.synergy.dtype == torch.float32
    res.synergy.backward()
    assert logits1.grad is not None and torch.isfinite(logits1.grad).all() and logits1.grad.abs().sum() > 0
    assert torch.isfinite(logits2.grad).all()


def test_gradient_ascent_on_synergy_increases_it():
    """A few steps along the gradient move the exact synergy the way the gradient says."""
    rng = np.random.default_rng(5)
    logits = torch.tensor(np.log(random_joint(rng, (3, 3, 2), alpha=2.0)), requires_grad=True)
    start = float(fastpid.pid(logits.detach().exp()).synergy)
    opt = torch.optim.SGD([logits], lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        (-fastpid.pid(logits.exp()).synergy).backward()
        opt.step()
    assert float(fastpid.pid(logits.detach().exp()).synergy) > start + 1e-3


@pytest.mark.parametrize("method", ["exact", "fast", "proxy"])
def test_zero_cells_get_zero_gradient_on_every_backend(method):
    """The derivative at a cell of zero mass is one-sided (unbounded for mi and synergy); the
    closed forms' autograd and the envelope formula each gave another finite value
    there, so redundancy with n2 = 1 (identically 0) got gradients up to 721 that depended on
    the backend and the memory layout. Every term now has a zero gradient at zero cells; the
    cells with mass keep theirs."""
    P = torch.tensor([[[0.3, 0.0, 0.1]], [[0.0, 0.4, 0.0]], [[0.2, 0.0, 0.0]]], dtype=torch.float64)
    for backend in ("torch", "cpp"):
        for X in (P.clone(), P.permute(2, 1, 0).contiguous().permute(2, 1, 0)):
            X = X.requires_grad_(True)
            fastpid.pid(X, method=method, backend=backend).redundancy.backward()
            assert torch.all(X.grad[P == 0] == 0) and X.grad.abs().max() < 1e-12, (backend, X.grad)
    rng = np.random.default_rng(3)
    Q = torch.from_numpy(random_joint(rng, (3, 4, 5)))
    Q[0, 1] = 0.0
    Q[2, :, 3] = 0.0
    grads = []
    for backend in ("torch", "cpp"):
        X = (7.3 * Q).requires_grad_(True)          # unnormalised: the normalisation leaks nothing back
        r = fastpid.pid(X, method=method, backend=backend)
        (r.synergy + 2 * r.redundancy + r.unique1).backward()
        assert torch.all(X.grad[Q == 0] == 0)
        grads.append(X.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-9, rtol=1e-6)


def test_a_tiny_mass_gives_the_one_sided_derivative_the_zero_cell_convention_drops():
    """README: at a zero cell whose pair masses are positive, mi1, mi2, redundancy and the
    unique terms have a finite one-sided derivative; a tiny mass (1e-30) gets it. Checked
    against one-sided differences (mi1, mi2: closed forms; redundancy: through V)."""
    P = torch.rand(3, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.1
    P[0, 0, 0] = 0.0
    P = P / P.sum()
    E = torch.zeros_like(P)
    E[0, 0, 0] = 1.0
    X = (P + 1e-30 * E).requires_grad_(True)
    r = fastpid.pid(X, tol=1e-12)
    h = 1e-6
    for term in ("mi1", "mi2", "redundancy", "unique1"):
        g = float(torch.autograd.grad(getattr(r, term), X, retain_graph=True)[0][0, 0, 0])
        one_sided = float((getattr(fastpid.pid(P + h * E, tol=1e-13), term)
                           - getattr(fastpid.pid(P, tol=1e-13), term)) / h)
        assert abs(g - one_sided) < 1e-4 * max(1.0, abs(g)), (term, g, one_sided)
    assert float(torch.autograd.grad(r.mi1, X, retain_graph=True)[0][0, 0, 0]) < -0.3
    Z = P.clone().requires_grad_(True)  # the convention at 0 itself
    assert float(torch.autograd.grad(fastpid.pid(Z, tol=1e-12).mi1, Z)[0][0, 0, 0]) == 0.0


def test_a_value_at_the_end_of_its_bracket_keeps_its_whole_gradient():
    """The value is clamped to the closed-form bracket; torch.minimum splits a tie's gradient
    in half, so a fast solve that met the bracket's end to the last bit on the PyTorch backend
    (and stayed 2 ulp below it with C++) had half the C++ gradient (4.67 against 9.34)."""
    P0 = torch.zeros(3, 3, 2, dtype=torch.float64)
    P0[0, 0, 1], P0[0, 1, 1], P0[1, 1, 0], P0[1, 2, 0] = 5.6777704351169439e-02, 4.8741401137947178e-02, \
        6.1992337319203472e-01, 1.1514311503680018e-01
    P0[2, 1, 0], P0[2, 1, 1], P0[2, 2, 1] = 1.2666992441716529e-01, 3.2743803436189871e-02, 6.7842869320875174e-07
    grads = []
    for backend in ("torch", "cpp"):
        P = P0.clone().requires_grad_(True)
        fastpid.pid(P, method="fast", steps=3, backend=backend).synergy.backward()
        grads.append(P.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-9, rtol=1e-7)


def test_a_fast_value_past_its_bracket_by_rounding_keeps_its_gradient_on_every_backend():
    """Near-copies (X2 = X1 with 1% confusion) whose fast value stays at the closed-form upper
    end: PyTorch's value met the end exactly and kept the envelope gradient, C++'s came out
    4.4e-16 nats above its end and took the end's, so 17 of 64 problems had a synergy gradient of
    exactly 0 with C++ only."""
    gen = torch.Generator().manual_seed(21)
    x = torch.rand(64, 4, 1, 3, dtype=torch.float64, generator=gen)
    P0 = x * (torch.eye(4, dtype=torch.float64)[None, :, :, None]
              + 0.01 * torch.rand(64, 4, 4, 3, dtype=torch.float64, generator=gen))
    P0 = P0 / P0.sum((1, 2, 3), keepdim=True)
    grads = []
    for backend in ("torch", "cpp"):
        P = P0.clone().requires_grad_(True)
        fastpid.pid(P, method="fast", backend=backend).synergy.sum().backward()
        grads.append(P.grad)
    assert int((grads[0].flatten(1).abs().amax(1) == 0).sum()) == 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_torch_func_takes_the_proxy_with_a_native_backend_as_autograd_does(backend):
    """With gradients the proxy's closed forms run in PyTorch whatever the backend; inside
    torch.func an explicit native backend was refused for it all the same."""
    P = torch.tensor(random_joint(np.random.default_rng(3), (2, 3, 4)))
    X = P.clone().requires_grad_(True)
    fastpid.pid(X, method="proxy", backend=backend).synergy.backward()
    grad = torch.func.grad(lambda Q: fastpid.pid(Q, method="proxy", backend=backend).synergy)(P)
    torch.testing.assert_close(grad, X.grad, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="torch.func transform"):
        torch.func.grad(lambda Q: fastpid.pid(Q, method="fast", backend=backend).synergy)(P)


@pytest.mark.parametrize("method", ["exact", "fast", "proxy"])
def test_torch_func_transforms_give_the_autograd_derivatives(method):
    """torch.func.grad, jacrev and jacfwd, and forward-mode AD, give the autograd derivatives
    with the default backend on every method. Before, the default backend handed torch.func's
    wrapped tensors (which have no storage) to the C++ solver ("Cannot access data pointer"),
    jacrev had no vmap rule for the envelope Functions, and forward mode silently lost the
    tangent (the C++ route read the dual tensor's values and dropped it; jacfwd then gave a
    Jacobian off by 0.8)."""
    P = torch.tensor(random_joint(np.random.default_rng(7), (2, 4, 5, 3)))
    terms = lambda X: fastpid.pid(X, method=method).synergy
    X = P.clone().requires_grad_(True)
    terms(X).sum().backward()
    torch.testing.assert_close(torch.func.grad(lambda X: terms(X).sum())(P), X.grad)
    for jac in (torch.func.jacrev, torch.func.jacfwd):
        J = jac(terms)(P)                       # (2, 2, 4, 5, 3): problem b's row is nonzero on b only
        torch.testing.assert_close(torch.stack([J[0, 0], J[1, 1]]), X.grad)
        assert torch.all(J[0, 1] == 0) and torch.all(J[1, 0] == 0)
    tangent = torch.randn(P.shape, dtype=P.dtype, generator=torch.Generator().manual_seed(0))
    with torch.autograd.forward_ad.dual_level():
        out = terms(torch.autograd.forward_ad.make_dual(P, tangent))
        jvp = torch.autograd.forward_ad.unpack_dual(out).tangent
    torch.testing.assert_close(jvp, (X.grad * tangent).sum((1, 2, 3)))


def test_torch_func_transforms_that_cannot_work_say_why():
    """Under vmap the solvers cannot run (they stop on tests of their iterates; pid is batched
    already), an explicit native backend cannot read a transform's wrapped tensors, and second
    derivatives are not available: each says so instead of torch's internal errors."""
    P = torch.tensor(random_joint(np.random.default_rng(7), (2, 3, 4, 2)))
    with pytest.raises(ValueError, match="torch.vmap.*stacked problems"):
        torch.vmap(lambda X: fastpid.pid(X).synergy)(P)
    with pytest.raises(ValueError, match="backend='cpp' cannot read tensors inside a torch.func transform"):
        torch.func.grad(lambda X: fastpid.pid(X, backend="cpp").synergy)(P[0])
    with pytest.raises(ValueError, match=r"backend='cpp' cannot read .*\(torch.func.grad, vjp, jvp, jacrev"):
        torch.func.jvp(lambda X: fastpid.pid(X, backend="cpp").synergy, (P[0],), (torch.ones_like(P[0]),))
    with pytest.raises(RuntimeError, match="second-order derivatives"):
        torch.func.hessian(lambda X: fastpid.pid(X).synergy)(P[0])
    # Forward over forward, and reverse over forward, had returned a Hessian without V's term.
    for method in ("exact", "fast"):
        syn = lambda X: fastpid.pid(X, method=method).synergy      # noqa: E731
        for nested in (torch.func.jacfwd(torch.func.jacfwd(syn)), torch.func.jacrev(torch.func.jacfwd(syn))):
            with pytest.raises(RuntimeError, match="second-order derivatives"):
                nested(P[0])
    first = torch.func.jacfwd(lambda X: fastpid.pid(X).synergy)(P[0])     # first order still works
    X = P[0].clone().requires_grad_(True)
    torch.testing.assert_close(first, torch.autograd.grad(fastpid.pid(X).synergy, X)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["exact", "fast"])
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_gradient_where_the_closed_forms_close_the_bracket(backend, method):
    """X2 a function of X1: V = I(X1; Y) = max(I1, I2) = I(X1, X2; Y), so the closed forms
    close the bracket and no Newton step ran; the potentials' gradient of the synergy was up to
    0.37 (0.79 on other such joints) where every joint of the same support has S = U2 = 0.
    method="fast" kept its refined potentials' gradient there (up to 0.155 on X1 = X2 joints,
    on 19 of 20 with the PyTorch solver, 9 of 20 with the C++ one)."""
    if backend == "cpp" and not fastpid.backends()["cpp"]["available"]:
        pytest.skip("native extension not built")
    rng = np.random.default_rng(17)
    for _ in range(6):
        n1, n2, ny = 5, 3, 4
        h = rng.integers(0, n2, n1)
        pxy = rng.dirichlet(np.full(n1 * ny, 0.3)).reshape(n1, ny)
        P = np.zeros((n1, n2, ny))
        P[np.arange(n1), h] = pxy
        X = torch.tensor(P, requires_grad=True)
        res = fastpid.pid(X, backend=backend, method=method)
        dS, dU2, dR, dI2 = [torch.autograd.grad(t, X, retain_graph=True)[0]
                            for t in (res.synergy, res.unique2, res.redundancy, res.mi2)]
        assert float(dS.abs().max()) < 1e-6 and float(dU2.abs().max()) < 1e-6
        torch.testing.assert_close(dR, dI2, rtol=0, atol=1e-6)                # R = I2 on the support


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_gradient_where_the_closed_forms_certify_but_do_not_pin(backend):
    """X2 nearly independent of (X1, Y): the closed-form bracket is 4.1e-6 wide, below tol = 1e-5
    (the float32 default), so the solve needs no Newton step for the value; the gradient came
    from the closed forms' midpoint and was 46 % off the synergy's central differences (60 %
    in float32). With gradients the problem is solved again for its potentials (Newton steps
    on top of the solve without them): within 1 %, at any tol, and whatever its batch."""
    if backend == "cpp" and not fastpid.backends()["cpp"]["available"]:
        pytest.skip("native extension not built")
    g = torch.Generator().manual_seed(12)
    A, B, N = (torch.rand(s, dtype=torch.float64, generator=g) for s in ((3, 1, 3), (1, 3, 1), (1, 3, 3)))
    P = A * (B + 1e-3 * N)
    width = float(fastpid.pid(P, method="proxy").gap)
    assert 1e-6 < width < 1e-5
    h, fd = 1e-6, torch.zeros_like(P)
    for i in range(P.numel()):
        e = torch.zeros(P.numel(), dtype=torch.float64)
        e[i] = h
        e = e.view_as(P)
        fd.view(-1)[i] = (float(fastpid.pid(P + e, tol=1e-13, backend=backend).synergy)
                          - float(fastpid.pid(P - e, tol=1e-13, backend=backend).synergy)) / (2 * h)
    for X, tol in ((P, 1e-5), (P, 2 * width), (P.float(), None)):
        without = fastpid.pid(X, tol=tol, backend=backend)
        X = X.clone().requires_grad_(True)
        res = fastpid.pid(X, tol=tol, backend=backend)
        assert int(res.iterations) > int(without.iterations)
        dS = torch.autograd.grad(res.synergy, X)[0].double()
        assert float((dS - fd).norm() / fd.norm()) < 1e-2, (tol, X.dtype)
    # In a batch beside a problem of a much narrower bracket, the same solve (tolerance and all).
    near_kink = A * (B + 1e-5 * N)  # a bracket 4.6e-10 wide
    X = torch.stack([P, near_kink]).requires_grad_(True)
    res = fastpid.pid(X, tol=1e-5, backend=backend)
    alone = fastpid.pid(P.clone().requires_grad_(True), tol=1e-5, backend=backend)
    assert int(res.iterations[0]) == int(alone.iterations) and float(res.gap[0]) == float(alone.gap)


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_the_torch_closed_forms_and_their_gradients_against_formulas_written_out(sparsity):
    """fastpid.info.closed_forms (which shares its marginals and entropies between the mutual
    informations and the proxy coupling's information) against the four quantities written
    out here from their definitions: the values to rounding, and autograd's gradients of both
    the same to rounding."""
    from fastpid import info

    def plogp(p):  # sum of p log p over all but the batch axis, 0 log 0 = 0
        return torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), 0.0).flatten(1).sum(1)

    def written_out(P):
        p1y, p2y, py = P.sum(2), P.sum(1), P.sum((1, 2))
        p12, p1, p2 = P.sum(3), P.sum((2, 3)), P.sum((1, 3))
        mi = plogp(P) - plogp(p12) - plogp(py)            # H(X1X2) + H(Y) - H(X1X2Y)
        mi1 = plogp(p1y) - plogp(p1) - plogp(py)
        mi2 = plogp(p2y) - plogp(p2) - plogp(py)
        Q0 = p1y[:, :, None, :] * p2y[:, None, :, :] / torch.where(py > 0, py, 1.0)[:, None, None, :]
        mi_q0 = plogp(Q0) - plogp(Q0.sum(3)) - plogp(py)  # I of Q0 itself, formed in full
        return mi, mi1, mi2, mi_q0

    rng = np.random.default_rng(7)
    P = torch.from_numpy(np.stack([random_joint(rng, (5, 4, 3), sparsity=sparsity) for _ in range(3)]))
    weights = torch.from_numpy(rng.standard_normal((4, 3)))
    a, b = P.clone().requires_grad_(), P.clone().requires_grad_()
    got, want = info.closed_forms(a), written_out(b)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-14)
    sum(w @ x for w, x in zip(weights, got)).backward()
    sum(w @ x for w, x in zip(weights, want)).backward()
    # Where a pair marginal P(x1, y) or P(x2, y) is 0 the one-sided derivatives are infinite
    # and each form masks its own terms (Q0 log Q0 there, or P(x, y) log P(x, y)): compared
    # on the cells of positive pair marginals, where both are smooth.
    smooth = (P.sum(2) > 0)[:, :, None, :] & (P.sum(1) > 0)[:, None, :, :]
    assert smooth.sum() > smooth.numel() // 3
    torch.testing.assert_close(a.grad[smooth], b.grad[smooth], rtol=1e-10, atol=1e-10)
