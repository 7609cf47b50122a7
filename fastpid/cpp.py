"""The C++ CPU solver of the native extension ``fastpid._C``.

It runs the same algorithm as the PyTorch reference (:mod:`fastpid.solver`), one problem
per thread (OpenMP), and returns the same :class:`~fastpid.solver.Solution`, so the
certificate and the envelope gradient are unchanged. Its Newton systems are factorised
without BLAS, by the dense Schur complement on the ``min(n1, n2) * ny`` potentials of the
smaller source or, where :func:`fastpid.solver.newton_plan` finds it cheaper (few cells, many
target values), by per-``y`` blocks and a low-rank correction over the ``n1 * n2`` cells.
Measured on 2 cores, one problem (the C++ solver on one thread, PyTorch on both): 2-3x
faster than the PyTorch solver on small problems and up to a Schur complement of ~1200
unknowns (28x28x28 0.42 s vs 1.45 s, 40x40x30 1.09 s vs 2.66 s, clustered 32x32x31 0.54 s
vs 1.61 s), slower beyond (48x48x32: 8.5 s vs 4.7 s); low-rank, clustered 20x20x101 0.28 s
vs 0.75-1.0 s, 2x3x3000 22 ms vs 47 ms. :func:`fastpid.api` picks it where that dense
system has at most ``AUTO_MAX_SYSTEM`` unknowns.
"""
from __future__ import annotations

import numpy as np
import torch

from ._build_info import load_extension
from .solver import MU_FACTOR, OMEGA, POLISH_SWEEPS, WARM_STEPS, Solution, newton_plan

#: Largest dense system for which ``backend="auto"`` uses C++: ``min(n1, n2) * ny`` unknowns of
#: the Schur complement, or ``n1 * n2`` cells with the low-rank elimination.
AUTO_MAX_SYSTEM = 1200


def elimination(P: torch.Tensor) -> str:
    """The C++ solver's elimination for a flat batch ``P[B, n1, n2, ny]``: ``"lowrank"``
    where :func:`fastpid.solver.newton_plan` picks it, else ``"schur"`` (the C++ solver has
    no elimination over admissible potentials only)."""
    return "lowrank" if newton_plan(P).structure == "lowrank" else "schur"


def system_size(n1: int, n2: int, ny: int, elimination: str) -> int:
    """Unknowns of the dense system the C++ solver factorises in each Newton step."""
    return n1 * n2 if elimination == "lowrank" else min(n1, n2) * ny


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
    if lowrank is None:
        lowrank = elimination(P) == "lowrank"
    lowrank = steps is None and lowrank
    out = _C.solve(arr, options(tol, max_iter, steps, lowrank), return_coupling)
    return Solution(*(torch.from_numpy(x) for x in out))


def closed_forms(P: torch.Tensor):
    """``(mi, mi1, mi2, mi_q0)`` of a flat float64 CPU batch ``P[B, n1, n2, ny]`` (normalised),
    shape ``(B,)`` each, in nats: what :func:`fastpid.solver.closed_form_bracket` computes in
    torch, in one native pass (no gradient)."""
    from . import _C

    out = _C.closed_forms(np.ascontiguousarray(P.detach().numpy(), dtype=np.float64))
    return torch.from_numpy(out).unbind(1)
