"""The public entry point :func:`pid` and the one place where methods and backends are chosen."""
from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import torch

from . import cpp, cuda, solver
from ._autograd import attach_envelope_gradient, carries_derivatives, zero_mass_gradient
from ._caller import caller_level
from ._certify import checked_bracket, drop_negligible, output_gap, rounding, solver_tol
from ._resources import (CHUNK_FLOATS, GENERAL_ROUTE_COPIES, GRADIENT_ROUTE_COPIES, check_input_memory, check_memory,
                         cpp_chunk, fits, cpp_indexable, cpp_workspace_fits, per_problem_floats, cpp_threads)
from ._tracing import traced, transformed, untraced
from ._validate import (check_base, check_choice, check_distribution, check_flag, check_positive_int, check_tol,
                        result_dtype)
from .exceptions import ConvergenceWarning
from .result import PIDResult

METHODS = ("exact", "proxy", "fast")
BACKENDS = ("auto", "torch", "cpp", "cuda", "triton", "cvx")

#: Default certified tolerance on V (nats) by input dtype.
DEFAULT_TOL = {torch.float64: 1e-8, torch.float32: 1e-5}
DEFAULT_MAX_ITER = 500
DEFAULT_FAST_STEPS = 20
#: Iteration counts cross into the native solvers as C ints.
_INT32_MAX = 2**31 - 1
#: The tolerance (nats) to which _solve_for_the_gradient solves the problems whose closed forms
#: alone certify tol, one for every problem (so that none depends on its batch), and the
#: bracket width at or below which the closed forms' gradient is taken instead (see
#: _closed_form_gradient_where_pinned): V at one of its kinks (X2 a function of X1, X1 = X2, X2
#: independent of (X1, Y): widths of 1e-15 on such joints) or within this of one, where no solve
#: to this tolerance takes a Newton step.
GRADIENT_TOL = 1e-11
#: A value this many ulps (of the end, or of 1 nat where the end is smaller: the closed forms
#: are differences of entropies of a few nats) past an end of its closed-form bracket is at
#: that end by rounding alone (_within).
ROUNDING_SLACK_ULPS = 16
#: The fields of PIDResult that hold information terms, in the order pid() stacks them.
TERMS = ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2")


def pid(P, *, method: str = "exact", backend: str = "auto", tol=None, max_iter=None, steps=None,
        base=None, progress=None, return_coupling: bool = False) -> PIDResult:
    """BROJA partial information decomposition of joint distributions ``P[..., x1, x2, y]``.

    Args:
        P: array of shape ``(..., n1, n2, ny)``; the last axis is the target ``Y``.
            Probabilities or counts (each problem is normalised on its own, in float64). A
            numpy array (or nested list) gives numpy ``float64`` results; a torch tensor gives
            torch results on the same device, in float64 for float64, integer and bool
            tensors and float32 for float32, float16 and bfloat16 ones, and gradients flow to
            ``P`` (first order only for ``"exact"`` and ``"fast"``: differentiating a gradient
            again raises an error; ``"proxy"`` is closed form, differentiable to any order).
        method: ``"exact"`` solves ``V = min_Q I_Q(Y; X1,X2)`` to a certified ``tol``;
            ``"proxy"`` uses the closed-form coupling ``Q0 = P(x1,y) P(x2,y) / p(y)``
            (no iterations); ``"fast"`` runs ``steps`` cheap refinement steps from ``Q0``.
        backend: ``"auto"`` (CPU: the C++ solver where the dense system of its Newton steps
            has at most 3072 unknowns (the free potentials of the source on the Schur
            complement's side, at most ``min(n1, n2) * ny``; 6144 where every thread has a
            problem of its own), or 4096 (``n1 * n2`` cells, with
            few cells and many target values),
            else the PyTorch solver (the C++ solver still where only its memory fits); GPU: the CUDA kernels
            where the problem size suits them, else the Triton kernels (``proxy`` and
            ``fast`` only), else PyTorch; for ``exact``, problems the CUDA solver would take
            one per GPU thread go to the C++ solver on the host, which was 4.5-15x faster
            with 16 host cores), ``"torch"``, ``"cpp"`` (the C++ solver on the host's cores;
            GPU tensors are copied there and the results back), ``"cuda"``
            (CUDA tensors), ``"triton"`` (CUDA tensors; ``proxy`` and ``fast``), or ``"cvx"``
            (the CVXPY exponential-cone program, ``pip install fastpid[cvx]``; exact method
            only, no gradients). :func:`backends` says which are available.
        tol: certified tolerance on every term, in nats (default ``1e-8`` for float64
            input, ``1e-5`` for float32 torch tensors; numpy input of any float type is
            solved, and returned, in float64). ``converged`` is ``gap <= tol`` for every method.
            With ``backend="cvx"`` it sets only ``converged`` (Clarabel runs at its own
            settings; :func:`fastpid.cvx.solve_cvx` takes others).
            The gap includes the rounding of the terms (float64's own, ``32 eps (1 + log
            cells)``; float32 results' also up to ``2^-23 I(X1,X2;Y)``), and the exact solvers
            aim that much below ``tol``.
        max_iter: cap on Newton iterations per problem (``method="exact"`` only).
        steps: refinement steps (``method="fast"`` only; default 20).
        base: logarithm base (> 1) of the results (``2`` for bits); default nats.
        progress: show a progress bar over the problems of a large batch. Default: when
            the batch is solved in more than one chunk and stderr is a terminal (so training
            logs stay clean); ``True``/``False`` force it on/off. ``exact`` and ``fast``
            only: ``proxy`` (one closed-form pass, no chunks) shows none.
        return_coupling: also return ``coupling``: for each problem an exactly feasible
            joint ``Q[..., x1, x2, y]`` with both pair marginals of the normalised ``P`` (it
            sums to 1 where ``P`` holds counts) whose
            ``I_Q(Y; X1,X2)`` is the best upper bound found (within ``gap`` of ``V`` when
            converged; its synergy is then at most ``gap``). Not for ``backend="cuda"`` or
            ``"cvx"``.

    Returns:
        :class:`PIDResult` with ``redundancy``, ``unique1``, ``unique2``, ``synergy``,
        ``mi``, ``mi1``, ``mi2`` and ``gap`` of the batch shape ``(...)`` (empty for a batch
        axis of size 0). ``gap``
        bounds the error of every term; ``R + U1 + U2 + S = mi``, ``R + U1 = mi1`` and
        ``R + U2 = mi2`` hold up to the output's rounding (exactly for most float64 results
        in nats), and every term is ``>= 0``. ``tol`` is in nats whatever ``base``.

    Warns:
        :class:`fastpid.ConvergenceWarning` when fastpid's exact solver stops with ``gap > tol``,
        or a bracket comes out broken. A ``backend="cvx"`` gap above ``tol`` is not warned of:
        from Clarabel's solution at its own settings it is above the default ``tol`` on most
        problems (see ``converged`` and ``status``).
    """
    solve = untraced(_pid) if traced() else _pid
    return solve(P, method=method, backend=backend, tol=tol, max_iter=max_iter, steps=steps, base=base,
                 progress=progress, return_coupling=return_coupling)


