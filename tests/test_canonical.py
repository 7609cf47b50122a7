"""The 45 reference cases of tests/data/canonical_bivariate.json (certified values, nats).

The file is the project's reference set, made outside fastpid: each case's ``nats`` from a
certified primal-dual bracket, and ``cone_solvers_bits`` the mean of three exponential-cone
solvers (dit's cone method, BROJA_2PID, CVXPY + Clarabel) with their spread. They include
dit's example gates and seeded random problems; dit's own default solver is wrong on several
of them (e.g. negative redundancy), the certified values are not.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fastpid

CASES = json.loads((Path(__file__).parent / "data" / "canonical_bivariate.json").read_text())["cases"]
TERMS = ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2")


def test_all_cases_present():
    assert len(CASES) == 45


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_matches_certified_values(case, backend):
    P = np.asarray(case["pmf"], dtype=np.float64).reshape(case["shape"])
    res = fastpid.pid(P, backend=backend)
    assert bool(res.converged) and float(res.gap) <= 1e-8
    # Truth is known to within its own certificate; allow for both.
    allowed = 1e-8 + case["certified_gap_nats"]
    for term in TERMS:
        assert abs(float(getattr(res, term)) - case["nats"][term]) <= allowed, term
    R, U1, U2, S = (float(getattr(res, t)) for t in TERMS[:4])
    assert abs(R + U1 + U2 + S - float(res.mi)) <= 1e-10
    assert abs(R + U1 - float(res.mi1)) <= 1e-10
    assert abs(R + U2 - float(res.mi2)) <= 1e-10
    assert min(R, U1, U2, S) >= 0.0


#: The cone solvers' own error on these cases: their means lie within 2.0e-8 nats of the
#: certified values (random_dirichlet1_8x8x8_#9); a little over that, in bits.
CONE_ERROR_BITS = 4e-8


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_agrees_with_three_independent_cone_solvers(case):
    """The reference's second, independent value: the PID terms in bits within the gap, the
    solvers' spread and their own error."""
    P = np.asarray(case["pmf"], dtype=np.float64).reshape(case["shape"])
    res = fastpid.pid(P, base=2)
    cone = case["cone_solvers_bits"]
    for term in TERMS[:4]:
        assert abs(float(getattr(res, term)) - cone[term]) <= float(res.gap) + cone["spread"] + CONE_ERROR_BITS, term


def test_whole_reference_set_as_one_batch():
    """Problems of one shape solved together agree with the certified values too."""
    by_shape = {}
    for case in CASES:
        by_shape.setdefault(tuple(case["shape"]), []).append(case)
    shape, group = max(by_shape.items(), key=lambda kv: len(kv[1]))
    P = np.stack([np.reshape(c["pmf"], shape) for c in group])
    res = fastpid.pid(P)
    truth = np.array([c["nats"]["synergy"] for c in group])
    assert np.all(res.gap <= 1e-8)
    assert np.max(np.abs(res.synergy - truth)) <= 1e-8 + max(c["certified_gap_nats"] for c in group)
