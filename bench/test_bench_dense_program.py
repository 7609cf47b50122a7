"""fastpid against the dense CVXPY program, and the main CVXPY peer, in one run.

Run with ``python -m pytest bench/test_bench_dense_program.py -q --bench-threads 1
--bench-name solver_dense_program`` (the options of ``bench/conftest.py``).
The main suite's CVXPY peer (``fastpid.cvx``) writes the BROJA program over the admissible
entries of Q only. It is often written over all n1*n2*ny entries instead
(``bench.peers.cvxpy_dense``); on sparse joints that program is much larger, and this suite
measures what it costs: on the main suite's families (two problems of the ``scale`` ones), the
rows ``fastpid exact (cpp), 1/call`` (the automatic backend on the ``scale`` families),
``CVXPY+Clarabel`` (the main peer) and ``CVXPY dense program``, one problem per call, CVXPY
best of two rounds (one on the ``scale`` families), errors against
``fastpid.pid(P, tol=1e-10)``. The table gives each row's speed-up over both programs.
"""

from __future__ import annotations

import pytest

from bench import problems
from bench.test_bench_solver import FAMILIES, cvxpy_row, exact_loop_row


@pytest.mark.parametrize("family", FAMILIES)
def test_exact_one_per_call(benchmark, family, bench_settings, record, reference):
    backend = "auto" if problems.is_scale(family) else "cpp"
    exact_loop_row(benchmark, family, backend, bench_settings, record, reference)


@pytest.mark.parametrize("dense", [False, True], ids=["admissible", "dense"])
@pytest.mark.parametrize("family", FAMILIES)
def test_cvxpy(benchmark, family, dense, bench_settings, record, reference, cvx_warm):
    cvxpy_row(benchmark, family, bench_settings, record, reference, dense=dense)