def _pid(P, *, method, backend, tol, max_iter, steps, base, progress, return_coupling) -> PIDResult:
    """:func:`pid`, never traced by torch.compile (see :mod:`fastpid._tracing`)."""
    method = check_choice(method, METHODS, "method")
    backend = check_choice(backend, BACKENDS, "backend")
    tol = check_tol(tol)
    max_iter = check_positive_int(max_iter, name="max_iter", maximum=_INT32_MAX)
    steps = check_positive_int(steps, name="steps", maximum=_INT32_MAX)
    if max_iter is not None and method != "exact":
        raise ValueError(f"max_iter applies to method='exact'; got method={method!r} "
                         "(use steps= to set the work of method='fast')")
    if steps is not None and method != "fast":
        raise ValueError(f"steps applies to method='fast'; got method={method!r} "
                         "(use max_iter= to cap the Newton iterations of method='exact')")
    if backend == "cvx" and max_iter is not None:
        raise ValueError("max_iter caps fastpid's Newton steps; backend='cvx' runs Clarabel with its own "
                         "limits (fastpid.cvx.solve_cvx(P, solver_opts={'max_iter': ...}))")
    max_iter = max_iter or DEFAULT_MAX_ITER
    steps = steps or DEFAULT_FAST_STEPS
    base = check_base(base)
    return_coupling = check_flag(return_coupling, name="return_coupling")
    progress = None if progress is None else check_flag(progress, name="progress")
    if backend == "cvx" and method != "exact":
        raise ValueError(f"backend='cvx' solves the exact problem only; got method={method!r}")
    if return_coupling and backend in ("cuda", "cvx"):
        raise ValueError(f"return_coupling=True is not available with backend={backend!r}; "
                         "use backend='auto', 'torch' or 'cpp'")

    check_input_memory(P)
    _check_transform(P, backend, method)
    if backend in ("auto", "cpp") and not return_coupling and not progress:
        if not _read_in_place(P):
            check_input_memory(P, copies=2)  # the route's float64 copy of P, then the normalised one
        # CPU inputs without gradients: the same solve with less bookkeeping, or None.
        res = _cpu_route.native_pid(P, method, DEFAULT_TOL[result_dtype(P)] if tol is None else tol, max_iter,
                                    steps, base, backend)
        if res is not None:
            return res
    # With derivatives the graph keeps the forward pass's arrays for the backward pass.
    copies = GRADIENT_ROUTE_COPIES if carries_derivatives(P) else GENERAL_ROUTE_COPIES
    check_input_memory(P, copies=copies)
    # One convention at the input's cells of zero mass, for every term and backend: a zero
    # gradient (set before the normalisation, which would otherwise leak one back in).
    T, is_numpy = check_distribution(zero_mass_gradient(P) if isinstance(P, torch.Tensor) else P, float64=True)
    out_dtype = result_dtype(P)
    if backend == "cvx" and carries_derivatives(T):
        raise ValueError("backend='cvx' has no gradient; pass P.detach(), or use backend='auto' "
                         "for the exact envelope gradient")
    if tol is None:
        tol = DEFAULT_TOL.get(out_dtype, 1e-5)
    if T.numel() == 0:
        return _empty_result(T, is_numpy, out_dtype, method, backend, base, return_coupling)
    batch_shape = T.shape[:-3]
    n1, n2, ny = T.shape[-3:]
    flat, drop_bound = drop_negligible(T.reshape(-1, n1, n2, ny))
    # Values of X1, X2 or Y with no mass in any problem are left out of the solve: a PID does
    # not see them, and their cells' gradient is 0 by the convention above (5,000 samples with
    # labels 0, 1000, ..., 9000 took 19 s, 10^4 times as long as labels 0..9). The coupling
    # gets them back as zeros.
    flat, kept = (flat, None) if method == "proxy" else values_with_mass(flat)
    # How a CPU exact solve computes its Newton steps, worked out once: the backend choice,
    # the memory estimate, the chunking and the C++ solver's elimination all follow it.
    cpu_exact = method == "exact" and flat.device.type == "cpu" and backend != "cvx"
    plan = solver.newton_plan(flat) if cpu_exact else None

    if backend != "cvx":
        backend = _choose_backend(backend, flat, method, return_coupling, plan)
    if backend == "cpp" and flat.device.type != "cpu":
        # GPU problems for the C++ solver: solved on the host's cores, the results moved back
        # to the input's device by out() below (both moves keep the gradient's path). The
        # host holds the route's copies of them now (checked on the GPU so far).
        check_input_memory(flat, copies=copies, device=torch.device("cpu"))
        flat, drop_bound = flat.cpu(), drop_bound.cpu()
        plan = solver.newton_plan(flat) if method == "exact" else None
    # What the closed forms and the solve will hold, checked before either allocates.
    check_memory(flat, method, backend, plan, return_coupling)
    # The native closed forms (one pass; the fused GPU kernels or the C++ loop) have no
    # backward pass: with gradients, the closed forms stay in torch.
    fused = backend in ("cuda", "triton", "cpp") and not carries_derivatives(flat)
    mi, mi1, mi2, lower0, upper0 = solver.closed_form_bracket(
        flat, closed_forms=_kernels(backend).closed_forms if fused else None)
    # The gap covers the terms' rounding (float64's, and float32's where the results are
    # float32): the solvers aim below tol by that much.
    cells = n1 * n2 * ny
    rounded = rounding(mi, out_dtype, cells)
    status, coupling = None, None
    if method == "proxy" or backend == "cvx":
        iterations = torch.zeros(flat.shape[0], dtype=torch.int64, device=flat.device)
    if method == "proxy":
        # upper0 = min(I_Q0, I(X1,X2;Y), I1 + I2): the proxy's value unless Q0 is worse than
        # P itself (also feasible), or than the theorem V <= I1 + I2.
        value, lower, upper = upper0, lower0, upper0
        backend = backend if fused else "torch"
        if return_coupling:
            with torch.no_grad():
                coupling = solver.BestCoupling(flat.detach(), solver.Problem.from_joint(flat.detach())).coupling
    elif backend == "cvx":
        value, lower, upper, status = _solve_cvx(flat, lower0, upper0, progress)
    else:
        value, lower, upper, iterations, coupling = _solve_iterative(
            flat, method, backend, solver_tol(tol, rounded), max_iter, steps, progress, (lower0, upper0),
            return_coupling, plan)

    lower, upper, broken = checked_bracket(lower.detach(), upper.detach(), lower0.detach(), upper0.detach())
    # Keep V inside the bracket so every term is non-negative.
    value = _within(torch.where(broken, 0.5 * (lower0 + upper0), value), lower0, upper0)
    # abs: a fallback to closed forms whose rounding crossed their bracket reports by how much.
    gap = (upper - lower).abs() + drop_bound
    # converged refers to the gap as reported, rounding of the output dtype included.
    scale = 1.0 if base is None else 1.0 / math.log(base)
    reported_gap = output_gap(gap, mi.detach(), out_dtype, scale, cells)
    in_nats = reported_gap if scale == 1.0 else output_gap(gap, mi.detach(), out_dtype, 1.0, cells)
    converged = in_nats.to(gap.dtype) <= tol
    if status is not None:
        converged = converged & torch.as_tensor([s == "optimal" for s in status], device=gap.device)
    warn_unconverged(method, backend, converged, broken, in_nats.to(gap.dtype), tol, max_iter, iterations,
                     rounded=rounded.to(gap.dtype))
    # The seven terms in one array (one conversion to the output type instead of seven).
    terms = pid_terms(mi, mi1, mi2, value, scale).to(out_dtype)

    if kept is not None and coupling is not None:
        full = coupling.new_zeros(coupling.shape[0], n1, n2, ny)
        i1, i2, iy = (k.to(coupling.device) for k in kept)  # the C++ route solves GPU problems on the host
        full[:, i1[:, None, None], i2[None, :, None], iy[None, None, :]] = coupling
        coupling = full

    def out(x, dtype=None):
        """``x`` (batch axes flattened to one) with the batch shape, as the caller's array type."""
        x = x.reshape(batch_shape + x.shape[1:]).to(T.device)
        if dtype is not None:
            x = x.to(dtype)
        if is_numpy:
            x = x.detach().cpu().numpy()
            return x.astype(np.float64, copy=False) if x.dtype.kind == "f" else x
        return x

    terms = out(terms.T)  # (..., 7)
    return PIDResult(
        # One view per term, not unbind's: autograd refuses in-place changes (`synergy *= w`)
        # to views that came out of one call together.
        **dict(zip(TERMS, [terms[..., k] for k in range(7)])),
        gap=out(reported_gap),
        converged=out(converged), iterations=out(iterations),
        method=method, backend=backend,
        base=base, status=status,
        coupling=None if coupling is None else out(coupling, dtype=out_dtype),
    )


