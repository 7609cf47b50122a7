"""method="proxy" and method="fast": closed-form values and honest gaps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastpid

from helpers import random_joint
from test_solver import mi_numpy

SHAPES = [(2, 2, 2), (3, 5, 4), (7, 4, 6), (20, 20, 10)]


def _q0(P):
    p1y, p2y, py = P.sum(1), P.sum(0), P.sum((0, 1))
    return np.einsum("iy,jy,y->ijy", p1y, p2y, np.divide(1.0, py, out=np.zeros_like(py), where=py > 0))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_proxy_is_the_decomposition_of_q0(shape):
    P = random_joint(np.random.default_rng(sum(shape)), shape, alpha=0.5, sparsity=0.5)
    mi, mi1, mi2 = mi_numpy(P)
    v = min(mi_numpy(_q0(P))[0], mi, mi1 + mi2)  # the best closed-form feasible value
    res = fastpid.pid(P, method="proxy")
    assert float(res.synergy) == pytest.approx(mi - v, abs=1e-12)
    assert float(res.unique1) == pytest.approx(v - mi2, abs=1e-12)
    assert float(res.gap) == pytest.approx(v - max(mi1, mi2), abs=1e-12)
    assert int(res.iterations) == 0


@pytest.mark.parametrize("method", ["proxy", "fast"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gap_brackets_the_exact_value(method, shape):
    P = random_joint(np.random.default_rng(sum(shape) + 1), shape, alpha=0.5, sparsity=0.5)
    exact = fastpid.pid(P)
    res = fastpid.pid(P, method=method)
    for k in ("redundancy", "unique1", "unique2", "synergy"):
        assert abs(float(getattr(res, k)) - float(getattr(exact, k))) <= float(res.gap) + 2e-8


def test_fast_refines_the_proxy():
    P = random_joint(np.random.default_rng(0), (8, 8, 8), alpha=0.3)
    exact = float(fastpid.pid(P).synergy)
    gaps = [float(fastpid.pid(P, method="fast", steps=s).gap) for s in (1, 10, 100)]
    errors = [abs(float(fastpid.pid(P, method="fast", steps=s).synergy) - exact) for s in (1, 10, 100)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert errors[2] < errors[0]
    assert errors[0] <= float(fastpid.pid(P, method="proxy").gap)


def test_fast_batch_torch_float32():
    P = torch.tensor(np.stack([random_joint(np.random.default_rng(s), (5, 5, 3)) for s in range(4)]),
                     dtype=torch.float32)
    res = fastpid.pid(P, method="fast", steps=5)
    assert res.synergy.shape == (4,) and res.synergy.dtype == torch.float32
    assert bool((res.iterations == 5).all()) and torch.isfinite(res.gap).all()
    assert torch.equal(res.converged, res.gap <= 1e-5)  # converged: gap within tol, as for exact


def test_chunked_solve_and_progress_bar(monkeypatch, capsys):
    """Large batches are solved in chunks: same numbers, and a progress bar only on request
    (the default shows one only on a terminal, which pytest's captured stderr is not)."""
    P = np.stack([random_joint(np.random.default_rng(s), (3, 3, 3)) for s in range(5)])
    whole = fastpid.pid(P)
    monkeypatch.setattr("fastpid.api.CHUNK_FLOATS", 30)  # one problem per chunk
    chunked = fastpid.pid(P)
    np.testing.assert_allclose(chunked.synergy, whole.synergy, atol=0, rtol=0)
    assert "fastpid.pid" not in capsys.readouterr().err
    fastpid.pid(P, progress=True)
    assert "fastpid.pid (exact)" in capsys.readouterr().err


def test_a_bar_asked_for_moves_on_a_cpp_batch(monkeypatch):
    """A C++ batch in one chunk showed 0/B until it ended (six 64x64x32 problems: 0/6 for
    4 s, then 6/6); with progress=True the batch goes in about 20 steps, a thread's share at
    least."""
    import tqdm.auto

    steps = []
    real = tqdm.auto.tqdm

    class Counted(real):
        def update(self, n=1):
            steps.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Counted)
    P = np.stack([random_joint(np.random.default_rng(s), (4, 4, 4)) for s in range(60)])
    with fastpid._resources.threads(2):
        res = fastpid.pid(P, backend="cpp", return_coupling=True, progress=True)  # the chunked route
    assert res.backend == "cpp" and sum(steps) == 60 and len(steps) == 20
    steps.clear()
    fastpid.pid(P, backend="cpp", return_coupling=True)  # no bar: one chunk, as before
    assert steps == []
