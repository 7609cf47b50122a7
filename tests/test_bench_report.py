"""The saved benchmark reports agree with the code that renders them.

Each CPU solver report in ``bench/results`` is a JSON file and its markdown; the markdown must be
what ``bench.report`` renders from the JSON (a hand edit, or a change of the renderer without a
re-render, would make the two disagree), and every table row must have the header's columns,
the speed-up over the program over all entries among them only in reports that time it.
"""
from __future__ import annotations

import json

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
