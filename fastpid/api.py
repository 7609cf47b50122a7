"""The public entry point :func:`pid` and the one place where methods and backends are chosen."""
from __future__ import annotations

import math

import numpy as np
import torch

from . import cpp, cuda, solver
from ._autograd import attach_envelope_gradient
from ._validate import check_base, check_choice, check_distribution, check_positive_int, check_tol
from .result import PIDResult

METHODS = ("exact", "proxy", "fast")
BACKENDS = ("auto", "torch", "cpp", "cuda", "triton", "cvx")

#: Default certified tolerance on V (nats) by input dtype.
DEFAULT_TOL = {torch.float64: 1e-8, torch.float32: 1e-5}
DEFAULT_MAX_ITER = 500
DEFAULT_FAST_STEPS = 20
#: Problems are solved in chunks so that a chunk's Newton systems stay near this many floats.
_CHUNK_FLOATS = 2**24


def pid(P, *, method: str = "exact", backend: str = "auto", tol=None, max_iter=None, steps=None,
        base=None, progress=None) -> PIDResult:
    """BROJA partial information decomposition of joint distributions ``P[..., x1, x2, y]``.

    Args:
        P: array of shape ``(..., n1, n2, ny)``; the last axis is the target ``Y``.
            Probabilities or counts (each problem is normalised on its own). A numpy
            array (or nested list) gives numpy ``float64`` results; a torch tensor gives
            torch results on the same device and dtype (float32 or float64), and
            gradients flow to ``P``.
        method: ``"exact"`` solves ``V = min_Q I_Q(Y; X1,X2)`` to a certified ``tol``;
            ``"proxy"`` uses the closed-form coupling ``Q0 = P(x1,y) P(x2,y) / p(y)``
            (no iterations); ``"fast"`` runs ``steps`` cheap refinement steps from ``Q0``.
        backend: ``"auto"`` (CPU: the C++ solver for problems with
            ``min(n1, n2) * ny <= 640``, else the PyTorch solver; GPU: the CUDA kernels,
            else the Triton kernels (``proxy`` and ``fast`` only), else PyTorch),
            ``"torch"``, ``"cpp"`` (CPU only), ``"cuda"`` (CUDA tensors), ``"triton"``
            (CUDA tensors; ``proxy`` and ``fast``), or ``"cvx"`` (the CVXPY exponential-cone program,
            ``pip install fastpid[cvx]``; exact method only). :func:`backends` says which
            are available.
        tol: certified tolerance on every term, in nats (default ``1e-8`` for float64
            input, ``1e-5`` for float32).
        max_iter: cap on Newton iterations per problem (``method="exact"``).
        steps: refinement steps for ``method="fast"`` (default 20).
        base: logarithm base of the results (``2`` for bits); default nats.
        progress: show a progress bar over chunks of a large batch. Default: when
            more than one chunk is solved and stderr is a terminal (so training logs
            stay clean); ``True``/``False`` force it on/off.

    Returns:
        :class:`PIDResult` with ``redundancy``, ``unique1``, ``unique2``, ``synergy``,
        ``mi``, ``mi1``, ``mi2`` and ``gap`` of the batch shape ``(...)``. ``gap``
        bounds the error of every term; ``R + U1 + U2 + S = mi``, ``R + U1 = mi1`` and
        ``R + U2 = mi2`` hold exactly, and every term is ``>= 0``.
    """
    method = check_choice(method, METHODS, "method")
    backend = check_choice(backend, BACKENDS, "backend")
    tol = check_tol(tol)
    max_iter = check_positive_int(max_iter, name="max_iter") or DEFAULT_MAX_ITER
    steps = check_positive_int(steps, name="steps") or DEFAULT_FAST_STEPS
    base = check_base(base)
    if backend == "cvx" and method != "exact":
        raise ValueError(f"backend='cvx' solves the exact problem only; got method={method!r}")

    T, is_numpy = check_distribution(P)
    out_dtype = T.dtype
    if tol is None:
        tol = DEFAULT_TOL.get(out_dtype, 1e-5)
    batch_shape = T.shape[:-3]
    n1, n2, ny = T.shape[-3:]
    flat = T.reshape(-1, n1, n2, ny).to(torch.float64)

    if backend != "cvx":
        backend = _choose_backend(backend, flat, method)
    # The kernels have no backward pass: with gradients, the closed forms stay in torch.
    fused = backend in ("cuda", "triton") and not flat.requires_grad
    mi, mi1, mi2, lower0, upper0 = solver.closed_form_bracket(
        flat, closed_forms=_kernels(backend).closed_forms if fused else None)
    status = None
    iterations = torch.zeros(flat.shape[0], dtype=torch.int64, device=flat.device)
    if method == "proxy":
        # upper0 = min(I_Q0, I(X1,X2;Y), I1 + I2): the proxy's value unless Q0 is worse than
        # P itself (also feasible), or than the theorem V <= I1 + I2.
        value, lower, upper = upper0, lower0, upper0
        converged = torch.ones_like(value, dtype=torch.bool)
        backend = backend if fused else "torch"
    elif backend == "cvx":
        value, lower, upper, converged, status = _solve_cvx(flat, lower0, upper0)
    else:
        value, lower, upper, converged, iterations = _solve_iterative(
            flat, method, backend, tol, max_iter, steps, progress, (lower0, upper0))

    # Keep V inside the free bracket so every term is non-negative.
    value = torch.minimum(torch.maximum(value, lower0), upper0)
    gap = (upper - lower).detach().clamp_min(0.0)
    terms = {
        "redundancy": (mi1 + mi2 - value).clamp_min(0.0),
        "unique1": (value - mi2).clamp_min(0.0),
        "unique2": (value - mi1).clamp_min(0.0),
        "synergy": (mi - value).clamp_min(0.0),
        "mi": mi, "mi1": mi1, "mi2": mi2, "gap": gap,
    }
    scale = 1.0 if base is None else 1.0 / math.log(base)

    def out(x, scaled=True):
        x = x.reshape(batch_shape)
        if scaled and x.is_floating_point():
            x = (x * scale).to(out_dtype)
        if is_numpy:
            x = x.detach().cpu().numpy()
            return x.astype(np.float64) if x.dtype.kind == "f" else x
        return x

    return PIDResult(
        **{k: out(v) for k, v in terms.items()},
        converged=out(converged, False), iterations=out(iterations, False),
        method=method, backend=backend,
        base=base, status=status,
    )


