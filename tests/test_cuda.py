"""The CUDA kernels against the PyTorch reference, element for element.

Their bodies (csrc/cuda/kernels.hpp) are also compiled for the host as ``fastpid._C.emulate``,
which runs each thread block on host threads with real barriers: those tests run everywhere and
check the arithmetic, the indexing and the synchronisation. The ``gpu`` tests run the compiled
kernels themselves and skip without a CUDA device.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fastpid
from fastpid import cpp, cuda, solver
from fastpid.info import mutual_informations, proxy_coupling_mi

from helpers import random_joint

C = pytest.importorskip("fastpid._C", reason="the native extension is not built")
emulate = C.emulate
GPU = cuda.available()[0]
needs_gpu = pytest.mark.skipif(not GPU, reason=cuda.available()[1] or "no CUDA device")

SHAPES = [(1, 1, 1), (1, 4, 3), (3, 1, 2), (3, 5, 2), (7, 3, 5), (17, 3, 9), (8, 8, 8), (5, 33, 2)]
KINDS = {"dense": dict(alpha=1.0), "sparse": dict(alpha=0.4, sparsity=0.7),
         "tiny": dict(alpha=0.5, tiny=1e-13), "1e-300": dict(alpha=0.5, tiny=1e-300),
         # A class of subnormal mass: the reference's 1/p(y) overflowed (NaN), and its
         # product P(x1,y) P(x2,y) underflowed before the division.
         "subnormal class": dict(alpha=0.5, tiny=5e-320, tiny_class=5e-320)}
ATOL = {np.float64: 1e-12, np.float32: 2e-5}


def _batch(shape, kind, B=3, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([random_joint(rng, shape, **KINDS[kind]) for _ in range(B)])


def _same_finite(a, b, atol):
    """Equal masks of -inf entries, and the finite entries within atol."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert torch.equal(torch.isfinite(a), torch.isfinite(b))
    torch.testing.assert_close(torch.where(torch.isfinite(a), a, 0.0), torch.where(torch.isfinite(b), b, 0.0),
                               atol=atol, rtol=0)


def _reference_closed_forms(P):
    P = torch.as_tensor(P, dtype=torch.float64)
    return torch.stack([*mutual_informations(P), proxy_coupling_mi(P)], 1)


def _reference_alternation(P, steps):
    prob = solver.Problem.from_joint(torch.as_tensor(P, dtype=torch.float64))
    return solver.alternation_steps(prob, solver.proxy_log_r(prob), None, steps)


# --- the kernel bodies on host threads -------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_emulated_closed_forms(shape, kind, dtype):
    P = _batch(shape, kind, seed=sum(shape))
    got = emulate.closed_forms(P.astype(dtype), 32)
    assert got.dtype == dtype
    _same_finite(got, _reference_closed_forms(P.astype(dtype)), ATOL[dtype])


@pytest.mark.parametrize("threads", [1, 7, 32, 96])
@pytest.mark.parametrize("steps", [1, 2, 6])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_emulated_alternation(shape, kind, steps, threads):
    P = _batch(shape, kind, B=2, seed=steps + threads)
    got = emulate.alternation(P, steps, solver.OMEGA, threads)
    for a, b in zip(got, _reference_alternation(P, steps)):
        _same_finite(a, b, 1e-11)


def test_emulated_alternation_in_float32():
    P = _batch((7, 3, 5), "dense", B=4, seed=5)
    got = emulate.alternation(P.astype(np.float32), 6, solver.OMEGA, 32)
    assert got[0].dtype == np.float32
    for a, b in zip(got, _reference_alternation(P.astype(np.float32), 6)):
        _same_finite(a, b, 2e-4)


def test_emulated_batch_of_one_and_many():
    for B in (1, 40):
        P = _batch((4, 6, 3), "sparse", B=B, seed=B)
        _same_finite(emulate.closed_forms(P, 32), _reference_closed_forms(P), 1e-12)


