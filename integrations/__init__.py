"""fastpid.integrations: reusable pieces for training-time PID methods.

* :class:`PIDProbe` — PID of two modalities' embeddings on a probe set
  (standardise or L2-normalise → PCA → k-means per modality → ``fastpid.pid``);
  torch PCA / k-means live in :mod:`fastpid.integrations.cluster`.
* :class:`ECSAsyncController` — ECS-async two-stage training: pauses the modality with
  too much unique information, starts joint training from the snapshot with the peak
  synergy score (synergy above a permutation baseline after a warm-up, or with
  ``synergy_rule="test"`` the bias-corrected synergy when its test of "synergy > 0" rejects).
* :class:`SynIBLoss` — the SynIB objective: fused and unimodal cross-entropies plus a
  penalty on confident fused predictions when a modality is withheld (``variant=
  "repository"``: the public SynIB code's per-example learned masks, Gaussian KL, masked
  cross-entropy and detached heads).
* :class:`SPICECurriculum`, :class:`SPICESampler`, :func:`pointwise_scores`,
  :func:`local_scores` — SPICE, a curriculum ordered by per-sample PID scores, with
  :class:`RootCompetence` / :class:`PhaseSchedule` pacing.
* :class:`DynCIM`, :class:`DynCIMLoss`, :class:`GatedFusion` — DynCIM's dynamic
  sample- and modality-level curriculum with gated fusion.
* :class:`IndexedDataset` — yields ``(index, *item)``, the sample indices the curricula need.

Every stateful piece has ``state_dict()`` / ``load_state_dict()`` that survive
``torch.save`` + ``torch.load(weights_only=True)``, and under an initialised
``torch.distributed`` process group the curricula, the controller and the probe keep their
state identical on every rank (:mod:`fastpid.integrations.distributed`); :class:`SynIBLoss`'s
running statistics and learned gates are each rank's own, as its module docstring says.
"""
from .ecs_async import Decision, ECSAsyncController, ProbeRecord
from .probe import PIDProbe, ProbeResult
from .synib import SynIBLoss, SynIBTerms, gaussian_kl, kl_to_uniform

__all__ = ["PIDProbe", "ProbeResult", "ECSAsyncController", "Decision", "ProbeRecord",
           "SynIBLoss", "SynIBTerms", "kl_to_uniform", "gaussian_kl"]

# SPICE and DynCIM (issue 5), with OGM-GE as the imbalance baseline.
from .dyncim import DynCIM  # noqa: E402
from .dyncim_loss import DynCIMLoss  # noqa: E402
from .gated_fusion import GatedFusion  # noqa: E402
from .pacing import PhaseSchedule, RootCompetence  # noqa: E402
from .spice import SPICECurriculum, SPICESampler  # noqa: E402
from .spice_scores import SampleScores, local_scores, pointwise_scores  # noqa: E402

from .data import IndexedDataset  # noqa: E402

__all__ += ["IndexedDataset", "SPICECurriculum", "SPICESampler", "SampleScores", "pointwise_scores", "local_scores",
            "RootCompetence", "PhaseSchedule", "DynCIM", "DynCIMLoss", "GatedFusion"]

# Results a run may save beside its checkpoint load back with torch.load's default
# (weights_only=True), as fastpid's own do (fastpid/__init__.py); a probe's estimate holds numpy
# arrays, which need numpy's functions allowed too (torch.serialization.safe_globals).
from torch import serialization as _serialization  # noqa: E402

from .cluster import KMeansResult as _KMeansResult, PCAResult as _PCAResult  # noqa: E402

if hasattr(_serialization, "add_safe_globals"):  # torch >= 2.4
    _serialization.add_safe_globals([ProbeResult, SampleScores, _PCAResult, _KMeansResult])