def values_with_mass(flat: torch.Tensor):
    """``flat (B, n1, n2, ny)`` (non-negative) without the values of X1, X2 and Y that have no
    mass in any problem, and the indices of the values kept (three index tensors), or
    ``(flat, None)`` where every value has mass. Gradients flow through the selection."""
    mass = flat.detach()
    keep = [mass.amax(dim=axes) > 0 for axes in ((0, 2, 3), (0, 1, 3), (0, 1, 2))]
    if bool(torch.stack([k.all() for k in keep]).all()):
        return flat, None
    kept = [k.nonzero().flatten() for k in keep]
    return flat.index_select(1, kept[0]).index_select(2, kept[1]).index_select(3, kept[2]), kept


def _empty_result(T, is_numpy, out_dtype, method, backend, base, return_coupling) -> PIDResult:
    """The result of a batch of no problems (``T`` of shape ``(..., n1, n2, ny)`` with a batch
    axis of size 0): every field empty, of the batch shape. A named backend must still be
    available; ``auto`` reports ``"torch"``, which computes nothing here either."""
    if backend == "cvx":
        cvx = backends()["cvx"]
        if not cvx["available"]:
            raise RuntimeError(f"backend='cvx' is not available: {cvx['reason']}")
    elif backend != "auto":
        backend = _choose_backend(backend, T.reshape(0, *T.shape[-3:]), method, return_coupling)
    # Zeros that keep T's graph, so that a loss summed over them backpropagates (to nothing).
    zeros = T.sum(dim=(-3, -2, -1)).to(out_dtype) * 0
    flag = torch.zeros(zeros.shape, dtype=torch.bool, device=T.device)
    fields = dict(zip(TERMS, [zeros] * 7), gap=zeros.detach(), converged=flag,
                  iterations=torch.zeros(zeros.shape, dtype=torch.int64, device=T.device),
                  coupling=T.detach().to(out_dtype) if return_coupling else None)
    if is_numpy:
        fields = {k: None if v is None else v.detach().cpu().numpy() for k, v in fields.items()}
    return PIDResult(**fields, method=method, backend="torch" if backend == "auto" else backend,
                     base=base, status=() if backend == "cvx" else None)


