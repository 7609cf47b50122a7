"""fastpid.integrations: reusable pieces for training-time PID methods.

* :class:`PIDProbe` — PID of two modalities' embeddings on a probe set
  (standardise → PCA → k-means per modality → ``fastpid.pid``);
  torch PCA / k-means live in :mod:`fastpid.integrations.cluster`.

SPICE and DynCIM adapters arrive in later work.
"""
from .probe import PIDProbe, ProbeResult

__all__ = ["PIDProbe", "ProbeResult"]
