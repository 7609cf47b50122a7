"""The fair protocol: equal budgets, validation-only tuning, paired seeds.

* :func:`fit` trains one arm (:mod:`examples.arms`) for a budget of **sample visits**
  (``epochs × n_train``), so a curriculum that visits a fraction of the training set per
  epoch gets more epochs (its schedule is stretched by :func:`schedule_epochs`) and stops
  at the same number of visits. It evaluates the validation split after every epoch and
  reports the test accuracy at the final epoch and at the best validation epoch (on data with
  known interaction types, e.g. the synthetic set, also per type: ``acc_synergy`` is the
  accuracy on the XOR subset), and the fraction of the training set each epoch visited.
* :func:`tune` gives every arm the same number of trials, drawn from the shared optimiser
  grid (:data:`OPTIMISER_GRID`) times the arm's own grid (:data:`examples.arms.SPACES`), and
  picks the configuration with the best final-epoch **validation** accuracy on tuning
  seeds that are not evaluation seeds (each seed is its own split).
* :func:`alone_encoders` and :func:`probe_accuracy` give the mechanism check: the test
  accuracy of a logistic-regression probe on one modality's embeddings, for the encoder
  trained alone and for the same encoder inside a joint model.
"""
from __future__ import annotations

import copy
import itertools
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import arms as arm_defs
from .curricula import MultiViewNet, predict

__all__ = ["fit", "tune", "trial_grid", "schedule_epochs", "alone_encoders", "probe_accuracy",
           "OPTIMISER_GRID"]

#: Optimiser settings every arm is tuned over (AdamW).
OPTIMISER_GRID = {"lr": [5e-4, 1e-3, 2e-3], "weight_decay": [1e-4, 1e-3]}


def make_arm(name: str, n_train: int, epochs: int, seed: int, params: dict):
    """The arm ``name`` with its own ``params``; curricula get a schedule long enough for
    ``epochs × n_train`` visits."""
    build = arm_defs.ARMS[name]
    arm = build(n_train, epochs, seed, **params)
    if isinstance(arm, arm_defs.Curriculum):
        arm = build(n_train, schedule_epochs(lambda e: build(n_train, e, seed, **params), epochs), seed, **params)
    return arm


def schedule_epochs(build, epochs: int) -> int:
    """The shortest schedule length ``E`` for which ``build(E)``'s planned visits reach
    ``epochs`` full passes."""
    for length in range(epochs, 20 * epochs + 1):
        if sum(build(length).planned_fractions()) >= epochs:
            return length
    raise ValueError(f"the curriculum does not reach {epochs} passes within {20 * epochs} epochs")


def _accuracies(model, data, part) -> dict:
    """Accuracy of the fused prediction (``acc``) and of each head (``acc1``, ``acc2``) on
    ``part``; with ``data.meta["type"]`` (ids into :data:`examples.data.INTERACTION_TYPES`)
    also the fused accuracy on each type's samples, ``acc_<type>`` (``acc_synergy``: XOR)."""
    x1, x2, y = data.split(part)
    out = predict(model, [x1, x2])
    acc = {"acc": out.fused, "acc1": out.heads[0], "acc2": out.heads[1]}
    res = {k: (v.argmax(1) == y).float().mean().item() for k, v in acc.items()}
    if "type" in data.meta:
        from .data import INTERACTION_TYPES

        kind, hit = data.meta["type"][data.indices(part)], out.fused.argmax(1) == y
        for t, name in enumerate(INTERACTION_TYPES):
            if (kind == t).any():
                res[f"acc_{name}"] = hit[kind == t].float().mean().item()
    return res