def _read_in_place(P) -> bool:
    """Whether :mod:`fastpid._cpu_route` reads ``P`` as it is (a C-contiguous float64 array or
    tensor), making only the normalised copy; for anything else (other dtypes, broadcast and
    strided views) it makes a float64 copy of ``P`` first (measured: 2.01 copies of peak RSS)."""
    if isinstance(P, torch.Tensor):  # sparse layouts have no is_contiguous (CSR raised)
        return P.dtype == torch.float64 and P.layout == torch.strided and P.is_contiguous()
    return isinstance(P, np.ndarray) and P.dtype == np.float64 and P.flags.c_contiguous


def pid_terms(mi, mi1, mi2, value, scale: float):
    """``(7, B)``: redundancy, unique1, unique2 and synergy from ``V = value`` and the closed
    forms, then ``mi``, ``mi1``, ``mi2``; clamped at 0 and times ``scale`` (the output units).
    The C++ finishing step of ``fastpid._C.solve_pid`` and ``fastpid._C.proxy_pid`` (exposed
    as ``fastpid._C.pid_terms``) does the same for :mod:`fastpid._cpu_route`."""
    terms = torch.clip(torch.stack([mi1 + mi2 - value, value - mi2, value - mi1, mi - value, mi, mi1, mi2]), 0.0, None)
    return terms if scale == 1.0 else terms * scale


def warn_unconverged(method, backend, converged, broken, gap, tol, max_iter, iterations, rounded=None):
    """A :class:`ConvergenceWarning` for fastpid's exact solves that stopped short of ``tol``
    (not CVXPY's, whose gap is the closed-form bracket), and for any problem whose solver
    bracket was broken (the closed-form bracket is reported). The arrays are torch tensors,
    or numpy arrays from :mod:`fastpid._cpu_route`. ``gap``: as reported, in nats;
    ``rounded`` ``(B,)``: what the rounding of each problem's terms adds to it
    (_certify.rounding()); ``iterations``: each problem's (alternation and Newton steps, so at
    least its Newton steps). Each unconverged problem is told its own reason: a broken bracket,
    rounding that alone reaches ``tol``, a stall (the solver stopped with fewer than
    ``max_iter`` Newton steps: float64 cannot certify a smaller gap), or too few iterations.
    The warnings name the caller's line (:func:`fastpid._caller.caller_level`)."""
    stacklevel = caller_level()
    if bool(broken.any()):
        warnings.warn(
            f"{int(broken.sum())} problem(s) got no valid bracket from the solver (a bound was "
            "not finite or the bounds crossed); their terms use the closed-form bracket "
            "max(I1, I2) <= V <= min(I_Q0, I12, I1 + I2), and gap is its width (where the closed forms' "
            "rounding crossed it, by how much)",
            ConvergenceWarning, stacklevel=stacklevel)
    bad = ~converged & ~broken  # the others, told above
    if method != "exact" or backend == "cvx" or not bool(bad.any()):
        return
    total = math.prod(converged.shape)
    short = bad if rounded is None else bad & (rounded < tol)
    # max_iter caps the Newton steps; iterations also count the alternation's (WARM_STEPS or
    # more), so fewer than max_iter + WARM_STEPS means the cap was not reached.
    stalled = short & (iterations < max_iter + solver.WARM_STEPS)
    reasons = (  # (the problems, why they stopped short)
        (bad & ~short, lambda m: f"report gap > tol={tol:g}: their terms carry up to "
                                 f"{float(rounded[m].max()):.3g} nats of rounding (float64's, 32 ulps "
                                 "(1 + log cells), and float32 results' 2^-23 I(X1,X2;Y)); pass a tol "
                                 "above that (float32 results: or float64 input)."),
        (stalled, lambda m: f"stalled with gap > tol={tol:g} (largest {float(gap[m].max()):.3g} nats) "
                            f"before max_iter={max_iter}: their Newton steps no longer shrank the gap. "
                            "float64 rounding and the barrier's floor (about 1e-13 nats a cell, 2.5e-8 at "
                            "250,000 cells) set that limit; on peaked joints, whose masses span many "
                            "decades, it can lie far above the floor. Use a tol above the reported gap."),
        (short & ~stalled, lambda m: f"stopped with gap > tol={tol:g} (largest gap {float(gap[m].max()):.3g} "
                                     f"nats); raise max_iter (now {max_iter}) or tol."),
    )
    for mask, why in reasons:
        if bool(mask.any()):
            warnings.warn(f"{int(mask.sum())} of {total} problem(s) {why(mask)} The reported gap still "
                          "bounds the error of every term.", ConvergenceWarning, stacklevel=stacklevel)


def _triton():
    """The Triton kernels module, imported on first use (importing triton is slow, and CPU
    solves never need it)."""
    from . import triton_kernels

    return triton_kernels


def _kernels(backend: str):
    """The native module of ``backend`` (``"cuda"``, ``"triton"`` or ``"cpp"``, whose
    ``closed_forms`` have the same signature; the GPU modules also share ``alternation``)."""
    return {"cuda": cuda, "cpp": cpp}.get(backend) or _triton()


def backends() -> dict:
    """Which backends can run here: ``{name: {"available": bool, "reason": str}}``.

    ``reason`` says why a backend is unavailable (empty when it is available).
    """
    from . import cvx

    cpp_ok, cpp_why = cpp.available()
    cuda_ok, cuda_why = cuda.available()
    triton_ok, triton_why = _triton().available()
    cvx_ok, cvx_why = cvx.available()
    return {
        "torch": {"available": True, "reason": ""},
        "cpp": {"available": cpp_ok, "reason": cpp_why},
        "cuda": {"available": cuda_ok, "reason": cuda_why},
        "triton": {"available": triton_ok, "reason": triton_why},
        "cvx": {"available": cvx_ok, "reason": cvx_why},
    }


