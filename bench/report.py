"""Benchmark report: machine information, the readable table, and the saved files.

A solver suite's run (``python -m pytest bench/test_bench_solver.py``, one file a run: see
``bench/conftest.py``) calls :func:`save` and prints the table at the end of the session.  To re-render the markdown (and print it) from a saved JSON::

    python -m bench.report                      # bench/results/solver_cpu.json
    python -m bench.report path/to/results.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STEM = "solver_cpu"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_features() -> str:
    """The CPU's family and model numbers and its widest vector instructions (the native
    build compiles for them): "AMD EPYC" alone names Zen 3 and Zen 5 machines alike."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return ""
    flags = fields.get("flags", "").split()
    isa = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("sse2", "SSE2"))
                if flag in flags), "")
    return f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, {isa}".strip(", ")


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:
        return None
    return getattr(mod, "__version__", "unknown")


def machine_info() -> dict:
    """What the timings were taken on (no paths, no host names), and how busy it was."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count()
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {
        "cpu": _cpu_model(),
        "cpu_features": _cpu_features(),
        "cores_available": cores,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15min": load,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "cvxpy": _version("cvxpy"),
        "clarabel": _version("clarabel"),
        "scikit-learn": _version("sklearn"),
        "fastpid": _version("fastpid"),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
    }


def _cpu(machine: dict) -> str:
    """The CPU's name, with its features where the report has them (older reports do not)."""
    features = machine.get("cpu_features")
    return f"{machine['cpu']} ({features})" if features else machine["cpu"]


def _fmt(x, kind: str) -> str:
    if x is None:
        return "—"
    if kind == "ms":
        return f"{x:.3g}" if x < 999.5 else f"{x:,.0f}"  # 999.5 to 3 digits reads "1e+03"
    if kind == "x":
        return f"{x:,.0f}×" if x >= 10 else f"{x:.2g}×"
    if kind == "e":
        return "0" if x == 0 else f"{x:.1e}"
    return str(x)


COLUMNS = ("family", "method", "problems", "ms / problem", "speed-up vs CVXPY",
           "max |V − V*| (nats)", "max own gap", "max ref gap", "notes")
#: After CVXPY's speed-up, in reports with rows of the dense CVXPY program.
DENSE_COLUMN = "speed-up vs dense CVXPY"


def _has_dense(results: dict) -> bool:
    return any("speedup_vs_dense" in r for r in results["rows"])


def columns(results: dict) -> tuple[str, ...]:
    """The table's columns: COLUMNS, with DENSE_COLUMN where the report has that speed-up."""
    return COLUMNS[:5] + (DENSE_COLUMN,) + COLUMNS[5:] if _has_dense(results) else COLUMNS


def _spread(best: str, spread: str | None) -> str:
    """A best value with its spread over the timed rounds in brackets (reports saved before
    the spread was recorded, and single rounds, show the best alone)."""
    return best if spread is None or best == "—" else f"{best} ({spread})"


def _ms(r: dict) -> str:
    slowest = r.get("ms_per_problem_slowest")
    if slowest is None or r.get("rounds", 1) < 2 or slowest == r["ms_per_problem"]:
        return _fmt(r["ms_per_problem"], "ms")
    return _spread(_fmt(r["ms_per_problem"], "ms"), f"≤ {_fmt(slowest, 'ms')}")


def _speedup(r: dict, key: str) -> str:
    spread = r.get(f"{key}_range")
    if spread is None or abs(spread[1] - spread[0]) <= 1e-9 * spread[1]:
        return _fmt(r.get(key), "x")
    return _spread(_fmt(r.get(key), "x"), f"{_fmt(spread[0], 'x')}–{_fmt(spread[1], 'x')}")


def table_rows(results: dict) -> list[list[str]]:
    dense = _has_dense(results)
    rows = []
    for r in results["rows"]:
        speedups = [_speedup(r, "speedup_vs_cvxpy")]
        if dense:
            speedups.append(_speedup(r, "speedup_vs_dense"))
        rows.append([
            r["family"], r["method"], str(r["problems"]), _ms(r),
            *speedups, _fmt(r.get("max_abs_error"), "e"),
            _fmt(r.get("max_own_gap"), "e"), _fmt(r.get("max_ref_gap"), "e"), _notes(r),
        ])
    return rows


def _md_row(cells) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _load(machine: dict) -> str:
    load = machine.get("load_average_1_5_15min")
    return "—" if load is None else " / ".join(f"{x:g}" for x in load) + " (1/5/15 min)"


def machine_sentence(m: dict) -> str:
    """The reports' line on the machine (:func:`machine_info`) and its load before the run."""
    return (f"Machine: {_cpu(m)}, {m['cores_available']} cores available, torch {m['torch']} "
            f"({m['torch_threads']} threads), numpy {m['numpy']}, cvxpy {m['cvxpy']}, "
            f"clarabel {m['clarabel']}, scikit-learn {m['scikit-learn']}, Python {m['python']}, "
            f"{m['os']}; {m['date_utc']} UTC; load average before the run {_load(m)}.")


