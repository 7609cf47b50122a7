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
  ``T = phase length - 1`` (at least 1), so each phase starts at ``c0`` and the last epoch of
  a phase of two or more epochs admits every sample; a phase of one epoch (few ``epochs``,
  e.g. the middle phase of 5) admits ``c0`` throughout, its ranking's best;
* until the first :meth:`~SPICECurriculum.update` every sample is admitted, and
  :meth:`~SPICECurriculum.due` is false at epoch 0: an untrained model's predictions carry
  no ranking, so epoch 0 is a full-data warm-up;
* admission is hard: :meth:`~SPICECurriculum.weights` is the 0/1 admission mask;
* ranking ties (e.g. samples whose share is 0) are broken by the sample's total
  information ``r + u1 + u2 + s``, larger first, then by index; where samples that tie on
  both straddle the admission cut, the ones admitted are drawn at random (``seed``): by
  index, a training set stored class by class had admitted whole classes in turn where the
  scores were 0 (50 of 50 samples of classes 0-6, 11 of class 7, none of 8 and 9, with
  local scores of a fitted model). A warning says when most samples score 0 (the
  curriculum then admits a random subset of them);
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

Checkpoints: :meth:`SPICECurriculum.state_dict` (epoch and scores) and
:meth:`SPICESampler.state_dict` (its generator's state and the epoch's position) resume a
run exactly where the sampler has a ``generator=`` (or shards, ``num_replicas > 1``) and,
mid-epoch, the ``DataLoader`` no worker processes (their prefetched batches are skipped);
without a generator a resumed epoch is shuffled afresh. Under ``torch.distributed`` load
them on every rank.

Distributed training (``torch.distributed``): :class:`SPICESampler` shards the admitted
samples across the ranks (disjoint, covering, a shuffle seeded by ``seed + epoch`` and so the
same on every rank), and :meth:`SPICECurriculum.update` makes the scores identical on every
rank: each rank may pass predictions for its own samples with their ``index`` (they are
gathered), and rank 0's scores are broadcast.
"""
from __future__ import annotations

import inspect
import math
import operator
import warnings
from dataclasses import fields
from typing import Callable, Mapping, SupportsIndex

import torch
from torch.utils.data import Sampler

import fastpid
from fastpid._caller import caller_level
from fastpid._validate import check_flag, check_integer

from .distributed import (assemble, broadcast_tensors, check_on_every_rank, is_distributed, rank_and_world,
                          same_on_every_rank)
from .cluster import check_seed
from .pacing import PhaseSchedule, RootCompetence, real_sequence
from .predictions import as_labels, as_tensor, rows_to_gather
from .spice_scores import SampleScores, local_scores, pointwise_scores

__all__ = ["SPICECurriculum", "SPICESampler", "PHASES"]

#: The phases in order; phase ``i`` ranks by row ``i`` of :meth:`SampleScores.shares`.
PHASES = ("redundancy", "uniqueness", "synergy")

#: The fields of :class:`SampleScores` (``gap`` is ``None`` for closed-form scores).
_SCORE_FIELDS = tuple(f.name for f in fields(SampleScores))

#: Estimator signature: ``(p1, p2, p12, y, embedding) -> SampleScores``.
Estimator = Callable[..., SampleScores]


def _checked_estimator_kwargs(estimator, kwargs) -> dict:
    """``estimator_kwargs`` as a dict, its names checked against a built-in estimator's options
    (an unknown one had raised a TypeError from inside the first update(); 0 had read as {})."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"estimator_kwargs must be a dict of the estimator's options or None, got {kwargs!r}")
    if not isinstance(estimator, str):  # a callable takes its own (a dataclass instance is not hashable)
        return dict(kwargs)
    takes = {"pointwise": (pointwise_scores,), "local": (local_scores, fastpid.pid)}[estimator]
    options = {name for fn in takes for name, p in inspect.signature(fn).parameters.items()
               if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(kwargs) - options)
    if unknown:
        raise TypeError(f"estimator_kwargs {unknown} are not options of the {estimator!r} estimator; it takes "
                        f"{sorted(options)}")
    return dict(kwargs)


