"""The CUDA kernels of the native extension ``fastpid._C``, for CUDA tensors.

The same jobs as :mod:`fastpid.triton_kernels`, with the same signatures, so that
:mod:`fastpid.api` and :mod:`fastpid.joint` can use either:

* :func:`joint_codes` / :func:`joint_soft` — unnormalised joints ``T[g, x1, x2, y]`` by
  atomic adds, threads striding over the samples (no ``N x n1 x n2 x ny`` intermediate);
* :func:`closed_forms` — ``I(X1,X2;Y)``, ``I(X1;Y)``, ``I(X2;Y)`` and ``I_Q0``, one thread
  block per problem;
* :func:`alternation` — the ``"fast"`` method's refinement steps, one thread block per
  problem with its intermediates in shared memory when they fit (48 KB), else in a global
  scratch buffer;
* :func:`solve` — the certified solver: one problem per thread block, its threads sharing
  each phase and its workspace in shared memory (``csrc/cuda/solver_block.hpp``), for
  problems whose workspace fits the device's shared memory per block (8x8x8 takes 49 KB of
  an H100's 227 KB); larger ones one problem per thread, the C++ CPU solver's own sequential
  code (``csrc/solver_core.hpp``) with a slice of a global scratch buffer each.

The kernel bodies (``csrc/cuda/kernels.hpp``) are compiled twice: by nvcc for the GPU and
by the host compiler for ``fastpid._C.emulate``, which runs them on host threads (one per
CUDA thread, with real barriers). The tests check the emulation against the PyTorch
reference on every machine and the GPU kernels on a GPU. Arrays cross as device pointers
and the kernels run on torch's current stream for the tensors' device.
"""
from __future__ import annotations

import functools

import torch

from . import cpp
from ._build_info import load_extension
from .solver import OMEGA, Solution


def available(device: torch.device | None = None) -> tuple[bool, str]:
    """Whether the kernels can run on ``device`` (any CUDA device if ``None``), and if not, why."""
    ext, error = load_extension()
    if ext is None:
        return False, f"the native extension fastpid._C does not import ({error})"
    if not ext.build_info().get("cuda_compiled"):
        return False, ("the extension was built without CUDA (no CUDA compiler was found, or "
                       "FASTPID_CUDA=0); reinstall fastpid where nvcc is on the PATH")
    if device is not None and device.type != "cuda":
        return False, f"the CUDA kernels run on CUDA tensors; got a tensor on {device}"
    count, why = _device_count()
    if count == 0:
        # With no driver at all the runtime says "driver version is insufficient", which sent
        # users to upgrade a driver that is not there.
        where = "" if _driver_present() else "no NVIDIA driver or GPU on this machine; "
        return False, f"no usable CUDA device ({where}the CUDA runtime says: {why or 'no device found'})"
    return True, ""


@functools.cache
def _driver_present() -> bool:
    """Whether an NVIDIA driver shows itself: its device nodes (Linux) or its library; asked
    once (find_library runs ldconfig and the compiler: ~10 ms a call of fastpid.backends())."""
    import ctypes.util
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*")) or ctypes.util.find_library("cuda") is not None


@functools.cache
def _device_count() -> tuple[int, str]:
    """CUDA devices the extension's runtime sees (fixed for the life of the process)."""
    return _ext().cuda_device_count()


def _ext():
    from . import _C

    return _C


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _is_f64(dtype: torch.dtype) -> bool:
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"the CUDA kernels take float32 or float64 arrays; got {dtype}")
    return dtype == torch.float64


def _scratch(per_problem: int, B: int, like: torch.Tensor) -> torch.Tensor | None:
    """Global scratch for problems too large for shared memory (``None`` when they fit)."""
    return None if per_problem == 0 else torch.empty(B * per_problem, dtype=like.dtype, device=like.device)


def closed_forms(P: torch.Tensor):
    """``(mi, mi1, mi2, mi_q0)`` of a flat batch ``P[B, n1, n2, ny]`` (normalised), shape ``(B,)`` each."""
    B, n1, n2, ny = P.shape
    P = P.contiguous()
    f64 = _is_f64(P.dtype)
    out = torch.empty(B, 4, dtype=P.dtype, device=P.device)
    work = _scratch(_ext().cuda_closed_forms_work(n1, n2, ny, f64), B, P)
    with torch.cuda.device(P.device):
        _ext().cuda_closed_forms(f64, B, _ptr(P), n1, n2, ny, _ptr(out), _ptr(work), _stream(P.device))
    return out.unbind(1)


