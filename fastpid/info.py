"""Closed-form information quantities of joint distributions ``P[..., x1, x2, y]``.

Everything is in nats and differentiable with torch autograd. Zero cells contribute
zero to entropies and get a zero gradient (``0 log 0 = 0``), so no NaN appears
for sparse joints.
"""
from __future__ import annotations

import torch


def entropy(p: torch.Tensor, dims) -> torch.Tensor:
    """Shannon entropy ``-sum p log p`` over ``dims`` (nats); zeros contribute 0."""
    positive = p > 0
    safe = torch.where(positive, p, torch.ones_like(p))
    return -(p * torch.log(safe)).sum(dim=dims)


def marginals(P: torch.Tensor):
    """``P(x1, y)``, ``P(x2, y)`` and ``p(y)`` of ``P[..., n1, n2, ny]``.

    Returns tensors of shapes ``(..., n1, ny)``, ``(..., n2, ny)`` and ``(..., ny)``.
    """
    p1y = P.sum(-2)
    p2y = P.sum(-3)
    py = p1y.sum(-2)
    return p1y, p2y, py


def _shared(P: torch.Tensor):
    """``P(x1, y)``, ``P(x2, y)``, ``p(y)`` and their entropies ``H(Y)``, ``H(X1,Y)``,
    ``H(X2,Y)``: what :func:`mutual_informations` and :func:`proxy_coupling_mi` both need."""
    p1y, p2y, py = marginals(P)
    return p1y, p2y, py, entropy(py, -1), entropy(p1y, (-2, -1)), entropy(p2y, (-2, -1))


def _informations(P, p1y, p2y, h_y, h_1y, h_2y):
    """``I(X1,X2;Y)``, ``I(X1;Y)``, ``I(X2;Y)`` from :func:`_shared`'s pieces."""
    h_12y = entropy(P, (-3, -2, -1))
    h_12 = entropy(P.sum(-1), (-2, -1))
    h_1 = entropy(p1y.sum(-1), -1)
    h_2 = entropy(p2y.sum(-1), -1)
    return h_12 + h_y - h_12y, h_1 + h_y - h_1y, h_2 + h_y - h_2y


def mutual_informations(P: torch.Tensor):
    """``I(X1,X2;Y)``, ``I(X1;Y)``, ``I(X2;Y)`` of normalised ``P[..., n1, n2, ny]``.

    Each has shape ``(...)``, in nats.
    """
    p1y, p2y, _, h_y, h_1y, h_2y = _shared(P)
    return _informations(P, p1y, p2y, h_y, h_1y, h_2y)


def closed_forms(P: torch.Tensor):
    """``(I(X1,X2;Y), I(X1;Y), I(X2;Y), I_Q0)`` of normalised ``P[..., n1, n2, ny]``
    (:func:`mutual_informations` and :func:`proxy_coupling_mi`, the same values), sharing the
    marginals and entropies both need: 8 entropies instead of 11, the same with a gradient
    (fastpid.solver.closed_form_bracket)."""
    p1y, p2y, py, h_y, h_1y, h_2y = _shared(P)
    return (*_informations(P, p1y, p2y, h_y, h_1y, h_2y), _proxy_mi(p1y, p2y, py, h_y, h_1y, h_2y))


def given_y(pxy: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """``P(x, y) / p(y)`` (0 where ``p(y) = 0``), ``pxy (..., n, ny)``, ``py (..., ny)``: the
    proxy's factor, the quotient taken first, as the C++ and CUDA code take it (the product
    ``P(x1,y) P(x2,y)`` of masses near 1e-300 underflows, and ``1 / p(y)`` of a subnormal
    ``p(y)`` overflows: a class of mass 5e-320 gave NaN)."""
    py = py[..., None, :]
    return torch.where(py > 0, pxy / torch.where(py > 0, py, 1.0), 0.0)


def proxy_coupling_mi(P: torch.Tensor) -> torch.Tensor:
    """``I_{Q0}(Y; X1, X2)`` for the analytic proxy ``Q0 = P(x1,y) P(x2,y) / p(y)``.

    ``Q0`` matches both pair marginals of ``P``, so this is an upper bound on V.
    Uses ``H(Q0) = H(X1,Y) + H(X2,Y) - H(Y)``, so ``Q0`` itself is never formed;
    only its ``(x1, x2)`` marginal is (shape ``(..., n1, n2)``).
    """
    return _proxy_mi(*_shared(P))


def _proxy_mi(p1y, p2y, py, h_y, h_1y, h_2y):
    """:func:`proxy_coupling_mi` from :func:`_shared`'s pieces."""
    q12 = torch.einsum("...iy,...jy->...ij", p1y, given_y(p2y, py))
    return entropy(q12, (-2, -1)) + 2.0 * h_y - h_1y - h_2y
