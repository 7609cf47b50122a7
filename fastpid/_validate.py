"""Input validation shared by :func:`fastpid.pid` and :func:`fastpid.joint`.

Every public entry point funnels its arguments through the functions here so
that bad input is rejected in one place, with one style of message: what was
wrong, where (the batch index of the first offending problem, or the first
offending sample), and what was expected.

The checks are cheap: a couple of vectorised reductions per array and a single
host synchronisation to decide whether anything is wrong.  Only when an error
is actually raised is the offending (small) slice inspected element by element.
Tensors stay on their device and keep their autograd graph.
"""

from __future__ import annotations

import collections.abc
import math
import numbers
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "check_distribution",
    "check_tol",
    "check_choice",
    "check_positive_int",
    "check_base",
    "check_flag",
    "check_codes",
    "check_rows",
    "check_weights",
    "as_tensor",
    "ROW_SUM_RTOL",
]

#: Relative tolerance on the row sums of soft probability rows (see :func:`check_rows`).
ROW_SUM_RTOL = 1e-4

_HALF_DTYPES = (torch.float16, torch.bfloat16)
# Listed: torch.iinfo accepts quantized dtypes too (only reading its fields raises).
_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64,
               torch.uint8, torch.uint16, torch.uint32, torch.uint64)


# --------------------------------------------------------------------------- #
# Generic conversion
# --------------------------------------------------------------------------- #
def refuse_masked(x, name: str, leaves: list | None = None) -> None:
    """A ``TypeError`` where ``x`` is a numpy masked array with masked entries, or a list or
    tuple holding one (``np.asarray`` and ``torch.from_numpy`` read through the mask);
    ``leaves``: :func:`_array_leaves` of ``x`` where already found."""
    masked = sum(int(np.ma.count_masked(a)) for a in (_array_leaves(x) if leaves is None else leaves)
                 if isinstance(a, np.ma.MaskedArray))
    if masked:
        what = "a numpy masked array" if isinstance(x, np.ndarray) else "a list holding numpy masked arrays"
        raise TypeError(
            f"{name} is {what} with {masked} masked entries; fastpid reads every entry (its mask "
            f"would be ignored): drop the masked samples from every input first, or give them weight 0"
        )


_ARRAYS = (np.ndarray, torch.Tensor)


def _array_leaves(x, top: bool = True) -> list:
    """The arrays and tensors ``x`` is, or holds in its lists and tuples: every entry of ``x``
    itself is looked at (one isinstance each), below it only lists whose chain of first
    entries ends in an array (a nested list of numbers is not walked number by number: that
    had tripled the time of a million codes, and recursed past Python's limit 3000 deep)."""
    if isinstance(x, _ARRAYS):
        return [x]
    if not isinstance(x, (list, tuple)):
        return []
    if top:
        # The entries' types first (map(type) runs in C; a million ints: 20 ms, not 300).
        if not any(issubclass(t, (list, tuple, *_ARRAYS)) for t in set(map(type, x))):
            return []
        inner = [v for v in x if isinstance(v, (list, tuple, *_ARRAYS))]
    else:
        first, depth = x, 0
        while isinstance(first, (list, tuple)) and first and depth <= 64:  # numpy's 64 dimensions
            first, depth = first[0], depth + 1
        inner = x if isinstance(first, _ARRAYS) else []
    return [a for v in inner for a in _array_leaves(v, top=False)]