def alternation(P: torch.Tensor, steps: int, omega: float = OMEGA):
    """``(f, g, logR)`` after ``steps`` Blahut–Arimoto steps from the proxy, as
    :func:`fastpid.solver.alternation_steps` computes them from :func:`~fastpid.solver.proxy_log_r`."""
    B, n1, n2, ny = P.shape
    P = P.contiguous()
    f64 = _is_f64(P.dtype)
    f = torch.empty(B, n1, ny, dtype=P.dtype, device=P.device)
    g = torch.empty(B, n2, ny, dtype=P.dtype, device=P.device)
    logR = torch.empty(B, n1, n2, dtype=P.dtype, device=P.device)
    work = _scratch(_ext().cuda_alternation_work(n1, n2, ny, f64), B, P)
    with torch.cuda.device(P.device):
        _ext().cuda_alternation(f64, B, _ptr(P), n1, n2, ny, int(steps), float(omega),
                                _ptr(f), _ptr(g), _ptr(logR), _ptr(work), _stream(P.device))
    return f, g, logR


def joint_codes(x1, x2, y, sizes, *, groups=None, num_groups: int = 1, weights=None, dtype=torch.float64):
    """Unnormalised ``T[G, n1, n2, ny]``: the (weighted) count of each code triple per group.

    ``x1, x2, y, groups``: int64 vectors of length N, already checked to be in range;
    ``weights``: a vector of ``dtype``.
    """
    n1, n2, ny = sizes
    f64 = _is_f64(dtype)
    # int64 whatever came: the kernel reads 8 bytes a code (int32 codes were read in pairs)
    codes = [t.to(torch.int64).contiguous() for t in (x1, x2, y)]
    groups = None if groups is None else groups.to(torch.int64).contiguous()
    weights = None if weights is None else weights.to(dtype).contiguous()
    out = torch.zeros(num_groups, n1, n2, ny, dtype=dtype, device=x1.device)
    with torch.cuda.device(x1.device):
        _ext().cuda_joint_codes(f64, x1.shape[0], *map(_ptr, codes), _ptr(groups), _ptr(weights),
                                n1, n2, ny, num_groups, _ptr(out), _stream(x1.device))
    return out


def joint_soft(p1, p2, y, ny: int, *, groups=None, num_groups: int = 1, weights=None):
    """Unnormalised ``T[G, n1, n2, ny] = Σ_n w_n p1[n] ⊗ p2[n] ⊗ onehot(y_n)`` per group.

    ``p1 (N, n1)``, ``p2 (N, n2)`` probability rows of one dtype; ``y``, ``groups`` int64 vectors.
    """
    N, n1 = p1.shape
    n2 = p2.shape[1]
    f64 = _is_f64(p1.dtype)
    p1, p2, y = p1.contiguous(), p2.to(p1.dtype).contiguous(), y.to(torch.int64).contiguous()
    groups = None if groups is None else groups.to(torch.int64).contiguous()
    weights = None if weights is None else weights.to(p1.dtype).contiguous()
    out = torch.zeros(num_groups, n1, n2, ny, dtype=p1.dtype, device=p1.device)
    with torch.cuda.device(p1.device):
        _ext().cuda_joint_soft(f64, N, _ptr(p1), _ptr(p2), _ptr(y), _ptr(groups), _ptr(weights),
                               n1, n2, ny, num_groups, _ptr(out), _stream(p1.device))
    return out


def workspace_doubles(n1: int, n2: int, ny: int, device: torch.device | None = None) -> int:
    """Doubles of global scratch :func:`solve` needs per problem on ``device`` (the current
    CUDA device if ``None``): 0 when the problem fits the block solver's shared memory."""
    with torch.cuda.device(device):
        return _ext().cuda_solve_work(n1, n2, ny)


#: Largest Schur-complement size ``min(n1, n2) * ny`` that the one-problem-per-thread path
#: takes: beyond it one GPU thread would run the whole serial solver for minutes (hours at
#: 64x64x101), and the batched PyTorch solver on the GPU is the better route.
PER_THREAD_MAX_SCHUR = 256


#: Cells of one problem the kernels index with 32-bit integers, at most.
MAX_CELLS = 2**31 - 1


def alternation_doubles(n1: int, n2: int, ny: int) -> int:
    """Doubles of the alternation's arrays per problem (``alternation_work`` in
    csrc/cuda/kernels.hpp: marginals, log p(y), la, lb, f, g, log R, log s), whose offsets the
    kernels take in 32-bit integers."""
    return (n1 + n2 + 1) * ny + ny + 2 * (n1 + n2) * ny + 2 * n1 * n2