@pytest.mark.parametrize("shape", [(1, 1, 100_000), (2, 3, 100_000), (1, 1, 300_000)])
def test_emulated_closed_forms_of_many_target_values_report_no_information(shape):
    """X1, X2 and Y independent and uniform: every closed form is 0. Each is a difference of
    entropies whose masses one thread sums over every target value; summed plainly, a row of
    10^5 came out 1.9e-12 short of its total and the closed forms reported that much
    information. Now within a few ulps of the entropies (~12 nats)."""
    P = np.full((1, *shape), 1.0 / math.prod(shape))
    got = emulate.closed_forms(P, 32)
    assert np.all(np.abs(got) <= 5e-14), got


def _cpu_solve(P, tol=1e-8, max_iter=500):
    """The CPU solver with the f-blocks factorised by Cholesky, as the GPU solvers do (its
    default product form, where x2 has few values, rounds differently)."""
    return C.solve(P, cpp.options(tol, max_iter), False, product_form=False)


def _assert_solves_like_the_cpu_solver(got, ref, tol=1e-8, P=None):
    """Certified to tol, brackets that overlap (both contain V), the same masks of f and g,
    the same envelope gradient f + g on the admissible cells (what the gradients are built
    from; measured within 1e-11, the potentials had been compared by their masks only; with
    ``P``, not on classes of mass below 1e-60, whose potentials no certificate pins), and
    the same iteration counts up to 2 (reductions in another order round differently; so
    far they are equal)."""
    lower, upper, f, g, iterations = (np.asarray(x) for x in got)
    assert np.all(upper - lower <= tol)
    assert np.all(lower <= ref[1] + 1e-12) and np.all(ref[0] <= upper + 1e-12)
    assert np.array_equal(np.isfinite(f), np.isfinite(ref[2]))
    assert np.array_equal(np.isfinite(g), np.isfinite(ref[3]))
    grad, grad_ref = (np.asarray(a)[:, :, None, :] + np.asarray(b)[:, None, :, :] for a, b in ((f, g), ref[2:4]))
    cells = np.isfinite(grad_ref)
    assert np.array_equal(np.isfinite(grad), cells)
    if P is not None:
        p_y = np.asarray(P).sum((1, 2)) / np.asarray(P).sum((1, 2, 3))[:, None]
        cells = cells & (p_y > 1e-60)[:, None, None, :]
    np.testing.assert_allclose(grad[cells], grad_ref[cells], atol=1e-7, rtol=1e-7)
    assert np.all(np.abs(iterations - ref[4]) <= 2), (iterations, ref[4])


# Threads per emulated block: one, an odd count, and the kernel's two block sizes.
SOLVER_CASES = [(shape, threads) for shape in SHAPES for threads in (1, 7, 64, 128)]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape, threads", SOLVER_CASES,
                         ids=["x".join(map(str, s)) + f"-t{t}" for s, t in SOLVER_CASES])
def test_emulated_block_solver_matches_the_cpu_solver(shape, threads, kind):
    P = _batch(shape, kind, B=2, seed=sum(shape))
    _assert_solves_like_the_cpu_solver(emulate.solve(P, cpp.options(1e-8), threads), _cpu_solve(P), P=P)


@pytest.mark.parametrize("threads", [1, 64])
def test_emulated_block_solver_takes_the_proxy_masses_in_the_cpu_solvers_order(threads):
    """A class of one cell of 1e-300: P(x1,y) P(x2,y) / p(y) underflowed to 0 (log R = -inf on
    an admissible cell, a crossed bracket (inf, 0)) where the CPU solver divides first."""
    P = np.zeros((1, 4, 3, 5))
    P[0, 2, 1, 3], P[0, 0, 0, 0] = 1.0, 1e-300
    _assert_solves_like_the_cpu_solver(emulate.solve(P, cpp.options(1e-8), threads), _cpu_solve(P))


@pytest.mark.parametrize("threads", [1, 7, 64])
@pytest.mark.parametrize("shape", [(3, 2, 60), (2, 3, 40)], ids=lambda s: "x".join(map(str, s)))
def test_emulated_block_solver_extends_its_warm_start_like_the_cpu_solver(shape, threads):
    """Tiny sources, many classes: the alternation goes on past WARM_STEPS where it would
    certify by itself (fastpid.solver.warm_start), in the block solver as in the CPU solver."""
    rng = np.random.default_rng(sum(shape))
    P = np.stack([random_joint(rng, shape, alpha=0.2) for _ in range(3)])
    ref = _cpu_solve(P)
    assert np.all(ref[4] >= solver.WARM_STEPS + solver.WARM_BLOCK)
    _assert_solves_like_the_cpu_solver(emulate.solve(P, cpp.options(1e-8), threads), ref)


