"""fastpid.integrations: reusable pieces for training-time PID methods.

* :class:`PIDProbe` — PID of two modalities' embeddings on a probe set
  (standardise → PCA → k-means per modality → ``fastpid.pid``);
  torch PCA / k-means live in :mod:`fastpid.integrations.cluster`.
* :class:`ECSAsyncController` — ECS-async two-stage training: pauses the modality with
  too much unique information, starts joint training from the peak-synergy snapshot.

SPICE and DynCIM adapters arrive in later work.
"""
from .ecs_async import Decision, ECSAsyncController, ProbeRecord
from .probe import PIDProbe, ProbeResult

__all__ = ["PIDProbe", "ProbeResult", "ECSAsyncController", "Decision", "ProbeRecord"]
