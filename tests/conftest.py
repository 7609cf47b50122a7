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

# Two cores on CI: keep torch from oversubscribing them, and make runs repeatable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

settings.register_profile(
    "fastpid", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("fastpid")


@pytest.fixture(scope="session")
def digits_joint():
    return clustered_digits_joint()