@pytest.mark.parametrize("shape", [(2, 2, 30), (3, 3, 12)], ids=lambda s: "x".join(map(str, s)))
def test_emulated_block_solver_steps_like_the_cpu_solver_where_the_bound_shares_corr(shape):
    """Where (n1 + n2) ny is large next to n1 n2, the primal bound's arrays overlap the
    corrector's terms in the block solver's workspace (they share memory with the Newton
    direction's); left there, the bound's deficits perturbed the next step: these 32 joints
    of 2x2x30 took 371 iterations to 1e-8 where the CPU solver takes 369 (436 for 435 to
    1e-10), of 3x3x12 453 for 452 to 1e-10. With the corrector's terms outside the shared
    memory, every joint takes the CPU solver's steps."""
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.full(int(np.prod(shape)), 0.3), size=32).reshape(32, *shape)
    for tol in (1e-8, 1e-10):
        got = emulate.solve(P, cpp.options(tol), 7)
        np.testing.assert_array_equal(np.asarray(got[4]), np.asarray(_cpu_solve(P, tol)[4]))


@pytest.mark.parametrize("threads", [1, 7, 64])
def test_emulated_block_solver_extrapolates_a_stalled_step_like_the_cpu_solver(threads):
    """Noisy near-deterministic joints (Y = (X1 + X2) mod ny plus noise on every cell,
    tests/test_newton.py): at mu's floor the block solver stopped short (4.7e-8 at tol 1e-8 on
    tests/data/noisy_mod3_4x4x3.npy) until it extrapolated stalled steps as the CPU solver does.
    Certified, with brackets that overlap the CPU solver's; not its potentials or its steps: the
    potentials drift along a direction the dual objective barely rises in, where reductions in
    another order take other paths (at 1e-10, 68 iterations against 40)."""
    from pathlib import Path

    joints = [np.load(Path(__file__).parent / "data" / "noisy_mod3_4x4x3.npy"),
              *_noisy_mod_joints([(4, 3), (5, 3), (6, 4)], seed=7)]
    for P in joints:
        P = (P / P.sum())[None]
        for tol in (1e-8, 1e-10):
            lower, upper = (np.asarray(x) for x in emulate.solve(P, cpp.options(tol), threads)[:2])
            ref = _cpu_solve(P, tol)
            assert np.all(upper - lower <= tol)
            assert np.all(lower <= ref[1] + 1e-12) and np.all(ref[0] <= upper + 1e-12)


@pytest.mark.parametrize("name", ["clustered_28x28x5", "peaked_5x5x5"])
def test_emulated_block_solver_follows_the_cpu_solvers_path(name):
    """A sparse clustered joint whose central path bends, and peaked joints where barrier
    steps stand in for primal-dual ones (test_newton.py): the block solver takes the same
    steps."""
    from pathlib import Path

    P = np.load(Path(__file__).parent / "data" / f"{name}.npy")
    P = P[None] if P.ndim == 3 else P
    _assert_solves_like_the_cpu_solver(emulate.solve(P, cpp.options(1e-8), 64), _cpu_solve(P))


@pytest.mark.parametrize("threads", [1, 7, 64])
def test_emulated_block_solver_caps_the_first_trial_step(threads):
    """Joints with masses over 60 decades (tests/data/wide_range_masses.npz, negligible masses
    dropped as pid() does), whose barrier steps need the line search's first trial capped
    (solver.MAX_POTENTIAL_STEP): the block solver certifies them too. Their Newton systems are
    nearly singular, so sums in another order move the path: iterations 18-61 against the CPU
    solver's 19-56 (measured), hence no comparison of counts here."""
    from pathlib import Path

    from fastpid._certify import drop_negligible

    data = np.load(Path(__file__).parent / "data" / "wide_range_masses.npz")
    for name in data.files:
        P = drop_negligible(torch.from_numpy(data[name] / data[name].sum())[None])[0].numpy()
        lower, upper, _, _, iterations = (np.asarray(x) for x in emulate.solve(P, cpp.options(1e-8), threads))
        ref = _cpu_solve(P)
        assert np.all(upper - lower <= 1e-8) and np.all(iterations <= 100), name
        assert np.all(lower <= ref[1] + 1e-12) and np.all(ref[0] <= upper + 1e-12), name


