"""GPU benchmark: the CUDA, Triton and PyTorch backends on one GPU, CVXPY on the CPU, one run.

Run on a machine with a CUDA device: ``python -m pytest bench/test_bench_gpu.py -q``
(``--gpu-problems`` sets the 8x8x8 batch, default 100,000; the 20x20x10 batch is a tenth of
it, the "exact by shape" rows take at most 8,000). Without a CUDA device every test skips. The
table is printed at the module's end (seen with ``-s``; pytest captures it otherwise) and saved to
``bench/results/solver_gpu.{json,md}`` (not with ``--bench-no-save``; ``--bench-name X``
saves ``X.{json,md}``). The CVXPY column times the first problems of each row's batch.

Rows: problems per second of ``fastpid.pid`` for each backend and method on a batch already
on the GPU (timed with ``torch.cuda.synchronize``, best of the rounds; the ``cpp`` row: the same
batch on the CPU, every core, the peer a GPU must beat), the speed-up over
CVXPY+Clarabel per problem (one problem at a time on the CPU, as people run it), the largest
error against a certified CPU reference on the first problems, and the floor: the bytes each
call must move and what the device's copy bandwidth (measured in the same run) makes of them.
The joint rows report the achieved fraction of that bandwidth. The ``auto`` rows say which
backend ``fastpid.pid`` picked; the "exact by shape" rows time 8,000 exact solves of three
shapes on each backend, where the CUDA solver takes a problem per block or per thread.
"""
from __future__ import annotations

import functools
import json
import time

import numpy as np
import pytest
import torch

import fastpid
from bench import problems, report
from bench.conftest import not_saved_because, note, report_stem
from fastpid import cuda
from fastpid.cvx import solve_cvx
from fastpid.solver import WARM_STEPS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ROWS: list[dict] = []
#: Each row records its finish time since the module's import (``wall_s``): a run cut short
#: by a time limit shows which rows took the time (compiling, autotuning, references).
START = time.perf_counter()
#: Problems checked against the CPU reference (tol 1e-10) in every row.
CHECKED = 256
CVX_PROBLEMS = 4