def _numpy_from_any(x, name: str) -> np.ndarray:
    """Convert a non-tensor input (numpy array, nested list, scalar, ...) to numpy.

    Raises TypeError for string / object / complex / datetime data and for
    ragged nested lists.
    """
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(
            f"{name} must be numeric (a numpy array, torch tensor or nested list of "
            f"numbers), got {'None' if x is None else f'a {type(x).__name__}: {x!r}'}"
        )
    leaves = _array_leaves(x)
    refuse_masked(x, name, leaves)
    if isinstance(x, collections.abc.Iterator):
        raise TypeError(
            f"{name} is an iterator ({type(x).__name__}); pass a list, numpy array or torch "
            f"tensor (e.g. list({name}))"
        )
    if isinstance(x, np.ndarray):
        arr = np.asarray(x)  # a masked array without masked entries: its data
    else:
        if any(isinstance(v, torch.Tensor) and (v.requires_grad or v.device.type != "cpu") for v in leaves):
            # numpy cannot read them (numpy's own RuntimeError), and a list is read as numpy
            # data, which would keep neither their gradient nor their device.
            raise TypeError(f"{name} is a list of torch tensors that require grad or live off the CPU; stack "
                            f"them into one tensor first (torch.stack({name}))")
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged nested lists, odd objects
            raise TypeError(
                f"{name} could not be read as a rectangular numeric array "
                f"(got {type(x).__name__}; nested lists must all have the same "
                f"length at each level): {exc}"
            ) from None
    if arr.dtype.kind == "O" and not isinstance(x, np.ndarray) and arr.size \
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in arr.flat):
        # Python integers past int64 (counts) make numpy's array one of objects.
        try:
            arr = arr.astype(np.float64)
        except OverflowError:
            raise ValueError(f"{name} holds an integer beyond the float64 range; rescale it") from None
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(
            f"{name} has complex dtype {arr.dtype}; expected real (integer or "
            f"floating point) entries"
        )
    if kind not in "biuf":
        what = {
            "O": "object",
            "U": "string",
            "S": "bytes",
            "V": "structured/void",
            "M": "datetime",
            "m": "timedelta",
        }.get(kind, str(arr.dtype))
        if kind in "US" or (kind == "O" and any(isinstance(v, (str, bytes)) for v in arr.flat)):
            hint = "; labels must be integer codes first, e.g. np.unique(x, return_inverse=True)[1]"
        else:
            hint = "; convert it first, e.g. with .astype(float)" if kind == "O" else ""
        raise TypeError(
            f"{name} has non-numeric dtype {arr.dtype} ({what}); expected real "
            f"(integer or floating point) entries{hint}"
        )
    return arr


def as_tensor(x, name: str, *, device=None) -> Tuple[torch.Tensor, bool]:
    """Return ``(tensor, is_torch)`` for a numpy array, torch tensor or nested list.

    Torch tensors are returned as they are (dense layout); everything else is
    converted through numpy without changing its dtype (float64 stays float64,
    int stays int, bool stays bool) and placed on ``device`` if given.
    Complex and non-numeric dtypes raise :class:`TypeError`.
    """
    if isinstance(x, torch.Tensor):
        if x.is_nested:
            raise TypeError(f"{name} is a nested tensor; expected a regular (strided) tensor "
                            "with one row per problem or sample (pad or stack the pieces)")
        if x.device.type == "meta":
            raise TypeError(f"{name} is a meta tensor (shape only, no data); pass a tensor "
                            "with values, on the CPU or a GPU")
        if x.layout != torch.strided:
            x = x.to_dense()
        if x.is_complex():
            raise TypeError(
                f"{name} has complex dtype {x.dtype}; expected real (integer or "
                f"floating point) entries"
            )
        if x.dtype.is_floating_point or x.dtype == torch.bool:
            return x, True
        if x.dtype not in _INT_DTYPES:  # quantized (torch.quint8, ...) and bit dtypes
            raise TypeError(
                f"{name} has unsupported dtype {x.dtype}; expected real (integer or "
                f"floating point) entries"
                + ("; convert it first, e.g. with .dequantize()" if x.is_quantized else "")
            )
        if x.dtype in (torch.uint16, torch.uint32, torch.uint64):
            # Few torch ops support these: go through numpy (int64, or float64 when a
            # uint64 value does not fit int64) and back to the same device.
            arr = _wide_unsigned(x.detach().cpu().numpy())
            return torch.from_numpy(arr).to(x.device), True
        return x, True
    arr = _numpy_from_any(x, name)
    if arr.dtype.kind == "f" and arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)  # float16 / longdouble -> float64
    if arr.dtype.kind == "u" and arr.dtype.itemsize > 1:
        arr = _wide_unsigned(arr)  # torch has limited unsigned support
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    # numpy calls a reversed axis of length 1 C-contiguous, and torch refuses its negative
    # stride ("negative strides are not currently supported"): copied too.
    if not (arr.flags.writeable and arr.flags.c_contiguous) or any(st < 0 for st in arr.strides):
        arr = np.array(arr, copy=True, order="C")
    t = torch.from_numpy(arr)
    if device is not None:
        t = t.to(device)
    return t, False