def _triton():
    """The Triton kernels module, imported on first use (importing triton is slow, and CPU
    solves never need it)."""
    from . import triton_kernels

    return triton_kernels


def _kernels(backend: str):
    """The GPU kernel module of ``backend`` (``"cuda"`` or ``"triton"``): same functions, same signatures."""
    return cuda if backend == "cuda" else _triton()


def backends() -> dict:
    """Which backends can run here: ``{name: {"available": bool, "reason": str}}``.

    ``reason`` says why a backend is unavailable (empty when it is available).
    """
    import importlib.util

    cpp_ok, cpp_why = cpp.available()
    cuda_ok, cuda_why = cuda.available()
    triton_ok, triton_why = _triton().available()
    cvx_ok = importlib.util.find_spec("cvxpy") is not None
    return {
        "torch": {"available": True, "reason": ""},
        "cpp": {"available": cpp_ok, "reason": cpp_why},
        "cuda": {"available": cuda_ok, "reason": cuda_why},
        "triton": {"available": triton_ok, "reason": triton_why},
        "cvx": {"available": cvx_ok,
                "reason": "" if cvx_ok else "CVXPY is not installed (pip install 'fastpid[cvx]')"},
    }


def _choose_backend(backend: str, flat: torch.Tensor, method: str) -> str:
    """The one place where a backend is picked for ``flat`` (``"torch"``, ``"cpp"``, ``"cuda"``
    or ``"triton"``).

    ``auto``: on the CPU, the C++ solver for problems with ``min(n1, n2) * ny <= 640`` and
    PyTorch otherwise; on a GPU, the CUDA kernels, else the Triton kernels (``proxy`` and
    ``fast`` only), else PyTorch.
    """
    device = flat.device
    if backend == "torch":
        return backend
    if backend == "cpp":
        if device.type != "cpu":
            raise ValueError(f"backend='cpp' solves CPU problems; got a tensor on {device}. "
                             "Use backend='torch' (or 'auto') for GPU tensors.")
        ok, why = cpp.available()
        if not ok:
            raise RuntimeError(f"backend='cpp' is not available: {why}")
        return backend
    if backend in ("cuda", "triton"):
        if backend == "triton" and method == "exact":
            raise ValueError("backend='triton' runs method='proxy' and method='fast'; "
                             "use backend='cuda', 'torch' or 'auto' for method='exact'")
        ok, why = _kernels(backend).available(device)
        if not ok:
            raise RuntimeError(f"backend={backend!r} is not available: {why}")
        return backend
    if device.type == "cpu":
        n1, n2, ny = flat.shape[1:]
        small = min(n1, n2) * ny <= cpp.AUTO_MAX_SCHUR
        return "cpp" if small and cpp.available()[0] else "torch"
    for kernels in ("cuda", "triton"):
        if (kernels == "cuda" or method != "exact") and _kernels(kernels).available(device)[0]:
            return kernels
    return "torch"


