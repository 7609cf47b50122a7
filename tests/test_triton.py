"""Triton kernels against the PyTorch reference, element for element.

On a machine without a GPU they run on CPU tensors through Triton's interpreter
(TRITON_INTERPRET=1, set by conftest.py); on a GPU the ``gpu`` tests run them for real.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

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
         "tiny": dict(alpha=0.5, tiny=1e-13), "1e-300": dict(alpha=0.5, tiny=1e-300),
         # A class of subnormal mass: the reference's 1/p(y) overflowed (NaN), and its
         # product P(x1,y) P(x2,y) underflowed before the division.
         "subnormal class": dict(alpha=0.5, tiny=5e-320, tiny_class=5e-320)}


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


@pytest.mark.parametrize("sizes", [(130, 67, 3), (1025, 1025, 2)], ids=["tiles", "wide"])
def test_joint_from_wide_soft_rows(sizes):
    """Rows wider than one tile take several programs; a whole 1025 x 1025 outer product in
    one block passed Triton's 2**20-element limit, and joint() on a GPU without the CUDA
    kernels raised."""
    gen = torch.Generator().manual_seed(4)
    n1, n2, ny = sizes
    p1 = torch.softmax(torch.randn(2, n1, generator=gen, dtype=torch.float64), 1)
    p2 = torch.softmax(torch.randn(2, n2, generator=gen, dtype=torch.float64), 1)
    y = torch.tensor([0, ny - 1])
    T = triton_kernels.joint_soft(p1.to(DEVICE), p2.to(DEVICE), y.to(DEVICE), ny)
    ref = torch.zeros(1, n1, n2, ny, dtype=torch.float64)
    for n in range(2):
        ref[0, :, :, y[n]] += torch.outer(p1[n], p2[n])
    torch.testing.assert_close(T.cpu(), ref, atol=1e-15, rtol=0)


def test_joint_kernels_take_strided_views():
    """Columns of one (N, 4) code array and every-other-sample views: the kernels index each
    vector as ptr + n, so views used to give a wrong joint (and adds out of bounds)."""
    gen = torch.Generator().manual_seed(3)
    N, sizes, G = 401, (3, 4, 5), 2
    table = torch.stack([torch.randint(0, n, (2 * N,), generator=gen) for n in (*sizes, G)], 1).to(DEVICE)
    x1, x2, y, g = (table[::2, k] for k in range(4))
    w = torch.rand(2 * N, generator=gen, dtype=torch.float64).to(DEVICE)[::2]
    assert not any(t.is_contiguous() for t in (x1, x2, y, g, w))
    T = triton_kernels.joint_codes(x1, x2, y, sizes, groups=g, num_groups=G, weights=w)
    ref = triton_kernels.joint_codes(*(t.contiguous() for t in (x1, x2, y)), sizes, groups=g.contiguous(),
                                     num_groups=G, weights=w.contiguous())
    # Atomic adds land in any order on a GPU: equal up to rounding (an H100 differed by 1 ulp in
    # 5 of 120 cells), where a wrong view would be off by whole weights.
    torch.testing.assert_close(T, ref, atol=1e-15, rtol=1e-14)
    assert float(T.sum()) == pytest.approx(float(w.sum()), rel=1e-12)
    p1 = torch.softmax(torch.randn(N, 3, generator=gen, dtype=torch.float64), 1).to(DEVICE)
    p2 = torch.softmax(torch.randn(N, 4, generator=gen, dtype=torch.float64), 1).to(DEVICE)
    S = triton_kernels.joint_soft(p1, p2, y, 5, groups=g, num_groups=G, weights=w)
    ref = triton_kernels.joint_soft(p1, p2, y.contiguous(), 5, groups=g.contiguous(), num_groups=G,
                                    weights=w.contiguous())
    torch.testing.assert_close(S, ref, atol=1e-15, rtol=1e-14)


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
def test_auto_uses_triton_on_gpu_where_the_cuda_kernels_are_not_built(monkeypatch):
    # With the CUDA kernels compiled, "auto" takes them (tests/test_cuda.py); without them,
    # Triton runs proxy and fast, and PyTorch the exact solver.
    from fastpid import cuda
    monkeypatch.setattr(cuda, "available", lambda device=None: (False, "not compiled"))
    P = _batch((8, 8, 8), "dense", B=64)
    assert fastpid.pid(P, method="fast").backend == "triton"
    assert fastpid.pid(P, method="proxy").backend == "triton"
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


def test_interpretation_set_after_the_import_is_not_taken_for_available(monkeypatch):
    """available() read TRITON_INTERPRET at each call, the kernels at the import: set later, it
    said "available" and the launch failed with "0 active drivers"."""
    monkeypatch.setattr(triton_kernels, "INTERPRETED", False)      # as if imported without it
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    ok, why = triton_kernels.available(torch.device("cpu"))
    assert not ok and why.startswith("TRITON_INTERPRET=1 was set after fastpid's Triton kernels were loaded")


def test_joint_gpu_route_declines_inputs_whose_derivatives_are_taken():
    """The fused joint route (CUDA, else Triton) checked requires_grad alone: a dual tensor's
    tangent was dropped, and under torch.func.jvp the kernels failed on the wrapper ("Cannot
    access storage of TensorWrapper"). Its function, on CPU tensors through the interpreter."""
    import importlib

    import torch.autograd.forward_ad as fwAD

    J = importlib.import_module("fastpid.joint")
    gen = torch.Generator().manual_seed(0)
    p1, p2 = (torch.softmax(torch.randn(50, n, generator=gen, dtype=torch.float64), 1).to(DEVICE) for n in (3, 4))
    y = torch.randint(0, 2, (50,), generator=gen).to(DEVICE)
    t1, w = torch.randn(50, 3, generator=gen, dtype=torch.float64).to(DEVICE), torch.ones(50, dtype=torch.float64)

    def fused(a, w=None):
        s = J._checked_samples(a, p2, y, sizes=(3, 4, 2), weights=w, groups=None, num_groups=None)
        return J._accumulate_fused(s.hard, s.soft, s.w, s.G, s.gidx, s.dtype, s.device)

    assert fused(p1) is not None                                   # plain rows take the kernels
    with fwAD.dual_level():
        assert fused(fwAD.make_dual(p1, t1)) is None
        assert fused(p1, fwAD.make_dual(w.to(DEVICE), w.to(DEVICE))) is None
    seen = []
    torch.func.jvp(lambda a: seen.append(fused(a)) or a, (p1,), (t1,))
    assert seen == [None]


# The interpreter runs the kernels as Python and checks no types, so a kernel can pass every
# test above and still not compile for a GPU (seen on an H200: a loop-carried float32/float64
# mismatch). Triton's compiler needs no GPU to build for one: every kernel, as the wrappers
# launch it (float64 problems; joints in float64 and float32), down to Hopper machine code.
# As a launch compiles it: an integer argument equal to 1 becomes the constant 1 (the 3x1x2
# problems that failed on an H200 had n2 = 1), and a Python float (omega) is an fp32.
_COMPILE_SCRIPT = r"""
import json
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastpid import triton_kernels as tk

P4 = {"P_ptr": "*fp64", "n1": "i32", "n2": "i32", "ny": "i32",
      "B1": "constexpr", "B2": "constexpr", "BY": "constexpr"}
jobs = []
for blocks, warps, shape in json.loads(sys.argv[1]):  # padded problem sizes, the problem's own
    ones = {k: 1 for k, n in zip(("n1", "n2", "ny"), shape) if n == 1}
    c = {**dict(zip(("B1", "B2", "BY"), blocks)), **ones}
    p4 = {**P4, **{k: "constexpr" for k in ones}}
    jobs.append((tk._closed_forms_kernel, {**p4, "out_ptr": "*fp64"}, c, warps))
    for steps in ("i32", "constexpr"):  # steps=1 is a constant too
        jobs.append((tk._alternation_kernel, {**p4, "f_ptr": "*fp64", "g_ptr": "*fp64", "r_ptr": "*fp64",
                                              "steps": steps, "omega": "fp32"},
                     {**c, **({"steps": 1} if steps == "constexpr" else {})}, warps))
for t, has in (("fp64", 0), ("fp64", 1), ("fp32", 1)):
    codes = {"x1_ptr": "*i64", "x2_ptr": "*i64", "y_ptr": "*i64", "g_ptr": "*i64", "w_ptr": f"*{t}",
             "out_ptr": f"*{t}", "N": "i64", "n1": "i32", "n2": "i32", "ny": "i32",
             "HAS_G": "constexpr", "HAS_W": "constexpr", "BLOCK": "constexpr"}
    jobs.append((tk._joint_codes_kernel, codes, {"HAS_G": has, "HAS_W": has, "BLOCK": 1024}, 4))
    soft = {"p1_ptr": f"*{t}", "p2_ptr": f"*{t}", "y_ptr": "*i64", "g_ptr": "*i64", "w_ptr": f"*{t}",
            "out_ptr": f"*{t}", "n1": "i32", "n2": "i32", "ny": "i32",
            "HAS_G": "constexpr", "HAS_W": "constexpr", "B1": "constexpr", "B2": "constexpr"}
    jobs.append((tk._joint_soft_kernel, soft, {"HAS_G": has, "HAS_W": has, "B1": 16, "B2": 4}, 2))
for kernel, signature, constexprs, warps in jobs:
    fn = kernel.fn  # the autotuned kernel's JIT function
    assert set(signature) == set(fn.arg_names), fn.arg_names
    signature = {name: signature[name] for name in fn.arg_names}
    compiled = triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": warps})
    assert compiled.asm["cubin"], fn.__name__
print(len(jobs), "kernels compiled")
"""


@pytest.mark.parametrize("shapes", [
    [(3, 1, 2), (1, 4, 3), (5, 3, 1), (7, 3, 2), (16, 8, 8)],
    # The largest problem one program takes (MAX_PADDED_CELLS): 20 s to compile.
    pytest.param([(32, 32, 16)], marks=pytest.mark.slow),
], ids=["small", "largest"])
def test_every_kernel_compiles_for_a_gpu(shapes):
    assert 32 * 32 * 16 == triton_kernels.MAX_PADDED_CELLS
    # The blocks the wrappers pad these problems to, with the interpreter's warp counts.
    sizes = [(list(triton_kernels._blocks(*shape).values()), triton_kernels._warps(*shape), shape)
             for shape in shapes]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, not interpret
    proc = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT, json.dumps(sizes)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{3 * len(sizes) + 6} kernels compiled" in proc.stdout


def test_autotuning_skips_warp_counts_that_would_hold_too_many_cells_a_lane():
    """Compiling the largest block (32x32x16) for sm_90 with 1 or 2 warps took minutes a
    kernel; the autotuner now tries only the warp counts whose lanes hold at most
    MAX_CELLS_PER_LANE padded cells (8 warps there), and every count on small blocks."""
    configs = triton_kernels._PER_PROBLEM_CONFIGS

    def tried(shape):
        blocks = triton_kernels._blocks(*shape)
        return [c.num_warps for c in triton_kernels.warp_counts_worth_trying(configs, {}, **blocks)]

    assert tried((20, 20, 10)) == [8] and tried((32, 32, 16)) == [8]
    assert tried((16, 16, 16)) == [2, 4, 8]
    assert tried((8, 8, 8)) == [1, 2, 4, 8] and tried((3, 1, 2)) == [1, 2, 4, 8]


def test_launches_run_on_their_tensors_device(monkeypatch):
    """Triton launches on the current device: P on cuda:1 with cuda:0 current was read through
    pointers that launch could not reach. _launch selects the first tensor's device (here a
    tensor that reports cuda:1, and a recording torch.cuda.device: no GPU runs it), and leaves
    CPU tensors (the interpreter) as they are."""
    import contextlib

    class OnCuda1(torch.Tensor):
        @property
        def device(self):
            return torch.device("cuda", 1)

    entered, launched = [], []

    @contextlib.contextmanager
    def device(d):
        entered.append(d)
        yield

    class Kernel:
        def __getitem__(self, grid):
            return lambda *args, **kw: launched.append(list(entered))

    monkeypatch.setattr(torch.cuda, "device", device)
    triton_kernels._launch(Kernel(), (1,), 3, torch.zeros(2).as_subclass(OnCuda1), interpreter_defaults={})
    assert launched == [[torch.device("cuda", 1)]]
    entered.clear()
    triton_kernels._launch(Kernel(), (1,), torch.zeros(2), interpreter_defaults={})
    assert launched[-1] == [] and entered == []
