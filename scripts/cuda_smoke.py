"""Runs every CUDA kernel of fastpid once on small odd-sized inputs and checks it against the
PyTorch reference: the program compute-sanitizer watches in scripts/gpu_check.sh.

Exit status 0 when every kernel ran and matched; needs a CUDA device.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

import fastpid
from fastpid import cuda, solver
from fastpid.info import mutual_informations, proxy_coupling_mi


START = time.perf_counter()


def progress(stage: str) -> None:
    """One line per stage as it ends, with the time since the start: under compute-sanitizer a
    run cut short by a time limit still shows how far it got and where the time went."""
    torch.cuda.synchronize()
    print(f"{time.perf_counter() - START:8.1f} s  {stage}", flush=True)


def main() -> int:
    ok, why = cuda.available()
    if not ok:
        print(f"no CUDA kernels to check: {why}")
        return 1
    gen = torch.Generator().manual_seed(0)
    failures = []
    for shape in [(1, 1, 1), (3, 5, 2), (17, 3, 9), (8, 8, 8), (40, 40, 20)]:
        P = torch.rand(7, *shape, generator=gen, dtype=torch.float64) ** 4
        P[(P < 0.05) & (P < P.amax((1, 2, 3), keepdim=True))] = 0.0  # sparse, never all zero
        P = P / P.sum((1, 2, 3), keepdim=True)
        Pd = P.cuda()
        ref = torch.stack([*mutual_informations(P), proxy_coupling_mi(P)], 1)
        got = torch.stack(cuda.closed_forms(Pd), 1).cpu()
        if not torch.allclose(got, ref, atol=1e-12, rtol=0):
            failures.append(f"closed_forms {shape}")
        prob = solver.Problem.from_joint(P)
        want = solver.alternation_steps(prob, solver.proxy_log_r(prob), None, 4)
        for name, a, b in zip("f g logR".split(), cuda.alternation(Pd, 4), want):
            a = a.cpu()
            same = torch.equal(torch.isfinite(a), torch.isfinite(b)) and torch.allclose(
                torch.where(torch.isfinite(a), a, 0.0), torch.where(torch.isfinite(b), b, 0.0), atol=1e-11)
            if not same:
                failures.append(f"alternation {name} {shape}")
        a = fastpid.pid(Pd, method="fast", backend="cuda")
        b = fastpid.pid(P, method="fast", backend="torch")
        if not torch.allclose(a.synergy.cpu(), b.synergy, atol=1e-12, rtol=0):
            failures.append(f"pid fast {shape}")
        progress(f"closed forms, alternation, pid fast {shape}")
    # The float32 kernels, on the largest shape (past the shared-memory scratch), against the
    # float64 reference of the same float32 joint.
    P32 = P.float()
    ref = torch.stack([*mutual_informations(P32.double()), proxy_coupling_mi(P32.double())], 1)
    if not torch.allclose(torch.stack(cuda.closed_forms(P32.cuda()), 1).cpu().double(), ref, atol=2e-5, rtol=0):
        failures.append("closed_forms float32")
    prob = solver.Problem.from_joint(P32.double())
    want = solver.alternation_steps(prob, solver.proxy_log_r(prob), None, 4)
    for name, a, b in zip("f g logR".split(), cuda.alternation(P32.cuda(), 4), want):
        a = a.cpu().double()
        if not (torch.equal(torch.isfinite(a), torch.isfinite(b)) and torch.allclose(
                torch.where(torch.isfinite(a), a, 0.0), torch.where(torch.isfinite(b), b, 0.0), atol=2e-4)):
            failures.append(f"alternation float32 {name}")
    progress("float32 closed forms, alternation")
    # The exact solver's two paths: a thread block per problem (8x8x8 fits shared memory) and
    # a thread per problem (20x20x10 does not), against the C++ CPU solver.
    for shape in [(3, 5, 2), (8, 8, 8), (20, 20, 10)]:
        # One 20x20x10 problem: under memcheck three took 131 of its 138 s on an H200.
        P = torch.rand(1 if shape == (20, 20, 10) else 3, *shape, generator=gen, dtype=torch.float64) ** 4
        P = P / P.sum((1, 2, 3), keepdim=True)
        a = fastpid.pid(P.cuda(), backend="cuda")
        b = fastpid.pid(P, backend="cpp")
        if not (bool(a.converged.all()) and torch.allclose(a.synergy.cpu(), b.synergy, atol=2e-8, rtol=0)):
            failures.append(f"pid exact {shape}")
        progress(f"exact solver {shape}")
    # A noisy near-deterministic joint, on which the block solver certifies only by
    # extrapolating stalled steps (its last Newton steps, the branch no random joint takes).
    P = torch.from_numpy(np.load(Path(__file__).resolve().parents[1] / "tests" / "data" / "noisy_mod3_4x4x3.npy"))
    P = (P / P.sum())[None]
    a = fastpid.pid(P.cuda(), backend="cuda")
    b = fastpid.pid(P, backend="cpp")
    if not (bool(a.converged.all()) and torch.allclose(a.synergy.cpu(), b.synergy, atol=2e-8, rtol=0)):
        failures.append("pid exact, noisy 4x4x3")
    progress("exact solver, noisy 4x4x3")
    N = 100_003
    codes = [torch.randint(0, n, (N,), generator=gen) for n in (5, 3, 4)]
    w = torch.rand(N, generator=gen, dtype=torch.float64)
    T = cuda.joint_codes(*(c.cuda() for c in codes), (5, 3, 4), weights=w.cuda()).cpu()
    ref = torch.zeros(1, 5, 3, 4, dtype=torch.float64).index_put_((torch.zeros_like(codes[0]), *codes), w,
                                                                   accumulate=True)
    if not torch.allclose(T, ref, atol=1e-9):
        failures.append("joint_codes")
    p1 = torch.softmax(torch.randn(N, 5, generator=gen), 1)
    T = cuda.joint_soft(p1.cuda(), p1[:, :3].contiguous().cuda(), codes[2].cuda(), 4).cpu()
    ref = torch.einsum("na,nb,ny->aby", p1, p1[:, :3], torch.nn.functional.one_hot(codes[2], 4).float())[None]
    if not torch.allclose(T, ref, atol=1e-2, rtol=1e-4):
        failures.append("joint_soft")
    progress("joints")
    print("CUDA kernels: " + ("all match the reference" if not failures else "MISMATCH " + ", ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