def _wide_unsigned(arr: np.ndarray) -> np.ndarray:
    """uint16/32/64 as int64, or as float64 where a uint64 value is at least 2^63 (int64
    would wrap it to a negative number)."""
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) >= 2**63:
        return arr.astype(np.float64)
    return arr.astype(np.int64)


def _fmt_index(idx: Sequence[int]) -> str:
    return "" if len(idx) == 0 else "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _fmt_cell(cell: Sequence[int]) -> str:
    return ", ".join(f"{n}={int(i)}" for n, i in zip(("x1", "x2", "y"), cell))


def _first_true(mask) -> Tuple[Tuple[int, ...], int]:
    """Index (tuple) of the first True entry of ``mask`` (a tensor or numpy array) in C order
    and the count of Trues."""
    nz = mask.nonzero() if isinstance(mask, torch.Tensor) else np.argwhere(mask)
    return tuple(int(v) for v in nz[0].tolist()), int(nz.shape[0])


def _more(count: int, noun: str) -> str:
    if count <= 1:
        return ""
    return f" ({count - 1} more {noun}{'s' if count > 2 else ''} also affected)"


# --------------------------------------------------------------------------- #
# Joint distributions
# --------------------------------------------------------------------------- #
def check_distribution(P, *, name: str = "P", float64: bool = False) -> Tuple[torch.Tensor, bool]:
    """Validate and normalise a (batch of) joint distribution(s).

    Parameters
    ----------
    P : numpy.ndarray, torch.Tensor or nested list, shape ``(..., n1, n2, ny)``
        Probabilities or non-negative counts ``P[..., x1, x2, y]``; the last
        axis is the target.  Every problem (every index of the leading batch
        axes) is normalised on its own.
    name : str
        Name used in error messages.
    float64 : bool
        Return float64 whatever the input dtype, normalised in float64 (the solvers'
        certificate is about the float64 values of the input; a float32 total would leave
        problems summing to 1 only up to float32 rounding). :func:`result_dtype` gives the
        dtype results are reported in.

    Returns
    -------
    T : torch.Tensor, shape ``(..., n1, n2, ny)``
        Each problem sums to 1.  dtype: float64 for numpy / list / integer /
        bool input (numpy long double scaled per problem into float64's range
        first); torch float32 and float64 are kept; torch float16 and
        bfloat16 become float32.  Same device as a tensor input.  The division
        by the total mass is differentiable, so an autograd graph attached to a
        floating-point torch input is preserved.
    is_numpy : bool
        ``True`` when the input was not a torch tensor (the caller should then
        return numpy float64 results).

    Raises
    ------
    TypeError
        complex, string, object or other non-numeric data.
    ValueError
        fewer than 3 dimensions, a size-0 axis among the last three (a batch axis
        of size 0 is a batch of no problems, returned as it is), a NaN or infinite entry, a
        negative entry, or a problem with zero total mass; the message names the
        batch index of the first offending problem and the offending cell.
    """
    if wider_than_float64(P) and P.ndim >= 3 and P.size:
        scaled, bad = float64_problems(P)
        if bad.any():
            _raise_distribution_error(P, bad, name)
        P = scaled
    T, is_torch = as_tensor(P, name)
    if T.dtype == torch.float64 or T.dtype == torch.float32:
        if not is_torch:
            T = T.to(torch.float64)
    elif T.dtype in _HALF_DTYPES:
        T = T.to(torch.float32)
    else:  # integer / bool / numpy float32 handled above
        T = T.to(torch.float64)
    if float64:
        T = T.to(torch.float64)

    if T.dim() < 3:
        raise ValueError(
            f"{name} must have at least 3 dimensions (..., n1, n2, ny) with the target "
            f"on the last axis; got shape {tuple(T.shape)}"
        )
    if 0 in T.shape[-3:]:
        axis = T.dim() - 3 + list(T.shape[-3:]).index(0)
        raise ValueError(
            f"{name} has shape {tuple(T.shape)} with size 0 along axis {axis}; each of "
            f"n1, n2 and ny (the last three axes) needs at least one entry"
        )
    if T.numel() == 0:  # a batch of no problems: nothing to check or normalise
        return T, not is_torch

    # One pass of two reductions and a single host synchronisation.
    total = T.sum(dim=(-3, -2, -1), keepdim=True)
    with torch.no_grad():
        tot = total.detach().flatten()
        mins = T.detach().amin(dim=(-3, -2, -1)).flatten()
        # written so that NaN compares as "bad"; tot < inf is finiteness once tot > 0
        ok = (mins >= 0) & (tot > 0) & (tot < math.inf)
        # Totals below the dtype's smallest normal number (a joint of 1e-310 in all): their
        # backward overflows 1 / total, and its inf - inf filled every cell's gradient with NaN.
        all_ok, subnormal = torch.stack([ok.all(), (tot < torch.finfo(tot.dtype).tiny).any()]).tolist()
        # Finite counts whose total alone overflows (entries up to 1.8e308): the problems are
        # scaled by their largest entries first (a detached scale: the normalised joint does
        # not depend on it), then checked as any others. Subnormal totals likewise, where
        # valid, and then the gradient is inf where the true one overflows, never NaN.
        # Due where any problem of finite entries overflows its total, whatever the others
        # hold: one NaN elsewhere in the batch had left such a problem unscaled, and it was then
        # reported as of zero mass in place of the one with the NaN. (Every problem is scaled
        # then; the invalid ones stay invalid.)
        overflow = not all_ok and bool(
            (torch.isinf(tot) & torch.isfinite(T.detach()).flatten(-3).all(-1).flatten()).any())
    given = T  # what error messages quote: the caller's values, not the rescaled ones
    if overflow or (subnormal and all_ok):
        top = T.detach().amax(dim=(-3, -2, -1), keepdim=True)
        T = T / torch.where(top > 0, top, 1.0)
        total = T.sum(dim=(-3, -2, -1), keepdim=True)
        tot = total.detach().flatten()
        ok = (mins >= 0) & (tot > 0)
        all_ok = bool(ok.all())
    if not all_ok:
        _raise_distribution_error(given.detach(), ~ok.reshape(T.shape[:-3]), name)
    return T / total, not is_torch


