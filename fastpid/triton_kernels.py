"""Fused Triton kernels: joint distributions, the closed-form terms, the refinement steps.

Each problem stays in one program (a thread block on the GPU): its ``n1 x n2 x ny``
cells are loaded once, padded to powers of two, and every intermediate lives in
registers/shared memory instead of going through global memory between operations.

* :func:`joint_codes` / :func:`joint_soft` — unnormalised joints ``T[g, x1, x2, y]``
  from hard codes, or from soft rows of ``x1`` and ``x2`` with hard labels ``y``, by
  atomic adds (no ``N x n1 x n2 x ny`` intermediate);
* :func:`closed_forms` — ``I(X1,X2;Y)``, ``I(X1;Y)``, ``I(X2;Y)`` and ``I_Q0`` of the
  analytic proxy, one program per problem;
* :func:`alternation` — ``steps`` Blahut–Arimoto steps from the proxy (the ``"fast"``
  method of :func:`fastpid.pid`), fused into one kernel per problem; the certificate is
  then computed from its potentials by the reference functions.

They run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (how the tests
check them against the PyTorch reference). Work is in float64. On a GPU each kernel is
autotuned (warp count; block size for the joints) per problem shape the first time it runs.
"""
from __future__ import annotations

import contextlib
import math
import os

import torch

from .solver import OMEGA

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only without triton
    triton = None


#: Whether the kernels below are interpreted: ``triton.jit`` reads TRITON_INTERPRET as it
#: decorates them, at this module's import, so a later change of the variable does not reach them.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device | None = None) -> tuple[bool, str]:
    """Whether the kernels can run on ``device`` (any device if ``None``), and if not, why."""
    if triton is None:
        return False, "Triton is not installed (pip install 'fastpid[triton]')"
    interpret = INTERPRETED
    if not interpret and os.environ.get("TRITON_INTERPRET") == "1" and (
            device is None and not torch.cuda.is_available() or device is not None and device.type == "cpu"):
        # read at each call, it had said "available" and the launch failed ("0 active drivers")
        return False, ("TRITON_INTERPRET=1 was set after fastpid's Triton kernels were loaded, which "
                       "built them for a GPU: set it before importing fastpid")
    if device is not None and device.type == "cpu" and not interpret:
        return False, ("Triton kernels run on CUDA tensors (or on the CPU with TRITON_INTERPRET=1 set before "
                       "importing fastpid)")
    if device is None and not (interpret or torch.cuda.is_available()):
        return False, "no CUDA device (set TRITON_INTERPRET=1 before importing fastpid to run the kernels on the CPU)"
    return True, ""


#: Largest padded problem (cells, each axis rounded up to a power of two, at least 2) one
#: program holds in registers; beyond it the per-problem kernels would spill or fail to compile.
MAX_PADDED_CELLS = 2**14

#: Side of the x1 x x2 tile one program of the soft-joint kernel adds: wider rows take more
#: programs (a whole row pair in one block would pass Triton's 2**20-element limit at 1025 x 1025).
SOFT_TILE = 64


def size_route(n1: int, n2: int, ny: int) -> tuple[bool, str]:
    """Whether the per-problem kernels take problems of this size, and if not, why."""
    padded = math.prod(_blocks(n1, n2, ny).values())
    if padded <= MAX_PADDED_CELLS:
        return True, ""
    return False, (f"{n1}x{n2}x{ny} problems pad to {padded} cells, more than the {MAX_PADDED_CELLS} "
                   "one Triton program holds; backend='cuda' or 'torch' takes them")


def _blocks(n1: int, n2: int, ny: int) -> dict:
    """Block shape of one problem: each size padded to a power of two, and to at least 2.

    On an H200 (Triton 3.6) the alternation kernel gave wrong values for 3x1x2 problems
    (block 4x1x2) and right ones for 1x1x1 and 1x4x3; reductions over a block axis of
    length 1 beside longer axes are a known source of Triton miscompiles, and the
    interpreter cannot show them. The masks make padded cells inert, so no axis has length 1.
    """
    return {name: max(2, triton.next_power_of_2(n)) for name, n in (("B1", n1), ("B2", n2), ("BY", ny))}