def fit(data, name: str, params: dict, *, seed: int, epochs: int, batch_size: int = 64, lr: float = 1e-3,
        weight_decay: float = 1e-4) -> tuple[dict, MultiViewNet]:
    """Train arm ``name`` on ``data`` (needs a validation split) for ``epochs × n_train``
    sample visits; returns the run's numbers and the final-epoch model.

    Numbers: ``test``/``val`` accuracies at the final epoch (``acc``, ``acc1``, ``acc2``),
    ``best_epoch`` (highest validation accuracy, first on ties) with ``best_val`` and
    ``best_test``, ``val_curve``, ``visits``, ``fractions`` (each epoch's visits over the
    training-set size), ``steps``, ``epochs_run``, ``seconds`` and the arm's ``summary``;
    with interaction types, ``test_counts`` (test samples per type).
    The optimizer trains the model's parameters and the arm's ``extra_parameters()``.
    """
    x1, x2, y = data.split("train")
    n = y.shape[0]
    torch.manual_seed(seed)
    arm = make_arm(name, n, epochs, seed, params)
    model = MultiViewNet([x1.shape[1], x2.shape[1]], data.n_classes, fusion=arm.fusion)

    def optimizer():
        return torch.optim.AdamW([*model.parameters(), *arm.extra_parameters()], lr=lr, weight_decay=weight_decay)
    opt = optimizer()
    budget, visits, steps, epoch = epochs * n, 0, 0, 0
    curve, fractions, best, best_state = [], [], -1.0, None
    t0 = time.perf_counter()
    while visits < budget:
        model.eval()
        arm.start_epoch(epoch, model, data)
        if arm.reset_optimizer:
            opt, arm.reset_optimizer = optimizer(), False
        for group in opt.param_groups:
            group["lr"] = lr * arm.lr_scale
        model.train()
        order = arm.epoch_indices(epoch)[:budget - visits]
        before = visits
        for idx in order.split(batch_size):
            if idx.numel() < 2:  # no batch statistics from one sample; still spent, so the loop ends
                visits += idx.numel()
                continue
            out = model([x1[idx], x2[idx]])
            loss = arm.loss(epoch, model, out, y[idx], idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            arm.after_backward(model, out, y[idx])
            opt.step()
            visits, steps = visits + idx.numel(), steps + 1
        if visits == 0:
            raise RuntimeError(f"arm {name!r} visited no sample in epoch {epoch}")
        fractions.append((visits - before) / n)
        arm.end_epoch(epoch, predict(model, [x1, x2]), y)
        val = _accuracies(model, data, "val")["acc"]
        curve.append(val)
        if val > best:
            best, best_state, best_epoch = val, copy.deepcopy(model.state_dict()), epoch
        epoch += 1
    seconds = time.perf_counter() - t0
    res = {"seed": seed, "params": params, "lr": lr, "weight_decay": weight_decay,
           "test": _accuracies(model, data, "test"), "val": _accuracies(model, data, "val"),
           "val_curve": curve, "visits": visits, "fractions": fractions, "steps": steps, "epochs_run": epoch,
           "seconds": seconds, "summary": arm.summary()}
    if "type" in data.meta:
        from .data import INTERACTION_TYPES

        kind = data.meta["type"][data.test]
        res["test_counts"] = {name: int((kind == t).sum()) for t, name in enumerate(INTERACTION_TYPES)}
    final_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    res.update(best_epoch=best_epoch, best_val=best, best_test=_accuracies(model, data, "test")["acc"])
    model.load_state_dict(final_state)
    return res, model


def trial_grid(name: str, trials: int, seed: int = 0) -> list[dict]:
    """``trials`` configurations (``lr``, ``weight_decay`` and the arm's own parameters)
    drawn without replacement from the product grid, the same draw for the same seed."""
    space = {**OPTIMISER_GRID, **arm_defs.SPACES[name]}
    grid = [dict(zip(space, values)) for values in itertools.product(*space.values())]
    if trials > len(grid):
        raise ValueError(f"arm {name!r} has only {len(grid)} configurations, fewer than trials={trials}")
    pick = np.random.default_rng(seed).choice(len(grid), trials, replace=False)
    return [grid[i] for i in sorted(pick)]


def check_arm(name: str, *, trials: int, epochs: int) -> None:
    """Raise ``ValueError`` where arm ``name`` cannot run ``trials`` configurations of
    ``epochs`` passes (too small a grid; a budget its constructor refuses), without training."""
    for config in trial_grid(name, trials):
        make_arm(name, 100, epochs, 0, {k: v for k, v in config.items() if k not in OPTIMISER_GRID})


def tune(load, name: str, *, trials: int, tune_seeds, epochs: int, batch_size: int = 64) -> dict:
    """Best configuration of arm ``name`` by mean final-epoch validation accuracy over
    ``tune_seeds`` (``load(seed)`` gives the data). Returns ``best`` (the configuration) and
    ``trials`` (every configuration with its validation accuracies)."""
    results = []
    for config in trial_grid(name, trials):
        opt = {k: config[k] for k in OPTIMISER_GRID}
        params = {k: v for k, v in config.items() if k not in OPTIMISER_GRID}
        vals = [fit(load(s), name, params, seed=s, epochs=epochs, batch_size=batch_size, **opt)[0]["val"]["acc"]
                for s in tune_seeds]
        results.append({"config": config, "val_acc": vals, "mean_val_acc": float(np.mean(vals))})
    best = max(results, key=lambda r: r["mean_val_acc"])
    return {"best": best["config"], "trials": results}


def embeddings(model, data, part: str) -> list[torch.Tensor]:
    """Each modality's pre-fusion embeddings ``(N, E)`` of ``part``."""
    x1, x2, _ = data.split(part)
    model.eval()
    with torch.no_grad():
        return list(model.embed(x1, x2))


def probe_accuracy(model, data, modality: int) -> float:
    """Test accuracy of a logistic-regression probe fitted on the training embeddings of
    ``modality`` (0 or 1), standardised with training statistics."""
    from sklearn.linear_model import LogisticRegression

    train = embeddings(model, data, "train")[modality].numpy()
    test = embeddings(model, data, "test")[modality].numpy()
    mu, sd = train.mean(0), train.std(0) + 1e-8
    clf = LogisticRegression(max_iter=2000).fit((train - mu) / sd, data.y[data.train].numpy())
    return float(clf.score((test - mu) / sd, data.y[data.test].numpy()))


def alone_encoders(data, *, seed: int, epochs: int, batch_size: int = 64, lr: float = 1e-3,
                   weight_decay: float = 1e-4) -> dict:
    """Each modality's encoder and head trained alone (``CE(head_m)``, same initialisation,
    budget and batch order as :func:`fit` with seed ``seed``); returns per modality the
    head's test accuracy ``acc`` and the probe's ``probe`` accuracy."""
    x1, x2, y = data.split("train")
    out = {}
    for m in (0, 1):
        torch.manual_seed(seed)
        model = MultiViewNet([x1.shape[1], x2.shape[1]], data.n_classes)
        params = list(model.encoders[m].parameters()) + list(model.heads[m].parameters())
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        xm = (x1, x2)[m]
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(y), generator=gen).split(batch_size):
                if idx.numel() < 2:
                    continue
                loss = F.cross_entropy(model.heads[m](model.encoders[m](xm[idx])), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        acc = _accuracies(model, data, "test")[f"acc{m + 1}"]
        out[m + 1] = {"acc": acc, "probe": probe_accuracy(model, data, m)}
    return out
