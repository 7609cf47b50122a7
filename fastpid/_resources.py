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


#: Floats each problem of a batch holds in the PyTorch route from its chunk's solve to the end
#: (bounds, closed forms, terms, iterations, masks and the results' copies), besides its
#: potentials: measured about 67 (exact) and 30 (fast) on 10^6 problems of 2x2x2, counting f, g.
BATCH_FLOATS = 64


def per_problem_floats(flat: torch.Tensor, method: str, plan=None) -> int:
    """Floats one problem of ``flat[B, n1, n2, ny]`` holds at once in the PyTorch solver: its
    Newton system (by that solver's own plan, from ``plan``, :func:`fastpid.solver.newton_plan`
    of ``flat``, where given; exact), or a few copies of the joint (fast, proxy)."""
    if method != "exact":
        return math.prod(flat.shape[1:])
    return torch_plan(flat, plan).floats


def torch_plan(flat: torch.Tensor, plan=None):
    """The PyTorch solver's :func:`fastpid.solver.newton_plan` of ``flat`` (from ``plan``'s
    counts where given): estimated by the C++ solver's plan, dense 20x16x50 (low-rank there,
    a Schur complement here) had peaked at 1.23 times its estimate."""
    from .solver import newton_plan

    return newton_plan(flat, native=False) if plan is None else plan.for_torch(flat)


#: Floats the PyTorch closed forms (fastpid.info.closed_forms) hold at their peak: so many per
#: float of the joint, plus so many per float of its marginals ((n1 + n2) ny + n1 n2 + ny).
#: Measured growth of the peak RSS per joint float: 1x1x4e6 11.1 (here 11.3), 2x3x1e6 4.2 (6.1),
#: 100x100x400 3.2 (3.6), 8000 problems of 8x8x8 4.0 (4.5), 10000 of 20x20x10 3.2 (3.9); twice
#: as many with a backward pass (1x1x4e6: 20.0).
TORCH_CLOSED_FORMS_FLOATS = (3.5, 2.6)


def closed_forms_bytes(flat: torch.Tensor, backend: str) -> int:
    """Peak working memory (bytes) of the closed forms of ``flat[B, n1, n2, ny]``
    (:func:`fastpid.solver.closed_form_bracket`) on the general route of :func:`fastpid.pid`:
    the C++ pass's workspace per thread (``backend="cpp"``), or the PyTorch operations'
    arrays (``"torch"``, and any backend where ``flat`` carries derivatives). With few values
    of X1 and X2 and many of Y the marginals are as large as the joint, and these are several
    copies of it: constant sources with 10^9 target values grew the process past the free
    memory in the closed forms, which ran before the solve's estimate. The fused GPU kernels
    (``"cuda"``, ``"triton"``) are not counted (a GPU allocation that fails raises)."""
    from ._autograd import carries_derivatives

    B, n1, n2, ny = flat.shape
    derivatives = carries_derivatives(flat)
    if backend in ("cuda", "triton") and not derivatives:
        return 0
    if backend == "cpp" and not derivatives:
        return native_closed_forms_bytes(B, n1, n2, ny)
    per_joint, per_marginal = TORCH_CLOSED_FORMS_FLOATS
    floats = per_joint * n1 * n2 * ny + per_marginal * ((n1 + n2) * ny + n1 * n2 + ny)
    return int(8 * (2 if derivatives else 1) * B * floats)


def native_closed_forms_bytes(B: int, n1: int, n2: int, ny: int) -> int:
    """Bytes of the workspaces of ``fastpid._C.closed_forms`` and ``proxy_pid`` on ``B``
    problems ``n1 x n2 x ny`` that they write: one per thread with a problem. (The whole
    workspace, which reserves the solver's scratch too, is 2.7 times as large for constant
    sources and refused a proxy of 1x1x10^7 that peaked at 629 MiB under 1 GiB free.)"""
    return 8 * min(B, cpp_threads()) * _closed_forms_resident(n1, n2, ny)


