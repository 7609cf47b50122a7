"""Warnings that fastpid issues (filter them with :mod:`warnings` like any other)."""


class ConvergenceWarning(UserWarning):
    """An exact solve by fastpid's own solvers stopped before its certified gap reached ``tol``
    (``max_iter`` ran out, the solve was interrupted, or ``tol`` is below what float64 can
    certify), or a bracket came out broken. ``backend="cvx"`` does not warn of a gap above
    ``tol``: Clarabel runs at its own settings, and its ``converged`` and ``status`` say how it
    ended.

    The result is still honest: ``gap`` bounds the error of every term, and ``converged``
    is ``False`` for the problems concerned.
    """
