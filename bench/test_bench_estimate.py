"""Cost of :func:`fastpid.estimate` against one cold exact :func:`fastpid.pid`, in one run.

The goal (issue 10): ``estimate`` with its default settings on a 20x20x10 joint of N = 2,000
samples costs at most 50x one cold exact ``pid`` of the same (empirical) joint. It was met
(27x) when a cold ``pid`` took 108 ms; the C++ route has since made that ``pid`` about 0.8 ms,
and the estimate needs 62 solves of joints of the same size (20 jackknife, 10 pilot and 29
null joints, the plug-in, its dual potentials and the null world), so 50x is now out of reach
without cutting the statistics. What this suite checks instead is that the estimate costs at
most 1.5x its solves done one by one as cold ``pid`` calls (batching, not overhead, sets its
cost); the table reports both ratios, each with its range over the rounds (the estimate's
best over pid's slowest to its slowest over pid's best), and the 50x goal as met, not met or
within that range. Both are timed in the same process on the same samples, best of
``--bench-rounds`` rounds each (the estimate one round fewer, at least one), so the ratios do
not depend on the machine's speed (only on its load staying similar between the two). The result is printed and saved to
``bench/results/estimate_cpu.{json,md}`` (not with ``--bench-no-save``).

Run with ``python -m pytest bench/test_bench_estimate.py -q``.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

import fastpid
from bench import problems, report
from bench.conftest import not_saved_because, note, report_stem
from fastpid.estimate import DEFAULT_PILOT

GOAL_RATIO = 50.0
#: The most the estimate may cost per solve it makes, in cold pid calls.
PER_SOLVE_LIMIT = 1.5
N = 2000


def _samples():
    P = problems.family("clustered_20x20x10", 1)[0]
    P = P / P.sum()
    rng = np.random.default_rng(7)
    idx = rng.choice(P.size, size=N, p=P.ravel())
    return np.unravel_index(idx, P.shape), P.shape


def _timed(fn, rounds):
    times, out = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def _goal(low: float, high: float) -> str:
    """Whether a ratio whose rounds range over [low, high] meets the goal: a best ratio of 49.2x
    had been called met where the slowest rounds were far above it."""
    if high <= GOAL_RATIO:
        return "met"
    return "not met" if low > GOAL_RATIO else "met in some rounds, not in others"


def test_estimate_vs_cold_pid(benchmark, bench_settings, pytestconfig):
    if not problems.available("clustered_20x20x10"):
        pytest.skip("the clustered joint needs scikit-learn (pip install \"fastpid[bench]\")")
    machine = report.machine_info()  # its load before the run
    (x1, x2, y), shape = _samples()
    P_hat = fastpid.joint(x1, x2, y, sizes=shape)
    rounds = bench_settings["timed_rounds"]
    fastpid.pid(P_hat)  # import and first-call costs out of the way, for both
    fastpid.estimate(x1, x2, y, sizes=shape, seed=0)
    _, pid_times = _timed(lambda: fastpid.pid(P_hat), rounds)
    t_pid = min(pid_times)

    times = []

    def run_estimate():
        t0 = time.perf_counter()
        e = fastpid.estimate(x1, x2, y, sizes=shape, seed=0)
        times.append(time.perf_counter() - t0)
        return e

    est = benchmark.pedantic(run_estimate, rounds=max(1, rounds - 1), iterations=1, warmup_rounds=0)
    t_est = min(times)
    ratio = t_est / t_pid
    low, high = t_est / max(pid_times), max(times) / t_pid
    solves = est.n_jackknife + min(DEFAULT_PILOT, est.n_null) + est.n_null + 3
    per_solve = ratio / solves
    result = {
        "problem": f"clustered_20x20x10 #0, N = {N} samples ({int(est.occupied)} of 4000 cells occupied)",
        "cold_pid_s": t_pid, "estimate_s": t_est, "ratio": ratio, "goal_ratio": GOAL_RATIO,
        "ratio_range": [low, high], "goal": _goal(low, high), "solves": solves, "ratio_per_solve": per_solve,
        "per_solve_limit": PER_SOLVE_LIMIT,
        "settings": {"n_jackknife": est.n_jackknife, "n_null": est.n_null, "n_pilot": min(DEFAULT_PILOT, est.n_null)},
        "torch_threads": bench_settings["torch_threads"],
        "machine": machine,
    }
    result["rounds"] = {"pid": rounds, "estimate": len(times)}
    result["estimate_slowest_s"], result["cold_pid_slowest_s"] = max(times), max(pid_times)
    md = (f"{report.machine_sentence(machine)}\n\n"
          f"Times: the best of {rounds} calls of the cold `pid` (its slowest {1e3 * max(pid_times):.2f} ms) and "
          f"of {len(times)} of the estimate (its slowest {1e3 * max(times):.1f} ms), "
          f"{bench_settings['torch_threads']} torch thread(s); ratios: the best times', in brackets their range "
          "over the rounds.\n\n"
          "| problem | cold exact pid | estimate (defaults) | ratio | goal | solves | ratio per solve |\n"
          "|---|---|---|---|---|---|---|\n"
          f"| {result['problem']} | {1e3 * t_pid:.2f} ms | {1e3 * t_est:.1f} ms "
          f"| {ratio:.1f}x ({low:.1f}x–{high:.1f}x) "
          f"| <= {GOAL_RATIO:g}x ({result['goal']}) | {solves} "
          f"| {per_solve:.2f} ({low / solves:.2f}–{high / solves:.2f}; <= {PER_SOLVE_LIMIT:g}) |\n")
    print("\n" + md)
    # A run that misses the limit saves nothing, as a failed run of the other suites.
    assert per_solve <= PER_SOLVE_LIMIT, (f"estimate costs {per_solve:.2f} cold pid calls per solve "
                                          f"({ratio:.1f}x one cold pid, {solves} solves)")
    reason = not_saved_because(pytestconfig)
    if reason is None:
        path = report.json_path(report_stem(pytestconfig, "test_bench_estimate.py"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        path.with_suffix(".md").write_text(md)
        note(pytestconfig, f"saved {path} and {path.with_suffix('.md')}")
    else:
        note(pytestconfig, f"not saved: {reason}")
