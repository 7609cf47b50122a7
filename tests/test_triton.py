"""Triton kernels against the PyTorch reference, element for element.

On a machine without a GPU they run on CPU tensors through Triton's interpreter
(TRITON_INTERPRET=1, set by conftest.py); on a GPU the ``gpu`` tests run them for real.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastpid
from fastpid import solver, triton_kernels
from fastpid.info import mutual_informations, proxy_coupling_mi

from helpers import random_joint

pytestmark = pytest.mark.skipif(not triton_kernels.available()[0],
                                reason=triton_kernels.available()[1] or "no triton")
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"

SHAPES = [(1, 1, 1), (1, 4, 3), (3, 1, 2), (3, 5, 2), (7, 3, 5), (17, 3, 9), (8, 8, 8), (5, 33, 2)]
KINDS = {"dense": dict(alpha=1.0), "sparse": dict(alpha=0.4, sparsity=0.7),
         "tiny": dict(alpha=0.5, tiny=1e-13)}


def _batch(shape, kind, B=3, seed=0):
    rng = np.random.default_rng(seed)
    P = np.stack([random_joint(rng, shape, **KINDS[kind]) for _ in range(B)])
    return torch.from_numpy(P).to(DEVICE)


def _same_finite(a, b, atol):
    """Equal masks of -inf entries, and the finite entries within atol."""
    assert torch.equal(torch.isfinite(a), torch.isfinite(b))
    torch.testing.assert_close(torch.where(torch.isfinite(a), a, 0.0), torch.where(torch.isfinite(b), b, 0.0),
                               atol=atol, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_closed_forms(shape, kind):
    P = _batch(shape, kind, seed=sum(shape))
    got = triton_kernels.closed_forms(P)
    ref = (*mutual_informations(P), proxy_coupling_mi(P))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=0)


@pytest.mark.parametrize("steps", [1, 2, 6])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_alternation(shape, kind, steps):
    P = _batch(shape, kind, seed=steps)
    f, g, logR = triton_kernels.alternation(P, steps)
    prob = solver.Problem.from_joint(P)
    f2, g2, logR2 = solver.alternation_steps(prob, solver.proxy_log_r(prob), None, steps)
    for a, b in ((f, f2), (g, g2), (logR, logR2)):
        _same_finite(a, b, atol=1e-11)


def test_batch_of_one_and_many():
    for B in (1, 40):
        P = _batch((4, 6, 3), "sparse", B=B, seed=B)
        got = triton_kernels.closed_forms(P)[3]
        torch.testing.assert_close(got, proxy_coupling_mi(P), atol=1e-13, rtol=0)


@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("groups", [False, True])
def test_joint_from_codes(groups, weights):
    gen = torch.Generator().manual_seed(1)
    N, sizes, G = 777, (5, 3, 4), 3
    x1, x2, y = (torch.randint(0, n, (N,), generator=gen) for n in sizes)
    g = torch.randint(0, G, (N,), generator=gen) if groups else None
    w = torch.rand(N, generator=gen, dtype=torch.float64) if weights else None
    T = triton_kernels.joint_codes(*(t.to(DEVICE) for t in (x1, x2, y)), sizes,
                                   groups=None if g is None else g.to(DEVICE), num_groups=G if groups else 1,
                                   weights=None if w is None else w.to(DEVICE))
    ref = torch.zeros(G if groups else 1, *sizes, dtype=torch.float64)
    gi = g if groups else torch.zeros(N, dtype=torch.int64)
    ref.index_put_((gi, x1, x2, y), w if weights else torch.ones(N, dtype=torch.float64), accumulate=True)
    torch.testing.assert_close(T.cpu(), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_joint_from_soft_rows(dtype):
    gen = torch.Generator().manual_seed(2)
    N, n1, n2, ny, G = 300, 7, 3, 5, 2
    p1 = torch.softmax(torch.randn(N, n1, generator=gen), 1).to(dtype)
    p2 = torch.softmax(torch.randn(N, n2, generator=gen), 1).to(dtype)
    y = torch.randint(0, ny, (N,), generator=gen)
    g = torch.randint(0, G, (N,), generator=gen)
    w = torch.rand(N, generator=gen).to(dtype)
    T = triton_kernels.joint_soft(p1.to(DEVICE), p2.to(DEVICE), y.to(DEVICE), ny, groups=g.to(DEVICE),
                                  num_groups=G, weights=w.to(DEVICE))
    ref = torch.zeros(G, n1, n2, ny, dtype=dtype)
    for n in range(N):
        ref[g[n], :, :, y[n]] += w[n] * torch.outer(p1[n], p2[n])
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(T.cpu(), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("method", ["proxy", "fast"])
def test_pid_with_the_triton_backend(method):
    P = _batch((6, 4, 5), "sparse", B=5, seed=7)
    a = fastpid.pid(P, method=method, backend="triton")
    b = fastpid.pid(P, method=method, backend="torch")
    assert a.backend == "triton"
    for k in ("redundancy", "unique1", "unique2", "synergy", "gap"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), atol=1e-12, rtol=0)


def test_triton_backend_rejects_exact():
    with pytest.raises(ValueError, match="triton"):
        fastpid.pid(_batch((2, 2, 2), "dense"), backend="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_auto_uses_triton_for_fast_on_gpu():
    P = _batch((8, 8, 8), "dense", B=64)
    assert fastpid.pid(P, method="fast").backend == "triton"
    assert fastpid.pid(P).backend == "torch"


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_joint_on_gpu_uses_the_kernels_and_matches_cpu():
    gen = torch.Generator().manual_seed(3)
    N = 5000
    x1, x2, y = (torch.randint(0, n, (N,), generator=gen) for n in (9, 4, 6))
    p1 = torch.softmax(torch.randn(N, 9, generator=gen), 1)
    for args in ((x1, x2, y), (p1, x2, y)):
        cpu = fastpid.joint(*args, sizes=(9, 4, 6))
        gpu = fastpid.joint(*(a.cuda() for a in args), sizes=(9, 4, 6))
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-6, rtol=1e-5)