def _batch_sizes(config) -> dict:
    n = config.getoption("--gpu-problems")
    return {"dense_8x8x8": n, "clustered_20x20x10": max(1, n // 10)}


def _family(name: str, n: int) -> np.ndarray:
    """``n`` problems of a family: Dirichlet(1) problems of a dense family's shape, or
    bootstrap resamples (2000 samples each) of a family's first 16 problems (generating each
    from scratch is slow)."""
    base = problems.family(name, 16)
    if name.startswith("dense"):
        rng = np.random.default_rng(0)
        return rng.dirichlet(np.ones(base[0].size), size=n).reshape(n, *base.shape[1:])
    rng = np.random.default_rng(1)
    flat = base.reshape(16, -1)
    counts = np.stack([rng.multinomial(2000, flat[b % 16]) for b in range(n)]).astype(np.float64)
    return (counts / 2000.0).reshape(n, *base.shape[1:])


def _cuda_timed(benchmark, fn, rounds=3):
    """``(fn()'s result, {"seconds": the fastest timed call, "seconds_slowest": the slowest,
    "timed_calls": rounds})``, after a warm-up call that is not timed."""
    times = []

    def wrapped():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        return out

    out = benchmark.pedantic(wrapped, rounds=rounds, iterations=1, warmup_rounds=1)
    timed = times[-rounds:]  # times[0] is the warm-up call's
    return out, {"seconds": min(timed), "seconds_slowest": max(timed), "timed_calls": rounds}


def _copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second (best of 5, 1 GiB)."""
    x = torch.empty(2**27, dtype=torch.float64, device="cuda")
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(6):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        y.copy_(x)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * x.numel() * 8 / best


def _fp64_rate() -> float:
    """Float64 matrix-product rate (flop/s, best of 3): the arithmetic ceiling of the run."""
    a = torch.randn(4096, 4096, dtype=torch.float64, device="cuda")
    best = float("inf")
    for _ in range(4):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ a
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * 4096**3 / best


def newton_flops(n1: int, n2: int, ny: int) -> float:
    """Floating-point operations of one Newton iteration of the exact solver (Schur side
    m = n2 * ny): the Schur updates of the n1 per-x1 blocks (about 4 n1 n2^2 ny^2), the
    Cholesky of the m x m Schur complement (m^3 / 3), and the cell weights and one line-search
    trial (about 2 n1 n2 ny exp/log, counted as 20 flops each)."""
    m = n2 * ny
    return 4 * n1 * n2**2 * ny**2 + m**3 / 3 + 40 * n1 * n2 * ny


@pytest.fixture(scope="module")
def bandwidth():
    return _copy_bandwidth()


@pytest.fixture(scope="module")
def fp64_rate():
    return _fp64_rate()


def _markdown(machine: dict) -> str:
    lines = [f"GPU: {machine['gpu']}, torch {machine['torch']} (CUDA {machine['torch_cuda']}), "
             f"{machine['date_utc']} UTC", "",
             "*problems/s*: the fastest of the timed calls after a warm-up call, in brackets the slowest's and "
             "the number of calls (rows saved before those were kept: the fastest alone). *max err*: the largest "
             "|V − V_ref| in nats over the first 256 problems, V_ref the C++ solver's at tol 1e-10.", "",
             "| family | method | backend | problems | problems/s | × CVXPY | max err (nats, first 256) | floor "
             "| notes | done at |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in ROWS:
        ratio = f"{r['speedup_vs_cvxpy']:.3g}" if r.get("speedup_vs_cvxpy") else ""
        err = f"{r['max_abs_error']:.1e}" if r.get("max_abs_error") is not None else ""
        lines.append(f"| {r['family']} | {r['method']} | {r['backend']} | {r['problems']} | "
                     f"{_rate(r)} | {ratio} | {err} | {r['floor']} | {r['notes']} | {_done_at(r)} |")
    return "\n".join(lines) + "\n"


def _rate(row: dict) -> str:
    """Problems a second of the fastest call, with the slowest call's and the calls timed where
    the row has them."""
    if "seconds_slowest" not in row:
        return f"{row['per_second']:.4g}"
    calls = row["timed_calls"]
    slowest = row["problems"] / row["seconds_slowest"]
    if calls == 1:
        return f"{row['per_second']:.4g} (1 call)"
    return f"{row['per_second']:.4g} (≥ {slowest:.4g}, {calls} calls)"


def _done_at(row: dict) -> str:
    """Seconds into the run when the row was recorded (rows saved before this column: blank)."""
    return f"{row['wall_s']:.0f} s" if "wall_s" in row else ""


@functools.lru_cache(maxsize=1)
def _machine() -> dict:
    """The machine, read once, when the first row is recorded (read at every row, its load
    was the load late in the run; this one is after the first row's timing only)."""
    machine = report.machine_info()
    machine["gpu"] = torch.cuda.get_device_name()
    machine["torch_cuda"] = torch.version.cuda
    machine["backends"] = {k: v["available"] for k, v in fastpid.backends().items()}
    return machine


def _record(row: dict, config) -> None:
    """Adds ``row`` and, unless ``--bench-no-save``, rewrites
    ``bench/results/<--bench-name or solver_gpu>.{json,md}`` with every row so far (a run cut
    short keeps the rows it finished)."""
    ROWS.append({**row, "wall_s": round(time.perf_counter() - START, 1)})
    reason = not_saved_because(config)
    if reason is not None:
        if len(ROWS) == 1:  # said once, at the end of the run
            note(config, f"not saved: {reason}")
        return
    machine = _machine()
    path = report.json_path(report_stem(config, "test_bench_gpu.py"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine, "rows": ROWS}, indent=2))
    path.with_suffix(".md").write_text(_markdown(machine))
    if len(ROWS) == 1:
        note(config, f"saved {path} and {path.with_suffix('.md')} (rewritten after every row)")


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    yield
    if ROWS:
        print("\n" + _markdown(_machine()))


_CVX_MS: dict[str, float] = {}


def _cvx_ms_per_problem(name: str) -> float | None:
    """CVXPY's time per problem on family ``name`` (ms), or ``None`` where CVXPY is not
    installed (a GPU machine's image may lack it: the row is kept, without the ratio)."""
    try:
        import cvxpy  # noqa: F401
    except ImportError:
        return None
    if name not in _CVX_MS:
        P = _family(name, CVX_PROBLEMS)  # the first problems of the rows' own batch
        solve_cvx(P[:1])  # untimed: CVXPY's first call sets itself up (0.9 s against 22 ms on 8x8x8)
        t0 = time.perf_counter()
        for b in range(CVX_PROBLEMS):
            solve_cvx(P[b:b + 1])
        _CVX_MS[name] = 1e3 * (time.perf_counter() - t0) / CVX_PROBLEMS
    return _CVX_MS[name]


def _reference(P: np.ndarray) -> np.ndarray:
    res = fastpid.pid(P[:CHECKED], tol=1e-10)
    return np.asarray(res.mi - res.synergy)


@pytest.mark.gpu
@pytest.mark.parametrize(("method", "backend"), [
    ("exact", "cuda"), ("exact", "torch"), ("exact", "cpp"), ("exact", "auto"),
    ("fast", "cuda"), ("fast", "triton"), ("fast", "torch"),
    ("proxy", "cuda"), ("proxy", "triton"), ("proxy", "torch"),
])
@pytest.mark.parametrize("family", [f for f in ("dense_8x8x8", "clustered_20x20x10") if problems.available(f)])
def test_gpu_pid(benchmark, pytestconfig, bandwidth, fp64_rate, family, method, backend):
    if backend != "auto" and not fastpid.backends()[backend]["available"]:
        pytest.skip(fastpid.backends()[backend]["reason"])
    n = _batch_sizes(pytestconfig)[family]
    P_host = _family(family, n)
    # The C++ solver on the host's cores, the same batch: the peer a GPU must beat.
    P = torch.from_numpy(P_host) if backend == "cpp" else torch.from_numpy(P_host).cuda()
    tol = 1e-6 if method == "exact" else None
    benchmark.group = f"gpu {family} {method}"
    res, timed = _cuda_timed(benchmark, lambda: fastpid.pid(P, method=method, backend=backend, tol=tol))
    t = timed["seconds"]
    V = (res.mi - res.synergy)[:CHECKED].cpu().numpy()
    err = float(np.max(np.abs(V - _reference(P_host))))
    gap = float(res.gap.max())
    if method == "exact":
        assert gap <= 1e-6 and err <= 1e-6 + 1e-10
    # By the backend that solved it: "auto" sends problems the host solves faster to the C++
    # solver, whose time no GPU floor bounds.
    if res.backend == "cpp":
        floor = f"on the CPU: {fastpid.build_info()['openmp_max_threads']} threads" + (
            ", copies included" if backend == "auto" else "")
    else:
        floor = f"reading P once: {P.numel() * 8 / bandwidth * 1e3:.3f} ms"
    if method == "exact" and res.backend != "cpp":
        n_small = min(P.shape[1:3])  # the solver puts the smaller source on the Schur side
        newton_steps = float((res.iterations - WARM_STEPS).clamp_min(0).sum())  # warm-up steps are cheap
        flops = newton_steps * newton_flops(max(P.shape[1:3]), n_small, P.shape[3])
        floor += f"; {flops:.2g} flop at the fp64 matmul rate {fp64_rate / 1e12:.0f} TF/s: {flops / fp64_rate * 1e3:.1f} ms"
    cvx_ms = _cvx_ms_per_problem(family)
    _record({
        "family": family, "method": method, "problems": n,
        "backend": f"auto: {res.backend}" if backend == "auto" else backend,
        **timed, "per_second": n / t,
        "speedup_vs_cvxpy": None if cvx_ms is None else cvx_ms / (1e3 * t / n),
        "max_abs_error": err,
        "floor": floor,
        "notes": f"max gap {gap:.1e}, iterations ≤ {int(res.iterations.max())}",
    }, pytestconfig)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "torch"])
