"""fastpid under torch's compiler and transforms. Under ``torch.compile`` :func:`fastpid.pid`
and :func:`fastpid.joint` run eagerly, as ``torch.compiler.disable`` runs them. Traced, their
checks and data-dependent steps broke the graph 17-37 times a call, the first call took 5-106 s
to compile, and under ``inference_mode`` dynamo failed its own guard on a numpy round trip
(AssertionError "Guard failed on the same frame it was created"). torch._dynamo is asked only
where it is loaded: importing it takes 1.1 s."""
from __future__ import annotations

import sys

import torch


def untraced(fn):
    """``fn`` wrapped in ``torch.compiler.disable``."""
    return torch.compiler.disable(fn)


def traced() -> bool:
    """Whether torch.compile's dynamo is tracing the caller (not ``is_compiling()``, which
    non-strict ``torch.export`` sets while it runs plain Python: there the untraced call
    would have found it set again)."""
    return "torch._dynamo" in sys.modules and torch.compiler.is_dynamo_compiling()


def transformed(T) -> tuple[bool, bool]:
    """Whether ``T`` is a tensor wrapped by a ``torch.func`` transform, and whether one of its
    wrappings is ``vmap``'s."""
    wrapped = batched = False
    while isinstance(T, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(T):
        wrapped, batched = True, batched or torch._C._functorch.is_batchedtensor(T)
        T = torch._C._functorch.get_unwrapped(T)
    return wrapped, batched