@pytest.mark.parametrize("threads", [1, 7, 64])
@pytest.mark.parametrize("shape", [(1, 4, 3), (3, 5, 2), (7, 3, 5), (8, 8, 8)],
                         ids=lambda s: "x".join(map(str, s)))
def test_emulated_block_rounding_matches_the_reference(shape, threads):
    """The block solver's upper bound from a coupling that misses the marginals (rows above and
    below them) equals the reference's primal_bound, sparse joints included; a coupling with a
    NaN or infinite admissible entry gets +inf in both (its sums would skip a NaN entry as if it
    were no mass, and the "bound" could fall below V)."""
    rng = np.random.default_rng(sum(shape) + threads)
    P = _batch(shape, "sparse", B=4, seed=sum(shape))
    Q = P * rng.uniform(0.5, 1.5, P.shape)
    for b, bad in ((2, np.nan), (3, np.inf)):
        Q[b].flat[np.argmax(P[b])] = bad  # an admissible cell: P has mass there
    got = emulate.primal_bound(P, Q, threads)
    ref = solver.primal_bound(solver.Problem.from_joint(torch.from_numpy(P)), torch.from_numpy(Q)).numpy()
    assert np.all(np.isinf(ref[2:])) and np.all(np.isinf(got[2:])) and np.all(got[2:] > 0)
    np.testing.assert_allclose(got[:2], ref[:2], rtol=0, atol=1e-12)


def test_block_solver_workspace_fits_shared_memory():
    # An H100 gives a block up to 227 KB of shared memory: 8x8x8 takes the block solver,
    # 20x20x10 (a Schur complement of side 200) one problem per thread.
    assert emulate.solve_work(8, 8, 8) * 8 < 64 * 1024
    assert emulate.solve_work(20, 20, 10) * 8 > 227 * 1024


def _codes(N, sizes, G, seed):
    gen = torch.Generator().manual_seed(seed)
    x1, x2, y = (torch.randint(0, n, (N,), generator=gen) for n in sizes)
    return x1, x2, y, torch.randint(0, G, (N,), generator=gen), torch.rand(N, generator=gen, dtype=torch.float64)


def _reference_joint_codes(x1, x2, y, g, w, sizes, G, dtype):
    ref = torch.zeros(G, *sizes, dtype=dtype)
    ref.index_put_((g, x1, x2, y), w.to(dtype), accumulate=True)
    return ref


# Samples go to a block-private histogram (shared memory) flushed once per block, or straight
# to the output; three blocks check the flush of each.
GRIDS = {"private": dict(blocks=3, threads=13, private_hist=True),
         "direct": dict(blocks=3, threads=13, private_hist=False)}


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("groups", [False, True])
def test_emulated_joint_from_codes(groups, weights, dtype, grid):
    sizes, G, N = (5, 3, 4), 3, 777
    x1, x2, y, g, w = _codes(N, sizes, G, seed=1)
    got = emulate.joint_codes(x1.numpy(), x2.numpy(), y.numpy(), g.numpy() if groups else None,
                              w.numpy() if weights else None, *sizes, G if groups else 1,
                              f64=dtype == torch.float64, **GRIDS[grid])
    ref = _reference_joint_codes(x1, x2, y, g if groups else torch.zeros_like(g),
                                 w if weights else torch.ones(N, dtype=torch.float64), sizes, G if groups else 1, dtype)
    torch.testing.assert_close(torch.from_numpy(got), ref, atol=1e-12 if dtype == torch.float64 else 1e-4, rtol=1e-6)


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 3, 5), (17, 33, 2)], ids=lambda s: "x".join(map(str, s)))
def test_emulated_joint_from_soft_rows(shape, dtype, grid):
    n1, n2, ny = shape
    gen = torch.Generator().manual_seed(2)
    N, G = 300, 2
    p1 = torch.softmax(torch.randn(N, n1, generator=gen, dtype=torch.float64), 1)
    p2 = torch.softmax(torch.randn(N, n2, generator=gen, dtype=torch.float64), 1)
    p1[:5] = 0.0  # rows of zeros
    y = torch.randint(0, ny, (N,), generator=gen)
    g = torch.randint(0, G, (N,), generator=gen)
    w = torch.rand(N, generator=gen, dtype=torch.float64)
    got = emulate.joint_soft(p1.numpy().astype(dtype), p2.numpy().astype(dtype), y.numpy(), g.numpy(),
                             w.numpy().astype(dtype), ny, G, **GRIDS[grid])
    ref = torch.zeros(G, n1, n2, ny, dtype=torch.float64)
    for n in range(N):
        ref[g[n], :, :, y[n]] += w[n] * torch.outer(p1[n], p2[n])
    tol = 1e-12 if dtype == np.float64 else 1e-5
    torch.testing.assert_close(torch.from_numpy(got).double(), ref, atol=tol, rtol=tol)


