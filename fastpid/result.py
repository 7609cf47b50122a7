"""The result type returned by :func:`fastpid.pid`."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Optional, Tuple

_INFO_FIELDS = ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2", "gap")


@dataclass(frozen=True)
class PIDResult:
    """Partial information decomposition of one joint or a batch of joints.

    Every information field has the batch shape ``(...)`` of the input (0-d for a
    single problem) and is a numpy ``float64`` array for numpy input, or a torch
    tensor on the input's device and dtype for torch input.

    Attributes:
        redundancy, unique1, unique2, synergy: the BROJA PID terms.
        mi, mi1, mi2: ``I(X1,X2;Y)``, ``I(X1;Y)``, ``I(X2;Y)`` (closed form).
        gap: certified bound on the error of every PID term (``upper - lower`` of the
            bracket on ``V = min_Q I_Q(Y; X1,X2)``; the terms use its midpoint for
            ``method="exact"``).
        converged: ``gap <= tol`` (``method="exact"``), always ``True`` for ``"proxy"``
            and ``"fast"`` (fixed work), the solver status for ``backend="cvx"``.
        iterations: solver iterations per problem (alternation steps + Newton steps).
        method, backend: what produced the result.
        base: ``None`` for nats, else the logarithm base of the units.
        status: per-problem solver status strings (``backend="cvx"`` only), else ``None``.
    """

    redundancy: Any
    unique1: Any
    unique2: Any
    synergy: Any
    mi: Any
    mi1: Any
    mi2: Any
    gap: Any
    converged: Any
    iterations: Any
    method: str
    backend: str
    base: Optional[float] = None
    status: Optional[Tuple[str, ...]] = None

    @property
    def units(self) -> str:
        if self.base is None or self.base == math.e:
            return "nats"
        return "bits" if self.base == 2 else f"log base {self.base:g}"

    def in_base(self, base: float) -> "PIDResult":
        """The same result in logarithm base ``base`` (``math.e`` for nats)."""
        current = math.e if self.base is None else self.base
        factor = math.log(current) / math.log(base)
        scaled = {k: getattr(self, k) * factor for k in _INFO_FIELDS}
        return replace(self, base=None if base == math.e else base, **scaled)

    def to_bits(self) -> "PIDResult":
        """The same result in bits (base 2)."""
        return self.in_base(2.0)

    def to_nats(self) -> "PIDResult":
        """The same result in nats."""
        return self.in_base(math.e)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __repr__(self) -> str:
        def show(v):
            try:
                import numpy as np

                arr = np.asarray(v.detach().cpu() if hasattr(v, "detach") else v)
                if arr.ndim == 0:
                    return f"{arr.item():.6g}" if arr.dtype.kind == "f" else repr(arr.item())
                return f"<{arr.dtype} array of shape {arr.shape}>"
            except Exception:  # pragma: no cover - repr must never fail
                return repr(v)

        body = ", ".join(f"{k}={show(getattr(self, k))}" for k in _INFO_FIELDS + ("converged",))
        return f"PIDResult({body}, units={self.units}, method={self.method!r}, backend={self.backend!r})"