def test_gpu_joint_from_codes(benchmark, pytestconfig, bandwidth, backend):
    N, sizes = 10**7, (8, 8, 8)
    gen = torch.Generator(device="cuda").manual_seed(0)
    x1, x2, y = (torch.randint(0, n, (N,), device="cuda", generator=gen) for n in sizes)
    if backend == "torch":
        def run():
            idx = (x1 * 8 + x2) * 8 + y
            return torch.bincount(idx, minlength=512).to(torch.float64).reshape(sizes)
    else:
        from fastpid import cuda, triton_kernels
        kernels = cuda if backend == "cuda" else triton_kernels
        if not kernels.available(x1.device)[0]:
            pytest.skip(kernels.available(x1.device)[1])

        def run():
            return kernels.joint_codes(x1, x2, y, sizes)
    benchmark.group = "gpu joint"
    T, timed = _cuda_timed(benchmark, run)
    t = timed["seconds"]
    assert float(T.sum()) == N
    moved = 3 * N * 8  # three int64 code vectors, read once
    _record({
        "family": f"joint of {N:.0e} codes", "method": "joint", "backend": backend, "problems": N,
        **timed, "per_second": N / t, "speedup_vs_cvxpy": None, "max_abs_error": None,
        "floor": f"{moved / bandwidth * 1e3:.3f} ms at the copy bandwidth {bandwidth / 1e12:.2f} TB/s",
        "notes": f"{moved / t / bandwidth:.0%} of the copy bandwidth",
    }, pytestconfig)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "torch", "cpp", "auto"])