# --- availability and dispatch without a GPU ----------------------------------------------------

def test_backends_reports_cuda_with_a_reason():
    info = fastpid.backends()["cuda"]
    if not (torch.cuda.is_available() and C.build_info()["cuda_compiled"]):
        assert info["available"] is False and info["reason"]
    else:
        assert info == {"available": True, "reason": ""}


def test_no_driver_is_named_as_such(monkeypatch):
    """With no driver the runtime says "driver version is insufficient", which sent users to
    upgrade a driver that was not there."""
    from fastpid import cuda

    if not C.build_info()["cuda_compiled"]:
        pytest.skip("the extension was built without CUDA")
    insufficient = (0, "CUDA driver version is insufficient for CUDA runtime version")
    monkeypatch.setattr(cuda, "_device_count", lambda: insufficient)
    monkeypatch.setattr(cuda, "_driver_present", lambda: False)
    ok, why = cuda.available()
    assert not ok and "no NVIDIA driver or GPU on this machine" in why and insufficient[1] in why
    monkeypatch.setattr(cuda, "_driver_present", lambda: True)
    assert "no NVIDIA driver" not in cuda.available()[1]


def test_cuda_backend_on_cpu_tensors_says_why():
    P = torch.from_numpy(_batch((3, 3, 2), "dense"))
    for method in ("exact", "fast", "proxy"):
        with pytest.raises(RuntimeError, match="backend='cuda' is not available"):
            fastpid.pid(P, method=method, backend="cuda")


@pytest.mark.parametrize(("block_fits", "cpp_ok", "host"), [(True, True, False), (False, True, True),
                                                         (False, False, False)])
def test_auto_sends_gpu_problems_one_per_thread_to_the_host(monkeypatch, block_fits, cpp_ok, host):
    # The rule alone (no GPU here): the C++ solver on the host only where the CUDA solver's
    # block workspace does not fit shared memory and the C++ solver can take the problems.
    from fastpid import api

    calls = []
    monkeypatch.setattr(cuda, "workspace_doubles", lambda *a: calls.append(a) or (0 if block_fits else 1))
    monkeypatch.setattr(cpp, "available", lambda: (cpp_ok, "" if cpp_ok else "not built"))
    P = torch.from_numpy(_batch((20, 12, 10), "sparse", B=2))
    assert api._host_beats_gpu_threads(P) == host
    assert calls == [(20, 12, 10, P.device)]  # the larger source first, as the solver takes them