#: Torch dtypes of inputs whose results come in float32 (:func:`result_dtype`).
FLOAT32_RESULTS = (torch.float32,) + _HALF_DTYPES


def result_dtype(P) -> torch.dtype:
    """The dtype results for input ``P`` come in: float32 for torch float32, float16 and
    bfloat16 tensors, float64 for everything else (as :func:`check_distribution` keeps it)."""
    if isinstance(P, torch.Tensor) and P.dtype in FLOAT32_RESULTS:
        return torch.float32
    return torch.float64


def wider_than_float64(P) -> bool:
    """Whether ``P`` is a numpy array of a float wider than float64 (long double); not a
    masked array with masked entries, which :func:`as_tensor` refuses."""
    return (isinstance(P, np.ndarray) and P.dtype.kind == "f" and P.dtype.itemsize > 8
            and not np.ma.is_masked(P))


def float64_problems(P: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(P as float64, which problems are invalid)`` for ``P[..., n1, n2, ny]`` of a float
    wider than float64 (:func:`wider_than_float64`).

    Each problem is divided by its largest entry in ``P``'s own precision before the cast, so
    that counts beyond float64's range cast neither to inf nor to 0 (the normalised joint does
    not depend on the scale; entries that end up subnormal or 0 are masses the solvers drop
    with a certified bound anyway). Validity (no NaN, negative or infinite entry, a positive
    total) is judged in that precision too, as the cast can hide it (-1e-400 casts to -0.0);
    invalid problems are left unscaled."""
    top = P.max(axis=(-3, -2, -1), keepdims=True)
    bad = ~((P.min(axis=(-3, -2, -1), keepdims=True) >= 0) & (top > 0) & (top < np.inf))
    with np.errstate(over="ignore"):  # only in the invalid problems
        scaled = np.divide(P, np.where(bad, 1, top), out=np.empty(P.shape, np.float64), casting="unsafe")
    return scaled, bad.reshape(P.shape[:-3])


def _fmt_entry(v) -> str:
    """An entry as messages quote it, to 6 significant digits; a long double one beyond
    float64's range in its own precision (as a float it would read inf or 0)."""
    if isinstance(v, np.floating) and v.dtype.itemsize > 8 and not 1e-300 < abs(v) < 1e300:
        return np.format_float_scientific(v, precision=5, trim="-")
    return f"{float(v):.6g}"


