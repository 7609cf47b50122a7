"""The memory checks of fastpid.pid (fastpid._resources): what each route is counted to hold,
where the free memory is read, and what a refused call is told. Every test fakes the free
memory or the cgroup files; none allocates more than a few MB."""
import re

import numpy as np
import pytest
import torch

import fastpid
from fastpid import _certify, _cpu_route, _resources, cpp

# ---- gradients: the backward pass's arrays ------------------------------------------------


@pytest.mark.parametrize("method", ["exact", "fast", "proxy"])
def test_a_call_with_gradients_is_checked_for_its_backward_pass(monkeypatch, method):
    """With derivatives the general route peaked at 8.2-11.6 input copies in the forward pass
    and up to 15.6 with the backward one, but was admitted at four: 65536 problems of 8x8x8
    under a 2 GB cgroup were killed by the OOM killer before any MemoryError (proxy too,
    whose solve has no estimate of its own)."""
    P = torch.distributions.Dirichlet(torch.ones(512, dtype=torch.float64)).sample((64,)).reshape(64, 8, 8, 8)
    one_copy = 8 * P.numel()
    monkeypatch.setattr(_resources, "_UNCHECKED_BYTES", one_copy - 1)
    monkeypatch.setattr(_resources, "available_bytes", lambda device: 10 * one_copy)
    with pytest.raises(MemoryError, match=r"as the 16 float64 copies the solve makes with gradients .*P\.detach\(\)"):
        fastpid.pid(P.requires_grad_(True), method=method)
    assert fastpid.pid(P.detach(), method=method).shape == (64,)  # four copies: admitted


# ---- the free memory: cgroup limits --------------------------------------------------------


def _fake_cgroups(monkeypatch, tmp_path, proc: str, files: dict):
    """Point fastpid._resources at a fake /proc/self/cgroup (``proc``) and /sys/fs/cgroup
    (``files``: path under the root -> contents)."""
    (tmp_path / "proc").write_text(proc)
    for rel, text in files.items():
        path = tmp_path / "sys" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(_resources, "PROC_CGROUP", str(tmp_path / "proc"))
    monkeypatch.setattr(_resources, "CGROUP_ROOT", str(tmp_path / "sys"))


def _mem_available():
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))


MiB = 2**20


def test_a_parent_cgroup_v2_limit_bounds_the_free_memory(monkeypatch, tmp_path):
    """MemAvailable ignores a container's or a batch job's limit: under a 1 GB cgroup with
    0.61 GiB of headroom, 100x10x1000 (estimated 0.98 GiB) was admitted and OOM-killed. The
    process's own cgroup sets no limit here; its parent's binds (inactive file pages, which
    the kernel reclaims first, count as free)."""
    _fake_cgroups(monkeypatch, tmp_path, "0::/job/step\n", {
        "job/step/memory.max": "max\n", "job/step/memory.current": f"{300 * MiB}\n",
        "job/memory.max": f"{1024 * MiB}\n", "job/memory.current": f"{700 * MiB}\n",
        "job/memory.stat": f"anon {600 * MiB}\ninactive_file {100 * MiB}\n",
    })
    assert _resources.cgroup_headroom() == 424 * MiB
    assert _resources.available_bytes(torch.device("cpu")) == min(424 * MiB, _mem_available())
    with pytest.raises(MemoryError, match=r"needs about 0\.791 GiB, but 0\.414 GiB is free"):
        _resources.check_memory(torch.ones(1, 20, 25, 500, dtype=torch.float64), "exact", "torch")


def test_a_cgroup_v1_limit_bounds_the_free_memory(monkeypatch, tmp_path):
    """cgroup v1: limit_in_bytes less usage_in_bytes of the memory controller's cgroup; its
    root's huge 'limit' means none."""
    _fake_cgroups(monkeypatch, tmp_path, "5:cpu,cpuacct:/other\n4:memory:/job\n0::/\n", {
        "memory/job/memory.limit_in_bytes": f"{512 * MiB}\n", "memory/job/memory.usage_in_bytes": f"{256 * MiB}\n",
        "memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.usage_in_bytes": f"{10**12}\n",
    })
    assert _resources.cgroup_headroom() == 256 * MiB
    assert _resources.available_bytes(torch.device("cpu")) == min(256 * MiB, _mem_available())


