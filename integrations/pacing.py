"""Pacing functions and phase schedules for curricula.

A pacing function maps progress ``t`` out of ``T`` to the fraction of the (ranked) training
set that is admitted. :class:`RootCompetence` is the square-root competence function of
Platanios et al. (2019), ``c(t) = min(1, sqrt(t (1 - c0²) / T + c0²))``: it starts at
``c0`` and admits new samples quickly at first, slowly later (each new sample gets a
roughly equal share of the remaining training time). Any callable ``(t, T) -> fraction``
can stand in for it.

:class:`PhaseSchedule` cuts ``epochs`` into consecutive phases by fractions of the epochs.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass

from fastpid._validate import _as_real_scalar, check_integer, check_real

__all__ = ["RootCompetence", "PhaseSchedule", "PhasePosition"]


def real_sequence(values, name: str) -> tuple:
    """``values`` (a list, tuple, array or other iterable of real numbers) as a tuple of floats;
    a ``TypeError`` naming ``name`` for a string or non-iterable, and for an entry that is not a
    real number (``float()`` had parsed ``"1"`` and taken ``True``)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__} ({values!r})")
    return tuple(_as_real_scalar(v, f"{name}[{i}]") for i, v in enumerate(values))


class RootCompetence:
    """``c(t) = min(1, sqrt(t (1 - c0²) / T + c0²))``, the admitted fraction at progress
    ``t`` of ``T`` (``0 <= t``, ``T > 0``; any unit, e.g. epochs)."""

    def __init__(self, c0: float = 0.2):
        self.c0 = check_real(c0, "c0 (the initial competence)", 0, 1, lo_open=True)

    def __call__(self, t: float, T: float) -> float:
        t_, T_ = _as_real_scalar(t, "t"), _as_real_scalar(T, "T")
        if not (0 <= t_ < math.inf and 0 < T_ < math.inf):  # t = NaN had given 1: every sample admitted
            raise ValueError(f"pacing needs finite t >= 0 and T > 0, got t={t!r}, T={T!r}")
        return min(1.0, math.sqrt(t_ * (1.0 - self.c0 ** 2) / T_ + self.c0 ** 2))

    def __repr__(self) -> str:
        return f"RootCompetence(c0={self.c0})"


@dataclass(frozen=True)
class PhasePosition:
    """Where an epoch lies in a :class:`PhaseSchedule`: phase ``index``, ``step`` (epochs
    since the phase began) and ``length`` (epochs in the phase)."""

    index: int
    step: int
    length: int


class PhaseSchedule:
    """Consecutive phases covering ``epochs`` epochs, phase ``i`` lasting about
    ``fractions[i] * epochs``.

    Boundaries are ``round(cumsum(fractions) * epochs)``, so lengths add up to ``epochs``
    exactly; a phase whose share rounds to zero epochs is skipped. ``fractions`` must be
    non-negative and sum to 1.
    """

    def __init__(self, epochs: int, fractions=(0.3, 0.3, 0.4)):
        epochs = check_integer(epochs, "epochs", 1, expected="a positive integer")
        fractions = real_sequence(fractions, "fractions")
        if not fractions or any(f < 0 or not math.isfinite(f) for f in fractions) \
                or abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(f"phase fractions must be non-negative and sum to 1, got {fractions}")
        self.epochs = epochs
        self.fractions = fractions
        acc, ends = 0.0, []
        for f in fractions:
            acc += f
            ends.append(int(round(acc * epochs)))
        ends[-1] = epochs
        self.ends = tuple(ends)

    def position(self, epoch: int) -> PhasePosition:
        """The phase of ``epoch`` (0-based; epochs past the end stay in the last phase)."""
        try:
            index = operator.index(epoch)  # also numpy integers and 0-d integer tensors
        except TypeError:
            index = -1
        if isinstance(epoch, bool) or index < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        epoch = index
        start = 0
        for i, end in enumerate(self.ends[:-1]):
            if epoch < end:
                return PhasePosition(index=i, step=epoch - start, length=end - start)
            start = end
        # Epochs past the end stay in the last phase that has epochs (a last phase of share 0
        # has none: it came back at c0 after the schedule).
        last = max(i for i in range(len(self.ends)) if self.ends[i] > (self.ends[i - 1] if i else 0))
        start = self.ends[last - 1] if last else 0
        return PhasePosition(index=last, step=epoch - start, length=self.ends[last] - start)