def _raise_distribution_error(P, bad, name: str):
    """Diagnose the first offending problem and raise a ValueError about it. ``P``: the
    caller's values (a tensor or numpy array), which the message quotes; ``bad``: the mask
    of offending problems over the batch axes."""
    bidx, count = _first_true(bad)
    where = f"{name}{_fmt_index(bidx)}"
    sub = P[bidx] if len(bidx) else P
    lib = torch if isinstance(sub, torch.Tensor) else np
    sub = sub.cpu() if lib is torch else sub
    more = _more(count, "problem")
    nan = lib.isnan(sub)
    if nan.any():
        cell, _ = _first_true(nan)
        raise ValueError(
            f"{where} contains NaN (at {_fmt_cell(cell)}); a distribution needs "
            f"finite entries >= 0{more}"
        )
    inf = lib.isinf(sub)
    if inf.any():
        cell, _ = _first_true(inf)
        raise ValueError(
            f"{where} contains an infinite entry ({sub[cell].item()} at "
            f"{_fmt_cell(cell)}); a distribution needs finite entries >= 0{more}"
        )
    neg = sub < 0
    if neg.any():
        cell, nneg = _first_true(neg)
        raise ValueError(
            f"{where} has a negative entry ({_fmt_entry(sub[cell].item())} at {_fmt_cell(cell)}"
            f"{'' if nneg == 1 else f'; {nneg} negative entries in all'}); a "
            f"distribution needs entries >= 0{more}"
        )
    raise ValueError(
        f"{where} has zero total mass (all {math.prod(sub.shape)} entries are 0); each "
        f"problem needs a positive total so it can be normalised{more}"
    )


# --------------------------------------------------------------------------- #
# Scalar options
# --------------------------------------------------------------------------- #
def _as_real_scalar(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got a bool ({value!r})")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number, got a tensor of shape "
                            f"{tuple(value.shape)} and dtype {value.dtype}")
        return float(value.item())
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":  # as a tensor of one
        return float(value.item())
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")


def check_tol(tol, *, name: str = "tol", allow_none: bool = True) -> Optional[float]:
    """Validate a tolerance: ``None`` (use the default) or a finite number > 0.

    Returns the tolerance as a Python float (or ``None``).
    """
    if tol is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a positive number, got None")
    t = _as_real_scalar(tol, name)
    if not (t > 0) or not math.isfinite(t):
        raise ValueError(f"{name} must be a finite number > 0, got {tol!r}")
    return t