def test_a_hybrid_hosts_unified_hierarchy_is_read_where_it_is_mounted(monkeypatch, tmp_path):
    """In hybrid mode the v2 hierarchy is mounted at /sys/fs/cgroup/unified beside v1's
    controllers; its "0::" line had been read against /sys/fs/cgroup, and a limit set there missed."""
    _fake_cgroups(monkeypatch, tmp_path, "4:memory:/\n0::/job\n", {
        "unified/job/memory.max": f"{512 * MiB}\n", "unified/job/memory.current": f"{128 * MiB}\n",
        "memory/memory.limit_in_bytes": "9223372036854771712\n",
    })
    assert _resources.cgroup_headroom() == 384 * MiB


@pytest.mark.parametrize("case", ["unlimited", "unreadable", "no memory controller", "no proc file"])
def test_no_readable_cgroup_limit_leaves_mem_available(monkeypatch, tmp_path, case):
    files = {"unlimited": {"a/memory.max": "max\n", "a/memory.current": "5\n"},
             "unreadable": {"a/memory.max": "garbage\n"},
             "no memory controller": {}, "no proc file": {}}[case]
    proc = "3:cpu:/a\n" if case == "no memory controller" else "0::/a\n"
    _fake_cgroups(monkeypatch, tmp_path, proc, files)
    if case == "no proc file":
        monkeypatch.setattr(_resources, "PROC_CGROUP", str(tmp_path / "absent"))
    assert _resources.cgroup_headroom() is None
    assert abs(_resources.available_bytes(torch.device("cpu")) - _mem_available()) < 256 * MiB


# ---- the PyTorch solver's low-rank elimination ---------------------------------------------


@pytest.mark.parametrize("shape, peak", [((20, 20, 101), 96 * MiB), ((8, 8, 2000), 124 * MiB),
                                         ((20, 25, 500), 452 * MiB), ((100, 10, 1000), 3.87 * 2**30)])
def test_the_lowrank_estimate_counts_one_capacitance_matrix(shape, peak):
    """The low-rank elimination holds one n1 n2-square matrix K and Z (ny (n1 + n2) n1 n2);
    the count of a K per target value refused 100x10x1000 at 36.5 GiB (it peaks at 3.87 GiB)
    and asked 4.5 GB of 20x25x500 (0.45 GB). The estimate stays above the measured peaks."""
    flat = torch.ones(1, *shape, dtype=torch.float64)
    from fastpid import solver

    assert solver.newton_plan(flat).structure == "lowrank"
    need = _resources.estimate_bytes(flat, "exact", "torch")
    assert peak < need < 2.2 * peak


def test_the_torch_estimate_follows_the_torch_solvers_own_elimination():
    """fastpid.pid plans for the C++ solver, and the PyTorch estimate had taken that plan:
    dense 20x16x50 is low-rank there and a Schur complement in the PyTorch solver, which
    peaked at 1.23 times the estimate (62 of 51 MB)."""
    from fastpid import solver

    flat = torch.full((1, 20, 16, 50), 1 / 16000, dtype=torch.float64)
    native, own = solver.newton_plan(flat), solver.newton_plan(flat, native=False)
    assert (native.structure, own.structure) == ("lowrank", "schur")
    assert native.for_torch(flat).floats == own.floats and own.for_torch(flat) is own
    need = _resources.estimate_bytes(flat, "exact", "torch", native)
    assert need == _resources.estimate_bytes(flat, "exact", "torch", own) > 1.2 * 62 * MiB
    assert _resources.per_problem_floats(flat, "exact", native) == own.floats
    # and the C++ estimate still follows the C++ plan, whichever it is given
    assert _resources.estimate_bytes(flat, "exact", "cpp", own) == _resources.estimate_bytes(flat, "exact", "cpp")


