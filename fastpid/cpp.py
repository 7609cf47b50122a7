"""The C++ CPU solver of the native extension ``fastpid._C``.

It runs the same algorithm as the PyTorch reference (:mod:`fastpid.solver`), one problem
per thread (OpenMP), and returns the same :class:`~fastpid.solver.Solution`, so the
certificate and the envelope gradient are unchanged. Its Newton systems are assembled
without BLAS, which wins on small problems (no per-operation overhead) and loses on large
ones; :func:`fastpid.api` picks it for problems with ``min(n1, n2) * ny <= 256``.
"""
from __future__ import annotations

import importlib

import numpy as np
import torch

from .solver import MU_FACTOR, POLISH_SWEEPS, WARM_STEPS, Solution

#: Largest Schur-complement size ``min(n1, n2) * ny`` for which ``backend="auto"`` uses C++.
AUTO_MAX_SCHUR = 256


def available() -> tuple[bool, str]:
    """``(True, "")`` when the compiled solver imports, else ``(False, why)``."""
    try:
        ext = importlib.import_module("fastpid._C")
    except Exception as exc:  # ImportError, or a broken shared object
        return False, f"the native extension fastpid._C does not import ({type(exc).__name__}: {exc})"
    if not hasattr(ext, "solve"):
        return False, "the native extension fastpid._C was built without the solver; reinstall fastpid"
    return True, ""


def solve(P: torch.Tensor, tol: float, *, max_iter: int = 500, steps: int | None = None) -> Solution:
    """Bounds on V for a flat float64 CPU batch ``P[B, n1, n2, ny]``.

    ``steps=None`` solves to the certified ``tol`` (method ``"exact"``); an integer runs
    that many alternation steps only (method ``"fast"``).
    """
    from . import _C

    arr = np.ascontiguousarray(P.detach().numpy(), dtype=np.float64)
    newton = steps is None
    warm = WARM_STEPS if newton else int(steps)
    lower, upper, f, g, iters = _C.solve(arr, float(tol), int(max_iter), warm, POLISH_SWEEPS, MU_FACTOR, newton)
    return Solution(*(torch.from_numpy(x) for x in (lower, upper, f, g, iters)))