def size_route(n1: int, n2: int, ny: int) -> tuple[bool, str]:
    """Whether the kernels can index problems of this size, and if not, why: their cells and
    their alternation's arrays (1x1x536870912 and 46340x46340x1 have few enough cells, but
    arrays of 4.3e9 doubles, which 32-bit sizes wrapped to a few bytes)."""
    if n1 * n2 * ny <= MAX_CELLS and alternation_doubles(n1, n2, ny) <= MAX_CELLS:
        return True, ""
    return False, (f"{n1}x{n2}x{ny} problems ({n1 * n2 * ny:,} cells, {alternation_doubles(n1, n2, ny):,} "
                   f"doubles of arrays) pass the CUDA kernels' 32-bit indices (at most {MAX_CELLS:,}); "
                   "backend='torch' solves them (backend='auto' does so by itself)")


def exact_route(n1: int, n2: int, ny: int, device: torch.device | None = None) -> tuple[bool, str]:
    """Whether :func:`solve` should take problems of this size on ``device``, and if not, why:
    yes where the kernels can index them (:func:`size_route`) and the block solver's workspace
    fits in shared memory, or the per-thread path's Schur complement is at most
    :data:`PER_THREAD_MAX_SCHUR`."""
    ok, why = size_route(n1, n2, ny)
    if not ok:
        return ok, why
    m = min(n1, n2) * ny
    if m <= PER_THREAD_MAX_SCHUR or workspace_doubles(max(n1, n2), min(n1, n2), ny, device) == 0:
        return True, ""
    return False, (f"{n1}x{n2}x{ny} problems (Schur size {m} > {PER_THREAD_MAX_SCHUR}) are too large "
                   "for the CUDA solver's one-problem-per-thread path; backend='torch' solves them "
                   "batched on the GPU (backend='auto' does so by itself)")


def oriented_route(n1: int, n2: int, ny: int, device: torch.device | None = None) -> bool:
    """Whether :func:`solve` takes problems in exactly this orientation without the slow path:
    the block solver fits them, or the per-thread path's Schur size ``n2 * ny`` is at most
    :data:`PER_THREAD_MAX_SCHUR` (:func:`exact_route` asks of the better orientation)."""
    return size_route(n1, n2, ny)[0] and (n2 * ny <= PER_THREAD_MAX_SCHUR
                                          or workspace_doubles(n1, n2, ny, device) == 0)


def solve(P: torch.Tensor, tol: float, *, max_iter: int = 500) -> Solution:
    """Certified bounds on V for a flat float64 CUDA batch ``P[B, n1, n2, ny]`` (normalised),
    to the gap ``tol``, as :func:`fastpid.cpp.solve` computes them. Problems that take the
    per-thread path are solved in chunks whose scratch fits a quarter of the free memory."""
    B, n1, n2, ny = P.shape
    per = workspace_doubles(n1, n2, ny, P.device)
    # Sized once: the first chunk's scratch stays in torch's cache, which mem_get_info does not
    # count as free, and sizing each chunk again split the rest unevenly.
    chunk = max(1, torch.cuda.mem_get_info(P.device)[0] // 4 // (8 * per)) if per and B > 1 else B
    if B > chunk:
        parts = [_solve_chunk(P[i:i + chunk], tol, max_iter, per) for i in range(0, B, chunk)]
        return Solution(*(torch.cat([getattr(p, k) for p in parts])
                          for k in ("lower", "upper", "f", "g", "iterations")))
    return _solve_chunk(P, tol, max_iter, per)


def _solve_chunk(P: torch.Tensor, tol: float, max_iter: int, per: int) -> Solution:
    """:func:`solve` of ``P`` in one launch, with ``per`` doubles of scratch a problem."""
    B, n1, n2, ny = P.shape
    P = P.detach().to(torch.float64).contiguous()
    opts = dict(dtype=torch.float64, device=P.device)
    lower, upper = torch.empty(B, **opts), torch.empty(B, **opts)
    f, g = torch.empty(B, n1, ny, **opts), torch.empty(B, n2, ny, **opts)
    iterations = torch.empty(B, dtype=torch.int64, device=P.device)
    work = torch.empty(B * per, **opts)
    with torch.cuda.device(P.device):
        _ext().cuda_solve(B, _ptr(P), n1, n2, ny, cpp.options(tol, max_iter), _ptr(work), _ptr(lower),
                          _ptr(upper), _ptr(f), _ptr(g), _ptr(iterations), _stream(P.device))
    return Solution(lower, upper, f, g, iterations)