class SPICECurriculum:
    """The SPICE schedule over ``n_samples`` training samples and ``epochs`` epochs.

    Args:
        n_samples: size of the training set (indices ``0 .. n_samples - 1``).
        epochs: number of training epochs.
        phases: fractions of the epochs given to the redundancy, uniqueness and synergy
            phases (non-negative, summing to 1).
        pacing: ``(t, T) -> fraction`` admitted within a phase (in ``[0, 1]``, checked over
            the schedule's epochs when the curriculum is made); default
            ``RootCompetence(c0=0.2)``.
        refresh: re-estimate the scores every ``refresh`` epochs (see :meth:`due`).
        estimator: ``"pointwise"``, ``"local"`` (needs ``embedding`` in :meth:`update`) or
            a callable ``(p1, p2, p12, y, embedding, **estimator_kwargs) -> SampleScores``.
        estimator_kwargs: keyword arguments for the estimator (e.g. ``k`` and ``method``
            for ``"local"``; checked against the built-in estimators' options, passed as they
            are to a callable).
        min_samples: the fewest samples ever admitted.
        seed: seed of the draw among tied samples at the admission cut (the same on every
            rank, and after a checkpoint is loaded).
    """

    def __init__(self, n_samples: int, epochs: int, *, phases=(0.3, 0.3, 0.4), pacing=None,
                 refresh: int = 1, estimator: str | Estimator = "pointwise", estimator_kwargs=None,
                 min_samples: int = 1, seed: int = 0):
        self.seed = check_seed(seed)
        n_samples, refresh, min_samples = (
            check_integer(v, name, 1, expected="a positive integer")
            for name, v in (("n_samples", n_samples), ("refresh", refresh), ("min_samples", min_samples)))
        phases = real_sequence(phases, "phases")  # "abc" had been "could not convert string to float: 'a'"
        if len(phases) != len(PHASES):
            raise ValueError(f"phases must give {len(PHASES)} fractions {PHASES}, got {phases!r}")
        if isinstance(estimator, str):
            if estimator not in ("pointwise", "local"):
                raise ValueError(f"estimator must be 'pointwise', 'local' or a callable, got {estimator!r}")
        elif not callable(estimator):
            raise TypeError(f"estimator must be 'pointwise', 'local' or a callable, got {estimator!r}")
        self.n_samples = n_samples
        self.schedule = PhaseSchedule(epochs, phases)
        if pacing is not None and not callable(pacing):  # not at the first epoch: "'int' object is not callable"
            raise TypeError(f"pacing must be a callable (t, T) -> fraction admitted, e.g. RootCompetence(0.2), "
                            f"got {pacing!r}")
        self.pacing = RootCompetence(0.2) if pacing is None else pacing
        self.refresh = refresh
        self.estimator = estimator
        self.estimator_kwargs = _checked_estimator_kwargs(estimator, estimator_kwargs)
        if estimator == "local":  # here, not at the first update() after the warm-up epochs
            k = self.estimator_kwargs.get("k", inspect.signature(local_scores).parameters["k"].default)
            check_integer(k, "estimator='local' takes each sample's k nearest samples: k", 1, n_samples,
                          expected=f"an integer in [1, n_samples] = [1, {n_samples}] (set it with "
                                   "estimator_kwargs={'k': ...}; default 16)")
        self.min_samples = min(min_samples, n_samples)
        self.scores: SampleScores | None = None
        self.epoch = 0
        self._rankings: torch.Tensor | None = None  # (3, N) sample indices, best first
        self._admission: torch.Tensor | None = None  # the same, ties in a random order (seed)
        # The epoch the scores were estimated for (due() is false there): the one due() last
        # said yes to (the loop asks before set_epoch()), else the current one.
        self._scored_epoch: int | None = None
        self._due: int | None = None
        self._warned_zero = self._warned_epoch = False
        self._asked: list[int] = []  # the epochs due() was asked for since the last set_epoch()
        self._updates = 0  # update() calls since the last set_epoch()
        # Checked over the schedule's epochs now: a value of 2.0 had warned that a phase admits
        # every sample, and raised only at the first indices().
        for epoch in range(self.schedule.epochs):
            self._count(self._pacing(epoch), epoch)
        self._warn_if_a_phase_admits_everyone()

    def _warn_if_a_phase_admits_everyone(self) -> None:
        """A phase's pacing counts from its first epoch, and the first scores come at epoch
        ``refresh`` (before it, the warm-up admits everyone): a phase over, or at its last step
        (``c = 1``), by then admits every sample in each of its epochs (60 of 60 in every
        redundancy epoch with epochs=6, refresh=1; the uniqueness phase too with phases=(0,
        0.5, 0.5), epochs=4, or epochs=10, refresh=5). Said at once, naming each such phase."""
        starts = (0, *self.schedule.ends[:-1])
        full = [f"the {name} phase (epochs {start}-{end - 1})"
                for name, start, end in zip(PHASES, starts, self.schedule.ends)
                if end > start and all(self._pacing(e) >= 1.0 for e in range(max(start, self.refresh), end))]
        if full:
            warnings.warn(f"SPICECurriculum: {' and '.join(full)} {'admits' if len(full) == 1 else 'admit'} every "
                          f"sample: a phase's pacing starts at its first epoch and the first scores come at epoch "
                          f"{self.refresh} (refresh={self.refresh}); give the phases more epochs (phases, epochs)"
                          + (" or a smaller refresh" if self.refresh > 1 else ""),
                          stacklevel=caller_level())

    def due(self, epoch: int) -> bool:
        """Whether the scores should be re-estimated before training ``epoch``: at epochs
        ``refresh, 2·refresh, ...`` (never at 0, the warm-up), and not again for an epoch
        whose scores were estimated already: a run resumed mid-epoch from a checkpoint keeps
        the scores its sampler's order was drawn from (estimated afresh, they admitted other
        samples, and the resumed epoch repeated 12 and skipped 18 of 73)."""
        epoch = check_integer(epoch, "epoch", 0)
        # Three epochs asked in turn with no set_epoch() between: the loop forgets it (one
        # question ahead, or a fresh curriculum asked at a resumed epoch, is no sign).
        if not self._asked or epoch > self._asked[-1]:
            self._asked.append(epoch)
        if len(self._asked) >= 3:
            self._warn_no_epoch(f"due() asked for epochs {self._asked}")
        due = epoch > 0 and epoch % self.refresh == 0 and epoch != self._scored_epoch
        if due:  # the next update() estimates this epoch's scores (a "no" in between changes nothing)
            self._due = epoch
        return due

    def _warn_no_epoch(self, what: str) -> None:
        """Once: the loop calls ``what`` epoch after epoch but never :meth:`set_epoch`."""
        if not self._warned_epoch:
            self._warned_epoch = True
            warnings.warn(f"SPICECurriculum.{what} while the curriculum stayed at epoch {self.epoch}: call "
                          "set_epoch(epoch) every epoch (SPICESampler admits by the curriculum's epoch; without "
                          "it the run stays in the first phase's first epoch)", stacklevel=caller_level())

    def update(self, p1, p2, p12, y, embedding=None, *, index=None) -> SampleScores:
        """Re-estimate the per-sample scores from predictions on the whole training set.

        ``p1``, ``p2``, ``p12``: ``(N, C)`` softmax outputs of the two unimodal heads and
        the fused head; ``y``: ``(N,)`` labels; ``embedding``: ``(N, D)`` fused embedding
        (needed by ``estimator="local"``). Tensors or numpy arrays. Returns the new
        :class:`SampleScores`.

        ``index (B,)``: the rows are the predictions of these training samples only (e.g.
        this rank's shard); under ``torch.distributed`` every rank's rows are gathered, and
        together they must cover every sample. Under a process group every rank must call
        this, and every rank then holds rank 0's scores.
        """
        # Under a process group a rank's own error is raised on every rank (one raising alone
        # left the others waiting in the broadcast below), and so is index= given on some only.
        same_on_every_rank(index is not None, "whether update() got index=")
        # Tied samples are drawn by the seed: another seed per rank would admit other samples.
        same_on_every_rank(self.seed, "SPICECurriculum's seed")
        if index is not None:
            p1, p2, p12, y, embedding = self._assemble(index, p1, p2, p12, y, embedding)
        scores = check_on_every_rank(self._scores, p1, p2, p12, y, embedding)
        if is_distributed():
            kept = [k for k in _SCORE_FIELDS if getattr(scores, k) is not None]
            same_on_every_rank(kept, "which score fields the estimator gives")  # every rank broadcasts as many
            scores = SampleScores(**dict(zip(kept, broadcast_tensors(*(getattr(scores, k) for k in kept)))))
        self._set_scores(scores)
        # Three updates with no set_epoch() between (a loop that re-scores every epoch without
        # it admitted the first phase's first-epoch share, 20 of 100, for ever, silently).
        self._updates += 1
        if self._updates >= 3:
            self._warn_no_epoch(f"update() was called {self._updates} times")
        return scores

    def _assemble(self, index, p1, p2, p12, y, embedding):
        """The whole training set's rows from this rank's (and every other rank's)."""
        # A rank's bad rows (e.g. labels of -100) raise on every rank: alone, it would leave
        # the others waiting in the gather.
        index, *rows = check_on_every_rank(self._rows, index, p1, p2, p12, y, embedding)
        full = assemble(self.n_samples, index, rows)
        return (*full[:4], full[4] if embedding is not None else None)

    @staticmethod
    def _rows(index, p1, p2, p12, y, embedding) -> list[torch.Tensor]:
        """This rank's ``index`` and rows, checked and on one device, to gather."""
        rows = [rows_to_gather(p1, "p1"), rows_to_gather(p2, "p2"), rows_to_gather(p12, "p12")]
        device = rows[0].device
        rows = [r.to(device) for r in rows] + [as_labels(y, "y", device=device)]
        if embedding is not None:
            rows.append(as_tensor(embedding, "embedding").detach().to(device=device, dtype=torch.float64))
        return [as_labels(index, "index", device=device), *rows]

    def _scores(self, p1, p2, p12, y, embedding) -> SampleScores:
        """The estimator's scores of these predictions, checked."""
        if self.estimator == "pointwise":
            scores = pointwise_scores(p1, p2, p12, y, **self.estimator_kwargs)
        elif self.estimator == "local":
            if embedding is None:
                raise ValueError("estimator='local' needs the fused embedding: update(..., embedding=emb)")
            scores = local_scores(p1, p2, y, embedding, **self.estimator_kwargs)
        else:
            scores = self.estimator(p1, p2, p12, y, embedding, **self.estimator_kwargs)
            if not isinstance(scores, SampleScores):
                raise TypeError(f"a custom estimator must return SampleScores, got {type(scores).__name__}")
        for name in _SCORE_FIELDS:
            v = getattr(scores, name)
            if v is None and name == "gap":
                continue
            if v.shape != (self.n_samples,):
                raise ValueError(f"scores.{name} has shape {tuple(v.shape)}, but the curriculum has "
                                 f"n_samples={self.n_samples}")
            # A NaN share ranked as 0, silently; information is never negative.
            bad = ~(torch.isfinite(v) & (v >= 0))
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                raise ValueError(f"scores.{name}[{i}] = {float(v[i])!r} from estimator={self.estimator!r}: "
                                 "per-sample information and its gap must be finite and >= 0")
        return scores

    def _set_scores(self, scores: SampleScores) -> None:
        zero = int(((scores.redundancy + scores.unique1 + scores.unique2 + scores.synergy) <= 1e-12).sum())
        if 2 * zero > self.n_samples and not self._warned_zero:
            self._warned_zero = True
            warnings.warn(f"SPICECurriculum: {zero} of {self.n_samples} samples score 0 (no information in any "
                          "term, e.g. local joints of a model that fits its training set): they tie, and the ones "
                          "admitted are drawn at random (seed)", stacklevel=caller_level())
        self.scores = scores
        # on the CPU, whatever torch's default device (as the scores)
        self._rankings = self._rank(scores, torch.arange(self.n_samples, device="cpu"))
        self._admission = self._rank(scores, torch.randperm(
            self.n_samples, generator=torch.Generator().manual_seed(self.seed), device="cpu"))
        self._scored_epoch = self.epoch if self._due is None else self._due
        self._due = None

    def state_dict(self) -> dict:
        """The state to resume from: the current epoch, the scores (``None`` before the
        first :meth:`update`) and the epoch they were estimated for (:meth:`due` is false
        there); tensors and numbers only (``torch.load(weights_only=True)``
        reads it). The configuration is the constructor's. Under ``torch.distributed`` every
        rank holds the same state: save it on one rank, load it on every rank."""
        scores = None if self.scores is None else {
            k: getattr(self.scores, k).detach().clone() for k in _SCORE_FIELDS if getattr(self.scores, k) is not None}
        return {"epoch": self.epoch, "scores": scores, "scored_epoch": self._scored_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved (the rankings are recomputed from the scores).

        Under ``torch.distributed`` load it on every rank (e.g. rank 0's file): a rank left
        with other scores admits other samples, and :class:`SPICESampler`'s shards then
        silently overlap or miss samples until the next :meth:`update`."""
        if state["scores"] is None:
            self.scores, self._rankings, self._admission = None, None, None
        else:
            scores = SampleScores(**{k: torch.as_tensor(v, device="cpu") for k, v in state["scores"].items()})
            if scores.redundancy.shape != (self.n_samples,):
                raise ValueError(f"the saved scores cover {scores.redundancy.shape[0]} samples, but the "
                                 f"curriculum has n_samples={self.n_samples}")
            self._set_scores(scores)
        self.set_epoch(int(state["epoch"]))
        # .get: a state saved before "scored_epoch" existed resumes as if its scores were older.
        self._scored_epoch, self._due = state.get("scored_epoch"), None

    @staticmethod
    def _rank(scores: SampleScores, ties: torch.Tensor) -> torch.Tensor:
        """``(3, N)`` sample indices by share (one row per phase), then total, both
        descending, then in the order ``ties`` lists them."""
        shares = scores.shares().cpu()
        total = (scores.redundancy + scores.unique1 + scores.unique2 + scores.synergy).cpu()
        # Lexicographic: stable sorts, least key first.
        by_total = ties[torch.sort(-total[ties], stable=True).indices]
        rows = []
        for share in shares:
            order = torch.sort(-share[by_total], stable=True).indices
            rows.append(by_total[order])
        return torch.stack(rows)

    def set_epoch(self, epoch: SupportsIndex) -> None:
        """Set the epoch that :meth:`indices`, :meth:`weights` and the sampler refer to."""
        self.schedule.position(epoch)  # validates
        self.epoch = operator.index(epoch)  # a plain int (numpy and 0-d tensor epochs accepted)
        self._asked, self._updates = [], 0

    def phase(self, epoch: int | None = None) -> str:
        """Name of the phase of ``epoch`` (default: the current epoch)."""
        return PHASES[self.schedule.position(self.epoch if epoch is None else epoch).index]

    def fraction(self, epoch: int | None = None) -> float:
        """Admitted fraction ``c(t)`` at ``epoch`` (default: the current epoch); 1 before
        the first :meth:`update`."""
        if self._rankings is None:
            return 1.0
        return self._pacing(self.epoch if epoch is None else epoch)

    def _pacing(self, epoch: int) -> float:
        """The pacing value ``c(t)`` of ``epoch`` within its phase (module docstring); epochs past
        the schedule's end take its last phase's last step (a plain ``t / T`` had been asked
        for t > T there, and its 1.33 refused)."""
        pos = self.schedule.position(epoch)
        last = max(1, pos.length - 1)
        return float(self.pacing(min(pos.step, last), last))

    def _count(self, c: float, epoch: int | None = None) -> int:
        """Samples admitted at pacing value ``c`` (of ``epoch``): ``ceil(c N)``, at least
        ``min_samples``."""
        if not 0.0 <= c <= 1.0:
            at = "" if epoch is None else f" at epoch {epoch}"
            raise ValueError(f"the pacing function returned {c!r}{at}; it must lie in [0, 1]")
        return max(self.min_samples, math.ceil(c * self.n_samples - 1e-9))

    def scheduled_fraction(self, epoch: int) -> float:
        """Share of the samples that ``epoch`` admits once scores exist: the pacing value
        :meth:`fraction` raised to ``min_samples / N`` where that is larger (what
        :func:`fastpid.plot.plot_curriculum` draws)."""
        return self._count(self._pacing(epoch)) / self.n_samples

    def indices(self) -> torch.Tensor:
        """Admitted sample indices (int64, best-ranked first) at the current epoch."""
        if self._rankings is None:
            return torch.arange(self.n_samples, device="cpu")
        n = self._count(self.fraction())
        phase = self.schedule.position(self.epoch).index
        # The first n of the random-tie ranking, listed in the ranking's own order: where no
        # tie straddles the cut, exactly its first n (the sampler's shuffle reads the order).
        admitted = torch.zeros(self.n_samples, dtype=torch.bool, device="cpu")
        admitted[self._admission[phase, :n]] = True
        ranking = self._rankings[phase]
        return ranking[admitted[ranking]]

    def weights(self) -> torch.Tensor:
        """``(N,)`` float 0/1 mask of the admitted samples at the current epoch."""
        w = torch.zeros(self.n_samples, device="cpu")
        w[self.indices()] = 1.0
        return w


class SPICESampler(Sampler):
    """Yields the curriculum's admitted indices at its current epoch in random order.

    The admitted set is read each time an epoch's iteration starts, so call
    :meth:`SPICECurriculum.set_epoch` (or this sampler's :meth:`set_epoch`) before iterating
    the ``DataLoader``.

    Args:
        curriculum: the :class:`SPICECurriculum`.
        generator: a :class:`torch.Generator` that makes the single-process shuffle
            reproducible (default: torch's global generator). Its state is in
            :meth:`state_dict`.
        num_replicas, rank: shard the admitted samples over ``num_replicas`` processes, this
            being process ``rank`` (defaults: the ``torch.distributed`` process group's world
            size and rank when one is initialised, else 1 and 0).
        seed: with more than one replica, the shuffle of epoch ``e`` is drawn from a
            generator seeded with ``seed + e``, so every rank draws the same order (as
            :class:`torch.utils.data.DistributedSampler` does); ``generator`` is then
            rejected.
        drop_last: with more than one replica, drop the last ``len(admitted) % num_replicas``
            samples of the shuffled order so that every rank gets the same number.
        shuffle: ``False`` keeps the curriculum's order (best-ranked first) instead of
            shuffling.

    Sharding: rank ``r`` takes positions ``r, r + W, r + 2W, ...`` of the shuffled admitted
    indices (``W = num_replicas``). Unlike ``DistributedSampler`` nothing is padded, so the
    shards are disjoint and together cover every admitted sample exactly once; their lengths
    differ by at most one. DDP needs the same number of optimizer steps on every rank: use
    ``drop_last=True`` here (and ``DataLoader(drop_last=True)``), or
    ``torch.distributed.algorithms.Join``. ``DataLoader(drop_last=True)`` drops what is
    left past the last full batch of each epoch's admitted samples, and every phase starts
    at ``c0 · N`` of them: with ``N = 1000``, ``c0 = 0.2`` and batches of 256 a phase's
    first epoch (200 samples) runs no step, and an epoch of 722 drops 210. Keep the batch
    size at most ``c0 · N / num_replicas`` there.
    """

    def __init__(self, curriculum: SPICECurriculum, generator: torch.Generator | None = None, *,
                 num_replicas: int | None = None, rank: int | None = None, seed: int = 0,
                 drop_last: bool = False, shuffle: bool = True):
        if not isinstance(curriculum, SPICECurriculum):
            raise TypeError(f"curriculum must be a SPICECurriculum, got {type(curriculum).__name__}")
        pg_rank, pg_world = rank_and_world()
        num_replicas = pg_world if num_replicas is None else num_replicas
        rank = pg_rank if rank is None else rank
        num_replicas = check_integer(num_replicas, "num_replicas", 1, expected="a positive integer")
        rank = check_integer(rank, "rank", 0, num_replicas - 1,
                             expected=f"an integer in [0, num_replicas={num_replicas})")
        if generator is not None and not isinstance(generator, torch.Generator):  # it failed at the first epoch
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__} "
                            f"({generator!r}); for a seed, pass torch.Generator().manual_seed(seed)")
        if num_replicas > 1 and generator is not None:
            raise ValueError("with num_replicas > 1 the shuffle must be the same on every rank: pass "
                             "seed=..., not generator=...")
        self.curriculum = curriculum
        self.generator = generator
        self.num_replicas, self.rank = num_replicas, rank
        self.drop_last = check_flag(drop_last, name="drop_last")  # bool() had read "no" as True
        self.seed = check_seed(seed)  # int() had taken 0.7 as 0 and "5" as 5
        self.shuffle = check_flag(shuffle, name="shuffle")
        self._progress: dict | None = None  # the epoch being or last iterated (see state_dict)
        self._resume: dict | None = None  # a loaded checkpoint's epoch, until iterated

    def set_epoch(self, epoch: SupportsIndex) -> None:
        """Set the curriculum's epoch (:meth:`SPICECurriculum.set_epoch`), which also seeds
        the sharded shuffle."""
        self.curriculum.set_epoch(epoch)

    def _order(self) -> torch.Tensor:
        idx = self.curriculum.indices()
        if self.num_replicas == 1:
            # on the CPU, where idx and the generators live, whatever torch's default device
            return idx[torch.randperm(len(idx), generator=self.generator, device="cpu")] if self.shuffle else idx
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.curriculum.epoch)
            idx = idx[torch.randperm(len(idx), generator=g, device="cpu")]
        if self.drop_last:
            idx = idx[:len(idx) - len(idx) % self.num_replicas]
        return idx[self.rank::self.num_replicas]

    def __iter__(self):
        epoch = self.curriculum.epoch
        resume, self._resume = self._resume_at(epoch), None
        if resume is not None and resume["finished"]:
            # Saved after the epoch's last index: nothing of it is left, and the generator
            # stands where that epoch left it (drawing its order again would move it on).
            self._progress = resume
            return iter(())
        if resume is not None and resume["start"] is not None:
            self.generator.set_state(resume["start"])  # draw the interrupted epoch's order again
        start = None if self.generator is None else self.generator.get_state()
        order = self._order().tolist()
        progress = {"epoch": epoch, "start": start, "taken": 0 if resume is None else resume["taken"],
                    "finished": False}
        self._progress = progress
        return self._yield(order, progress)

    @staticmethod
    def _yield(order: list, progress: dict):
        # The progress stays after the last index (a DataLoader exhausts the sampler before a
        # partial last batch only): a checkpoint then says the epoch is finished, not unstarted.
        for i in order[progress["taken"]:]:
            progress["taken"] += 1
            progress["finished"] = progress["taken"] == len(order)
            yield i
        progress["finished"] = True

    def _resume_at(self, epoch: int) -> dict | None:
        """The loaded checkpoint's epoch (finished or not), if ``epoch`` is that epoch."""
        return self._resume if self._resume is not None and self._resume["epoch"] == epoch else None

    def __len__(self) -> int:
        n = len(self.curriculum.indices())
        if self.num_replicas > 1:
            n = n // self.num_replicas if self.drop_last else len(range(self.rank, n, self.num_replicas))
        resume = self._resume_at(self.curriculum.epoch)
        if resume is None:
            return n
        return 0 if resume["finished"] else n - min(n, resume["taken"])

    def state_dict(self) -> dict:
        """The generator's state (a ``uint8`` tensor; ``None`` without a generator: the
        sharded shuffle needs none, and torch's global generator is the caller's to save)
        and, from an epoch's iteration on, where it stands: the epoch, the generator's state
        before the epoch's shuffle (``epoch_start``), the number of indices yielded
        (``taken``) and whether that was all of them (``finished``). A sampler loaded from it
        and iterated at that epoch again yields the rest of that epoch's order (nothing after
        its last index, whether the last batch was full or not: call :meth:`set_epoch` with
        the next epoch before iterating on); at any other epoch it shuffles as usual. Saved
        again before it iterates, it saves the loaded position. ``taken`` counts what
        the ``DataLoader`` has drawn: with worker processes, the batches they had prefetched
        but not delivered are skipped too. Without a generator only the position resumes
        (a single-process shuffle from torch's global generator is drawn afresh)."""
        # A loaded position not yet iterated is saved again as it was loaded.
        progress = self._progress if self._progress is not None else self._resume
        return {"generator": None if self.generator is None else self.generator.get_state(),
                "epoch": -1 if progress is None else progress["epoch"],
                "epoch_start": None if progress is None else progress["start"],
                "taken": 0 if progress is None else progress["taken"],
                "finished": progress is not None and progress["finished"], "sharding": self._sharding()}

    def _sharding(self) -> dict:
        """What an epoch's order and this rank's share of it depend on, besides the curriculum
        and the generator (one process: the generator's shuffle, or none)."""
        if self.num_replicas == 1:
            return {"num_replicas": 1, "shuffle": self.shuffle}
        return {"num_replicas": self.num_replicas, "shuffle": self.shuffle, "drop_last": self.drop_last,
                "seed": self.seed if self.shuffle else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved. A position within an epoch is refused
        (``ValueError``) by a sampler that shards or shuffles otherwise (other ``num_replicas``,
        ``seed``, ``drop_last`` or ``shuffle``): its order is not the saved one, and it would
        skip and repeat samples (2 ranks' state in one process: 8 of 40 samples never seen).
        A finished epoch loads whatever the sharding: nothing of it is left to yield."""
        if (state["generator"] is None) != (self.generator is None):
            raise ValueError("the checkpoint and this sampler disagree on whether a generator is used")
        taken = int(state.get("taken", 0))  # checkpoints written before positions were saved have none
        finished = bool(state.get("finished", False))  # nor those before finished epochs were told apart
        saved = state.get("sharding")
        if taken > 0 and not finished and saved is not None and saved != self._sharding():
            raise ValueError(f"the checkpoint stops within an epoch of a sampler with {saved}, but this one has "
                             f"{self._sharding()}: that epoch's order differs; resume with the same settings "
                             "(or from a checkpoint taken between epochs)")
        if self.generator is not None:
            self.generator.set_state(state["generator"])
        self._progress = None
        self._resume = None if taken <= 0 and not finished else {
            "epoch": int(state["epoch"]), "start": state["epoch_start"], "taken": taken, "finished": finished}
