"""What a solve needs from the machine: memory, estimated before anything is allocated (a
problem too large is refused with the numbers instead of swapping or being killed), and
intra-op threads, used only where the work per operation pays for them."""
from __future__ import annotations

import contextlib
import functools
import math
import os
import threading

import numpy as np
import torch

#: Problems are solved in chunks so that a chunk's Newton systems stay near this many floats.
CHUNK_FLOATS = 2**24


def per_problem_floats(flat: torch.Tensor, method: str, plan=None) -> int:
    """Floats one problem of ``flat[B, n1, n2, ny]`` holds at once in the PyTorch solver: its
    Newton system (``plan``, :func:`fastpid.solver.newton_plan` of ``flat``, computed when not
    given; exact), or a few copies of the joint (fast, proxy)."""
    from .solver import newton_plan

    return (plan or newton_plan(flat)).floats if method == "exact" else math.prod(flat.shape[1:])


def estimate_bytes(flat: torch.Tensor, method: str, backend: str, plan=None) -> int:
    """Peak working memory of solving ``flat[B, n1, n2, ny]`` (bytes, the input excluded);
    ``plan``: :func:`fastpid.solver.newton_plan` of ``flat`` where already computed."""
    B, n1, n2, ny = flat.shape
    if backend == "cpp":
        from .solver import newton_plan

        exact = method == "exact"
        lowrank = exact and (plan or newton_plan(flat)).structure == "lowrank"
        return cpp_bytes(B, n1, n2, ny, exact, lowrank)
    per = per_problem_floats(flat, method, plan)
    chunk = min(B, max(1, CHUNK_FLOATS // per))
    # Measured peaks of the PyTorch exact solver (one problem, growth of the process's peak
    # RSS): 2.9-3.5 times the plan's floats on 40x40x40 (three runs), 1.9-2.6 on 2x2000x50,
    # 10x200x40 and 64x8x30; fast/proxy: ~8 joint-sized arrays.
    return int(8 * chunk * per * (4 if method == "exact" else 8))


def cpp_bytes(B: int, n1: int, n2: int, ny: int, exact: bool, lowrank: bool) -> int:
    """Peak working memory (bytes) of the C++ solver on ``B`` problems ``n1 x n2 x ny``: one
    workspace per thread, for method ``"exact"`` (``exact``; by the low-rank elimination where
    ``lowrank``) or ``"fast"``."""
    from . import _C

    # The solver puts the smaller source on the Schur side, as _solve_oriented does.
    return 8 * min(B, _cpus()) * int(_C.workspace_doubles(max(n1, n2), min(n1, n2), ny, lowrank, exact))


@functools.lru_cache(maxsize=None)
def _cpus() -> int:
    """Processors of the machine (the C++ solver's threads at most); asked once, as the
    call takes longer than a small solve's other overheads."""
    return os.cpu_count() or 1


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a solve on ``device``, or ``None`` where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


#: Solves estimated to need less than this are not checked against the free memory (reading
#: it costs more than a small solve's other overheads together).
_UNCHECKED_BYTES = 2**26


def memory_unchecked(need: int) -> bool:
    """Whether a solve estimated to need ``need`` bytes goes without a look at the free memory."""
    return need < _UNCHECKED_BYTES


#: Input-sized float64 arrays the general route of fastpid.pid holds before it can estimate
#: the solve's own memory (the copy, its normalisation, the negligible masses dropped, the
#: plan's sums): a 500x500x500 broadcast view grew the peak RSS by 4.05 times its copy.
GENERAL_ROUTE_COPIES = 4


def check_input_memory(P, copies: int = 1) -> None:
    """Raise :class:`MemoryError` when ``copies`` float64 copies of ``P`` (every route makes
    one; the general route :data:`GENERAL_ROUTE_COPIES`) do not fit in the free memory. A
    broadcast view (``expand``, ``broadcast_to``) can stand for far more problems than it
    stores: without this its copy failed inside the extension's argument conversion (a
    TypeError) or in torch's allocator, or grew the process by four copies before the solve's
    own estimate refused it."""
    if not isinstance(P, (np.ndarray, torch.Tensor)) or (isinstance(P, torch.Tensor) and P.is_meta):
        return  # meta tensors hold no data (check_distribution says so)
    need = 8 * copies * (P.numel() if isinstance(P, torch.Tensor) else P.size)
    if memory_unchecked(need):
        return
    device = P.device if isinstance(P, torch.Tensor) else torch.device("cpu")
    have = available_bytes(device)
    if have is not None and need > have:
        shape = tuple(P.shape)
        raise MemoryError(
            f"the input of shape {shape} ({math.prod(shape[:-3])} problem(s) of "
            f"{'x'.join(map(str, shape[-3:]))}) needs {need / 2**30:.1f} GiB as the "
            f"{'float64 copy' if copies == 1 else f'{copies} float64 copies'} the solve makes, but "
            f"{have / 2**30:.1f} GiB is free on {device}; pass the problems in smaller batches.")


def check_memory(flat: torch.Tensor, method: str, backend: str, plan=None) -> None:
    """Raise :class:`MemoryError` when the solve would need more memory than is free
    (``plan``: as for :func:`estimate_bytes`)."""
    if method == "proxy" or backend == "cvx":
        return
    need = estimate_bytes(flat, method, backend, plan)
    if memory_unchecked(need):
        return
    have = available_bytes(flat.device)
    if have is not None and need > have:
        n1, n2, ny = flat.shape[1:]
        raise MemoryError(
            f"solving {flat.shape[0]} problem(s) of shape {n1}x{n2}x{ny} with method={method!r}, "
            f"backend={backend!r} needs about {need / 2**30:.1f} GiB, but {have / 2**30:.1f} GiB "
            f"is free on {flat.device}. The exact solver's Newton system grows with "
            f"(min(n1, n2) * ny)^2; merge rare target values or clusters, or use method='fast'.")


#: Below this many flops in a Newton step of a PyTorch solve (the batch's factorisations),
#: intra-op threads cost more than they give: on a busy 2-core machine a
#: batch of 16 8x8x8 problems took 22 s with 2 threads and 1.3 s with 1.
_THREADED_FLOPS = 1e9


@contextlib.contextmanager
def threads(n: int):
    """PyTorch's intra-op threads set to ``n`` inside the block, restored afterwards; left as
    they are off the main thread. The setting is the process's: another thread whose first
    parallel operation ran meanwhile kept ``n`` for good (an estimate in a background thread
    left the main thread's training on one thread)."""
    before = torch.get_num_threads()
    if n == before or threading.current_thread() is not threading.main_thread():
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def solver_threads(flat: torch.Tensor, method: str):
    """A context that runs the PyTorch solver of ``flat[B, n1, n2, ny]`` on one intra-op
    thread when its operations are too small to share out (restoring the setting afterwards)."""
    from .solver import newton_plan

    B, n1, n2, ny = flat.shape
    flops = B * newton_plan(flat).flops if method == "exact" else B * n1 * n2 * ny * 50
    small = flat.device.type == "cpu" and flops < _THREADED_FLOPS
    return threads(1 if small else torch.get_num_threads())