def _solve_oriented(P: torch.Tensor, method: str, backend: str, tol, max_iter, steps, bracket) -> solver.Solution:
    """Solve with the smaller source on the Schur-complement side (V is symmetric in X1, X2,
    and so is the closed-form ``bracket``)."""
    swap = P.shape[2] > P.shape[1]
    if swap:
        P = P.transpose(1, 2).contiguous()
    if backend == "cpp":
        sol = cpp.solve(P, tol, max_iter=max_iter, steps=None if method == "exact" else steps)
    elif backend == "cuda" and method == "exact":
        sol = cuda.solve(P, tol, max_iter=max_iter)
    elif method == "exact":
        sol = solver.solve_exact(P, tol, max_iter=max_iter, bracket=bracket)
    else:
        kernels = _kernels(backend).alternation if backend in ("cuda", "triton") else None
        sol = solver.solve_fast(P, steps, alternation=kernels, bracket=bracket)
    if swap:
        sol.f, sol.g = sol.g, sol.f
    return sol


def _solve_iterative(flat, method, backend, tol, max_iter, steps, progress, bracket):
    """Chunked solve of ``flat[B, n1, n2, ny]`` from the closed-form ``bracket = (lower, upper)``;
    returns ``(V, lower, upper, converged, iterations)``."""
    B, n1, n2, ny = flat.shape
    if backend == "cuda" and method == "exact":
        # Problems too large for the block solver's shared memory take one GPU thread each,
        # with its own scratch: chunks as large as a quarter of the free device memory
        # allows, so that every multiprocessor has work. (The shape as _solve_oriented
        # passes it on: the smaller source second.)
        scratch = cuda.workspace_doubles(max(n1, n2), min(n1, n2), ny, flat.device)
        free_bytes = torch.cuda.mem_get_info(flat.device)[0]
        chunk = B if scratch == 0 else max(1, free_bytes // 4 // (8 * scratch))
    else:
        per_problem = ((n1 + n2) * ny) ** 2 if method == "exact" else n1 * n2 * ny
        chunk = max(1, _CHUNK_FLOATS // per_problem)
    starts = range(0, B, chunk)
    if progress or (progress is None and len(starts) > 1):
        from tqdm.auto import tqdm

        # disable=None: tqdm switches itself off when stderr is not a terminal.
        starts = tqdm(starts, desc=f"fastpid.pid ({method})", unit="chunk", leave=False,
                      disable=None if progress is None else False)
    pieces = []
    for s in starts:
        Pc = flat[s:s + chunk]
        sol = _solve_oriented(Pc.detach(), method, backend, tol, max_iter, steps,
                              tuple(b[s:s + chunk] for b in bracket))
        # exact: the midpoint of the certified bracket; fast: an actual feasible coupling's I.
        value = 0.5 * (sol.lower + sol.upper) if method == "exact" else sol.upper
        value = attach_envelope_gradient(Pc, value.to(flat.device), sol.f.to(flat.device), sol.g.to(flat.device))
        pieces.append((value, sol.lower, sol.upper, sol.iterations))
    value, lower, upper, iterations = (torch.cat(p).to(flat.device) for p in zip(*pieces))
    converged = (upper - lower <= tol) if method == "exact" else torch.ones_like(value, dtype=torch.bool)
    return value, lower, upper, converged, iterations


def _solve_cvx(flat, lower0, upper0):
    """CVXPY backend; its error is bounded honestly by the closed-form bracket."""
    from .cvx import solve_cvx

    V, status = solve_cvx(flat.detach().cpu().numpy())
    value = torch.as_tensor(np.asarray(V, dtype=np.float64), device=flat.device)
    ok = torch.isfinite(value)
    value = torch.where(ok, value, 0.5 * (lower0 + upper0).detach())
    value = torch.minimum(torch.maximum(value, lower0.detach()), upper0.detach())
    half = torch.maximum(value - lower0, upper0 - value).detach()
    converged = ok & torch.as_tensor([s == "optimal" for s in status], device=flat.device)
    return value, value - half, value + half, converged, tuple(status)