@pytest.mark.skipif(not cpp.available()[0], reason="the C++ extension is not built")
def test_the_cpp_estimate_counts_the_batchs_joined_couplings():
    """Only one chunk's couplings were counted: 32,768 problems of 8x8x8 with couplings peaked
    at 456 MB against an estimate of 134 MB (402 MB now)."""
    B, cells = 32768, 8 * 8 * 8
    more = _resources.cpp_bytes(B, 8, 8, 8, True, False, True) - _resources.cpp_bytes(B, 8, 8, 8, True, False)
    assert more > 1.9 * 8 * B * cells and _resources.cpp_bytes(B, 8, 8, 8, True, False, True) > 0.85 * 456e6


def test_lowrank_problems_are_chunked_and_routed_by_the_new_count(monkeypatch):
    """The count also sizes chunks of the PyTorch solver (20x20x101: 4 a chunk, was 1) and
    decides, through the C++ chunk, whether fastpid._cpu_route takes a batch."""
    from fastpid import solver

    flat = torch.ones(8, 20, 20, 101, dtype=torch.float64)
    assert _resources.CHUNK_FLOATS // _resources.per_problem_floats(flat, "exact", solver.newton_plan(flat)) == 4
    monkeypatch.setattr(_resources, "_cpus", lambda: 2)
    assert _cpu_route._elimination.__wrapped__(20, 20, 101, 2020, 2020, 8, "cpp", 2, True) is True