def _choose_backend(backend: str, flat: torch.Tensor, method: str, return_coupling: bool = False,
                    plan=None) -> str:
    """The one place where a backend is picked for ``flat`` (``"torch"``, ``"cpp"``, ``"cuda"``
    or ``"triton"``); an explicit choice that cannot be honoured raises, saying why.

    ``auto``: on the CPU, the C++ solver for problems with at most
    :func:`fastpid.cpp.auto_max` unknowns in the dense system it factorises
    (:func:`fastpid.cpp.system_size`, by the elimination :func:`fastpid.solver.newton_plan`
    gives it), PyTorch otherwise, unless only the C++ solver's memory fits the free memory
    (``proxy``: the C++ closed forms wherever they import); on a
    GPU, the CUDA kernels (for ``exact``: where
    :func:`fastpid.cuda.exact_route` accepts the size, and not with ``return_coupling``; where
    they would take the problems one per thread, the C++ solver on the host, see
    :func:`_host_beats_gpu_threads`),
    else the Triton kernels (``proxy`` and ``fast``, where :func:`fastpid.triton_kernels.size_route`
    accepts the size), else PyTorch. ``plan``: :func:`fastpid.solver.newton_plan` of ``flat``
    where already computed.
    """
    device = flat.device
    n1, n2, ny = flat.shape[1:]
    if backend == "torch" or transformed(flat)[0]:  # see _check_transform()
        return "torch"
    if backend == "cpp":
        ok, why = cpp.available()
        if not ok:
            raise RuntimeError(f"backend='cpp' is not available: {why}")
        return backend
    if backend in ("cuda", "triton"):
        if backend == "triton" and method == "exact":
            raise ValueError("backend='triton' runs method='proxy' and method='fast'; "
                             "use backend='cuda', 'torch' or 'auto' for method='exact'")
        ok, why = _kernels(backend).available(device)
        if ok and backend == "cuda":
            ok, why = cuda.exact_route(n1, n2, ny, device) if method == "exact" else cuda.size_route(n1, n2, ny)
        elif ok and backend == "triton":
            ok, why = _triton().size_route(n1, n2, ny)
        if not ok:
            raise RuntimeError(f"backend={backend!r} is not available: {why}")
        return backend
    if device.type == "cpu":
        if method == "proxy":  # one closed-form pass, no Newton system: no plan to work out
            return "cpp" if cpp.available()[0] else "torch"
        # The C++ solver factorises a dense system per Newton step (Schur complement over
        # the free potentials, or low-rank capacitance matrix); where that system is large,
        # the PyTorch solver is faster (see fastpid.cpp).
        plan = plan or solver.newton_plan(flat)
        if cpp_suits(n1, n2, ny, plan, busy=flat.shape[0] >= cpp_threads()):
            return "cpp"
        # The C++ solver, slower here, where the PyTorch solver's Newton systems do not fit the
        # free memory and its own do: an estimate's 30 null draws of 200x200x200 (191 GiB
        # against 12.6 GiB, 14.6 free) had stopped with advice estimate cannot follow.
        if (cpp.available()[0] and not fits(flat, method, "torch", plan, return_coupling)
                and fits(flat, method, "cpp", plan, return_coupling)):
            return "cpp"
        return "torch"
    if method == "exact":
        usable = not return_coupling and cuda.available(device)[0] and cuda.exact_route(n1, n2, ny, device)[0]
        if usable and _host_beats_gpu_threads(flat):
            return "cpp"
        return "cuda" if usable else "torch"
    if cuda.available(device)[0] and cuda.size_route(n1, n2, ny)[0]:
        return "cuda"
    if _triton().available(device)[0] and _triton().size_route(n1, n2, ny)[0]:
        return "triton"
    return "torch"


def _check_transform(P, backend: str, method: str) -> None:
    """Inside ``torch.func.grad``, ``vjp`` or ``jacrev`` the input has no storage the native
    solvers could read, so ``"auto"`` takes the PyTorch solver there and an explicit native
    backend is refused, except for ``"proxy"``, whose closed forms run in PyTorch wherever
    they carry derivatives, as under autograd; under ``vmap`` no solver runs, as each stops on
    a test of its own iterate (``jacfwd`` vmaps the tangents only, and goes through)."""
    wrapped, batched = transformed(P)
    if batched:
        raise ValueError("fastpid.pid cannot run under torch.vmap: its solvers stop on tests of "
                         "their iterates. It is batched already: pass the stacked problems, P of "
                         "shape (..., n1, n2, ny), in one call")
    if wrapped and backend in ("cpp", "cuda", "triton", "cvx") and method != "proxy":
        raise ValueError(f"backend={backend!r} cannot read tensors inside a torch.func transform "
                         "(torch.func.grad, vjp, jvp, jacrev, jacfwd); use backend='torch' or 'auto' there "
                         "(forward-mode AD through torch.autograd.forward_ad takes every backend)")


def _host_beats_gpu_threads(flat: torch.Tensor) -> bool:
    """Whether ``backend="auto"`` solves the GPU problems ``flat`` that the CUDA solver would
    take one per thread (its block solver's workspace does not fit in shared memory) by the C++
    solver on the host's cores instead. On an H100 with 16 host cores, 20x20x10 clustered
    problems (tol 1e-6): the C++ solver 7,071 problems/s (1,000 problems) and 6,204/s (8,000),
    the CUDA solver 466/s and 1,394/s, the PyTorch solver on the GPU 715/s and 678/s; the C++
    solver on the 2 cores of an AMD EPYC, 1,265/s (200 problems) and 1,769/s (8,000). Where the
    block solver takes the problem, the GPU wins (12x12x10: CUDA 29,235/s and 38,141/s against
    17,504/s and 20,011/s)."""
    n1, n2, ny = flat.shape[1:]
    if cuda.workspace_doubles(max(n1, n2), min(n1, n2), ny, flat.device) == 0:
        return False
    # The per-thread path takes Schur sizes up to PER_THREAD_MAX_SCHUR (256), within the C++
    # solver's dense-system limit whatever the elimination; its workspace, sized by the shape,
    # must still fit the host's memory (either elimination: the plan would need the data).
    return cpp.available()[0] and all(cpp_workspace_fits(n1, n2, ny, lowrank) for lowrank in (False, True))