def test_cuda_retries_only_orientations_it_takes_without_the_slow_path(monkeypatch):
    """A 100x4x4 batch short of tol was retried as 4x100x4, which misses the block solver's
    shared memory and takes the per-thread path at a Schur size of 400 (over its cap of 256,
    1.95 MB of scratch a problem). The rule alone, with the solver stubbed (no GPU here)."""
    from fastpid import api

    shapes = []

    def short(Q, tol, *, max_iter):
        shapes.append(tuple(Q.shape[1:]))
        B = Q.shape[0]
        return solver.Solution(torch.zeros(B, dtype=torch.float64), torch.ones(B, dtype=torch.float64),
                               torch.zeros(B, Q.shape[1], Q.shape[3]), torch.zeros(B, Q.shape[2], Q.shape[3]),
                               torch.full((B,), max_iter))

    monkeypatch.setattr(cuda, "solve", short)
    monkeypatch.setattr(cuda, "workspace_doubles", lambda n1, n2, ny, device=None: 0 if n1 >= n2 else 244_344)
    # 4x100x4 and 4x40x8 (Schur sizes 400 and 320) are not tried again; 6x8x4 (32) is
    for shape, want in (((100, 4, 4), [(100, 4, 4)]), ((40, 4, 8), [(40, 4, 8)]),
                        ((8, 6, 4), [(8, 6, 4), (6, 8, 4)])):
        shapes.clear()
        P = torch.from_numpy(_batch(shape, "dense", B=3))
        api._solve_oriented(P, "exact", "cuda", 1e-8, 20, None, None, False)
        assert shapes == want, shape
    assert not cuda.oriented_route(4, 100, 4) and cuda.oriented_route(100, 4, 4) and cuda.oriented_route(8, 8, 8)


def test_cuda_solve_chunks_the_per_thread_path_by_free_memory(monkeypatch):
    """Problems on the per-thread path took B times their scratch at once (195 GB for 100,000
    problems of 1.95 MB); they are solved in chunks of a quarter of the free memory. The
    chunking alone, with the extension stubbed (no GPU here)."""
    import contextlib

    launched = []

    class Ext:
        @staticmethod
        def cuda_solve_work(n1, n2, ny):
            return 1000

        @staticmethod
        def cuda_solve(B, p, n1, n2, ny, options, work, lower, *rest):
            launched.append(B)
            lower.copy_(p[:, 0, 0, 0])  # each problem's own mark, to check the order

    # the pointers stand for the tensors themselves, read by the stub
    monkeypatch.setattr(cuda, "_ptr", lambda t: t)
    monkeypatch.setattr(cuda, "_ext", lambda: Ext)
    monkeypatch.setattr(cuda, "_stream", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    # free memory for 3 problems' scratch, then less: torch's cache keeps each chunk's scratch,
    # which mem_get_info does not count as free (sized per chunk, the rest was split unevenly)
    free = iter([4 * 8 * 1000 * 3, 4 * 8 * 1000 * 2, 4 * 8 * 1000])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (next(free), 0))
    P = torch.full((8, 2, 2, 2), 0.125, dtype=torch.float64)
    P[:, 0, 0, 0] = torch.arange(8)
    sol = cuda.solve(P, 1e-8)
    assert launched == [3, 3, 2] and sol.f.shape == (8, 2, 2)
    assert sol.lower.tolist() == list(range(8))


def test_cuda_joints_pass_the_kernels_int64_codes(monkeypatch):
    """The joint kernels read 8 bytes a code: int32 codes given to cuda.joint_codes or
    joint_soft directly were read in pairs (garbage indices, out-of-bounds atomic adds), which
    the emulation, converting as it reads, could not show. The arguments alone (no GPU here)."""
    import contextlib

    passed = []
    monkeypatch.setattr(cuda, "_ptr", lambda t: passed.append(t) or 0)
    monkeypatch.setattr(cuda, "_stream", lambda device: 0)
    monkeypatch.setattr(cuda, "_ext", lambda: type("Ext", (), {"cuda_joint_codes": staticmethod(lambda *a: None),
                                                               "cuda_joint_soft": staticmethod(lambda *a: None)}))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    c = torch.tensor([0, 1, 1], dtype=torch.int32)
    cuda.joint_codes(c, c, c, (2, 2, 2), groups=c * 0)
    assert [t.dtype for t in passed[:4]] == [torch.int64] * 4
    passed.clear()
    rows = torch.full((3, 2), 0.5, dtype=torch.float64)
    cuda.joint_soft(rows, rows, c, 2, groups=c * 0)
    assert [t.dtype for t in passed[2:4]] == [torch.int64] * 2


