"""Where CVXPY's time goes, per family: what the solver benchmarks time as CVXPY's (its whole
call, ``fastpid.cvx.solve_cvx``, as a user makes it) split into CVXPY's compilation
(``Problem.compilation_time``), Clarabel's solve (``solver_stats.solve_time``) and the rest
(building the problem, reading the solution back). A reader who counts Clarabel's solve alone
scales the reports' speed-ups by its share.

    OMP_NUM_THREADS=1 python -m bench.cvx_time_split [family ...]

prints the table and writes ``bench/results/cvx_time_split.md``: per family the mean over its
first 8 problems (2 on the large families) of each problem's faster of two calls.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from . import problems
from .report import RESULTS_DIR, machine_info, machine_sentence

DEFAULT = ("dense_8x8x8", "dense_10x10x10", "dense_12x12x6", "clustered_20x20x10", "digits_10x10x10",
           "digits_20x20x10", "uci_20x20x10", "digits_30x30x10", "uci_30x30x10", "dirichlet_6x6x20",
           "dirichlet_4x4x30")


def split(P: np.ndarray) -> tuple[float, float, float]:
    """``(whole, compilation, clarabel)`` seconds of one ``solve_cvx`` call of one problem."""
    import cvxpy as cp

    from fastpid import cvx

    seen = []
    solve = cp.Problem.solve

    def timed(self, *args, **kwargs):
        out = solve(self, *args, **kwargs)
        seen.append((self.compilation_time, self.solver_stats.solve_time))
        return out
    cp.Problem.solve = timed
    try:
        start = time.perf_counter()
        cvx.solve_cvx(P[None])
        whole = time.perf_counter() - start
    finally:
        cp.Problem.solve = solve
    return (whole, *seen[0])


def family_split(name: str) -> np.ndarray:
    """Mean ``(whole, compilation, clarabel)`` ms over the family's problems, each its faster
    of two calls (after one call to warm CVXPY up)."""
    P = np.asarray(problems.family(name, problems.count(name, 8)))
    split(P[0])
    best = [min((split(p) for _ in range(2)), key=lambda t: t[0]) for p in P]
    return 1e3 * np.mean(best, axis=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cvx_time_split", description=__doc__.split("\n\n")[0])
    # No choices=: with nargs="*" argparse checks the empty default against them too.
    parser.add_argument("families", nargs="*", metavar="family",
                        help=f"families to split (default: {', '.join(DEFAULT)})")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the table here (default: bench/results/cvx_time_split.md, and only for "
                             "the default families: a partial run would replace the whole table)")
    args = parser.parse_args(argv)
    names = args.families or list(DEFAULT)
    unknown = [n for n in names if n not in problems.FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(problems.FAMILIES)}")
    lines = ["# Where CVXPY's time goes", "", machine_sentence(machine_info()), "",
             "CVXPY's whole call (`fastpid.cvx.solve_cvx`, one problem a call, as the solver reports time "
             "it), split into CVXPY's compilation, Clarabel's solve and the rest (building the problem, "
             "reading the solution back); ms, mean over the family's problems of each one's faster of two "
             "calls. *Clarabel's share* scales a report's speed-up to one over Clarabel's solve alone.", "",
             "| family | problems | whole call (ms) | compilation | Clarabel's solve | the rest | Clarabel's share |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        whole, comp, solver = family_split(name)
        lines.append(f"| {name} | {problems.count(name, 8)} | {whole:.1f} | {comp:.1f} | {solver:.1f} | "
                     f"{whole - comp - solver:.1f} | {solver / whole:.2f} |")
        print(lines[-1], flush=True)
    # One family had replaced the committed table of eleven with its own row.
    path = args.out or (RESULTS_DIR / "cvx_time_split.md" if names == list(DEFAULT) else None)
    if path is None:
        print("not written: families were picked, and the report holds the default ones (--out PATH writes "
              "this table)")
        return 0
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