def cpp_retry_fits(n1: int, n2: int, ny: int, lowrank: bool) -> bool:
    """Whether the C++ solver tries again problems solved as ``n1 x n2 x ny`` (X2 on the Schur
    side) that stopped short of ``tol`` the other way round: where it can index them, and by
    the Schur complement only where that side's potentials stay within the automatic route's
    limit (150x70x40 the other way round is a system of 6,000, 1,177 MB a thread: a call with
    max_iter=2 took 9.2 s where solving to tol took 4.6 s)."""
    return cpp_indexable(n1, n2, ny, True, lowrank) and (lowrank or n2 * ny <= cpp.auto_max("schur"))


def cpp_suits(n1: int, n2: int, ny: int, plan, busy: bool = False) -> bool:
    """Whether ``backend="auto"`` solves CPU problems ``n1 x n2 x ny`` whose
    :func:`fastpid.solver.newton_plan` is ``plan`` by the C++ solver (see :func:`_choose_backend`):
    where the dense system it factorises fits, also where the PyTorch solver would eliminate
    over the admissible potentials only (``"sparse"``), as the C++ Schur complement is over the
    free potentials already: on 28 sparse clustered joints (10x10x31 to 64x64x101, 300-3000
    samples) and the digits joint (20x20x10, 1797 samples) the C++ solver took 1/1.9 to 1/33
    of the PyTorch solver's time (digits: 1.4 ms against 38 ms), with the same iterations.
    ``busy``: every thread has a problem of its own (see :func:`fastpid.cpp.auto_max`)."""
    size = cpp.system_size(n1, n2, ny, plan.structure, plan.schur_free)
    return (size <= cpp.auto_max(plan.structure, busy) and cpp.available()[0]
            and cpp_workspace_fits(n1, n2, ny, plan.structure == "lowrank"))


def swap_rule(n1: int, n2: int, free1, free2):
    """:func:`_swap_sources` from the sizes and the per-problem counts of free potentials
    (torch tensors or numpy arrays): a bool for every problem where the sizes differ. The
    same for both eliminations: the C++ low-rank elimination, whose loops run over the target
    values, took 0.97-1.03x the time either way round (one problem of 8x3x60, 5x2x200,
    12x8x30, 24x2x150, 6x2x100, 4x3x500, 12x4x40)."""
    if n1 != n2:
        return n2 > n1
    return free1 < free2


def _swap_sources(P: torch.Tensor, plan=None) -> torch.Tensor:
    """Which problems of the flat batch ``P[B, n1, n2, ny]`` to solve with X1 and X2 swapped
    (``(B,)`` bool), so that the Schur complement (over the second source's potentials) is the
    cheaper one: over the smaller source, and between sources of equal size over the one with
    fewer free potentials (pairs ``(x, y)`` with ``P(x, y) > 0``), problem by problem.
    Clustered 64x64x10 joints take 0.41 s one way round and 0.67 s the other. Unequal sizes
    keep the shape rule, for which the memory is estimated (see :func:`swap_rule`). ``plan``:
    a :func:`fastpid.solver.newton_plan` of ``P``, whose counts are used where given."""
    B, n1, n2 = P.shape[:3]
    if n1 != n2:
        return torch.full((B,), swap_rule(n1, n2, None, None), dtype=torch.bool, device=P.device)
    free1, free2 = solver.free_potentials(P) if plan is None else (plan.free1, plan.free2)
    return swap_rule(n1, n2, free1, free2)


def _per_orientation(P: torch.Tensor, solve, bracket=None, swap=None) -> solver.Solution:
    """``solve(Q, bracket)`` of the flat batch ``P`` with each problem's sources in the order
    :func:`_swap_sources` picks (or ``swap``, ``(B,)`` bool, where the caller has it), one call
    per order, the solutions put back in ``P``'s order and orientation (V is symmetric in X1,
    X2, and so is the closed-form ``bracket``)."""
    swap = _swap_sources(P) if swap is None else swap
    n_swapped = int(swap.sum())
    if n_swapped in (0, P.shape[0]):
        return _solve_in_order(P, solve, bracket, n_swapped > 0)
    parts = []
    for which, swapped in ((~swap, False), (swap, True)):
        idx = which.nonzero().flatten()
        part = None if bracket is None else tuple(b[idx] for b in bracket)
        parts.append((idx, _solve_in_order(P[idx], solve, part, swapped)))
    merged = {}
    for name in ("lower", "upper", "f", "g", "iterations", "coupling"):
        first = getattr(parts[0][1], name)
        if first is None:
            merged[name] = None
            continue
        merged[name] = first.new_empty((P.shape[0],) + first.shape[1:])
        for idx, sol in parts:
            merged[name][idx.to(first.device)] = getattr(sol, name)
    return solver.Solution(**merged)


def _solve_in_order(P: torch.Tensor, solve, bracket, swap: bool) -> solver.Solution:
    """``solve`` of ``P`` with X1 and X2 swapped or not, the solution in ``P``'s orientation."""
    if not swap:
        return solve(P, bracket)
    sol = solve(P.transpose(1, 2).contiguous(), bracket)
    sol.f, sol.g = sol.g, sol.f
    if sol.coupling is not None:
        sol.coupling = sol.coupling.transpose(1, 2)
    return sol