def integral_scalar(value):
    """``value`` as a Python int where it is a 0-d integer array or tensor (a count read from
    a config or computed by torch); else ``value`` as it is."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iu":
        return int(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not (
            value.is_meta or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        return int(value)
    return value


def check_positive_int(value, *, name: str, allow_none: bool = True,
                       maximum: Optional[int] = None) -> Optional[int]:
    """Validate an iteration count or size: ``None`` (default) or an integer >= 1 (and at
    most ``maximum``, where given)."""
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a positive integer, got None")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral,)):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_floating_point \
                and value.dtype != torch.bool:
            value = int(value.item())
        elif isinstance(value, np.ndarray) and isinstance(integral_scalar(value), int):  # 0-d integer array
            value = integral_scalar(value)
        elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) \
                and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be a positive integer, got {value!r}")
    v = int(value)
    if v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {v}")
    return v


def check_integer(value, name: str, lo: Optional[int] = None, hi: Optional[int] = None,
                  expected: Optional[str] = None) -> int:
    """``value`` as a Python int in ``[lo, hi]`` (no bound where one is ``None``): any integral
    type, numpy's and 0-d integer arrays and tensors too (a size from an array's shape, an
    ``np.int64`` from a config, a count from a tensor), but not bool; else a ``ValueError`` saying what was
    expected (``expected``, or "an integer >= lo")."""
    value = integral_scalar(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) \
            and (lo is None or value >= lo) and (hi is None or value <= hi):
        return int(value)
    default = "an integer" if lo is None else f"an integer >= {lo}"
    raise ValueError(f"{name} must be {expected or default}, got {value!r}")


def check_real(value, name: str, lo: Optional[float] = None, hi: Optional[float] = None, *,
               lo_open: bool = False, hi_open: bool = False, allow_inf: bool = False) -> float:
    """``value`` as a Python float within ``lo`` and ``hi`` (open or closed; no bound where one
    is ``None``): any real number, numpy's and 0-d tensors' too (a value from a config or a
    schedule), but not bool, NaN or (unless ``allow_inf``) an infinity; else a ``ValueError``
    saying what was expected."""
    try:
        v = _as_real_scalar(value, name)
    except TypeError:
        v = math.nan
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be a {'' if allow_inf else 'finite '}number, got {value!r}")
    low_ok = lo is None or (v > lo if lo_open else v >= lo)
    high_ok = hi is None or (v < hi if hi_open else v <= hi)
    if low_ok and high_ok:
        return v
    if lo is not None and hi is not None:
        expected = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    elif lo is not None:
        expected = f"{'>' if lo_open else '>='} {lo}"
    else:
        expected = f"{'<' if hi_open else '<='} {hi}"
    raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_base(base) -> Optional[float]:
    """Validate a logarithm base: ``None`` (nats) or a finite number > 1 (a base below 1
    would make every information term negative). ``math.e`` is returned as ``None``, so that
    every result in nats says so the same way."""
    if base is None:
        return None
    b = _as_real_scalar(base, "base")
    if not (b > 1) or not math.isfinite(b):
        raise ValueError(
            f"base must be a finite number > 1 (2 for bits, math.e for nats), got {base!r}"
        )
    return None if b == math.e else b


def check_flag(value, *, name: str) -> bool:
    """Validate an on/off option: ``True`` or ``False`` (numpy bools too), returned as a bool."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} ({value!r})")


def check_choice(value, allowed: Iterable[str], what: str) -> str:
    """Check that ``value`` is one of the strings in ``allowed``.

    Matching is exact first, then case-insensitive (surrounding whitespace
    ignored); the canonical spelling from ``allowed`` is returned.  Anything
    else raises :class:`ValueError` listing the allowed values.
    """
    allowed = tuple(allowed)
    if isinstance(value, str):
        if value in allowed:
            return value
        key = value.strip().lower()
        for a in allowed:
            if a.lower() == key:
                return a
    listing = ", ".join(repr(a) for a in allowed)
    raise ValueError(f"unknown {what} {value!r}; expected one of {listing}")