def _warps(n1: int, n2: int, ny: int) -> int:
    """Warps per problem under the interpreter: enough lanes for the padded cells, at most 8."""
    cells = triton.next_power_of_2(n1 * n2 * ny)
    return max(1, min(8, cells // 256))


#: The most padded cells one lane of a per-problem kernel may hold: above it a warp count is not
#: tried. Compiling the largest block (32x32x16) for sm_90 took 11 s + 19 s (closed forms,
#: alternation) with 8 warps, 49 s + 90 s with 2 and 247 s + 334 s with 1: every count tried
#: on a fresh GPU cost minutes of a short session, for configs that hold 256-512 cells a lane.
MAX_CELLS_PER_LANE = 64


def warp_counts_worth_trying(configs, named_args, **kwargs):
    """The autotuner's early prune for the per-problem kernels: the warp counts whose lanes
    hold at most :data:`MAX_CELLS_PER_LANE` padded cells (``B1 B2 BY``), or the largest."""
    cells = kwargs["B1"] * kwargs["B2"] * kwargs["BY"]
    kept = [c for c in configs if cells <= MAX_CELLS_PER_LANE * 32 * c.num_warps]
    return kept or [max(configs, key=lambda c: c.num_warps)]


def _autotuned(configs, key, **kw):
    """On a GPU, time every config the first time a ``key`` is seen and keep the fastest.

    Triton's autotuner needs a GPU driver to time configs, so under the interpreter the
    kernel stays as it is and :func:`_launch` passes the interpreter defaults instead.
    """
    def wrap(kernel):
        if INTERPRETED:
            return kernel
        return triton.autotune(configs, key=key, **kw)(kernel)
    return wrap


def _launch(kernel, grid, *args, interpreter_defaults: dict, **kw):
    """Launch ``kernel`` on ``grid`` (a callable of the chosen meta-parameters); an untuned
    kernel (the interpreter) gets ``interpreter_defaults`` for the tuned parameters. It runs on
    the device of its first tensor: Triton launches on the current device, and P on cuda:1 with
    cuda:0 current would have been read through pointers the launch could not reach."""
    if not isinstance(kernel, triton.runtime.Autotuner):
        kw.update(interpreter_defaults)
    device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
    with torch.cuda.device(device) if device is not None and device.type == "cuda" else contextlib.nullcontext():
        kernel[grid](*args, **kw)


if triton is not None:

    @triton.jit
    def _xlogx(p):
        return tl.where(p > 0, p * tl.log(tl.where(p > 0, p, 1.0)), 0.0)

    @triton.jit
    def _proxy_masses(p1y, p2y, py):
        """``Q0(x1, x2) = sum_y P(x1,y) P(x2,y) / p(y)``, the quotient first (as
        :func:`fastpid.info.given_y`: the product of two masses near 1e-300 underflows)."""
        d2 = tl.where(py[None, :] > 0, p2y / tl.where(py > 0, py, 1.0)[None, :], 0.0)
        return tl.sum(p1y[:, None, :] * d2[None, :, :], axis=2)

    @triton.jit
    def _lse(x, axis: tl.constexpr):
        """log-sum-exp along ``axis``; ``-inf`` where every term is ``-inf``."""
        m = tl.max(x, axis=axis)
        finite = m > float("-inf")
        safe = tl.where(finite, m, 0.0)
        s = tl.sum(tl.exp(x - tl.expand_dims(safe, axis)), axis=axis)
        return tl.where(finite, safe + tl.log(tl.where(finite, s, 1.0)), float("-inf"))

    @triton.jit
    def _load_problem(P_ptr, b, n1, n2, ny, B1: tl.constexpr, B2: tl.constexpr, BY: tl.constexpr):
        i = tl.arange(0, B1)[:, None, None]
        j = tl.arange(0, B2)[None, :, None]
        y = tl.arange(0, BY)[None, None, :]
        mask = (i < n1) & (j < n2) & (y < ny)
        offs = b * n1 * n2 * ny + (i * n2 + j) * ny + y
        return tl.load(P_ptr + offs, mask=mask, other=0.0).to(tl.float64)

    # One problem per program: only the warp count is free (the block shapes are the
    # problem's padded sizes).
    _PER_PROBLEM_CONFIGS = [triton.Config({}, num_warps=w) for w in (1, 2, 4, 8)]
    _PER_PROBLEM_PRUNE = {"early_config_prune": warp_counts_worth_trying}

    @_autotuned(_PER_PROBLEM_CONFIGS, key=["n1", "n2", "ny"], prune_configs_by=_PER_PROBLEM_PRUNE)
    @triton.jit
    def _closed_forms_kernel(P_ptr, out_ptr, n1, n2, ny,
                             B1: tl.constexpr, B2: tl.constexpr, BY: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)  # 64-bit offsets: batches may exceed 2^31 cells
        P = _load_problem(P_ptr, b, n1, n2, ny, B1, B2, BY)
        p1y = tl.sum(P, axis=1)
        p2y = tl.sum(P, axis=0)
        py = tl.sum(p1y, axis=0)
        q12 = _proxy_masses(p1y, p2y, py)
        h12y = -tl.sum(tl.sum(tl.sum(_xlogx(P), axis=2), axis=1), axis=0)
        h12 = -tl.sum(tl.sum(_xlogx(tl.sum(P, axis=2)), axis=1), axis=0)
        h1y = -tl.sum(tl.sum(_xlogx(p1y), axis=1), axis=0)
        h2y = -tl.sum(tl.sum(_xlogx(p2y), axis=1), axis=0)
        h1 = -tl.sum(_xlogx(tl.sum(p1y, axis=1)), axis=0)
        h2 = -tl.sum(_xlogx(tl.sum(p2y, axis=1)), axis=0)
        hy = -tl.sum(_xlogx(py), axis=0)
        hq = -tl.sum(tl.sum(_xlogx(q12), axis=1), axis=0)
        tl.store(out_ptr + 4 * b + 0, h12 + hy - h12y)
        tl.store(out_ptr + 4 * b + 1, h1 + hy - h1y)
        tl.store(out_ptr + 4 * b + 2, h2 + hy - h2y)
        tl.store(out_ptr + 4 * b + 3, hq + 2.0 * hy - h1y - h2y)

    @triton.jit
    def _row_update(logR, g, la, m1):
        z = _lse(logR[:, :, None] + g[None, :, :], 1)
        return tl.where(m1, la - tl.where(m1, z, 0.0), float("-inf"))

    @_autotuned(_PER_PROBLEM_CONFIGS, key=["n1", "n2", "ny"], prune_configs_by=_PER_PROBLEM_PRUNE)
    @triton.jit
    def _alternation_kernel(P_ptr, f_ptr, g_ptr, r_ptr, n1, n2, ny, steps, omega,
                            B1: tl.constexpr, B2: tl.constexpr, BY: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)  # 64-bit offsets: batches may exceed 2^31 cells
        P = _load_problem(P_ptr, b, n1, n2, ny, B1, B2, BY)
        i2 = tl.arange(0, B1)[:, None]
        j2 = tl.arange(0, B2)[:, None]
        y2 = tl.arange(0, BY)[None, :]
        p1y = tl.sum(P, axis=1)  # (B1, BY)
        p2y = tl.sum(P, axis=0)  # (B2, BY)
        py = tl.sum(p1y, axis=0)
        logpy = tl.log(tl.where(py > 0, py, 1.0))
        m1 = p1y > 0
        m2 = p2y > 0
        la = tl.where(m1, tl.log(tl.where(m1, p1y, 1.0)) - logpy[None, :], float("-inf"))
        lb = tl.where(m2, tl.log(tl.where(m2, p2y, 1.0)) - logpy[None, :], float("-inf"))
        adm = m1[:, None, :] & m2[None, :, :]
        q12 = _proxy_masses(p1y, p2y, py)
        logR = tl.where(q12 > 0, tl.log(tl.where(q12 > 0, q12, 1.0)), float("-inf"))
        g = tl.where(m2, tl.zeros((B2, BY), tl.float64), float("-inf"))  # float64 through the loop
        for _ in range(steps):
            f = _row_update(logR, g, la, m1)
            z = _lse(logR[:, :, None] + f[:, None, :], 0)
            g = tl.where(m2, lb - tl.where(m2, z, 0.0), float("-inf"))
            w = tl.where(adm, logpy[None, None, :] + f[:, None, :] + g[None, :, :], float("-inf"))
            logs = _lse(w, 2)
            logR = tl.where(logR > float("-inf"), logR + omega * logs, logR)
            total = _lse(tl.reshape(logR, (B1 * B2,)), 0)
            logR = logR - total
        f = _row_update(logR, g, la, m1)
        tl.store(f_ptr + b * n1 * ny + i2 * ny + y2, f, mask=(i2 < n1) & (y2 < ny))
        tl.store(g_ptr + b * n2 * ny + j2 * ny + y2, g, mask=(j2 < n2) & (y2 < ny))
        jr = tl.arange(0, B2)[None, :]
        tl.store(r_ptr + b * n1 * n2 + i2 * n2 + jr, logR, mask=(i2 < n1) & (jr < n2))

    # Atomic adds accumulate into out: every timing run starts from zeros again.
    @_autotuned([triton.Config({"BLOCK": b}, num_warps=w) for b in (256, 1024, 4096) for w in (4, 8)],
                key=["n1", "n2", "ny", "HAS_G", "HAS_W"], reset_to_zero=["out_ptr"])
    @triton.jit
    def _joint_codes_kernel(x1_ptr, x2_ptr, y_ptr, g_ptr, w_ptr, out_ptr, N, n1, n2, ny,
                            HAS_G: tl.constexpr, HAS_W: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        idx = tl.load(x1_ptr + offs, mask=m, other=0)
        if HAS_G:
            idx += tl.load(g_ptr + offs, mask=m, other=0) * n1
        idx = (idx * n2 + tl.load(x2_ptr + offs, mask=m, other=0)) * ny + tl.load(y_ptr + offs, mask=m, other=0)
        if HAS_W:
            val = tl.load(w_ptr + offs, mask=m, other=0.0)
        else:
            val = tl.full((BLOCK,), 1.0, tl.float64).to(out_ptr.dtype.element_ty)
        tl.atomic_add(out_ptr + idx, val, mask=m)

    @_autotuned([triton.Config({}, num_warps=w) for w in (1, 2, 4)],
                key=["n1", "n2", "ny", "HAS_G", "HAS_W"], reset_to_zero=["out_ptr"])
    @triton.jit
    def _joint_soft_kernel(p1_ptr, p2_ptr, y_ptr, g_ptr, w_ptr, out_ptr, n1, n2, ny,
                           HAS_G: tl.constexpr, HAS_W: tl.constexpr,
                           B1: tl.constexpr, B2: tl.constexpr):
        # One program per sample and (B1, B2) tile of its x1 x x2 outer product; int64 offsets.
        n = tl.program_id(0).to(tl.int64)
        i = tl.program_id(1).to(tl.int64) * B1 + tl.arange(0, B1)
        j = tl.program_id(2).to(tl.int64) * B2 + tl.arange(0, B2)
        a = tl.load(p1_ptr + n * n1 + i, mask=i < n1, other=0.0)
        c = tl.load(p2_ptr + n * n2 + j, mask=j < n2, other=0.0)
        outer = a[:, None] * c[None, :]
        if HAS_W:
            outer = outer * tl.load(w_ptr + n)
        base = tl.load(y_ptr + n)
        if HAS_G:
            base += tl.load(g_ptr + n) * n1 * n2 * ny
        offs = base + (i[:, None] * n2 + j[None, :]) * ny
        tl.atomic_add(out_ptr + offs, outer, mask=(i[:, None] < n1) & (j[None, :] < n2))


def closed_forms(P: torch.Tensor):
    """``(mi, mi1, mi2, mi_q0)`` of a flat batch ``P[B, n1, n2, ny]`` (normalised), shape ``(B,)`` each."""
    B, n1, n2, ny = P.shape
    P = P.contiguous().to(torch.float64)
    out = torch.empty(B, 4, dtype=torch.float64, device=P.device)
    _launch(_closed_forms_kernel, (B,), P, out, n1, n2, ny, **_blocks(n1, n2, ny),
            interpreter_defaults=dict(num_warps=_warps(n1, n2, ny)))
    return out.unbind(1)


def alternation(P: torch.Tensor, steps: int, omega: float = OMEGA):
    """``(f, g, logR)`` after ``steps`` Blahut–Arimoto steps from the proxy, as
    :func:`fastpid.solver.alternation_steps` computes them from :func:`~fastpid.solver.proxy_log_r`."""
    B, n1, n2, ny = P.shape
    P = P.contiguous().to(torch.float64)
    f = torch.empty(B, n1, ny, dtype=torch.float64, device=P.device)
    g = torch.empty(B, n2, ny, dtype=torch.float64, device=P.device)
    logR = torch.empty(B, n1, n2, dtype=torch.float64, device=P.device)
    _launch(_alternation_kernel, (B,), P, f, g, logR, n1, n2, ny, int(steps), float(omega),
            **_blocks(n1, n2, ny), interpreter_defaults=dict(num_warps=_warps(n1, n2, ny)))
    return f, g, logR


def joint_codes(x1, x2, y, sizes, *, groups=None, num_groups: int = 1, weights=None, dtype=torch.float64):
    """Unnormalised ``T[G, n1, n2, ny]``: the (weighted) count of each code triple per group.

    ``x1, x2, y, groups``: int64 vectors of length N, already checked to be in range.
    """
    n1, n2, ny = sizes
    N = x1.shape[0]
    # The kernel indexes each vector as ptr + n: views (a column of an (N, 3) code array,
    # labels[::2]) must be made contiguous, or it reads the wrong samples and adds out of bounds.
    x1, x2, y = x1.contiguous(), x2.contiguous(), y.contiguous()
    groups = None if groups is None else groups.contiguous()
    weights = None if weights is None else weights.to(dtype).contiguous()
    out = torch.zeros(num_groups * n1 * n2 * ny, dtype=dtype, device=x1.device)
    _launch(_joint_codes_kernel, lambda meta: (triton.cdiv(N, meta["BLOCK"]),),
            x1, x2, y, groups if groups is not None else x1, weights if weights is not None else out, out,
            N, n1, n2, ny, HAS_G=groups is not None, HAS_W=weights is not None,
            interpreter_defaults=dict(BLOCK=1024))
    return out.reshape(num_groups, n1, n2, ny)


def joint_soft(p1, p2, y, ny: int, *, groups=None, num_groups: int = 1, weights=None):
    """Unnormalised ``T[G, n1, n2, ny] = Σ_n w_n p1[n] ⊗ p2[n] ⊗ onehot(y_n)`` per group.

    ``p1 (N, n1)``, ``p2 (N, n2)`` probability rows; ``y``, ``groups`` int64 vectors.
    """
    N, n1 = p1.shape
    n2 = p2.shape[1]
    p1, p2, y = p1.contiguous(), p2.contiguous(), y.contiguous()  # indexed as ptr + n (joint_codes)
    groups = None if groups is None else groups.contiguous()
    weights = None if weights is None else weights.to(p1.dtype).contiguous()
    out = torch.zeros(num_groups * n1 * n2 * ny, dtype=p1.dtype, device=p1.device)
    B1, B2 = (min(triton.next_power_of_2(k), SOFT_TILE) for k in (n1, n2))
    _launch(_joint_soft_kernel, (N, triton.cdiv(n1, B1), triton.cdiv(n2, B2)),
            p1, p2, y, groups if groups is not None else y, weights if weights is not None else p1, out,
            n1, n2, ny, HAS_G=groups is not None, HAS_W=weights is not None,
            B1=B1, B2=B2, interpreter_defaults={})
    return out.reshape(num_groups, n1, n2, ny)
