"""ECS-async: PID-guided two-stage training of a two-modality late-fusion model.

Stage 1 (``"unimodal"``) trains each modality's encoder with its own head. Every
``probe_every`` epochs a :class:`~fastpid.integrations.PIDProbe` decomposes the
pre-fusion embeddings of a fixed probe set, and the controller

* balances the modalities by unique information: when ``U1 / U2 > ratio`` it pauses
  modality 1 (only modality 2 trains), symmetrically for modality 2, and resumes both once
  the ratio is back under ``resume_ratio`` (hysteresis; ``resume_ratio=None`` never
  resumes, as in the published code);
* tracks synergy: it keeps a snapshot of the registered modules at the peak synergy seen so
  far, and starts stage 2 from that snapshot when synergy falls below ``drop × peak`` or
  after ``max_unimodal_epochs``.

Stage 2 (``"joint"``) trains everything with
``fused_weight · CE(fused) + unimodal_weight · (CE(head1) + CE(head2))``
(:meth:`ECSAsyncController.stage_loss`).

Typical loop::

    ctrl = ECSAsyncController(modules=[enc1, enc2, head1, head2])
    for epoch in range(epochs):
        if ctrl.wants_probe(epoch):
            d = ctrl.update(epoch, enc1(x1_probe), enc2(x2_probe), y_probe)
        else:
            d = ctrl.update(epoch)
        if d.restore_snapshot:
            ctrl.restore()
        for x1, x2, y in loader:
            loss = ctrl.stage_loss(d, fused_logits, logits1, logits2, y)
            ...
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from .probe import TERMS, PIDProbe, ProbeResult

__all__ = ["ECSAsyncController", "Decision", "ProbeRecord"]

UNIMODAL, JOINT = "unimodal", "joint"


@dataclass(frozen=True)
class Decision:
    """What to do in one epoch.

    Attributes:
        epoch: the epoch the decision applies to.
        stage: ``"unimodal"`` (stage 1) or ``"joint"`` (stage 2).
        train1, train2: whether modality 1 / 2 trains this epoch.
        restore_snapshot: load the peak-synergy snapshot before training (set once, at the
            switch to stage 2, when a snapshot exists).
        probed: whether this decision came from a fresh probe.
        reason: a short human-readable explanation.
    """

    epoch: int
    stage: str
    train1: bool
    train2: bool
    restore_snapshot: bool = False
    probed: bool = False
    reason: str = ""


@dataclass(frozen=True)
class ProbeRecord:
    """One probe: its epoch, the PID terms (nats; ``mi1``/``mi2`` are the MI proxy
    ``I(Z_m; Y)``) and the decision taken."""

    epoch: int
    terms: dict
    decision: Decision


def _terms(result) -> dict:
    if isinstance(result, ProbeResult):
        return result.terms()
    if isinstance(result, Mapping):
        missing = [t for t in ("unique1", "unique2", "synergy") if t not in result]
        if missing:
            raise ValueError(f"PID terms are missing {missing}; expected keys among {TERMS}")
        return {k: float(v) for k, v in result.items() if k in TERMS}
    raise TypeError(f"expected a ProbeResult or a mapping of PID terms, got {type(result).__name__}")


class ECSAsyncController:
    """Decides, from probes of the pre-fusion embeddings, which modalities train and when
    stage 2 starts.

    Args:
        probe: the :class:`PIDProbe` (default: PCA(5) + k-means(20), exact PID).
        probe_every: probe every this many epochs (epoch 0 is always probed).
        ratio: pause the modality whose unique information exceeds the other's by more than
            this factor (``> 1``).
        resume_ratio: resume both once the paused modality's uniqueness ratio is below this
            (``1 <= resume_ratio <= ratio``); ``None`` never resumes.
        drop: start stage 2 when synergy falls below ``drop × peak synergy`` (``0 < drop < 1``).
        max_unimodal_epochs: stage 2 starts at this epoch at the latest.
        min_unimodal_epochs: the synergy-drop rule is ignored before this epoch.
        eps: nats added to both unique terms before the ratio, so that two near-zero terms
            do not give a wild ratio.
        balance_by: ``"unique"`` (``U1/U2``, the ECS rule) or ``"mi"`` (the MI proxy
            ``I(Z1;Y)/I(Z2;Y)``).
        fused_weight, unimodal_weight: stage-2 loss weights.
        modules: modules whose parameters the peak-synergy snapshot holds (encoders, and
            usually their heads). Without them :meth:`restore` is unavailable; the caller can
            watch :attr:`peak_epoch` and keep its own snapshots.
    """

    def __init__(self, probe: PIDProbe | None = None, *, probe_every: int = 1, ratio: float = 3.0,
                 resume_ratio: float | None = 1.5, drop: float = 0.8, max_unimodal_epochs: int = 30,
                 min_unimodal_epochs: int = 0, eps: float = 1e-3, balance_by: str = "unique",
                 fused_weight: float = 1.0, unimodal_weight: float = 0.6,
                 modules: Sequence[torch.nn.Module] | None = None):
        if not isinstance(probe_every, int) or probe_every < 1:
            raise ValueError(f"probe_every must be a positive integer, got {probe_every!r}")
        if not ratio > 1:
            raise ValueError(f"ratio must be > 1, got {ratio!r}")
        if resume_ratio is not None and not 1 <= resume_ratio <= ratio:
            raise ValueError(f"resume_ratio must be in [1, ratio={ratio}] or None, got {resume_ratio!r}")
        if not 0 < drop < 1:
            raise ValueError(f"drop must be in (0, 1), got {drop!r}")
        if not isinstance(max_unimodal_epochs, int) or max_unimodal_epochs < 0:
            raise ValueError(f"max_unimodal_epochs must be a non-negative integer, got {max_unimodal_epochs!r}")
        if not isinstance(min_unimodal_epochs, int) or min_unimodal_epochs < 0:
            raise ValueError(f"min_unimodal_epochs must be a non-negative integer, got {min_unimodal_epochs!r}")
        if balance_by not in ("unique", "mi"):
            raise ValueError(f"balance_by must be 'unique' or 'mi', got {balance_by!r}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self.probe = probe if probe is not None else PIDProbe()
        self.probe_every = probe_every
        self.ratio = float(ratio)
        self.resume_ratio = resume_ratio
        self.drop = float(drop)
        self.max_unimodal_epochs = max_unimodal_epochs
        self.min_unimodal_epochs = min_unimodal_epochs
        self.eps = float(eps)
        self.balance_by = balance_by
        self.fused_weight = float(fused_weight)
        self.unimodal_weight = float(unimodal_weight)
        self.modules = list(modules) if modules is not None else None
        self._reset()

    def _reset(self):
        self.stage = UNIMODAL
        self.paused: int | None = None       # 1, 2 or None
        self.peak_synergy = float("-inf")
        self.peak_epoch: int | None = None
        self.switch_epoch: int | None = None
        self.snapshot: list[dict] | None = None
        self.history: list[ProbeRecord] = []

    # ----------------------------------------------------------------- decisions
    def wants_probe(self, epoch: int) -> bool:
        """Whether :meth:`update` will probe at ``epoch`` (and so needs embeddings)."""
        return epoch % self.probe_every == 0

    def current(self, epoch: int, *, probed: bool = False, reason: str = "") -> Decision:
        """The standing decision at ``epoch`` without a new probe."""
        if self.stage == JOINT:
            return Decision(epoch, JOINT, True, True, probed=probed, reason=reason or "stage 2")
        return Decision(epoch, UNIMODAL, self.paused != 1, self.paused != 2, probed=probed,
                        reason=reason or ("both train" if self.paused is None else f"modality {self.paused} paused"))

    def update(self, epoch: int, emb1: torch.Tensor | None = None, emb2: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> Decision:
        """The decision for ``epoch``, probing ``emb1 (N, D1)``, ``emb2 (N, D2)`` and
        ``labels (N,)`` of the probe set when :meth:`wants_probe` says so.

        Call it once per epoch, before training that epoch, with embeddings computed by the
        current (not yet trained this epoch) encoders.
        """
        if self.wants_probe(epoch):
            if emb1 is None or emb2 is None or labels is None:
                raise ValueError(f"epoch {epoch} is a probe epoch (probe_every={self.probe_every}); "
                                 "pass emb1, emb2 and labels")
            return self.step(epoch, self.probe(emb1, emb2, labels))
        if self.stage == UNIMODAL and epoch >= self.max_unimodal_epochs:
            return self._switch(epoch, f"reached max_unimodal_epochs={self.max_unimodal_epochs}")
        return self.current(epoch)

    def step(self, epoch: int, result) -> Decision:
        """Apply the rules to one probe's PID terms (a :class:`ProbeResult` or a mapping with
        at least ``unique1``, ``unique2``, ``synergy``; plus ``mi1``, ``mi2`` when
        ``balance_by="mi"``) and record it in :attr:`history`."""
        terms = _terms(result)
        if self.stage == JOINT:
            decision = self.current(epoch, probed=True)
        else:
            decision = self._unimodal_step(epoch, terms)
        self.history.append(ProbeRecord(epoch, terms, decision))
        return decision

    def _unimodal_step(self, epoch: int, terms: dict) -> Decision:
        syn = terms["synergy"]
        if syn > self.peak_synergy:
            self.peak_synergy, self.peak_epoch = syn, epoch
            self._take_snapshot()
        if epoch >= self.max_unimodal_epochs:
            return self._switch(epoch, f"reached max_unimodal_epochs={self.max_unimodal_epochs}", probed=True)
        if epoch >= self.min_unimodal_epochs and syn < self.drop * self.peak_synergy:
            return self._switch(epoch, f"synergy {syn:.4g} < {self.drop} x peak {self.peak_synergy:.4g} "
                                       f"(epoch {self.peak_epoch})", probed=True)
        key1, key2 = ("unique1", "unique2") if self.balance_by == "unique" else ("mi1", "mi2")
        if key1 not in terms or key2 not in terms:
            raise ValueError(f"balance_by={self.balance_by!r} needs {key1!r} and {key2!r} in the PID terms")
        r = (terms[key1] + self.eps) / (terms[key2] + self.eps)
        reason = ""
        if r > self.ratio and self.paused != 1:
            self.paused, reason = 1, f"{key1}/{key2} = {r:.3g} > {self.ratio}: pause modality 1"
        elif 1 / r > self.ratio and self.paused != 2:
            self.paused, reason = 2, f"{key2}/{key1} = {1 / r:.3g} > {self.ratio}: pause modality 2"
        elif self.paused is not None and self.resume_ratio is not None:
            paused_ratio = r if self.paused == 1 else 1 / r
            if paused_ratio < self.resume_ratio:
                reason = f"ratio {paused_ratio:.3g} < {self.resume_ratio}: resume modality {self.paused}"
                self.paused = None
        return self.current(epoch, probed=True, reason=reason)

    def _switch(self, epoch: int, why: str, probed: bool = False) -> Decision:
        self.stage, self.paused, self.switch_epoch = JOINT, None, epoch
        restore = self.peak_epoch is not None
        return Decision(epoch, JOINT, True, True, restore_snapshot=restore, probed=probed,
                        reason=f"stage 2: {why}" + (f"; restore epoch-{self.peak_epoch} snapshot" if restore else ""))

    # ----------------------------------------------------------------- snapshots
    def _take_snapshot(self):
        if self.modules is not None:
            self.snapshot = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in self.modules]

    def restore(self) -> None:
        """Load the peak-synergy snapshot into the registered modules."""
        if self.modules is None:
            raise RuntimeError("no modules were registered (pass modules=[...] to the controller)")
        if self.snapshot is None:
            raise RuntimeError("no snapshot has been taken yet (no probe has run)")
        for m, state in zip(self.modules, self.snapshot):
            m.load_state_dict(state)

    # ----------------------------------------------------------------- loss
    def stage_loss(self, decision: Decision, fused_logits: torch.Tensor, logits1: torch.Tensor,
                   logits2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss for ``decision``: the cross-entropies of the training
        modalities' heads in stage 1; ``fused_weight · CE(fused) + unimodal_weight ·
        (CE1 + CE2)`` in stage 2. Logits are ``(B, C)``, labels ``(B,)``."""
        if decision.stage == JOINT:
            return (self.fused_weight * F.cross_entropy(fused_logits, labels)
                    + self.unimodal_weight * (F.cross_entropy(logits1, labels) + F.cross_entropy(logits2, labels)))
        parts = [F.cross_entropy(lg, labels) for lg, on in ((logits1, decision.train1), (logits2, decision.train2)) if on]
        return sum(parts)

    # ----------------------------------------------------------------- state and history
    def history_arrays(self) -> dict:
        """The probe history as lists: ``epoch``, every PID term, ``stage``, ``train1``,
        ``train2``, plus ``switch_epoch`` (start of stage 2 or ``None``) and ``peak_epoch``."""
        out = {"epoch": [r.epoch for r in self.history]}
        for t in TERMS:
            out[t] = [r.terms.get(t, float("nan")) for r in self.history]
        for f in ("stage", "train1", "train2"):
            out[f] = [getattr(r.decision, f) for r in self.history]
        out["switch_epoch"] = self.switch_epoch
        out["peak_epoch"] = self.peak_epoch
        return out

    def state_dict(self) -> dict:
        """Everything needed to resume: stage, paused modality, peak, snapshot, history."""
        return {
            "stage": self.stage, "paused": self.paused, "peak_synergy": self.peak_synergy,
            "peak_epoch": self.peak_epoch, "switch_epoch": self.switch_epoch,
            "snapshot": copy.deepcopy(self.snapshot),
            "history": [{"epoch": r.epoch, "terms": dict(r.terms), "decision": asdict(r.decision)}
                        for r in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.stage, self.paused = state["stage"], state["paused"]
        self.peak_synergy, self.peak_epoch = state["peak_synergy"], state["peak_epoch"]
        self.switch_epoch = state["switch_epoch"]
        self.snapshot = copy.deepcopy(state["snapshot"])
        self.history = [ProbeRecord(h["epoch"], dict(h["terms"]), Decision(**h["decision"]))
                        for h in state["history"]]