def _notes(row: dict) -> str:
    """A row's notes, after its number of timed rounds where the report saved it (they differ
    by row: the Adam rows and CVXPY take fewer, the large families' automatic rows one)."""
    rounds = row.get("rounds")
    notes = row.get("notes", "")
    if rounds is None:
        return notes
    return f"{rounds} timed round{'s' if rounds != 1 else ''}" + (f"; {notes}" if notes else "")


#: What CVXPY's time covers (fastpid/cvx.py, as bench/test_bench_solver.py times it).
CVXPY_TIMED = ("CVXPY's time is its whole call as a user makes it (`fastpid.cvx.solve_cvx`, one problem "
               "a call): building the problem, CVXPY's compilation, Clarabel's solve and reading the "
               "solution back. `bench/results/cvx_time_split.md` (`python -m bench.cvx_time_split`) gives "
               "Clarabel's share of that call per family, by which a speed-up here scales to one over "
               "Clarabel's solve alone.")


def render_markdown(results: dict) -> str:
    m = results["machine"]
    s = results.get("settings", {})
    spread = any("ms_per_problem_slowest" in r for r in results["rows"])  # older reports have none
    lines = [
        "# fastpid solver benchmark (CPU)",
        "",
        machine_sentence(m),
        "",
        "V* is the reference value: `fastpid.pid(P, tol=%g)` (certified; *ref gap* is its "
        "certificate, the proven bound on |V* − V|). *own gap* is the method's own "
        "certificate where it has one. Times are the best of the timed rounds (CVXPY: best "
        "of two, one on the large scale families) divided by the number of problems in the "
        "call%s; speed-up is CVXPY's time per problem (on the first `cvx_problems_per_family` "
        "problems of the family) over the method's%s%s." % (
            s.get("reference_tol", float("nan")),
            ", with the slowest round's in brackets" if spread else "",
            ", in brackets its range over the rounds (CVXPY's best over the method's slowest to "
            "CVXPY's slowest over the method's best)" if spread else "",
            "; speed-up vs dense CVXPY likewise over the time of the program over all "
            "entries (`bench/peers.py`)" if _has_dense(results) else ""),
        "",
        *([CVXPY_TIMED, ""] if any("CVXPY" in r["method"] for r in results["rows"]) else []),
        _md_row(columns(results)),
        "|" + "|".join("---" for _ in columns(results)) + "|",
    ]
    lines += [_md_row(row) for row in table_rows(results)]
    if results.get("families"):
        lines += ["", "Problem families:", ""]
        for name, d in results["families"].items():
            lines.append(f"- `{name}`: {d['description']} "
                         f"(non-zero cells {100 * d['nonzero_fraction']:.1f}%, "
                         f"cells allowed by the marginals {100 * d['feasible_cell_fraction']:.1f}%).")
    if s:
        lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in s.items()) + "."]
    return "\n".join(lines) + "\n"


def render_text(results: dict) -> str:
    """A plain fixed-width table for the terminal."""
    rows = [list(columns(results)[:-1])] + [r[:-1] for r in table_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [f"  {r['family']} / {r['method']}: {r['notes']}" for r in results["rows"]
             if r.get("notes")]
    m = results["machine"]
    out += ["", f"{_cpu(m)}, {m['cores_available']} cores, torch {m['torch']} "
                f"({m['torch_threads']} threads); load average before the run {_load(m)}"]
    if notes:
        out += ["notes:"] + notes
    return "\n".join(out)


def json_path(stem: str) -> Path:
    """Where a report named ``stem`` (``--bench-name``) is saved, as JSON: a plain name in
    :data:`RESULTS_DIR`, a path (with a folder, or absolute) where it says, relative to the
    working directory (``myout/est`` had gone to ``bench/results/myout/est``)."""
    path = Path(f"{stem}.json")
    # The string, not the Path: Path("./est") drops its "./" (and went to bench/results).
    return path if path.is_absolute() or "/" in stem or os.sep in stem else RESULTS_DIR / path


def save(results: dict, stem: str = STEM) -> tuple[Path, Path]:
    jpath = json_path(stem)
    mpath = jpath.with_suffix(".md")
    jpath.parent.mkdir(parents=True, exist_ok=True)
    jpath.write_text(json.dumps(results, indent=1) + "\n")
    mpath.write_text(render_markdown(results))
    return jpath, mpath


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Render a saved solver report (JSON) again as its markdown table, next to it, and print it.")
    parser.add_argument("report", nargs="?", type=Path, default=RESULTS_DIR / f"{STEM}.json",
                        help=f"the JSON report (default {RESULTS_DIR.name}/{STEM}.json)")
    jpath = parser.parse_args(argv).report
    if not jpath.is_file():
        parser.error(f"{jpath}: no such file")
    results = json.loads(jpath.read_text())
    rows = results.get("rows") if isinstance(results, dict) else None
    if not (isinstance(rows, list) and rows and "machine" in results
            and all(isinstance(r, dict) and "ms_per_problem" in r for r in rows)):
        raise SystemExit(f"{jpath} is not a solver report of bench/test_bench_solver.py, "
                         "test_bench_held_out.py or test_bench_dense_program.py (the GPU and estimate "
                         "suites write their markdown themselves)")
    (jpath.parent / f"{jpath.stem}.md").write_text(render_markdown(results))
    print(render_text(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
