"""Values of X1, X2 or Y that no problem of a batch gives mass (codes never seen, labels
0, 1000, ..., 9000): pid() leaves them out of the solve, and the C++ solver refuses shapes
its 32-bit indices do not reach instead of wrapping around."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastpid
from fastpid import cpp

needs_cpp = pytest.mark.skipif(not cpp.available()[0], reason="C++ extension not built")


def _scattered(rng, small, big):
    """A batch of joints ``small`` (B, m1, m2, my) placed at random values of a larger
    alphabet ``big`` (n1, n2, ny); the other values have no mass. Returns the large batch."""
    B = small.shape[0]
    where = [np.sort(rng.choice(n, m, replace=False)) for n, m in zip(big, small.shape[1:])]
    P = np.zeros((B, *big))
    P[:, where[0][:, None, None], where[1][None, :, None], where[2][None, None, :]] = small
    return P, where


@pytest.mark.parametrize("method,backend", [("exact", "auto"), ("exact", "cpp"), ("exact", "torch"),
                                            ("fast", "torch"), ("fast", "cpp")])
def test_values_without_mass_change_nothing(method, backend):
    """The PID, gap, convergence and iterations of a batch embedded in a larger alphabet are
    those of the batch itself; a value with mass in one problem only is kept for all."""
    if backend == "cpp" and not cpp.available()[0]:
        pytest.skip("C++ extension not built")
    rng = np.random.default_rng(5)
    small = rng.dirichlet(np.ones(3 * 2 * 4) * 0.7, size=4).reshape(4, 3, 2, 4)
    small[0, 2] = 0.0                      # x1 = 2 has mass in the other problems only
    small[0] /= small[0].sum()
    P, _ = _scattered(rng, small, (7, 5, 9))
    got = fastpid.pid(P, method=method, backend=backend, tol=1e-10)
    ref = fastpid.pid(small, method=method, backend=backend, tol=1e-10)
    for name in ("redundancy", "unique1", "unique2", "synergy", "mi", "gap"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=0, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(got.converged, ref.converged)
    np.testing.assert_array_equal(got.iterations, ref.iterations)


def test_gradient_and_coupling_keep_the_full_shape():
    """With gradients and the coupling: the gradient is the batch's own at its values and 0
    at the empty ones (the zero-mass convention); the coupling is the batch's, with zeros at
    the empty values, and has the marginals of P."""
    rng = np.random.default_rng(6)
    small = rng.dirichlet(np.ones(2 * 3 * 3), size=2).reshape(2, 2, 3, 3)
    P, where = _scattered(rng, small, (4, 6, 5))
    big = torch.tensor(P, requires_grad=True)
    little = torch.tensor(small, requires_grad=True)
    got = fastpid.pid(big, tol=1e-11, return_coupling=True)
    ref = fastpid.pid(little, tol=1e-11, return_coupling=True)
    got.synergy.sum().backward()
    ref.synergy.sum().backward()
    index = np.ix_(range(2), where[0], where[1], where[2])
    np.testing.assert_allclose(big.grad.numpy()[index], little.grad.numpy(), rtol=1e-9, atol=1e-12)
    mask = np.zeros(P.shape, dtype=bool)
    mask[index] = True
    assert np.all(big.grad.numpy()[~mask] == 0.0)
    Q = got.coupling.detach().numpy()
    np.testing.assert_allclose(Q[index], ref.coupling.detach().numpy(), rtol=0, atol=1e-15)
    assert np.all(Q[~mask] == 0.0)
    np.testing.assert_allclose(Q.sum(2), P.sum(2), atol=1e-12)   # (x1, y) marginals
    np.testing.assert_allclose(Q.sum(1), P.sum(1), atol=1e-12)   # (x2, y) marginals


@needs_cpp
def test_samples_with_large_codes_are_solved_over_the_codes_seen():
    """XOR samples coded 0/1000, 0/21 and labels 0/2000 (a 1001 x 22 x 2001 joint of 8 occupied
    cells): the synergy of the samples coded 0/1 (log 2 nats up to sampling), in a fraction of
    a second (the C++ solver's workspace count wrapped around there and the process crashed)."""
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    y = a ^ b
    ref = fastpid.pid_from_samples(a, b, y)
    for kwargs in ({}, {"backend": "cpp"}):
        got = fastpid.pid_from_samples(a * 1000, b * 21, y * 2000, **kwargs)
        np.testing.assert_allclose(got.synergy, ref.synergy, rtol=0, atol=1e-12)
        assert got.converged
    # With gradients too: joint() of soft rows would be dense; hard codes keep it sparse.
    P = torch.tensor(fastpid.joint(a * 1000, b * 21, y * 2000), requires_grad=True)
    res = fastpid.pid(P)
    res.synergy.backward()
    assert torch.isfinite(P.grad).all() and float(res.synergy) == pytest.approx(float(ref.synergy), abs=1e-9)


@needs_cpp
def test_shapes_past_the_solvers_32_bit_indices_are_refused():
    """The workspace of 2001 x 22 x 2001 problems holds H with 2001^3 = 8e9 entries: its count
    wrapped around (1.5e9 doubles, less than for 2001 x 22 x 1001) and the solve crashed. Such
    shapes are refused up front, saying why; those below the limit are counted in 64 bits."""
    from fastpid import _C

    with pytest.raises(ValueError, match=r"2001x22x2001 are too large for the C\+\+ solver.*32-bit"):
        _C.workspace_doubles(2001, 22, 2001, False, True)
    with pytest.raises(ValueError, match="32-bit"):
        _C.workspace_doubles(1300, 1, 1300, False, True)
    # Below the limit: at least H's n1 ny ny entries, growing with ny.
    small, large = (_C.workspace_doubles(1000, 22, ny, False, True) for ny in (500, 1000))
    assert small >= 1000 * 500 * 500 and large >= 1000 * 1000 * 1000 and large > small
    # pid() with the C++ solver asked for: the same error before anything is allocated (a
    # 1300 x 1 x 1300 joint has every value; its Schur blocks would have 2.2e9 entries).
    P = np.full((1300, 1, 1300), 1.0 / 1300 ** 2)
    with pytest.raises(ValueError, match="32-bit"):
        fastpid.pid(P, backend="cpp")


@needs_cpp
def test_auto_and_the_retry_the_other_way_round_skip_what_the_solver_cannot_index():
    """backend="auto" weighs a shape the C++ solver cannot index as not fitting it (the
    choice raised the solver's ValueError for a sparse 700x700x67 plan, which PyTorch
    solves); unconverged problems are tried the other way round only where that orientation
    is indexable (10x700x67 is not: the retry raised and the call lost its results)."""
    from fastpid import api, solver

    plan = solver.plan_for_counts(700, 700, 67, 1400, 1400)
    assert cpp.system_size(700, 700, 67, plan.structure, plan.schur_free) <= cpp.auto_max(plan.structure)
    assert not api.cpp_suits(700, 700, 67, plan)
    P = np.random.default_rng(0).random((2, 700, 10, 67)) ** 8
    for kwargs in ({}, {"backend": "cpp", "return_coupling": True}):
        with pytest.warns(fastpid.ConvergenceWarning, match="2 of 2 problem"):
            res = fastpid.pid(P, max_iter=1, **kwargs)
        assert not np.any(res.converged) and np.all(np.isfinite(res.synergy))