# --------------------------------------------------------------------------- #
# Helpers for fastpid.joint: samples
# --------------------------------------------------------------------------- #
def check_codes(
    x: torch.Tensor, name: str, size: Optional[int] = None, *, what: str = "code", size_name: str = "size"
) -> Tuple[torch.Tensor, int]:
    """Validate a 1-D vector of hard integer codes; return ``(codes_int64, size)``.

    Integer and bool vectors are accepted; a floating-point vector is accepted
    if every value is integral (e.g. ``3.0``), otherwise it is an error.  Codes
    must lie in ``[0, size)``; when ``size`` is ``None`` it is inferred as
    ``max + 1``.  One host synchronisation in the good case.
    """
    if x.dim() != 1:
        raise ValueError(f"{name} must be a 1-D vector of codes, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n == 0:
        raise ValueError(f"{name} is empty; at least one sample is needed")
    if x.dtype == torch.bool:
        x = x.to(torch.int64)
    d = x.detach()
    if d.dtype.is_floating_point:
        nonint = ~(torch.isfinite(d) & (d == torch.floor(d)))
        stats = torch.stack(
            [d.amin().double(), d.amax().double(), nonint.any().double()]
        ).tolist()
        lo, hi, has_nonint = stats
        if has_nonint:
            i, cnt = _first_true(nonint)
            # Probability rows are an alternative for the variables only, not for group ids.
            advice = ("group ids are integers (e.g. 0, 1, 2)" if what == "group id" else
                      f"a 1-D {name} is read as hard integer codes (integral values, e.g. 0, 1, 2). "
                      f"Pass probability rows as a 2-D (N, n) array")
            raise ValueError(
                f"{name}[{i[0]}] = {d[i].item()!r} is not an integer {what}; {advice}"
                f"{_more(cnt, 'sample')}"
            )
        lo, hi = int(lo), int(hi)
    else:
        lo, hi = (int(v) for v in torch.stack([d.amin(), d.amax()]).tolist())
    if lo < 0:
        i, cnt = _first_true(d < 0)
        raise ValueError(
            f"{name}[{i[0]}] = {_code_text(d[i])} is a negative {what}; {what}s must be "
            f"integers in [0, {size_name if size is None else size}){_more(cnt, 'sample')}"
        )
    if size is None:
        size = hi + 1
    elif hi >= size:
        i, cnt = _first_true(d >= size)
        raise ValueError(
            f"{name}[{i[0]}] = {_code_text(d[i])} is out of range for {size_name} {size}; "
            f"{what}s must be integers in [0, {size}) (raise {size_name} or fix the "
            f"{what}){_more(cnt, 'sample')}"
        )
    return d.to(torch.int64), int(size)


def _code_text(value: torch.Tensor) -> str:
    """An integral code as an error message quotes it: its digits, or for a float beyond the
    integers its type holds exactly (2**53 in float64, 2**24 in float32, 2**8 in bfloat16;
    past them the digits are the rounding's: 1e300 has 301, bfloat16's 1e10 is 9999220736)
    the float, to its type's precision."""
    v = value.item()
    if isinstance(v, float):
        info = torch.finfo(value.dtype)
        if abs(v) >= 2.0 / info.eps:
            return f"{v:.{round(-math.log10(info.resolution))}g}"  # the type's decimal digits
    return str(int(v))


def check_rows(
    x: torch.Tensor, name: str, size: Optional[int] = None, *, rtol: float = ROW_SUM_RTOL
) -> torch.Tensor:
    """Validate an ``(N, n)`` matrix of probability rows (each row sums to 1).

    Entries must be finite and >= 0; each row sum must be within ``rtol``
    (relative; widened to the dtype's eps for float16/bfloat16) of 1.  Rows are
    returned unchanged (the graph is kept); integer and bool matrices (e.g.
    one-hot) are converted to float64; float16/bfloat16 rows to float32, divided
    by their sums (their rounding would otherwise weight the samples unequally).
    """
    if x.dim() != 2:
        raise ValueError(f"{name} must be an (N, n) matrix of probability rows, got shape "
                         f"{tuple(x.shape)}")
    n, k = x.shape
    if n == 0:
        raise ValueError(f"{name} is empty; at least one sample is needed")
    if k == 0:
        raise ValueError(f"{name} has 0 columns; probability rows need at least one value")
    if size is not None and k != size:
        raise ValueError(
            f"{name} has {k} columns but sizes gives {size} values for it; the row "
            f"width of soft probabilities must equal the variable's size"
        )
    # Rounding each entry of a row that sums to 1 moves its sum by at most eps / 2 whatever
    # the width (the sum is taken in float32 below); torch's float16 and bfloat16 softmax
    # rows were off by at most 0.39 eps at 2 to 1,000 columns. A tolerance growing with the
    # width had reached 1 (all-zero rows passed) at 64 bfloat16 columns.
    tol = max(rtol, torch.finfo(x.dtype).eps) if x.dtype.is_floating_point else rtol
    half = x.dtype in _HALF_DTYPES
    if half:
        x = x.to(torch.float32)
    elif not x.dtype.is_floating_point:
        x = x.to(torch.float64)
    with torch.no_grad():
        d = x.detach()
        s = d.sum(dim=1)
        mn = d.amin(dim=1)
        bad = ~((mn >= 0) & ((s - 1).abs() <= tol))
        any_bad = bool(bad.any())
    if any_bad:
        (i,), cnt = _first_true(bad)
        row = d[i].cpu()
        more = _more(cnt, "row")
        if k == 1:  # a column of codes, as labels often come: (N, 1)
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}: a 2-D {name} is read as probability rows, and rows over one "
                f"value must all be 1 ({name}[{i}] is {row[0].item():.8g}); pass hard codes as a 1-D vector "
                f"({name}.ravel()){more}"
            )
        if not torch.isfinite(row).all():
            j = int((~torch.isfinite(row)).nonzero()[0])
            raise ValueError(
                f"{name}[{i}] contains a non-finite value ({row[j].item()} in column {j}); "
                f"probability rows need finite entries >= 0{more}"
            )
        if (row < 0).any():
            j = int((row < 0).nonzero()[0])
            raise ValueError(
                f"{name}[{i}] has a negative probability ({row[j].item():.6g} in column "
                f"{j}); probability rows need entries >= 0{more}"
            )
        raise ValueError(
            f"{name}[{i}] sums to {row.sum().item():.8g}, not 1 (tolerance {tol:.1e}); "
            f"each row of a 2-D {name} must be a probability distribution over its "
            f"{k} values (apply softmax, or pass hard codes as a 1-D vector){more}"
        )
    return x / x.sum(dim=1, keepdim=True) if half else x


def check_weights(w: torch.Tensor, n: int, name: str = "weights") -> torch.Tensor:
    """Validate a length-``n`` vector of finite, non-negative sample weights."""
    if w.dim() != 1:
        raise ValueError(f"{name} must be a 1-D vector of length N={n}, got shape "
                         f"{tuple(w.shape)}")
    if w.shape[0] != n:
        raise ValueError(f"{name} has length {w.shape[0]} but there are N={n} samples; "
                         f"expected one weight per sample")
    if w.dtype in _HALF_DTYPES:
        w = w.to(torch.float32)
    elif not w.dtype.is_floating_point:
        w = w.to(torch.float64)
    with torch.no_grad():
        d = w.detach()
        bad = ~(torch.isfinite(d) & (d >= 0))
        any_bad = bool(bad.any())
    if any_bad:
        (i,), cnt = _first_true(bad)
        v = d[i].item()
        raise ValueError(
            f"{name}[{i}] = {v!r} is {'negative' if v < 0 else 'not finite'}; sample "
            f"weights must be finite and >= 0{_more(cnt, 'weight')}"
        )
    return w
