"""fastpid: certified, differentiable BROJA partial information decomposition.

Quick start::

    import fastpid
    res = fastpid.pid(P)        # P[..., n1, n2, ny], last axis = target; nats
    res.redundancy, res.unique1, res.unique2, res.synergy, res.gap

See :func:`pid`, :func:`joint` and :func:`pid_from_samples`.
"""
from ._build_info import build_info
from .api import backends, pid
from .exceptions import ConvergenceWarning
from .joint import joint, pid_from_samples
from .result import PIDResult

__version__ = "0.1.0"
__all__ = ["pid", "backends", "joint", "pid_from_samples", "PIDResult", "ConvergenceWarning", "build_info",
           "__version__"]

from .metrics import PIDMetric  # noqa: E402
__all__ += ["PIDMetric"]

from .estimate import PIDEstimate, estimate  # noqa: E402
__all__ += ["estimate", "PIDEstimate"]

# torch.load's default since torch 2.6 (weights_only=True) unpickles listed classes only: a
# result saved beside a checkpoint loads back. A result of numpy input holds numpy arrays,
# which need numpy's own functions allowed too (torch.serialization.safe_globals).
from torch import serialization as _serialization  # noqa: E402

from .estimate import Terms as _Terms  # noqa: E402

if hasattr(_serialization, "add_safe_globals"):  # torch >= 2.4
    _serialization.add_safe_globals([PIDResult, PIDEstimate, _Terms])