def test_a_route_decided_at_one_thread_is_checked_again_at_two(monkeypatch):
    """The C++ route's cached decision had no thread count in its key: decided at one thread
    (44 MB, unchecked), it sent the same batch at two threads (88 MB) past the memory check."""
    import numpy as np

    import fastpid

    P = np.random.default_rng(0).dirichlet(np.ones(30 * 30 * 70), size=2).reshape(2, 30, 30, 70)
    monkeypatch.setattr(_resources, "_cpus", lambda: 2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert _resources.cpp_route_bytes(2, 30, 30, 70, True, False) < _resources._UNCHECKED_BYTES
        fastpid.pid(P, backend="cpp", tol=1e-3)    # cached at one thread
        torch.set_num_threads(2)
        assert _resources.cpp_route_bytes(2, 30, 30, 70, True, False) > _resources._UNCHECKED_BYTES
        monkeypatch.setattr(_resources, "available_bytes", lambda device: 60 * 2**20)
        with pytest.raises(MemoryError, match="is free"):
            fastpid.pid(P, backend="cpp", tol=1e-3)
    finally:
        torch.set_num_threads(threads)


# ---- the C++ solver: chunks and workspaces -------------------------------------------------


def test_the_cpp_estimate_counts_the_workspaces_a_chunk_uses(monkeypatch):
    """32 problems of 100x10x1000 on 32 processors were refused at 31.4 GiB (a workspace per
    processor) while their chunks held one problem each (about 1 GiB)."""
    monkeypatch.setattr(_resources, "_cpus", lambda: 32)
    monkeypatch.setattr(_resources, "available_bytes", lambda device: 2**31)  # half: one workspace
    flat = torch.ones(1, 100, 10, 1000, dtype=torch.float64).expand(32, 100, 10, 1000)
    need = _resources.estimate_bytes(flat, "exact", "cpp")
    assert 0.9 * 2**30 < need < 1.2 * 2**30
    # Small problems: a chunk of many, one workspace per thread.
    small = torch.ones(1, 8, 8, 8, dtype=torch.float64).expand(1000, 8, 8, 8)
    assert _resources.cpp_chunk(1000, 8, 8, 8, True, False) == 1000
    assert _resources.estimate_bytes(small, "exact", "cpp") < 8 * (32 * 20000 + 1000 * 700)


def test_cpp_threads_share_a_batch_of_large_problems(monkeypatch):
    """Chunks sized by the PyTorch solver's Newton system gave the C++ solver one problem of
    20x20x101 a call: its threads never shared the batch (8 problems on 2 threads: 0.78 s,
    against 0.50 s in one call)."""
    monkeypatch.setattr(_resources, "_cpus", lambda: 2)
    calls = []
    solve = cpp.solve

    def counted(P, *args, **kwargs):
        calls.append(P.shape[0])
        return solve(P, *args, **kwargs)

    monkeypatch.setattr(cpp, "solve", counted)
    P = np.random.default_rng(0).dirichlet(np.full(20 * 20 * 101, 0.5), size=8).reshape(8, 20, 20, 101)
    res = fastpid.pid(P, backend="cpp", return_coupling=True)  # the general route
    assert res.backend == "cpp" and sum(calls) == 8 and len(calls) == 1


def test_large_problems_take_a_thread_each_where_the_memory_holds_them(monkeypatch):
    """Workspaces past the chunk budget's share of a thread (70x70x40: 78 MB) made chunks of
    one problem, so a batch ran on one thread of two (two problems: 5.9 s against 3.4 s); the
    threads counted were the machine's, not the solver's (torch's)."""
    monkeypatch.setattr(_resources, "_cpus", lambda: 16)
    monkeypatch.setattr(_resources, "available_bytes", lambda device: 8 * 2**30)
    with fastpid._resources.threads(2):
        assert _resources.cpp_chunk(8, 70, 70, 40, True, False) == 2
    with fastpid._resources.threads(1):  # one workspace: the whole batch in one call
        assert _resources.cpp_chunk(8, 70, 70, 40, True, False) == 8
    monkeypatch.setattr(_resources, "available_bytes", lambda device: 100 * MiB)  # one fits, not two
    with fastpid._resources.threads(2):
        assert _resources.cpp_chunk(8, 70, 70, 40, True, False) == 1
    # The estimate counts the workspaces of the threads that run: one on one thread.
    work = _resources._cpp_workspace(64, 64, 32, True, False)
    with fastpid._resources.threads(1):
        assert 8 * work <= _resources.cpp_bytes(2, 64, 64, 32, True, False) < 2 * 8 * work


# ---- what a refused call is told -----------------------------------------------------------


def _refusal(monkeypatch, have, fn, *args):
    monkeypatch.setattr(_resources, "available_bytes", lambda device: have)
    with pytest.raises(MemoryError) as caught:
        fn(*args)
    return str(caught.value)


def test_the_proxy_with_couplings_is_checked(monkeypatch):
    """The proxy's couplings were never checked: 16,384 problems of 8x8x8 peaked at 413 MB
    with them, where only the input's copies (268 MB) were counted. Without couplings only its
    closed forms are counted (a workspace per thread here)."""
    P = torch.rand(16384, 8, 8, 8, dtype=torch.float64)
    monkeypatch.setattr(_resources, "available_bytes", lambda device: 300 * MiB)
    assert fastpid.pid(P, method="proxy").synergy.shape == (16384,)
    with pytest.raises(MemoryError, match="method='proxy', backend='(cpp|torch)' needs about"):
        fastpid.pid(P, method="proxy", return_coupling=True)


def test_a_refused_fast_solve_is_not_told_of_newton_systems(monkeypatch):
    flat = torch.ones(1, 128, 128, 64, dtype=torch.float64)
    text = _refusal(monkeypatch, MiB, _resources.check_memory, flat, "fast", "torch")
    assert "method='fast'" in text and "Newton" not in text and "use method='fast'" not in text
    assert "n1 * n2 * ny cells" in text and "smaller batches" not in text


@pytest.mark.skipif(not cpp.available()[0], reason="the C++ extension is not built")
def test_a_refused_lowrank_torch_solve_is_told_of_its_elimination_and_of_cpp(monkeypatch):
    flat = torch.ones(1, 100, 10, 1000, dtype=torch.float64)
    text = _refusal(monkeypatch, 2**30, _resources.check_memory, flat, "exact", "torch")
    assert "low-rank elimination" in text and "(min(n1, n2) * ny)^2" not in text
    assert "backend='cpp' needs about 0.991 GiB" in text and "smaller batches" not in text


@pytest.mark.skipif(not cpp.available()[0], reason="the C++ extension is not built")
def test_a_refused_solve_the_cpp_solver_cannot_index_is_a_memory_error(monkeypatch):
    """A refused PyTorch solve of a shape past the C++ solver's 32-bit indices raised the
    C++ check's ValueError ("use backend='torch'") from the advice, instead of the MemoryError
    with its estimate."""
    flat = torch.ones(1, 1, 1, 1, dtype=torch.float64).expand(1, 2001, 22, 2001)  # stores one value
    assert not _resources.cpp_indexable(2001, 22, 2001, True, False)
    text = _refusal(monkeypatch, 2**30, _resources.check_memory, flat, "exact", "torch")
    assert "backend='cpp'" not in text and "One problem alone does not fit" in text
    assert re.search(r"needs about 10,\d{3} GiB, but 1 GiB is free", text)


@pytest.mark.parametrize("free, advice", [
    (2**32, r"backend='torch' would need about 9\d\d GiB, but 4 GiB is free: use method='fast'\."),
    (2**50, r"backend='torch' takes it \(about 9\d\d GiB\)\."),
])
def test_a_shape_the_cpp_solver_cannot_index_is_told_whether_torch_takes_it(monkeypatch, free, advice):
    """pid(P, backend='cpp') of 2001x22x2001 (or 300x300x300) said 'use backend=torch', which
    then refused it for 10,622 GiB (966 GiB) with 21 free; the advice now says whether it fits."""
    P = torch.ones(1, 1, 1, dtype=torch.float64).expand(300, 300, 300)  # stores one value
    monkeypatch.setattr(_resources, "available_bytes", lambda device: free)
    with pytest.raises(ValueError, match="too large for the C\\+\\+ solver") as caught:
        fastpid.pid(P, backend="cpp")
    assert re.search(advice, str(caught.value)), str(caught.value)


def test_a_shape_the_cpp_solver_cannot_index_where_free_memory_is_unknown(monkeypatch):
    """Without a reading of the free memory the advice had said the PyTorch solver takes it."""
    P = torch.ones(1, 1, 1, dtype=torch.float64).expand(300, 300, 300)
    monkeypatch.setattr(_resources, "available_bytes", lambda device: None)
    with pytest.raises(ValueError, match=r"backend='torch' needs about 9\d\d GiB \(the free memory is unknown here\)"):
        fastpid.pid(P, backend="cpp")


def test_sizes_print_apart_where_they_differ():
    """Sizes printed to one decimal of GiB read "needs 0.1 GiB, but 0.1 GiB is free" and
    "0.0 GiB is free"; three significant digits, more where a need and the free memory would
    read the same."""
    G = 2**30
    assert [_resources.gib(v * G) for v in (0.0626, 2.01, 99.95, 10456.7, 0.0)] == \
        ["0.0626 GiB", "2.01 GiB", "100 GiB", "10,457 GiB", "0 GiB"]
    for need, have in ((0.1004, 0.1), (1.004, 1.0), (100.4, 100.0)):
        assert _resources.gib(need * G, have * G) != _resources.gib(have * G, need * G)
    assert (_resources.gib(1.004 * G, G), _resources.gib(G, 1.004 * G)) == ("1.004 GiB", "1 GiB")


def test_a_refused_schur_solve_keeps_its_growth():
    flat = torch.ones(1, 64, 64, 40, dtype=torch.float64)
    from fastpid import solver

    assert solver.newton_plan(flat).structure == "schur"
    text = _resources._memory_advice(flat, "exact", "cpp", None, False, 2**40, 2**30)
    assert "(min(n1, n2) * ny)^2" in text and "backend='cpp' needs" not in text


def test_a_batch_whose_single_problem_fits_is_told_to_split(monkeypatch):
    flat = torch.ones(1, 128, 128, 64, dtype=torch.float64).expand(4, 128, 128, 64)
    text = _refusal(monkeypatch, 100 * MiB, _resources.check_memory, flat, "fast", "torch")
    # 8 bytes x (8 joint-sized arrays + 64 + (128 + 128) x 64 held to the end) = 0.0626 GiB
    assert "pass the problems in smaller batches" in text and "One problem needs about 0.0626 GiB" in text


def test_a_single_too_large_input_is_not_told_to_split(monkeypatch):
    P = np.broadcast_to(np.float64(1.0), (1, 256, 256, 256))
    text = _refusal(monkeypatch, MiB, _resources.check_input_memory, P, 4)
    assert "smaller batches" not in text and "one problem of this shape does not fit" in text
    text = _refusal(monkeypatch, MiB, _resources.check_input_memory, np.broadcast_to(np.float64(1.0), (5, 256, 256, 256)), 4)
    assert "pass the problems in smaller batches" in text and "P.detach()" not in text


def test_auto_leaves_to_pytorch_a_problem_whose_cpp_workspace_does_not_fit(monkeypatch):
    """A 40x40x1600 COPY joint (1600 free potentials, within the C++ solver's size) went to
    the C++ solver, whose workspace is sized by the shape (33 GiB), and was refused; the
    PyTorch solver certifies it with 0.41 GiB. Here, the same on a small scale: 16x16x256
    (a 0.13 GiB workspace) with less free, but enough for the PyTorch solver."""
    n = 16
    P = np.zeros((n, n, n * n))
    P[np.arange(n)[:, None], np.arange(n)[None, :], np.arange(n * n).reshape(n, n)] = 1 / n ** 2
    need = 8 * _resources._cpp_workspace(n, n, n * n, True, False)
    flat = torch.as_tensor(P)[None]
    torch_need = _resources.estimate_bytes(flat, "exact", "torch")
    assert not _resources.memory_unchecked(need) and torch_need < need
    monkeypatch.setattr(_resources, "available_bytes", lambda device: (need + torch_need) // 2)
    res = fastpid.pid(P)
    assert res.backend == "torch" and float(res.synergy) < 1e-12 and bool(res.converged)
    with pytest.raises(MemoryError, match="backend='cpp'"):
        fastpid.pid(P, backend="cpp")


def test_the_estimate_counts_what_every_problem_of_a_batch_holds_to_the_end():
    """10^6 problems of 2x2x2 peaked 1.7x the estimate (exact): it counted the chunk's working
    arrays only, not the results, bounds and potentials each problem keeps till the end."""
    B, n = 10**6, 2
    flat = torch.full((1, n, n, n), 1 / 8, dtype=torch.float64).expand(B, n, n, n)
    for method, measured in (("exact", 1330e6), ("fast", 1005e6)):  # growth of the peak RSS
        copies = _resources.GENERAL_ROUTE_COPIES * flat.numel() * 8  # what check_input_memory counts
        assert _resources.estimate_bytes(flat, method, "torch") + copies >= measured


def test_input_memory_is_checked_on_the_device_asked(monkeypatch):
    """GPU problems that the C++ solver takes are copied to the host: checked there first."""
    P = torch.ones(4, 8, 8, 8, dtype=torch.float64)
    monkeypatch.setattr(_resources, "memory_unchecked", lambda need: False)
    monkeypatch.setattr(_resources, "available_bytes", lambda device: 1 if device.type == "meta" else 2**40)
    _resources.check_input_memory(P, 4)
    with pytest.raises(MemoryError):
        _resources.check_input_memory(P, 4, device=torch.device("meta"))


def test_the_pytorch_estimate_counts_the_couplings_asked_for():
    """The couplings were counted for the C++ solver only: 50,000 problems of 8x8x8 peaked
    201 MB higher with them (fast), one set of them being 205 MB."""
    flat = torch.full((1, 6, 5, 4), 1 / 120, dtype=torch.float64).expand(1000, 6, 5, 4)
    for method in ("exact", "fast"):
        extra = _resources.estimate_bytes(flat, method, "torch", coupling=True) - _resources.estimate_bytes(flat, method, "torch")
        assert extra == 8 * 1000 * 120  # one set of couplings


def test_a_batch_too_large_for_one_native_call_is_checked_before_the_native_pass(monkeypatch):
    """10^8 problems of 2x2x2 (a broadcast view) went through the C++ route's native
    normalisation (26-51 s) before the general route's memory check refused them."""
    from fastpid import _cpu_route

    ext = _cpu_route._extension()
    if ext is None:
        pytest.skip("the native extension is not built")
    prepared = []
    prepare = ext.prepare
    monkeypatch.setattr(ext, "prepare", lambda P, *a: prepared.append(P.shape[0]) or prepare(P, *a))
    xor = torch.zeros(2, 2, 2, dtype=torch.float64)
    xor[0, 0, 0] = xor[1, 1, 0] = xor[0, 1, 1] = xor[1, 0, 1] = 0.25
    B = 1 + max(_resources.cpp_chunk(10**6, 2, 2, 2, True, lowrank) for lowrank in (False, True))
    # Room for the route's two copies of the input, not for the general route's four.
    monkeypatch.setattr(_resources, "available_bytes", lambda device: 3 * 8 * 8 * B)
    with pytest.raises(MemoryError, match=rf"the input of shape \({B}, 2, 2, 2\)"):
        fastpid.pid(xor.expand(B, 2, 2, 2))
    assert prepared == []
    # The proxy's one pass takes any batch, but not past the memory check: a contiguous batch
    # (read in place) whose normalised copy and results need a look at the free memory goes
    # to the general route, which refuses it here.
    Bp = 2**26 // (8 * (8 + 10)) + 1
    monkeypatch.setattr(_resources, "available_bytes", lambda device: 3 * 8 * 8 * Bp)
    with pytest.raises(MemoryError, match=rf"the input of shape \({Bp}, 2, 2, 2\)"):
        fastpid.pid(xor.expand(Bp, 2, 2, 2).contiguous(), method="proxy")
    assert prepared == []
    fastpid.pid(xor.expand(1000, 2, 2, 2))            # a batch the route takes goes through it
    assert prepared == [1000]
    # ... and so does one it takes without its values of no mass (the check had counted the
    # sizes with them, and sent such a batch, 20 of 64x64x64 with 8x8x8 used, to the general
    # route at 4x the time).
    monkeypatch.setattr(_resources, "available_bytes", lambda device: None)
    P = np.zeros((20, 64, 64, 64))
    P[:, :8, :8, :8] = np.random.default_rng(0).random((20, 8, 8, 8))
    assert P.size > 1 << 20
    assert not _cpu_route._one_call(20, 64, 64, 64, True) and _cpu_route._one_call(20, 8, 8, 8, True)
    fastpid.pid(P)
    assert prepared == [1000, 20]


# ---- the closed forms: checked with the solve, before either runs --------------------------


@pytest.mark.skipif(not cpp.available()[0], reason="the C++ extension is not built")
@pytest.mark.parametrize("kw", [{}, dict(method="fast"), dict(method="proxy"), dict(backend="torch")])
def test_the_closed_forms_of_many_target_values_are_checked_before_they_run(monkeypatch, kw):
    """With one or two values a source and many target values the closed forms' arrays are
    several copies of the joint (the C++ pass writes ~8 doubles a target value, PyTorch's ~11),
    and they ran before the solve's memory check (the proxy's had none): constant sources with
    10^9 target values grew the process past the free memory and were killed instead of
    refused. Here 2 * 10^6 target values (16 MB) with 100 MiB free: the input's copies fit, the
    closed forms do not."""
    from fastpid import solver

    ny = 2 * 10**6
    assert _resources.native_closed_forms_bytes(1, 1, 1, ny) > 100 * MiB
    monkeypatch.setattr(_resources, "available_bytes", lambda device: 100 * MiB)

    def ran(*args, **kwargs):
        raise AssertionError("the closed forms ran before the memory check")

    monkeypatch.setattr(solver, "closed_form_bracket", ran)
    with pytest.raises(MemoryError, match=r"solving 1 problem\(s\) of shape 1x1x2000000 .* needs about"):
        fastpid.pid(np.ones((1, 1, ny)), **kw)


@pytest.mark.skipif(not cpp.available()[0], reason="the C++ extension is not built")
def test_the_native_closed_forms_are_counted_by_what_they_write(monkeypatch):
    """The C++ closed forms reserve the solver's whole workspace (~22 doubles a target value for
    constant sources) but write ~8: counted by the whole, a proxy of 1x1x10^7 that peaked at
    629 MiB was refused under 1 GiB free. Here 1x1x(2 * 10^6) (352 MB reserved, 132 MB written)
    with 200 MiB free is solved."""
    ny = 2 * 10**6
    assert 8 * 8 * ny < _resources.native_closed_forms_bytes(1, 1, 1, ny) < 9 * 8 * ny
    monkeypatch.setattr(_resources, "available_bytes", lambda device: 200 * MiB)
    rounded = float(_certify.rounding(np.zeros(1), torch.float64, ny)[0])  # what the gap adds for rounding
    assert float(fastpid.pid(np.ones((1, 1, ny)), method="proxy").gap) <= rounded + 1e-13


def test_the_native_route_sums_no_copy_of_a_large_problem(monkeypatch):
    """A single problem too large for one native call had its values of no mass found from
    the batch's summed joint, a copy of the problem beside the two that pid() counts for this
    route: a single problem's sizes now come from the problem itself."""
    import tracemalloc

    P = np.ones((1, 2, 2, 2**19))
    monkeypatch.setattr(_cpu_route, "_one_call", lambda *args: False)
    tracemalloc.start()
    try:
        assert _cpu_route.native_pid(P, "exact", 1e-8, 500, 20, None, "auto") is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < P.nbytes / 2  # the sums over (x1, x2) hold ny values, a quarter of it here


@pytest.mark.skipif(not cpp.available()[0], reason="needs the C++ extension")
def test_auto_takes_the_cpp_solver_where_only_its_memory_fits(monkeypatch):
    """A dense 80x80x80 problem goes to the PyTorch solver (its Schur complement, 6400 unknowns,
    is past the C++ solver's limit on any thread count), which needs ~10x the C++ solver's
    memory there: with free memory between the two, auto takes the C++ solver rather than
    raising MemoryError (an estimate's null draws had stopped on advice it cannot follow,
    backend='cpp')."""
    from fastpid import api, solver

    P = torch.rand(1, 80, 80, 80, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    P = P / P.sum()
    plan = solver.newton_plan(P)
    torch_need, cpp_need = (_resources.estimate_bytes(P, "exact", b, plan) for b in ("torch", "cpp"))
    assert 4 * cpp_need < torch_need
    between = (cpp_need + torch_need) // 2
    for free, chosen in [(None, "torch"), (2 * torch_need, "torch"), (between, "cpp"), (cpp_need // 2, "torch")]:
        monkeypatch.setattr(_resources, "available_bytes", lambda device, free=free: free)
        assert api._choose_backend("auto", P, "exact", False, plan) == chosen, free
    assert api._choose_backend("torch", P, "exact", False, plan) == "torch"       # an explicit choice stays
