"""SPICE: a curriculum that moves from redundant to unique to synergistic samples.

Training is cut into three phases (:class:`~fastpid.integrations.pacing.PhaseSchedule`,
default 0.3 / 0.3 / 0.4 of the epochs). Each phase ranks the samples by one share of their
per-sample PID (:mod:`fastpid.integrations.spice_scores`): redundancy share first, then
uniqueness share (``u1 + u2``), then synergy share. Within a phase a pacing function
(default :class:`~fastpid.integrations.pacing.RootCompetence`) admits the top ``c(t)``
fraction of that ranking. The scores are re-estimated from the model's own unimodal and
fused predictions whenever :meth:`SPICECurriculum.update` is called — every ``refresh``
epochs, as :meth:`SPICECurriculum.due` says.

Choices the method's description leaves open, made here:

* pacing progress inside a phase is ``t = epochs since the phase began`` out of
  ``T = phase length - 1`` (at least 1), so each phase starts at ``c0`` and its last epoch
  admits every sample;
* until the first :meth:`~SPICECurriculum.update` every sample is admitted, and
  :meth:`~SPICECurriculum.due` is false at epoch 0: an untrained model's predictions carry
  no ranking, so epoch 0 is a full-data warm-up;
* admission is hard: :meth:`~SPICECurriculum.weights` is the 0/1 admission mask;
* ranking ties (e.g. samples whose share is 0) are broken by the sample's total
  information ``r + u1 + u2 + s``, larger first, then by index;
* at least ``min_samples`` samples are admitted.

Typical loop::

    cur = SPICECurriculum(len(train), epochs=30)
    loader = DataLoader(train, batch_size=64, sampler=SPICESampler(cur))
    for epoch in range(30):
        if cur.due(epoch):
            p1, p2, p12, emb = predict(model, train)      # (N, C) softmax rows, (N, D)
            cur.update(p1, p2, p12, y_train, embedding=emb)
        cur.set_epoch(epoch)
        train_one_epoch(model, loader)
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.utils.data import Sampler

from .pacing import PhaseSchedule, RootCompetence
from .spice_scores import SampleScores, local_scores, pointwise_scores

__all__ = ["SPICECurriculum", "SPICESampler", "PHASES"]

#: The phases in order; phase ``i`` ranks by row ``i`` of :meth:`SampleScores.shares`.
PHASES = ("redundancy", "uniqueness", "synergy")

#: Estimator signature: ``(p1, p2, p12, y, embedding) -> SampleScores``.
Estimator = Callable[..., SampleScores]


class SPICECurriculum:
    """The SPICE schedule over ``n_samples`` training samples and ``epochs`` epochs.

    Args:
        n_samples: size of the training set (indices ``0 .. n_samples - 1``).
        epochs: number of training epochs.
        phases: fractions of the epochs given to the redundancy, uniqueness and synergy
            phases (non-negative, summing to 1).
        pacing: ``(t, T) -> fraction`` admitted within a phase; default
            ``RootCompetence(c0=0.2)``.
        refresh: re-estimate the scores every ``refresh`` epochs (see :meth:`due`).
        estimator: ``"pointwise"``, ``"local"`` (needs ``embedding`` in :meth:`update`) or
            a callable ``(p1, p2, p12, y, embedding) -> SampleScores``.
        estimator_kwargs: keyword arguments for the estimator (e.g. ``k`` and ``method``
            for ``"local"``).
        min_samples: the fewest samples ever admitted.
    """

    def __init__(self, n_samples: int, epochs: int, *, phases=(0.3, 0.3, 0.4), pacing=None,
                 refresh: int = 1, estimator="pointwise", estimator_kwargs=None,
                 min_samples: int = 1):
        for name, v in (("n_samples", n_samples), ("refresh", refresh), ("min_samples", min_samples)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if len(tuple(phases)) != len(PHASES):
            raise ValueError(f"phases must give {len(PHASES)} fractions {PHASES}, got {phases!r}")
        if isinstance(estimator, str):
            if estimator not in ("pointwise", "local"):
                raise ValueError(f"estimator must be 'pointwise', 'local' or a callable, got {estimator!r}")
        elif not callable(estimator):
            raise TypeError(f"estimator must be 'pointwise', 'local' or a callable, got {estimator!r}")
        self.n_samples = n_samples
        self.schedule = PhaseSchedule(epochs, phases)
        self.pacing = RootCompetence(0.2) if pacing is None else pacing
        self.refresh = refresh
        self.estimator = estimator
        self.estimator_kwargs = dict(estimator_kwargs or {})
        self.min_samples = min(min_samples, n_samples)
        self.scores: SampleScores | None = None
        self.epoch = 0
        self._rankings: torch.Tensor | None = None  # (3, N) sample indices, best first

    def due(self, epoch: int) -> bool:
        """Whether the scores should be re-estimated before training ``epoch``: at epochs
        ``refresh, 2·refresh, ...`` (never at 0, the warm-up)."""
        return epoch > 0 and epoch % self.refresh == 0

    def update(self, p1, p2, p12, y, embedding=None) -> SampleScores:
        """Re-estimate the per-sample scores from predictions on the whole training set.

        ``p1``, ``p2``, ``p12``: ``(N, C)`` softmax outputs of the two unimodal heads and
        the fused head; ``y``: ``(N,)`` labels; ``embedding``: ``(N, D)`` fused embedding
        (needed by ``estimator="local"``). Returns the new :class:`SampleScores`.
        """
        if self.estimator == "pointwise":
            scores = pointwise_scores(p1, p2, p12, y, **self.estimator_kwargs)
        elif self.estimator == "local":
            if embedding is None:
                raise ValueError("estimator='local' needs the fused embedding: update(..., embedding=emb)")
            scores = local_scores(p1, p2, y, embedding, **self.estimator_kwargs)
        else:
            scores = self.estimator(p1, p2, p12, y, embedding)
            if not isinstance(scores, SampleScores):
                raise TypeError(f"a custom estimator must return SampleScores, got {type(scores).__name__}")
        if scores.redundancy.shape != (self.n_samples,):
            raise ValueError(f"scores have shape {tuple(scores.redundancy.shape)}, but the curriculum "
                             f"has n_samples={self.n_samples}")
        self.scores = scores
        self._rankings = self._rank(scores)
        return scores

    @staticmethod
    def _rank(scores: SampleScores) -> torch.Tensor:
        shares = scores.shares().cpu()
        total = (scores.redundancy + scores.unique1 + scores.unique2 + scores.synergy).cpu()
        # Lexicographic (share desc, total desc, index asc): stable sorts, least key first.
        by_total = torch.sort(-total, stable=True).indices
        rows = []
        for share in shares:
            order = torch.sort(-share[by_total], stable=True).indices
            rows.append(by_total[order])
        return torch.stack(rows)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that :meth:`indices`, :meth:`weights` and the sampler refer to."""
        self.schedule.position(epoch)  # validates
        self.epoch = epoch

    def phase(self, epoch: int | None = None) -> str:
        """Name of the phase of ``epoch`` (default: the current epoch)."""
        return PHASES[self.schedule.position(self.epoch if epoch is None else epoch).index]

    def fraction(self, epoch: int | None = None) -> float:
        """Admitted fraction ``c(t)`` at ``epoch`` (default: the current epoch); 1 before
        the first :meth:`update`."""
        if self._rankings is None:
            return 1.0
        pos = self.schedule.position(self.epoch if epoch is None else epoch)
        return float(self.pacing(pos.step, max(1, pos.length - 1)))

    def indices(self) -> torch.Tensor:
        """Admitted sample indices (int64, best-ranked first) at the current epoch."""
        if self._rankings is None:
            return torch.arange(self.n_samples)
        c = self.fraction()
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"the pacing function returned {c!r}; it must lie in [0, 1]")
        n = max(self.min_samples, math.ceil(c * self.n_samples - 1e-9))
        return self._rankings[self.schedule.position(self.epoch).index, :n].clone()

    def weights(self) -> torch.Tensor:
        """``(N,)`` float 0/1 mask of the admitted samples at the current epoch."""
        w = torch.zeros(self.n_samples)
        w[self.indices()] = 1.0
        return w


class SPICESampler(Sampler):
    """Yields the curriculum's admitted indices at its current epoch in random order.

    The admitted set is read each time an epoch's iteration starts, so call
    :meth:`SPICECurriculum.set_epoch` before iterating the ``DataLoader``. ``generator``
    (a :class:`torch.Generator`) makes the shuffling reproducible.
    """

    def __init__(self, curriculum: SPICECurriculum, generator: torch.Generator | None = None):
        if not isinstance(curriculum, SPICECurriculum):
            raise TypeError(f"curriculum must be a SPICECurriculum, got {type(curriculum).__name__}")
        self.curriculum = curriculum
        self.generator = generator

    def __iter__(self):
        idx = self.curriculum.indices()
        perm = torch.randperm(len(idx), generator=self.generator)
        return iter(idx[perm].tolist())

    def __len__(self) -> int:
        return len(self.curriculum.indices())
