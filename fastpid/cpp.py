"""The C++ CPU solver of the native extension ``fastpid._C``.

It runs the same algorithm as the PyTorch reference (:mod:`fastpid.solver`), one problem
per thread (OpenMP), and returns the same :class:`~fastpid.solver.Solution`, so the
certificate and the envelope gradient are unchanged. Its Newton systems are factorised
without BLAS, by the dense Schur complement on the potentials of one source (the smaller
one; between equal sizes the one with fewer free potentials, :func:`fastpid.api` orients
each problem) or, where :func:`fastpid.solver.newton_plan` finds it cheaper (few cells, many
target values), by per-``y`` blocks and a low-rank correction over the ``n1 * n2`` cells.
The Schur complement is factorised over the free potentials only (pairs ``(x2, y)`` with
mass, less one gauge per ``y``). Measured on 2 cores, one problem (the C++ solver on one
thread, PyTorch on both): faster than the PyTorch solver on small problems and up to 3072
free potentials on the Schur side (dense 64x64x32 0.91 s vs 2.2 s, 96x96x32 5.2 s vs 11.5 s:
``bench/test_bench_auto_route.py``; clustered 64x64x31, 1418 free of 1984: 0.46 s vs 4.6 s,
PyTorch on one thread), to 6144 where every thread has a problem of its own; low-rank,
clustered 20x20x101 0.07 s vs 0.48 s, 2x3x3000 3 ms vs 14 ms.
:func:`fastpid.api` picks it where the system it factorises has at most :func:`auto_max`
unknowns.
"""
from __future__ import annotations

import numpy as np
import torch

from ._build_info import load_extension
from .solver import MU_FACTOR, OMEGA, POLISH_SWEEPS, WARM_STEPS, Solution, newton_plan

#: Largest systems for which ``backend="auto"`` uses C++: the free potentials of the Schur
#: complement's side (measured to 3072, above; the limit had been 1800, from timings of an
#: older build at 3-7.5x these), and the ``n1 * n2`` cells of the low-rank elimination: to
#: 4096 the C++ solver was the faster, one problem on one thread or two (clustered 43x43x120
#: 2.0 s vs 3.7 s and 1.95 vs 2.25; an estimate's null draws of 48x48x100 and 64x64x100, one
#: thread, 3.0 vs 15.0 s and 12.4 vs 30.0; dense 64x64x100, two threads, 10.6 vs 14.5).
AUTO_MAX_SCHUR = 3072
AUTO_MAX_CELLS = 4096
#: The Schur side's limit where every thread has a problem of its own (one thread, or a batch
#: of at least as many problems as threads): there the PyTorch solver's threads do not share
#: one problem's factorisations, and the C++ solver was the faster to 6144 free potentials, the
#: largest measured (one thread: dense 96x96x48 and 96x96x64, 4608 and 6144 free, 15.4 s and
#: 30.6 s against 18.7 s and 33.6 s; clustered 60x60x55 and 64x64x50, 3269 and 3196 free, 3.9 s
#: and 4.2 s against 6.8 s and 8.1 s; two of 96x96x48 on two threads 17.3 s against 22.2 s).
#: One problem on two threads: 11.2 s and 19.1 s in PyTorch on the dense ones.
AUTO_MAX_SCHUR_BUSY = 6144


def auto_max(elimination: str, busy: bool = False) -> int:
    """The largest system (:func:`system_size`) that ``backend="auto"`` gives the C++ solver
    by ``elimination`` (``"schur"`` or ``"lowrank"``); ``busy``: every thread has a problem of
    its own (see :data:`AUTO_MAX_SCHUR_BUSY`)."""
    if elimination == "lowrank":
        return AUTO_MAX_CELLS
    return AUTO_MAX_SCHUR_BUSY if busy else AUTO_MAX_SCHUR


def elimination(P: torch.Tensor) -> str:
    """The C++ solver's elimination for a flat batch ``P[B, n1, n2, ny]``: ``"lowrank"``
    where :func:`fastpid.solver.newton_plan` picks it, else ``"schur"`` (the C++ solver has
    no elimination over admissible potentials only)."""
    return "lowrank" if newton_plan(P).structure == "lowrank" else "schur"