def _solve_oriented(P: torch.Tensor, method: str, backend: str, tol, max_iter, steps, bracket,
                    return_coupling: bool, plan=None, swap=None) -> solver.Solution:
    """Solve by ``backend`` with the sources of each problem in the order
    :func:`_swap_sources` picks (``swap``, where given; ``plan`` is symmetric in X1, X2 too)."""
    def solve(Q, part):
        if backend == "cpp":
            return cpp.solve(Q, tol, max_iter=max_iter, steps=None if method == "exact" else steps,
                             return_coupling=return_coupling,
                             lowrank=None if plan is None else plan.structure == "lowrank")
        if backend == "cuda" and method == "exact":
            return cuda.solve(Q, tol, max_iter=max_iter)
        if method == "exact":
            return solver.solve_exact(Q, tol, max_iter=max_iter, bracket=part, return_coupling=return_coupling)
        kernels = _kernels(backend).alternation if backend in ("cuda", "triton") else None
        return solver.solve_fast(Q, steps, alternation=kernels, bracket=part, return_coupling=return_coupling)

    sol = _per_orientation(P, solve, bracket, swap)
    if method != "exact":
        return sol
    lowrank = plan is not None and plan.structure == "lowrank"
    # The C++ solver does not take every orientation (cpp_retry_fits), nor the CUDA one without
    # its slow per-thread path (a 100x4x4 batch retried as 4x100x4: Schur size 400, 1.95 MB of
    # scratch a problem); the others can.
    indexable = ((lambda a, b, c: cpp_retry_fits(a, b, c, lowrank)) if backend == "cpp" else
                 (lambda a, b, c: cuda.oriented_route(a, b, c, P.device)) if backend == "cuda" else None)
    return _other_way_where_short(P, solve, bracket, swap, sol, tol, indexable)


def _other_way_where_short(P: torch.Tensor, solve, bracket, swap, sol: solver.Solution, tol,
                           indexable=None) -> solver.Solution:
    """``sol`` with the problems that stopped short of ``tol`` solved once more with their
    sources the other way round, each keeping the narrower bracket (and its potentials and
    iterations). The Newton path can stall in one orientation: a Dirichlet(0.1) 150x150x3
    joint stopped at gap 1.0e-6 after 500 Newton steps (3.4 s), and certifies 9.6e-9 in 40
    the other way round (0.18 s). ``indexable(n1, n2, ny)``: whether the solver takes problems
    in that orientation (``None``: every one); the others are not tried again."""
    short = ((sol.upper - sol.lower) > tol).nonzero().flatten()
    if short.numel() == 0:
        return sol
    swap = _swap_sources(P) if swap is None else swap
    if indexable is not None:
        n1, n2, ny = P.shape[1:]
        flipped = ~swap[short.to(swap.device)]  # True: solved as n2 x n1 x ny
        ok = torch.where(flipped, indexable(n2, n1, ny), indexable(n1, n2, ny))
        short = short[ok.to(short.device)]
        if short.numel() == 0:
            return sol
    part = None if bracket is None else tuple(b[short.to(b.device)] for b in bracket)
    again = _per_orientation(P[short.to(P.device)], solve, part, ~swap[short.to(swap.device)])
    better = (again.upper - again.lower) < (sol.upper - sol.lower)[short]
    kept = short[better]
    for name in ("lower", "upper", "f", "g", "iterations", "coupling"):
        field = getattr(sol, name)
        if field is not None:
            field[kept.to(field.device)] = getattr(again, name)[better.to(field.device)]
    return sol