def estimate_bytes(flat: torch.Tensor, method: str, backend: str, plan=None, coupling: bool = False) -> int:
    """Peak working memory of solving ``flat[B, n1, n2, ny]`` (bytes, the input excluded): the
    larger of the closed forms' (:func:`closed_forms_bytes`) and the solve's; ``plan``:
    :func:`fastpid.solver.newton_plan` of ``flat`` where already computed; ``coupling``: the
    couplings are returned too (the proxy's are built in PyTorch)."""
    closed = closed_forms_bytes(flat, backend)
    if method == "proxy" and not coupling:
        return closed
    return max(closed, _solve_bytes(flat, method, "torch" if method == "proxy" else backend, plan, coupling))


def _solve_bytes(flat: torch.Tensor, method: str, backend: str, plan=None, coupling: bool = False) -> int:
    """:func:`estimate_bytes` of the solve alone."""
    B, n1, n2, ny = flat.shape
    if backend == "cpp":
        exact, lowrank = _cpp_elimination(flat, method, plan)
        return cpp_bytes(B, n1, n2, ny, exact, lowrank, coupling)
    per = per_problem_floats(flat, method, plan)
    chunk = min(B, max(1, CHUNK_FLOATS // per))
    # Measured peaks of the PyTorch exact solver (one problem, growth of the process's peak
    # RSS): 2.9-3.5 times the plan's floats on 40x40x40 (three runs), 1.9-2.6 on 2x2000x50,
    # 10x200x40 and 64x8x30; fast/proxy: ~8 joint-sized arrays. Besides the chunk's, every
    # problem of the batch holds its results, bounds and potentials till the end
    # (BATCH_FLOATS and f, g): 10^6 problems of 2x2x2 had peaked 537 (exact) and 237 (fast)
    # bytes a problem above the estimate without them.
    # And the couplings asked for: 50,000 problems of 8x8x8 peaked 201 MB higher with them
    # (fast; exact 9 MB), one set of couplings being 205 MB.
    whole_batch = B * (BATCH_FLOATS + (n1 + n2) * ny + (n1 * n2 * ny if coupling else 0))
    return int(8 * (chunk * per * (4 if method == "exact" else 8) + whole_batch))


def _cpp_elimination(flat: torch.Tensor, method: str, plan=None) -> tuple[bool, bool]:
    """``(exact, lowrank)`` of the C++ solve of ``flat`` by ``method``: whether it takes Newton
    steps, and whether by the low-rank elimination (as :func:`fastpid.api._solve_oriented`)."""
    exact = method == "exact"
    return exact, exact and _native_plan(flat, plan).structure == "lowrank"


def _native_plan(flat: torch.Tensor, plan=None):
    """``plan`` where it is the C++ solver's, else that solver's plan of ``flat``."""
    from .solver import newton_plan

    return plan if plan is not None and plan.native else newton_plan(flat)


@functools.lru_cache(maxsize=256)
def _cpp_workspace(n1: int, n2: int, ny: int, exact: bool, lowrank: bool) -> int:
    """Doubles of one C++ solver thread's workspace for problems ``n1 x n2 x ny`` (kept: the
    native route's chunk and memory check both ask, on every call)."""
    from . import _C

    # The solver puts the smaller source on the Schur side, as _solve_oriented does.
    return int(_C.workspace_doubles(max(n1, n2), min(n1, n2), ny, lowrank, exact))


@functools.lru_cache(maxsize=256)
def _closed_forms_resident(n1: int, n2: int, ny: int) -> int:
    """Doubles one thread of the C++ closed forms writes for problems ``n1 x n2 x ny``."""
    from . import _C

    return int(_C.closed_forms_resident_doubles(n1, n2, ny))


@functools.lru_cache(maxsize=256)
def cpp_indexable(n1: int, n2: int, ny: int, exact: bool, lowrank: bool) -> bool:
    """Whether the C++ solver's 32-bit indices reach every array of problems ``n1 x n2 x ny``
    solved in this orientation (X2 on the Schur side): its workspace count refuses the shapes
    they do not reach (``check_indexable`` in ``csrc/solver_cpu.cpp``)."""
    from . import _C

    try:
        _C.workspace_doubles(n1, n2, ny, lowrank, exact)
    except ValueError:
        return False
    return True


def cpp_workspace_fits(n1: int, n2: int, ny: int, lowrank: bool) -> bool:
    """Whether one C++ exact solver's workspace for problems ``n1 x n2 x ny`` fits the free
    memory. It is sized by the shape (the Schur side's ``min(n1, n2) * ny`` potentials
    squared), not by the free potentials the plan counts: a 40x40x1600 COPY joint, 1600 free,
    was sent to it and refused for 33 GiB, where the PyTorch solver peaked at 0.41 GiB. False
    where the solver cannot index them (:func:`cpp_indexable`)."""
    if not cpp_indexable(max(n1, n2), min(n1, n2), ny, True, lowrank):
        return False
    need = 8 * _cpp_workspace(n1, n2, ny, True, lowrank)
    if memory_unchecked(need):
        return True
    have = available_bytes(torch.device("cpu"))
    return have is None or need <= have


def cpp_problem_floats(n1: int, n2: int, ny: int, coupling: bool = False) -> int:
    """Floats the C++ route holds per problem besides its threads' workspaces: the bounds, the
    potentials f and g it returns, the transposed copy of a problem solved with its sources
    swapped (fastpid.api._solve_in_order) and, with ``coupling``, the coupling."""
    cells = n1 * n2 * ny
    return 4 + (n1 + n2) * ny + cells * (2 if coupling else 1)


def cpp_chunk(B: int, n1: int, n2: int, ny: int, exact: bool, lowrank: bool, coupling: bool = False,
              budget: int | None = None) -> int:
    """Problems per call of the C++ solver among ``B`` (arguments as :func:`cpp_bytes`): as many
    as fit in ``budget`` floats (:data:`CHUNK_FLOATS` where not given) with one workspace for
    each thread that has a problem and each problem's outputs, at least one. Chunks by the
    PyTorch solver's Newton system (one problem of 20x20x101 or 100x10x1000 a call) left the
    threads idle: 8 problems of 20x20x101 on 2 threads took 0.78 s one at a time and 0.50 s
    in one call."""
    budget = CHUNK_FLOATS if budget is None else budget
    work, per = _cpp_workspace(n1, n2, ny, exact, lowrank), cpp_problem_floats(n1, n2, ny, coupling)
    threads = cpp_threads()
    if threads * (work + per) <= budget:
        chunk = threads + (budget - threads * (work + per)) // per
    else:  # fewer problems than threads: each holds its thread's workspace
        chunk = budget // (work + per)
        # Workspaces past the budget's share of a thread: still one problem per thread where
        # half the free memory holds them (two 70x70x40 problems, 78 MB each, ran one after
        # the other: 5.9 s against 3.4 s on two threads).
        have = available_bytes(torch.device("cpu"))
        if have is not None:
            chunk = max(chunk, min(threads, have // 2 // 8 // (work + per)))
    return int(max(1, min(B, chunk)))


def cpp_bytes(B: int, n1: int, n2: int, ny: int, exact: bool, lowrank: bool, coupling: bool = False) -> int:
    """Peak working memory (bytes) of the C++ solver on ``B`` problems ``n1 x n2 x ny``, solved
    in chunks of :func:`cpp_chunk`: one workspace per thread with a problem of the chunk, for
    method ``"exact"`` (``exact``; by the low-rank elimination where ``lowrank``) or ``"fast"``,
    and the chunk's outputs (with the couplings where ``coupling``). Counting ``min(B, cpus)``
    workspaces for a batch solved one problem a call refused 32 problems of 100x10x1000 on 32
    processors for 31.4 GiB; they ran in about 1 GiB. The couplings of the whole batch are
    joined, then converted for the result: two sets (32,768 problems of 8x8x8 had peaked at
    3.2 times the estimate of one chunk's)."""
    chunk = cpp_chunk(B, n1, n2, ny, exact, lowrank, coupling)
    work = _cpp_workspace(n1, n2, ny, exact, lowrank)
    joined = 2 * B * n1 * n2 * ny if coupling else 0
    return 8 * (min(chunk, cpp_threads()) * work + chunk * cpp_problem_floats(n1, n2, ny, coupling) + joined)


def cpp_route_bytes(B: int, n1: int, n2: int, ny: int, exact: bool, lowrank: bool) -> int:
    """Peak working memory (bytes) of fastpid._cpu_route's solve (``exact`` or method "fast")
    of ``B`` problems ``n1 x n2 x ny`` in one call of ``fastpid._C.solve_pid``: a workspace per
    thread with a problem, each with the potentials f, g and a transposed problem
    (csrc/solver_cpu.cpp, solve_pid_batch), and ten results per problem."""
    work = _cpp_workspace(n1, n2, ny, exact, lowrank) + (n1 + n2) * ny + n1 * n2 * ny
    return 8 * (min(B, cpp_threads()) * work + 10 * B)


def cpp_threads() -> int:
    """The C++ solver's threads: its OpenMP threads follow PyTorch's setting, up to the
    processors (counting the processors refused two 64x64x32 problems on one thread for twice
    the one workspace they need)."""
    return min(_cpus(), torch.get_num_threads())


@functools.lru_cache(maxsize=None)
def _cpus() -> int:
    """Processors of the machine (the C++ solver's threads at most); asked once, as the
    call takes longer than a small solve's other overheads."""
    return os.cpu_count() or 1


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a solve on ``device``, or ``None`` where it cannot be read: on the CPU,
    the smaller of the machine's MemAvailable and the headroom of the process's memory cgroups
    (:func:`cgroup_headroom`)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    have = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    have = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    limit = cgroup_headroom()
    return limit if have is None else have if limit is None else min(have, limit)


#: Where the cgroup file systems are mounted and where the process's cgroups are listed
#: (module attributes so that tests can point them at a tree of their own).
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"
#: cgroup v1 reports "no limit" as a huge number (9223372036854771712 on x86-64).
_NO_LIMIT = 1 << 60


def cgroup_headroom() -> int | None:
    """Bytes the process's memory cgroups still let it take (their limit less their usage,
    reclaimable inactive file pages not counted as used), the smallest over its cgroup and every
    ancestor (a parent's limit binds its children), by cgroup v2 (``memory.max``,
    ``memory.current``) and v1 (``memory.limit_in_bytes``, ``memory.usage_in_bytes``); ``None``
    where none sets a limit or none can be read. MemAvailable alone ignores a container's or a
    batch job's limit: under a 1 GB cgroup with 0.61 GiB of headroom a solve estimated at
    0.98 GiB was admitted and the process killed by the OOM killer instead of a MemoryError."""
    try:
        with open(PROC_CGROUP) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    least = None
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, path = fields
        parts = [p for p in path.split("/") if p and p != ".."]
        if hierarchy == "0" and not controllers:  # v2: one hierarchy, all controllers
            # mounted at the root, or beside v1's controllers at unified/ (hybrid mode)
            hybrid = os.path.join(CGROUP_ROOT, "unified")
            base = hybrid if (os.path.isdir(os.path.join(hybrid, *parts))
                              and not os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers"))) else CGROUP_ROOT
            limit_file, usage_file, inactive = "memory.max", "memory.current", "inactive_file"
        elif "memory" in controllers.split(","):
            base, limit_file, usage_file, inactive = (os.path.join(CGROUP_ROOT, "memory"), "memory.limit_in_bytes",
                                                      "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        for k in range(len(parts), -1, -1):  # the cgroup, then its ancestors up to the root
            where = os.path.join(base, *parts[:k])
            limit = _read_bytes(os.path.join(where, limit_file))
            if limit is None or limit >= _NO_LIMIT:
                continue
            usage = _read_bytes(os.path.join(where, usage_file))
            if usage is None:
                continue
            free = max(0, limit - usage + _stat_bytes(os.path.join(where, "memory.stat"), inactive))
            least = free if least is None else min(least, free)
    return least


def _read_bytes(path: str) -> int | None:
    """The number in a cgroup file; ``None`` where it is absent, unreadable or ``max``."""
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat_bytes(path: str, key: str) -> int:
    """The value of ``key`` in a cgroup's ``memory.stat`` (0 where it cannot be read)."""
    try:
        with open(path) as fh:
            for line in fh:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


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
#: The same where ``P`` carries derivatives, the backward pass included: the graph keeps the
#: forward pass's input-sized arrays. Peak RSS growth over the input's size, forward / with
#: backward (one thread): 8192 and 16384 problems of 8x8x8 8.2-9.0 / 10.8-12.3 (exact, fast,
#: proxy), 400 of 16x16x16 7.2-7.7 / 10.7-11.1, 2000 of 3x3x1000 11.1-11.6 / 12.6-15.6 (proxy,
#: exact, fast). Counted at four copies, 65536 problems of 8x8x8 (256 MB) were admitted and
#: peaked at 2.09 GB (2.72 GB with backward).
GRADIENT_ROUTE_COPIES = 16


def check_input_memory(P, copies: int = 1, device: torch.device | None = None) -> None:
    """Raise :class:`MemoryError` when ``copies`` float64 copies of ``P`` (every route makes
    one; the general route :data:`GENERAL_ROUTE_COPIES`, with derivatives
    :data:`GRADIENT_ROUTE_COPIES`) do not fit in the free memory of ``device`` (default:
    ``P``'s; the CPU for GPU problems that the C++ solver takes). A
    broadcast view (``expand``, ``broadcast_to``) can stand for far more problems than it
    stores: without this its copy failed inside the extension's argument conversion (a
    TypeError) or in torch's allocator, or grew the process by four copies before the solve's
    own estimate refused it."""
    if not isinstance(P, (np.ndarray, torch.Tensor)) or (isinstance(P, torch.Tensor) and P.is_meta):
        return  # meta tensors hold no data (check_distribution says so)
    need = 8 * copies * (P.numel() if isinstance(P, torch.Tensor) else P.size)
    if memory_unchecked(need):
        return
    if device is None:
        device = P.device if isinstance(P, torch.Tensor) else torch.device("cpu")
    have = available_bytes(device)
    if have is not None and need > have:
        shape = tuple(P.shape)
        problems = math.prod(shape[:-3])
        grad = copies == GRADIENT_ROUTE_COPIES
        # Fewer problems a call only helps a batch; one problem needs fewer cells (or, with
        # gradients, P.detach(): the route without them holds GENERAL_ROUTE_COPIES).
        advice = ("pass the problems in smaller batches" if problems > 1 else
                  "one problem of this shape does not fit: it needs fewer values per variable")
        if grad:
            advice += (f", or pass P.detach() where no gradient is needed "
                       f"({GENERAL_ROUTE_COPIES} copies)")
        raise MemoryError(
            f"the input of shape {shape} ({problems} problem(s) of "
            f"{'x'.join(map(str, shape[-3:]))}) needs {gib(need, have)} as the "
            f"{'float64 copy' if copies == 1 else f'{copies} float64 copies'} the solve makes"
            f"{' with gradients (their backward pass included)' if grad else ''}, but "
            f"{gib(have, need)} is free on {device}; {advice}.")


def check_memory(flat: torch.Tensor, method: str, backend: str, plan=None, coupling: bool = False) -> None:
    """Raise :class:`MemoryError` when the solve, its closed forms included, would need more
    memory than is free (``plan``, ``coupling``: as for :func:`estimate_bytes`); called before
    the closed forms. The message says what grows (the joint's cells, or the exact solver's
    elimination), whether fewer problems a call would fit, and what backend='cpp' would need
    instead of backend='torch'. The proxy's estimate is its closed forms, and its couplings
    where asked for (16,384 problems of 8x8x8 with couplings peaked 1.5 times the input copies
    checked before)."""
    if backend == "cvx":
        return
    try:
        need = estimate_bytes(flat, method, backend, plan, coupling)
    except ValueError as e:  # a shape the C++ solver's 32-bit indices cannot reach
        if backend != "cpp":
            raise
        raise ValueError(f"{e}. {_torch_instead(flat, method, plan, coupling)}") from None
    if memory_unchecked(need):
        return
    have = available_bytes(flat.device)
    if have is not None and need > have:
        B, n1, n2, ny = flat.shape
        one = need if B == 1 else estimate_bytes(flat[:1], method, backend, plan, coupling)
        raise MemoryError(
            f"solving {B} problem(s) of shape {n1}x{n2}x{ny} with method={method!r}, "
            f"backend={backend!r} needs about {gib(need, have)}, but {gib(have, need)} "
            f"is free on {flat.device}. " + _memory_advice(flat, method, backend, plan, coupling, one, have))


def fits(flat: torch.Tensor, method: str, backend: str, plan=None, coupling: bool = False) -> bool:
    """Whether :func:`check_memory` lets the solve through: its estimate below the threshold
    of a look, within the free memory, or the free memory unknown (``False`` for a shape the
    C++ solver cannot index)."""
    try:
        need = estimate_bytes(flat, method, backend, plan, coupling)
    except ValueError:
        return False
    if memory_unchecked(need):
        return True
    have = available_bytes(flat.device)
    return have is None or need <= have


def _torch_instead(flat: torch.Tensor, method: str, plan, coupling: bool) -> str:
    """Whether the PyTorch solver could take a solve the C++ solver cannot index (its advice
    had been backend='torch' even where that needed 966 GiB of 21.5 free: 300x300x300)."""
    need = estimate_bytes(flat, method, "torch", plan, coupling)
    have = available_bytes(flat.device)
    if have is None and not memory_unchecked(need):
        return f"backend='torch' needs about {gib(need)} (the free memory is unknown here)."
    if memory_unchecked(need) or need <= have:
        return f"backend='torch' takes it (about {gib(need)})."
    return (f"backend='torch' would need about {gib(need, have)}, but {gib(have, need)} is free"
            + (": use method='fast'." if method == "exact" else "."))


def _memory_advice(flat: torch.Tensor, method: str, backend: str, plan, coupling: bool, one: int, have: int) -> str:
    """What to do about a refused solve of ``flat`` (see :func:`check_memory`) whose single
    problem needs ``one`` bytes of the ``have`` free."""
    if one <= have:
        return (f"One problem needs about {gib(one)}: pass the problems in smaller "
                "batches.")
    if method != "exact":
        return (f"One problem alone does not fit: method={method!r} holds a few arrays of the "
                "joint's n1 * n2 * ny cells (or of its marginals' (n1 + n2) * ny, where they are more); merge "
                "rare values of X1, X2 or Y.")
    solver_plan = torch_plan(flat, plan) if backend != "cpp" else _native_plan(flat, plan)
    grows = {"lowrank": "its low-rank elimination grows with ny * (n1 + n2) * n1 * n2 (per-y "
                        "blocks and their products with the n1 * n2 cells)",
             "sparse": "its Newton system grows with the square of the free potentials (pairs "
                       "(x, y) of positive mass)"}.get(solver_plan.structure, "its Newton system grows with "
                                                                         "(min(n1, n2) * ny)^2")
    text = (f"One problem alone does not fit: in the exact solver {grows}; merge rare values "
            "of X1, X2 or Y (target values or clusters), or use method='fast'.")
    if backend == "torch" and flat.device.type == "cpu":
        from . import cpp

        if cpp.available()[0]:
            try:
                in_cpp = estimate_bytes(flat, method, "cpp", plan, coupling)
            except ValueError:  # a shape the C++ solver's 32-bit indices cannot reach: no hint
                return text
            if in_cpp < estimate_bytes(flat, method, backend, plan, coupling):
                text += f" backend='cpp' needs about {gib(in_cpp)} for this solve."
    return text


def gib(size: float, other: float | None = None) -> str:
    """``size`` bytes in GiB to three significant digits (whole GiB from 100 on), or more where
    ``other`` (the free memory against a need, or the need against it) would print the same:
    one decimal printed 0.1 GiB needed against 0.1 GiB free, and 0.0 GiB free."""
    for digits in range(3, 16):
        text = _gib_text(size, digits)
        if other is None or text != _gib_text(other, digits):
            break
    return text


def _gib_text(size: float, digits: int) -> str:
    g = size / 2**30
    if g < 1:
        return f"{g:.{digits}g} GiB"
    text = f"{g:,.{max(0, digits - len(str(int(g))))}f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + " GiB"



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


def cpu_by_default():
    """A block in which tensors made without a device are made on the CPU, as the code inside
    assumes, where torch's default device is another (``torch.set_default_device("cuda")``:
    the estimate's CPU helpers met the samples' device and failed); no cost otherwise."""
    default = getattr(torch, "get_default_device", None)  # not in every torch the project takes
    return torch.device("cpu") if default is not None and default().type != "cpu" else contextlib.nullcontext()


def solver_threads(flat: torch.Tensor, method: str):
    """A context that runs the PyTorch solver of ``flat[B, n1, n2, ny]`` on one intra-op
    thread when its operations are too small to share out (restoring the setting afterwards)."""
    from .solver import newton_plan

    B, n1, n2, ny = flat.shape
    flops = B * newton_plan(flat, native=False).flops if method == "exact" else B * n1 * n2 * ny * 50
    small = flat.device.type == "cpu" and flops < _THREADED_FLOPS
    return threads(1 if small else torch.get_num_threads())