# --- the compiled kernels on a GPU ------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES + [(40, 40, 20)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("B", [1, 300])
@pytest.mark.gpu
@needs_gpu
def test_gpu_closed_forms_and_alternation(shape, B, dtype):
    # 40x40x20 needs more than 48 KB per problem: the global-scratch path.
    P = torch.from_numpy(_batch(shape, "sparse", B=B, seed=B))
    Pd = P.to("cuda", dtype)
    atol = 1e-12 if dtype == torch.float64 else 2e-4
    got = torch.stack(cuda.closed_forms(Pd), 1).cpu()
    _same_finite(got, _reference_closed_forms(P.to(dtype)), atol if dtype == torch.float64 else 2e-5)
    for a, b in zip(cuda.alternation(Pd, 5), _reference_alternation(P.to(dtype), 5)):
        _same_finite(a.cpu(), b, 1e-11 if dtype == torch.float64 else atol)


@pytest.mark.gpu
@needs_gpu
def test_gpu_closed_forms_and_alternation_stride_past_the_grid():
    """More problems than the grid's 2^20 blocks: each block takes several, in turn."""
    B = (1 << 20) + 5
    P = torch.from_numpy(_batch((2, 3, 2), "sparse", B=7, seed=5)).repeat(B // 7 + 1, 1, 1, 1)[:B]
    got = torch.stack(cuda.closed_forms(P.cuda()), 1).cpu()
    _same_finite(got, _reference_closed_forms(P), 1e-12)
    for a, b in zip(cuda.alternation(P.cuda(), 3), _reference_alternation(P, 3)):
        _same_finite(a.cpu(), b, 1e-11)


@pytest.mark.gpu
@needs_gpu
def test_gpu_joints():
    sizes, G, N = (9, 4, 6), 5, 100_003
    x1, x2, y, g, w = _codes(N, sizes, G, seed=3)
    got = cuda.joint_codes(*(t.cuda() for t in (x1, x2, y)), sizes, groups=g.cuda(), num_groups=G, weights=w.cuda())
    torch.testing.assert_close(got.cpu(), _reference_joint_codes(x1, x2, y, g, w, sizes, G, torch.float64),
                               atol=1e-9, rtol=1e-12)
    p1 = torch.softmax(torch.randn(N, 9, dtype=torch.float64), 1)
    cpu = fastpid.joint(p1, x2, y, sizes=sizes)
    torch.testing.assert_close(fastpid.joint(p1.cuda(), x2.cuda(), y.cuda(), sizes=sizes).cpu(), cpu,
                               atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("method", ["proxy", "fast"])
@pytest.mark.gpu
@needs_gpu
def test_gpu_pid_with_the_cuda_backend(method):
    P = torch.from_numpy(_batch((6, 4, 5), "sparse", B=50, seed=7)).cuda()
    a = fastpid.pid(P, method=method, backend="cuda")
    b = fastpid.pid(P, method=method, backend="torch")
    assert a.backend == "cuda" and fastpid.pid(P, method=method).backend == "cuda"
    for k in ("redundancy", "unique1", "unique2", "synergy", "gap"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 2), (17, 3, 9), (8, 8, 8), (20, 20, 10)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.gpu
@needs_gpu
def test_gpu_exact_solver_matches_the_cpu_solver(shape, kind):
    P = torch.from_numpy(_batch(shape, kind, B=65, seed=11))  # two thread blocks, one partial
    got = cuda.solve(P.cuda(), 1e-8)
    ref = cpp.solve(P, 1e-8)
    assert torch.all(got.upper - got.lower <= 1e-8)
    torch.testing.assert_close(0.5 * (got.lower + got.upper).cpu(), 0.5 * (ref.lower + ref.upper),
                               atol=1e-8, rtol=0)
    res = fastpid.pid(P.cuda())
    # Problems the CUDA solver takes one per thread go to the C++ solver on the host.
    assert res.backend == ("cuda" if cuda.workspace_doubles(*shape) == 0 else "cpp")
    assert res.synergy.is_cuda and bool(res.converged.all())


@pytest.mark.parametrize("shape", [(8, 8, 8), (20, 20, 10)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.gpu
@needs_gpu
def test_gpu_block_and_per_thread_solvers_match_the_cpu_solver(shape):
    # 8x8x8 fits in shared memory (no global scratch: one problem per thread block);
    # 20x20x10 does not (one problem per thread).
    assert (cuda.workspace_doubles(*shape) == 0) == (shape == (8, 8, 8))
    P = _batch(shape, "sparse", B=130, seed=4)
    got = cuda.solve(torch.from_numpy(P).cuda(), 1e-8)
    _assert_solves_like_the_cpu_solver([x.cpu() for x in (got.lower, got.upper, got.f, got.g, got.iterations)],
                                       _cpu_solve(P))


def _noisy_mod_joints(shapes, seed):
    """Noisy near-deterministic joints, ``Y = (X1 + X2) mod ny`` over uniform sources plus noise
    of 1e-8 to 1e-5 on every cell: where a solve stalls at mu's floor unless it extrapolates."""
    rng = np.random.default_rng(seed)
    out = []
    for n, ny in shapes:
        a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        Q = np.zeros((n, n, ny))
        Q[a, b, (a + b) % ny] = 1.0
        Q = Q / Q.sum() + 10 ** rng.uniform(-8, -5) * rng.uniform(size=Q.shape)
        out.append(Q / Q.sum())
    return out


@pytest.mark.parametrize("shape", [(4, 3), (20, 10)], ids=["4x4x3", "20x20x10"])
@pytest.mark.gpu
@needs_gpu
def test_gpu_solvers_extrapolate_stalled_steps_like_the_cpu_solver(shape):
    """The block solver (4x4x3) and the per-thread one (20x20x10, the C++ solver's code) certify
    noisy near-deterministic joints at the default 1e-8, brackets overlapping the CPU solver's
    (the extrapolation of stalled steps, checked on the host by the emulation only). Not at
    1e-10: there the CPU solver and the emulated block solver each stop short on a few such
    joints (1-5 of 24 a shape)."""
    P = np.stack(_noisy_mod_joints([shape] * 4, seed=3))
    assert (cuda.workspace_doubles(shape[0], shape[0], shape[1]) == 0) == (shape == (4, 3))
    got = cuda.solve(torch.from_numpy(P).cuda(), 1e-8)
    lower, upper = got.lower.cpu().numpy(), got.upper.cpu().numpy()
    ref = _cpu_solve(P, 1e-8)
    assert np.all(upper - lower <= 1e-8)
    assert np.all(lower <= np.asarray(ref[1]) + 1e-12) and np.all(np.asarray(ref[0]) <= upper + 1e-12)


@pytest.mark.gpu
@needs_gpu
def test_gpu_problems_solved_on_the_host_come_back_with_their_gradient():
    # 20x20x10 takes one GPU thread per problem: backend="auto" solves it on the host; "cpp"
    # takes GPU tensors too. Results on the input's device, gradients to the GPU tensor.
    P = torch.from_numpy(_batch((20, 20, 10), "sparse", B=9, seed=5))
    R = P.clone().requires_grad_()
    ref = fastpid.pid(R, backend="cpp")
    ref.synergy.sum().backward()
    for backend in ("auto", "cpp"):
        X = P.cuda().requires_grad_()
        res = fastpid.pid(X, backend=backend)
        assert res.backend == "cpp" and res.synergy.is_cuda and res.gap.is_cuda and res.iterations.is_cuda
        res.synergy.sum().backward()
        torch.testing.assert_close(res.synergy.detach().cpu(), ref.synergy.detach(), atol=1e-12, rtol=0)
        assert X.grad.is_cuda
        torch.testing.assert_close(X.grad.cpu(), R.grad, atol=1e-10, rtol=0)
    # The estimate's null fit takes the same route: its plan (and so its orientation masks)
    # must be the host's, with groups of equal source sizes.
    rng = np.random.default_rng(2)
    x1, x2, y, g = (torch.from_numpy(rng.integers(0, n, 3000)) for n in (20, 20, 10, 3))
    on_gpu = fastpid.estimate(x1.cuda(), x2.cuda(), y.cuda(), sizes=(20, 20, 10), groups=g.cuda(), seed=0)
    on_cpu = fastpid.estimate(x1, x2, y, sizes=(20, 20, 10), groups=g, seed=0)
    torch.testing.assert_close(on_gpu.synergy.cpu(), on_cpu.synergy, atol=1e-9, rtol=0)
    for method in ("fast", "proxy"):
        res = fastpid.pid(P.cuda(), method=method, backend="cpp")
        torch.testing.assert_close(res.synergy.cpu(), fastpid.pid(P, method=method, backend="cpp").synergy,
                                   atol=1e-12, rtol=0)
