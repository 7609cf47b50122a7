"""The result type returned by :func:`fastpid.pid`."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Optional, Tuple

_INFO_FIELDS = ("redundancy", "unique1", "unique2", "synergy", "mi", "mi1", "mi2", "gap")


@dataclass(frozen=True, eq=False)  # identity: == of array fields has no single truth value
class PIDResult:
    """Partial information decomposition of one joint or a batch of joints.

    Every information field has the batch shape ``(...)`` of the input (0-d for a
    single problem) and is a numpy ``float64`` array for numpy input, or a torch
    tensor on the input's device for torch input (float32 for float32, float16 and
    bfloat16 input, else float64).

    Attributes:
        redundancy, unique1, unique2, synergy: the BROJA PID terms.
        mi, mi1, mi2: ``I(X1,X2;Y)``, ``I(X1;Y)``, ``I(X2;Y)`` (closed form).
        gap: certified bound on the error of every PID term: ``upper - lower`` of the
            bracket on ``V = min_Q I_Q(Y; X1,X2)`` (the terms use its midpoint for
            ``method="exact"``) plus the terms' rounding (``32 eps (1 + log cells)``, and
            float32 results' ``2^-23 I(X1,X2;Y)``).
        converged: ``gap <= tol``, for every method (and CVXPY's status ``"optimal"``
            for ``backend="cvx"``).
        iterations: solver iterations per problem (alternation steps + Newton steps; 0 for
            ``"proxy"``, which has none, and for ``backend="cvx"``, whose Clarabel iterations
            are not read back).
        method, backend: what produced the result.
        base: ``None`` for nats, else the logarithm base of the units.
        status: per-problem solver status strings (``backend="cvx"`` only), else ``None``.
        coupling: with ``pid(..., return_coupling=True)``, the feasible couplings
            ``Q[..., n1, n2, ny]`` behind the upper bounds, else ``None``.

    A batch result is indexed like its arrays (``res[0]``, ``res[2:5]``, ``res[mask]``),
    ``len(res)`` is the size of its first batch axis (``res.shape`` the batch shape), and
    ``.item()``, ``.numpy()``, ``.cpu()`` and ``.detach()`` convert every array field at
    once; ``.to_bits()``, ``.to_nats()`` and ``.in_base(b)`` change the units and
    ``.as_dict()`` gives the fields by name. A result is always true, whatever
    its batch shape (``cached or fastpid.pid(P)``). It pickles, and ``torch.load``'s
    default (``weights_only=True``) reads the result of torch input back (a result of numpy
    input holds numpy arrays, which that loader refuses unless numpy's functions are
    allowed: ``torch.serialization.safe_globals``).
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
    coupling: Any = None

    def _arrays(self) -> dict:
        """The per-problem array fields (information terms, converged, iterations, coupling)."""
        names = _INFO_FIELDS + ("converged", "iterations") + (("coupling",) if self.coupling is not None else ())
        return {k: getattr(self, k) for k in names}

    def _map(self, fn) -> "PIDResult":
        return replace(self, **{k: fn(v) for k, v in self._arrays().items()})

    @property
    def shape(self) -> tuple:
        """The batch shape (``()`` for a single problem)."""
        return tuple(self.gap.shape)

    def __bool__(self) -> bool:
        """Always ``True``: a result is a value, not a container (``len`` has no meaning for a
        single problem, and a batch's truth should not depend on its size)."""
        return True

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a single-problem PIDResult (it has batch shape ())")
        return self.shape[0]

    def __iter__(self):
        """The results of the problems along the first batch axis (defined so that iterating
        a single problem's result is a ``TypeError``, as ``len`` is, not an empty loop)."""
        if not self.shape:
            raise TypeError("iteration over a single-problem PIDResult (it has batch shape ())")
        return (self[i] for i in range(self.shape[0]))

    def __getitem__(self, index) -> "PIDResult":
        """The results of ``problems[index]``, indexed like the batch arrays."""
        if not self.shape:
            raise IndexError("a single-problem PIDResult (batch shape ()) cannot be indexed")
        if self.status is None:
            status = None
        else:
            import numpy as np

            # As the arrays take the index: a torch result reads a numpy uint8 array as a mask
            # (_index_for), so its status must too (it had picked positions 1, 0, 1 of [1, 0, 1]).
            torch_backed = hasattr(self.redundancy, "detach")
            picked = np.asarray(self.status, dtype=object).reshape(self.shape)[
                _as_numpy_index(_uint8_as_bool(index) if torch_backed else index)]
            status = tuple(np.asarray(picked, dtype=object).ravel().tolist())
        # coupling has three axes more than the batch: an Ellipsis must expand over the batch
        # axes only (res[..., 1] picks a problem, not a target value).
        idx = index if isinstance(index, tuple) else (index,)
        with_cells = idx + (slice(None),) * 3 if any(i is Ellipsis for i in idx) else index
        # A numpy field takes the index as numpy would (it read a one-element torch mask
        # through __index__: [False] picked problem 0).
        arrays = {k: _keep_array(v[_index_for(v, with_cells if k == "coupling" else index)])
                  for k, v in self._arrays().items()}
        return replace(self, status=status, **arrays)

    def item(self) -> dict:
        """The terms of a single problem as Python numbers: ``{"redundancy": 0.1, ...}``."""
        if any(n != 1 for n in self.shape):
            raise ValueError(f"item() needs a single problem; this result has batch shape {self.shape}")
        return {k: v.item() if hasattr(v, "item") else v
                for k, v in self._arrays().items() if k != "coupling"}

    def numpy(self) -> "PIDResult":
        """The same result with numpy arrays (gradients detached)."""
        import numpy as np

        return self._map(lambda v: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))

    def cpu(self) -> "PIDResult":
        """The same result with its tensors on the CPU (numpy fields unchanged)."""
        return self._map(lambda v: v.cpu() if hasattr(v, "cpu") else v)

    def detach(self) -> "PIDResult":
        """The same result with its tensors detached from the autograd graph (numpy fields
        unchanged): what ``copy.deepcopy`` and multiprocessing queues need of a result of
        inputs that require grad."""
        return self._map(lambda v: v.detach() if hasattr(v, "detach") else v)

    @property
    def units(self) -> str:
        """The units of the information fields: ``"nats"``, ``"bits"`` or ``"log base b"``."""
        if self.base is None or self.base == math.e:
            return "nats"
        return "bits" if self.base == 2 else f"log base {self.base:g}"

    def in_base(self, base: float) -> "PIDResult":
        """The same result in logarithm base ``base`` (> 1; ``math.e`` for nats)."""
        from ._validate import check_base

        base = check_base(base)  # None for nats
        current = math.e if self.base is None else self.base
        factor = math.log(current) / math.log(math.e if base is None else base)
        scaled = {k: _keep_array(getattr(self, k) * factor) for k in _INFO_FIELDS if k != "gap"}
        return replace(self, base=base, gap=_scaled_up(self.gap, factor), **scaled)

    def to_bits(self) -> "PIDResult":
        """The same result in bits (base 2)."""
        return self.in_base(2.0)

    def to_nats(self) -> "PIDResult":
        """The same result in nats."""
        return self.in_base(math.e)

    def as_dict(self) -> dict:
        """Every field by name (arrays as they are, not copied), e.g. for logging."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __repr__(self) -> str:
        def show(v):
            try:
                import numpy as np

                arr = np.asarray(v.detach().cpu() if hasattr(v, "detach") else v)
                if arr.ndim == 0:
                    return f"{arr.item():.6g}" if arr.dtype.kind == "f" else repr(arr.item())
                if arr.size <= _SHOWN:  # a small batch shows its values, as numpy and torch do
                    shown = {"float_kind": lambda x: f"{x:.6g}", "bool": str}
                    return np.array2string(arr, separator=", ", max_line_width=10**6,
                                           formatter=shown).replace("\n", "")
                return f"<{arr.dtype} array of shape {arr.shape}>"
            except Exception:  # pragma: no cover - repr must never fail
                return repr(v)

        body = ", ".join(f"{k}={show(getattr(self, k))}" for k in _INFO_FIELDS + ("converged",))
        if self.shape:
            body = f"batch shape {self.shape}: {body}"
        return f"PIDResult({body}, units={self.units}, method={self.method!r}, backend={self.backend!r})"


#: The most problems whose values a result's repr shows.
_SHOWN = 6


def _scaled_up(gap, factor: float):
    """``gap * factor`` rounded up where the gap is narrower than float64 (a tensor, or a
    numpy array from ``.numpy()``): rounded to nearest, the converted bound fell one ulp
    below pid(..., base=...)'s on about a fifth of random 3x3x3 float32 joints (410 and 457
    of 2,000 in two draws). float64 gaps are scaled as the terms are."""
    import numpy as np
    import torch

    if isinstance(gap, torch.Tensor):
        if gap.dtype == torch.float64:
            return gap * factor
        wide = gap.double() * factor
        out = wide.to(gap.dtype)
        return torch.where(out.double() < wide, torch.nextafter(out, torch.full_like(out, math.inf)), out)
    gap = np.asarray(gap)
    if gap.dtype == np.float64:
        return _keep_array(gap * factor)
    wide = gap.astype(np.float64) * factor
    out = wide.astype(gap.dtype)
    return _keep_array(np.where(out < wide, np.nextafter(out, np.inf), out))


def _index_for(array, index):
    """``index`` as ``array`` takes it: numpy indexes converted from torch, torch's as they are
    but uint8 masks, which torch still takes as masks but warns are deprecated, as bool."""
    return _uint8_as_bool(index) if hasattr(array, "detach") else _as_numpy_index(index)


def _uint8_as_bool(index):
    """``index`` with its uint8 tensors and arrays (torch's old form of a mask, numpy's too
    where they index a tensor) as bool masks."""
    if hasattr(index, "detach") and str(index.dtype) == "torch.uint8":
        return index.bool()
    if getattr(index, "dtype", None) == "uint8" and hasattr(index, "astype"):  # numpy
        return index.astype(bool)
    if isinstance(index, tuple):
        return tuple(_uint8_as_bool(i) for i in index)
    return index


def _as_numpy_index(index):
    """A torch index (tensor, or a tuple holding tensors) as numpy can apply it: torch takes a
    uint8 tensor as a mask, numpy a uint8 array as positions."""
    if hasattr(index, "detach"):
        picked = index.detach().cpu().numpy()
        return picked.astype(bool) if picked.dtype == "uint8" else picked
    if isinstance(index, tuple):
        return tuple(_as_numpy_index(i) for i in index)
    return index


def _keep_array(picked):
    """numpy indexing down to one entry, or arithmetic on a 0-d array, gives a scalar
    (np.float64); a single problem's fields are 0-d arrays, as :func:`fastpid.pid` of one
    problem gives them (torch keeps tensors)."""
    import numpy as np

    return np.asarray(picked) if isinstance(picked, np.generic) else picked
