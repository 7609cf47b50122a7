"""Cost of :func:`fastpid.estimate` against one cold exact :func:`fastpid.pid`, in one run.

The goal (issue 10): ``estimate`` with its default settings on a 20x20x10 joint of N = 2,000
samples costs at most 50x one cold exact ``pid`` of the same (empirical) joint. Both are
timed in the same process on the same samples, best of ``--bench-rounds`` rounds each (the
estimate one round fewer, at least one), so the ratio does not depend on the machine's speed
(only on its load staying similar between the two). The result is printed and saved to
``bench/results/estimate_cpu.{json,md}`` (not with ``--bench-no-save``).

Run with ``python -m pytest bench/test_bench_estimate.py -q``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import fastpid
from bench import problems

GOAL_RATIO = 50.0
N = 2000


def _samples():
    P = problems.family("clustered_20x20x10", 1)[0]
    P = P / P.sum()
    rng = np.random.default_rng(7)
    idx = rng.choice(P.size, size=N, p=P.ravel())
    return np.unravel_index(idx, P.shape), P.shape


def _best(fn, rounds):
    times, out = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, min(times)


def test_estimate_vs_cold_pid(benchmark, bench_settings, pytestconfig):
    (x1, x2, y), shape = _samples()
    P_hat = fastpid.joint(x1, x2, y, sizes=shape)
    rounds = bench_settings["timed_rounds"]
    fastpid.pid(P_hat)  # import and first-call costs out of the way
    _, t_pid = _best(lambda: fastpid.pid(P_hat), rounds)

    times = []

    def run_estimate():
        t0 = time.perf_counter()
        e = fastpid.estimate(x1, x2, y, sizes=shape, seed=0)
        times.append(time.perf_counter() - t0)
        return e

    est = benchmark.pedantic(run_estimate, rounds=max(1, rounds - 1), iterations=1, warmup_rounds=0)
    t_est = min(times)
    ratio = t_est / t_pid
    result = {
        "problem": f"clustered_20x20x10 #0, N = {N} samples ({int(est.occupied)} of 4000 cells occupied)",
        "cold_pid_s": t_pid, "estimate_s": t_est, "ratio": ratio, "goal_ratio": GOAL_RATIO,
        "settings": {"n_jackknife": est.n_jackknife, "n_null": est.n_null,
                     "resampled_solves": est.n_jackknife + est.n_null},
        "torch_threads": bench_settings["torch_threads"],
    }
    md = ("| problem | cold exact pid | estimate (defaults) | ratio | goal |\n|---|---|---|---|---|\n"
          f"| {result['problem']} | {1e3 * t_pid:.1f} ms | {t_est:.2f} s | {ratio:.1f}x | <= {GOAL_RATIO:g}x |\n")
    print("\n" + md)
    if not pytestconfig.getoption("--bench-no-save"):
        out = Path(__file__).parent / "results"
        out.mkdir(exist_ok=True)
        (out / "estimate_cpu.json").write_text(json.dumps(result, indent=1))
        (out / "estimate_cpu.md").write_text(md)
    assert ratio <= GOAL_RATIO, f"estimate costs {ratio:.1f}x a cold pid (goal <= {GOAL_RATIO:g}x)"