@pytest.mark.parametrize("family", [f for f in ("dense_12x12x6", "held_clustered_12x12x10", "clustered_20x20x10")
                                    if problems.available(f)])
def test_gpu_exact_by_shape(benchmark, pytestconfig, family, backend):
    """Exact solves (tol 1e-6) of 8,000 problems of a shape (fewer where ``--gpu-problems`` is
    smaller), one timed call after a warm-up
    call: where the CUDA solver keeps a problem in a block's shared memory (12x12x6, 12x12x10)
    and where it takes one per thread (20x20x10), against the host's cores (``cpp``: the
    problems on the CPU already). What ``backend="auto"`` does with GPU problems follows these
    rows (api._host_beats_gpu_threads); its own row times that route, copies included."""
    n = min(8000, pytestconfig.getoption("--gpu-problems"))
    P_host = _family(family, n)
    P = torch.from_numpy(P_host) if backend == "cpp" else torch.from_numpy(P_host).cuda()
    benchmark.group = f"gpu exact by shape {family}"
    res, timed = _cuda_timed(benchmark, lambda: fastpid.pid(P, backend=backend, tol=1e-6), rounds=1)
    t = timed["seconds"]
    assert float(res.gap.max()) <= 1e-6
    # Only the CUDA solver's rows ask how it took them (an extension without CUDA lacks the call).
    blocks = res.backend == "cuda" and cuda.workspace_doubles(*sorted(P.shape[1:3], reverse=True), P.shape[3]) == 0
    threads = fastpid.build_info()["openmp_max_threads"]
    _record({
        "family": family, "method": "exact", "problems": n,
        "backend": f"auto: {res.backend}" if backend == "auto" else backend,
        **timed, "per_second": n / t, "speedup_vs_cvxpy": None, "max_abs_error": None,
        "floor": (f"on the CPU: {threads} threads" if backend == "cpp"
                  else f"GPU problems on the CPU's {threads} threads, copies included" if res.backend == "cpp"
                  else "CUDA: a block per problem" if blocks else "CUDA: a thread per problem"),
        "notes": f"max gap {float(res.gap.max()):.1e}, iterations ≤ {int(res.iterations.max())}",
    }, pytestconfig)
