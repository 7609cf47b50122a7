"""Shared test settings and fixtures."""
from __future__ import annotations

import os

# Without a GPU, the Triton kernels run (and are tested) on CPU tensors through Triton's
# interpreter; it must be switched on before triton is first imported.
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass

import pytest
import torch
from hypothesis import HealthCheck, settings

from helpers import clustered_digits_joint

# One intra-op thread: the tests' tensors are small, and on a 2-core machine that is also
# running other work, torch's thread hand-offs made small fits 10-70x slower.
torch.set_num_threads(1)

settings.register_profile(
    "fastpid", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("fastpid")


@pytest.fixture(scope="session")
def digits_joint():
    return clustered_digits_joint()