def _solve_iterative(flat, method, backend, tol, max_iter, steps, progress, bracket, return_coupling,
                     plan=None):
    """Chunked solve of ``flat[B, n1, n2, ny]`` from the closed-form ``bracket = (lower, upper)``;
    returns ``(V, lower, upper, iterations, coupling)`` (``coupling`` is ``None`` unless asked for).
    ``plan``: :func:`fastpid.solver.newton_plan` of ``flat`` (CPU exact solves), which holds
    for every chunk (its admissible counts are the batch's largest). Its memory was checked
    before the closed forms (check_memory)."""
    B, n1, n2, ny = flat.shape
    if backend == "cuda" and method == "exact":
        # Problems too large for the block solver's shared memory take one GPU thread each,
        # with its own scratch: chunks as large as a quarter of the free device memory
        # allows, so that every multiprocessor has work. (The shape as _solve_oriented
        # passes it on: the smaller source second.)
        scratch = cuda.workspace_doubles(max(n1, n2), min(n1, n2), ny, flat.device)
        free_bytes = torch.cuda.mem_get_info(flat.device)[0]
        chunk = B if scratch == 0 else max(1, free_bytes // 4 // (8 * scratch))
    elif backend == "cpp":
        # By what the C++ solver holds (a workspace per thread, each problem's outputs), as
        # check_memory estimates it: the threads share the chunk.
        exact = method == "exact"
        chunk = cpp_chunk(B, n1, n2, ny, exact, exact and plan is not None and plan.structure == "lowrank",
                          return_coupling, CHUNK_FLOATS)
        if progress:  # a bar asked for moves about 20 times (a batch in one chunk showed 0/B to its end)
            chunk = min(chunk, max(cpp_threads(), -(-B // 20)))
    else:
        chunk = max(1, CHUNK_FLOATS // per_problem_floats(flat, method, plan))
    bar = None
    if _shows_bar(progress, B, chunk):
        from tqdm.auto import tqdm  # only here: no bar, no import

        bar = tqdm(total=B, desc=f"fastpid.pid ({method})", unit="problem", leave=False, disable=False)
    swap = _swap_sources(flat, plan)
    pieces = []
    try:
        for s in range(0, B, chunk):
            # One chunk: the arrays themselves (a slice would be one more operation per array).
            piece = (lambda x: x) if chunk >= B else (lambda x, s=s: x[s:s + chunk])
            Pc = piece(flat)
            part = tuple(piece(b) for b in bracket)
            sol = _solve_oriented(Pc.detach(), method, backend, tol, max_iter, steps, part, return_coupling, plan,
                                  piece(swap))
            if method == "exact" and carries_derivatives(Pc):
                def resolve(near, tight, Q=Pc.detach(), w=piece(swap)):
                    return _solve_oriented(Q[near], method, backend, tight, max_iter, steps,
                                           tuple(b[near] for b in part), return_coupling, plan, w[near.to(w.device)])
                sol = _solve_for_the_gradient(sol, part, tol, resolve)
            # exact: the midpoint of the certified bracket; fast: an actual feasible coupling's I.
            value = 0.5 * (sol.lower + sol.upper) if method == "exact" else sol.upper
            value = attach_envelope_gradient(Pc, value.to(flat.device), sol.f.to(flat.device), sol.g.to(flat.device))
            if carries_derivatives(Pc):
                value = _closed_form_gradient_where_pinned(value, *part, tol)
            pieces.append((value, sol.lower, sol.upper, sol.iterations, sol.coupling))
            if bar is not None:
                bar.update(Pc.shape[0])
    finally:
        if bar is not None:
            bar.close()
    def joined(k):
        parts = [p[k] for p in pieces]
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).to(flat.device)

    value, lower, upper, iterations = (joined(k) for k in range(4))
    coupling = joined(4) if return_coupling else None
    return value, lower, upper, iterations, coupling


def _solve_for_the_gradient(sol: solver.Solution, bracket, tol, resolve) -> solver.Solution:
    """``sol`` with the exact solves that the closed forms alone certified
    (``GRADIENT_TOL < upper0 - lower0 <= tol``) solved again to GRADIENT_TOL by
    ``resolve(indices, tol)``, for the gradient: those solves stop before any Newton step,
    and the envelope of their potentials, or the closed forms' gradient, was off by up to 46 %
    of the synergy's gradient against central differences (X2 nearly independent of (X1, Y), a
    bracket 4.1e-6 wide under tol = 1e-5; 52 % on one with a row of zeros). Each problem keeps
    the narrower bounds (and their coupling) and adds the iterations."""
    lower0, upper0 = bracket
    width = (upper0 - lower0).detach()
    near = torch.nonzero((width > GRADIENT_TOL) & (width <= tol)).flatten()
    if near.numel() == 0:
        return sol
    again = resolve(near, GRADIENT_TOL)
    dev = sol.lower.device
    near = near.to(dev)
    sol.f[near], sol.g[near] = again.f.to(sol.f.device), again.g.to(sol.g.device)
    sol.lower[near] = torch.maximum(sol.lower[near], again.lower.to(dev))
    better = again.upper.to(dev) < sol.upper[near]
    sol.upper[near[better]] = again.upper.to(dev)[better]
    if sol.coupling is not None:
        sol.coupling[near[better].to(sol.coupling.device)] = again.coupling[better.to(again.coupling.device)]
    sol.iterations[near.to(sol.iterations.device)] += again.iterations.to(sol.iterations.device)
    return sol


def _closed_form_gradient_where_pinned(value: torch.Tensor, lower0: torch.Tensor, upper0: torch.Tensor, tol):
    """``value`` with the closed forms' gradient where they pin V (``upper0 - lower0`` at most
    ``tol`` and GRADIENT_TOL): V lies between them and touches both, so at a kink their
    gradient is V's. The solver's potentials are no guide there: the exact solver stops before
    any Newton step (e.g. X2 a function of X1, or X1 = X2), and their envelope gave a synergy
    gradient of 0.37 where every joint of the same support has none (a fast solve's, up to
    0.155). Within GRADIENT_TOL of a kink, V's own gradient can differ (by 45 % of the
    synergy's on a nearly independent joint whose bracket is 4.6e-12 wide). The
    value stays the solver's. Where the bracket is wider, up to tol, _solve_for_the_gradient
    gives exact solves their own potentials; ``fast`` keeps its steps' estimate."""
    pinned = (upper0 - lower0).detach() <= min(tol, GRADIENT_TOL)
    if not bool(pinned.any()):
        return value
    mid = 0.5 * (lower0 + upper0)
    return torch.where(pinned, value.detach() + (mid - mid.detach()), value)


def _shows_bar(progress, B: int, chunk: int) -> bool:
    """Whether a solve of ``B`` problems in chunks of ``chunk`` shows a progress bar: as
    ``progress`` says, or by default where there is more than one chunk and stderr is a
    terminal (as tqdm's ``disable=None`` decides, without importing tqdm)."""
    if progress is not None:
        return bool(progress)
    isatty = getattr(sys.stderr, "isatty", None)
    return B > chunk and bool(isatty and isatty())


def _within(value, lower, upper):
    """``value`` clamped to ``[lower, upper]``, with the gradient of whichever side it takes:
    a value equal to an end keeps its own (torch.minimum and maximum split a tie's gradient in
    half, so a fast solve's value that met the closed-form end to the last bit on one backend,
    and not on the other, had half the gradient there), and so does a value past an end by
    rounding alone: the C++ solver forms the closed forms again, and its fast solves pinned at
    the upper end came out up to 4.4e-16 nats above the end that PyTorch's met exactly (17 of
    64 near-copies had a synergy gradient of 0 with C++ against the envelope's with PyTorch)."""
    slack = ROUNDING_SLACK_ULPS * torch.finfo(value.dtype).eps

    def at(end):  # end's value; the value's own gradient where it is within rounding of it
        near = (value - end).abs() <= slack * end.abs().clamp_min(1.0)
        return torch.where(near, value - (value - end).detach(), end)

    return torch.where(value > upper, at(upper), torch.where(value < lower, at(lower), value))


def _solve_cvx(flat, lower0, upper0, progress):
    """CVXPY backend; its error is bounded honestly by the closed-form bracket. Returns
    ``(V, lower, upper, status)``."""
    from .cvx import solve_cvx

    V, status = solve_cvx(flat.detach().cpu().numpy(), progress=progress)
    value = torch.as_tensor(np.asarray(V, dtype=np.float64), device=flat.device)
    ok = torch.isfinite(value)
    value = _within(torch.where(ok, value, 0.5 * (lower0 + upper0)), lower0, upper0)
    half = torch.maximum(value - lower0, upper0 - value)
    return value, value - half, value + half, tuple(status)


# Last: the route imports this module (its helpers are looked up when it runs).
from . import _cpu_route  # noqa: E402
