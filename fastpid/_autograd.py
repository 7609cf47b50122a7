"""Gradients of ``V(P)`` by the envelope theorem.

With the dual ``V = max_{f,g} sum P(x1,y) f + sum P(x2,y) g`` over a feasible set that,
written with ``F = f + log p(y)``, does not depend on ``P``, the derivative is

    dV / dP(x1, x2, y) = f_y(x1) + g_y(x2) - 1

at the optimal potentials. The constant is projected out by the normalisation of
``P`` upstream, so the backward pass is one elementwise pass, not an unrolled solve.
Entries whose pair marginal is zero (potential ``-inf``) get a zero gradient.

Cells of zero mass get a zero gradient for every term (:func:`zero_mass_gradient`): the
derivative there is one-sided and, for the information terms, unbounded (``d(p log p)/dp``
at 0), and the closed forms' autograd and the envelope formula each gave a different finite
value, so a term that is identically 0 (redundancy with ``n2 = 1``) got gradients up to 721
that depended on the backend and the input's memory layout.
"""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD


class _EnvelopeV(torch.autograd.Function):
    # forward and setup_context apart, and a vmap rule generated from the torch operations of
    # both passes, so that torch.func transforms (grad, vjp, jacrev) can use it.
    generate_vmap_rule = True

    @staticmethod
    def forward(P, value, f, g):
        return value.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        P, _, f, g = inputs
        ctx.save_for_backward(P, f, g)
        ctx.save_for_forward(P, f, g)

    @staticmethod
    def backward(ctx, grad_v):
        P, f, g = ctx.saved_tensors
        dP = _envelope(f, g)
        if torch.is_grad_enabled():
            # create_graph=True: dP depends on P through the optimal potentials, which this
            # backward does not differentiate; any use of that dependence must fail loudly.
            dP = _FirstOrderOnly.apply(dP, P)
        return grad_v[:, None, None, None] * dP, None, None, None

    @staticmethod
    def jvp(ctx, P_t, value_t, f_t, g_t):
        # Forward mode (torch.func.jacfwd, forward_ad): the same derivative along P's tangent.
        P, f, g = ctx.saved_tensors
        # Guarded as in backward: a second forward-mode derivative (jacfwd of jacfwd) had
        # returned a Hessian without V's second-order term instead of raising.
        return (_FirstOrderOnly.apply(_envelope(f, g), P) * P_t).sum((1, 2, 3))


def _envelope(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``dV/dP[B, n1, n2, ny]`` from the potentials, 0 where a pair marginal is zero."""
    dP = f[:, :, None, :] + g[:, None, :, :] - 1.0
    return torch.where(torch.isfinite(dP), dP, torch.zeros_like(dP))


class _FirstOrderOnly(torch.autograd.Function):
    """Identity on the envelope gradient that refuses to be differentiated with respect to P."""

    generate_vmap_rule = True  # jacrev runs the backward pass that applies this under vmap

    @staticmethod
    def forward(dP, P):
        return dP.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(_SECOND_ORDER)

    @staticmethod
    def jvp(ctx, dP_t, P_t):
        raise RuntimeError(_SECOND_ORDER)


_SECOND_ORDER = (
    "fastpid: second-order derivatives of the PID terms (Hessians, gradients of gradients, "
    "gradgradcheck) are not available: the envelope gradient does not differentiate the "
    "optimal dual potentials. Use first-order gradients, or finite differences of the gradient.")


def carries_derivatives(T) -> bool:
    """Whether derivatives are taken through the tensor ``T``: by autograd (``requires_grad``),
    forward-mode AD (a dual tensor) or a ``torch.func`` transform (a wrapped tensor)."""
    return isinstance(T, torch.Tensor) and (
        T.requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(T)
        or fwAD.unpack_dual(T).tangent is not None)


def attach_envelope_gradient(P: torch.Tensor, value: torch.Tensor, f: torch.Tensor, g: torch.Tensor):
    """Return ``value`` (shape ``(B,)``) carrying ``dV/dP`` for ``P[B, n1, n2, ny]``.

    ``f[B, n1, ny]``, ``g[B, n2, ny]`` are (near-)optimal potentials from the solver.
    When ``P`` needs no gradient this is ``value`` itself.
    """
    if not carries_derivatives(P):
        return value
    return _EnvelopeV.apply(P, value.detach(), f.detach(), g.detach())


def zero_mass_gradient(P: torch.Tensor) -> torch.Tensor:
    """``P`` itself, whose gradient is 0 at its cells of zero mass (module docstring); ``P``
    unchanged when it needs no gradient. A ``where``, not an autograd Function, so that
    ``torch.func`` transforms go through. A sparse COO ``P`` is made dense first
    (differentiably: ``where`` has no sparse kernel); compressed layouts (CSR, CSC, BSR, BSC)
    are refused, as torch has no backward pass from a dense gradient into them."""
    if not carries_derivatives(P):
        return P
    if P.layout != torch.strided:
        if P.layout != torch.sparse_coo:
            raise TypeError(f"P is a {P.layout} tensor that needs a gradient, and torch cannot pass a gradient "
                            "back into that layout; give P as a dense or sparse COO tensor (e.g. P.to_dense())")
        P = P.to_dense()
    return torch.where(P > 0, P, P.detach())