def system_size(n1: int, n2: int, ny: int, elimination: str, schur_free: int | None = None) -> int:
    """Unknowns of the dense system the C++ solver factorises in each Newton step: the
    ``n1 * n2`` cells (low-rank), or the Schur side's free potentials (``schur_free``, from
    :func:`fastpid.solver.newton_plan`; at most ``min(n1, n2) * ny``, taken when not given)."""
    if elimination == "lowrank":
        return n1 * n2
    return min(n1, n2) * ny if schur_free is None else schur_free


def available() -> tuple[bool, str]:
    """``(True, "")`` when the compiled solver imports, else ``(False, why)``."""
    ext, error = load_extension()
    if ext is None:
        return False, f"the native extension fastpid._C does not import ({error})"
    if not hasattr(ext, "solve"):
        return False, "the native extension fastpid._C was built without the solver; reinstall fastpid"
    return True, ""


def options(tol: float, max_iter: int = 500, steps: int | None = None, lowrank: bool = False):
    """The native solvers' settings (``fastpid._C.SolveOptions``) from the reference's constants.

    ``steps=None`` solves to the certified ``tol`` (method ``"exact"``); an integer runs
    that many alternation steps only (method ``"fast"``). ``lowrank``: Newton directions by
    the low-rank elimination (CPU solver only) rather than the Schur complement.
    """
    from . import _C

    opt = _C.SolveOptions()
    opt.tol, opt.max_iter = float(tol), int(max_iter)
    opt.warm_steps = WARM_STEPS if steps is None else int(steps)
    opt.polish_sweeps, opt.mu_factor, opt.omega = POLISH_SWEEPS, MU_FACTOR, OMEGA
    opt.newton = steps is None
    opt.lowrank = bool(lowrank)
    return opt


def follow_torch_threads() -> None:
    """Gives the calling thread's OpenMP runtime, whose threads the native batched solves use,
    torch's intra-op setting as torch's own operations in this thread see it: torch applies
    its setting to a thread at that thread's first query, and a thread that had made none ran
    the solves on every core whatever ``torch.set_num_threads`` said."""
    torch.get_num_threads()


def solve(P: torch.Tensor, tol: float, *, max_iter: int = 500, steps: int | None = None,
          return_coupling: bool = False, lowrank: bool | None = None) -> Solution:
    """Bounds on V for a flat float64 CPU batch ``P[B, n1, n2, ny]``.

    ``steps=None`` solves to the certified ``tol`` (method ``"exact"``); an integer runs
    that many alternation steps only (method ``"fast"``); its Newton steps use
    :func:`elimination` (``lowrank``: whether it is ``"lowrank"``, where the caller knows).
    ``return_coupling``: also the feasible couplings behind the upper bounds. Ctrl-C stops
    the solve between two steps (KeyboardInterrupt).
    """
    from . import _C

    arr = np.ascontiguousarray(P.detach().numpy(), dtype=np.float64)
    # Only exact solves take Newton steps: method "fast" never needs the elimination.
    lowrank = steps is None and (elimination(P) == "lowrank" if lowrank is None else lowrank)
    follow_torch_threads()
    out = _C.solve(arr, options(tol, max_iter, steps, lowrank), return_coupling)
    return Solution(*(torch.from_numpy(x) for x in out))


def closed_forms(P: torch.Tensor):
    """``(mi, mi1, mi2, mi_q0)`` of a flat float64 CPU batch ``P[B, n1, n2, ny]`` (normalised),
    shape ``(B,)`` each, in nats: what :func:`fastpid.solver.closed_form_bracket` computes in
    torch, in one native pass (no gradient)."""
    from . import _C

    follow_torch_threads()
    out = _C.closed_forms(np.ascontiguousarray(P.detach().numpy(), dtype=np.float64))
    return torch.from_numpy(out).unbind(1)
