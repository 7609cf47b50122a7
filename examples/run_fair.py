"""The fair-protocol grid: ``python -m examples.run_fair --name avdigits_reduced``.

For each data set: every arm of :mod:`examples.arms` is tuned with the same number of trials
on validation accuracy (tuning seeds 1000, 1001, … — their own splits, never the evaluation
seeds'), then trained with its chosen configuration on the evaluation seeds 0 … n−1, each
seed its own split and initialisation, all arms on the same seeds. Per seed it also trains
each modality's encoder alone, for the probe gap. Writes ``<name>.json`` (every run) and
``<name>.md`` (tables with paired 95 % t-intervals) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import arms as arm_defs
from . import fair
from .stats import mean_interval, paired

BASELINES = ("fused", "fused+heads")
#: (arm, the baseline it is compared with on its own architecture or schedule).
OWN_BASELINE = {"DynCIM (gated)": "gated fused+heads"}


def loader(name: str, val_fraction: float):
    """``seed -> TwoViewData`` for ``avdigits`` (speaker split 48/16/16) or ``synthetic``."""
    from . import data as datasets
    from .avdigits import avdigits_views

    if name == "avdigits":
        return lru_cache(maxsize=None)(lambda seed: avdigits_views(seed, verbose=False))
    if name == "synthetic":
        return lru_cache(maxsize=None)(lambda seed: datasets.synthetic_views(seed=seed, val_fraction=val_fraction))
    raise SystemExit(f"unknown data set {name!r}: choose avdigits or synthetic")


def run_dataset(name: str, arm_names, args) -> dict:
    load = loader(name, args.val_fraction)
    tune_seeds = [1000 + i for i in range(args.tune_seeds)]
    out = {"tuning": {}, "runs": {a: [] for a in arm_names}, "alone": []}
    for a in arm_names:
        t0 = time.perf_counter()
        out["tuning"][a] = fair.tune(load, a, trials=args.trials, tune_seeds=tune_seeds, epochs=args.epochs,
                                     batch_size=args.batch_size)
        print(f"{name} tune {a}: {out['tuning'][a]['best']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for seed in range(args.seeds):
        data = load(seed)
        alone = fair.alone_encoders(data, seed=seed, epochs=args.epochs, batch_size=args.batch_size)
        out["alone"].append(alone)
        for a in arm_names:
            best = dict(out["tuning"][a]["best"])
            opt = {k: best.pop(k) for k in fair.OPTIMISER_GRID}
            res, model = fair.fit(data, a, best, seed=seed, epochs=args.epochs, batch_size=args.batch_size, **opt)
            res["probe"] = {m: fair.probe_accuracy(model, data, m - 1) for m in (1, 2)}
            res["probe_gap"] = {m: alone[m]["probe"] - res["probe"][m] for m in (1, 2)}
            out["runs"][a].append(res)
            print(f"{name} seed {seed} {a:32s} test {100 * res['test']['acc']:.1f} best-val-epoch "
                  f"{100 * res['best_test']:.1f} probe gap {100 * res['probe_gap'][1]:+.1f}/"
                  f"{100 * res['probe_gap'][2]:+.1f} ({res['seconds']:.0f} s)", flush=True)
    out["summary"] = summarise(out, arm_names)
    return out


def summarise(out: dict, arm_names) -> dict:
    """Per arm: final and best-validation-epoch test accuracy, head accuracies and probe gaps
    (mean and t-interval), and paired differences against the baselines."""
    runs = out["runs"]
    col = {a: {"final": [r["test"]["acc"] for r in runs[a]], "best": [r["best_test"] for r in runs[a]]}
           for a in arm_names}
    summ = {"alone": {m: mean_interval([s[m]["acc"] for s in out["alone"]]) for m in (1, 2)},
            "alone_probe": {m: mean_interval([s[m]["probe"] for s in out["alone"]]) for m in (1, 2)},
            "arms": {}}
    for a in arm_names:
        s = {"final": mean_interval(col[a]["final"]), "best": mean_interval(col[a]["best"]),
             "acc1": mean_interval([r["test"]["acc1"] for r in runs[a]]),
             "acc2": mean_interval([r["test"]["acc2"] for r in runs[a]]),
             "probe_gap": {m: mean_interval([r["probe_gap"][m] for r in runs[a]]) for m in (1, 2)},
             "visits": runs[a][0]["visits"], "steps": int(np.mean([r["steps"] for r in runs[a]])),
             "epochs_run": runs[a][0]["epochs_run"], "seconds": float(np.mean([r["seconds"] for r in runs[a]])),
             "vs": {}}
        for b in (*BASELINES, OWN_BASELINE.get(a)):
            if b is not None and b in col and b != a:
                s["vs"][b] = {k: paired(col[a][k], col[b][k]) for k in ("final", "best")}
        summ["arms"][a] = s
    return summ


def _pct(iv, signed=False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    if np.isnan(iv["lo"]):
        return fmt.format(100 * iv["mean"])
    return f"{fmt.format(100 * iv['mean'])} [{100 * iv['lo']:.1f}, {100 * iv['hi']:.1f}]"


def markdown(results: dict) -> str:
    """The tables of ``results`` as saved in the JSON file (modality keys ``"1"``, ``"2"``)."""
    cfg = results["config"]
    lines = [f"# Fair-protocol grid: {cfg['name']}", "",
             f"`python -m examples.run_fair {' '.join(cfg['argv'])}` — {cfg['seeds']} evaluation seeds (each its "
             f"own split and initialisation, the same for every arm), {cfg['trials']} tuning trials per arm on "
             f"validation accuracy of tuning seed(s) {cfg['tune_seeds_list']}, a budget of {cfg['epochs']} "
             f"passes over the training set (sample visits) per run, batch {cfg['batch_size']}. Wall time "
             f"{cfg['wall_seconds'] / 60:.1f} min on {cfg['machine']}.", "",
             "Accuracies in %, test split; `[lo, hi]` is the 95 % t-interval over seeds (of the mean, or of the "
             "mean paired difference). *Final*: last epoch; *best-val*: the epoch with the best validation "
             "accuracy. *Δ vs X*: the per-seed difference to baseline X on the same seed.", ""]
    for dname, d in results["datasets"].items():
        s = d["summary"]
        lines += [f"## {dname}", "",
                  f"Each modality trained alone (encoder + head): modality 1 {_pct(s['alone']['1'])}, "
                  f"modality 2 {_pct(s['alone']['2'])}; linear probes on those encoders: "
                  f"{_pct(s['alone_probe']['1'])} / {_pct(s['alone_probe']['2'])}.", "",
                  "| arm | final | best-val | Δ final vs fused | Δ final vs fused+heads | Δ best-val vs fused+heads "
                  "| heads 1 / 2 | visits | steps | s / run |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for a, v in s["arms"].items():
            vs = v["vs"]

            def cell(b, k):
                if b not in vs:
                    return "—"
                p = vs[b][k]
                return f"{_pct(p, True)} ({p['wins']}/{p['n']})"
            lines.append(f"| {a} | {_pct(v['final'])} | {_pct(v['best'])} | {cell('fused', 'final')} | "
                         f"{cell('fused+heads', 'final')} | {cell('fused+heads', 'best')} | "
                         f"{100 * v['acc1']['mean']:.1f} / {100 * v['acc2']['mean']:.1f} | {v['visits']} | {v['steps']} | "
                         f"{v['seconds']:.0f} |")
        own = [(a, b) for a, b in OWN_BASELINE.items() if a in s["arms"] and b in s["arms"][a]["vs"]]
        for a, b in own:
            p = s["arms"][a]["vs"][b]
            lines += ["", f"{a} against {b} (same gated architecture): Δ final {_pct(p['final'], True)} "
                          f"({p['final']['wins']}/{p['final']['n']} seeds), Δ best-val {_pct(p['best'], True)}."]
        lines += ["", "Mechanism check — probe gap, points: linear-probe test accuracy of each modality's encoder "
                  "trained alone minus that of the same encoder inside the joint model (positive = the joint "
                  "model's encoder learned less about its modality):", "",
                  "| arm | gap modality 1 | gap modality 2 |", "|---|---|---|"]
        for a, v in s["arms"].items():
            lines.append(f"| {a} | {_pct(v['probe_gap']['1'], True)} | {_pct(v['probe_gap']['2'], True)} |")
        lines += ["", "Chosen configurations (validation): " + "; ".join(
            f"{a}: " + ", ".join(f"{k}={v}" for k, v in t["best"].items()) for a, t in d["tuning"].items()), ""]
        for a in (a for a in d["runs"] if "ECS" in a):
            sw = [r["summary"].get("switch_epoch") for r in d["runs"][a]]
            peak = [r["summary"].get("peak_epoch") for r in d["runs"][a]]
            lines.append(f"- {a}: stage 2 began at epochs {sw}; peak synergy score at epochs {peak} "
                         "(None: no probe passed min_score, nothing restored), per seed.")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="avdigits_reduced", help="output file stem")
    ap.add_argument("--datasets", nargs="+", default=["avdigits"], help="avdigits, synthetic")
    ap.add_argument("--arms", nargs="+", default=list(arm_defs.ARMS), help="names from examples.arms.ARMS")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tune-seeds", type=int, default=1)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--val-fraction", type=float, default=0.15, help="synthetic data's validation share")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    unknown = [a for a in args.arms if a not in arm_defs.ARMS]
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; choose from {list(arm_defs.ARMS)}")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = {"config": {"name": args.name, "argv": list(argv) if argv is not None else [], "seeds": args.seeds,
                          "tune_seeds_list": [1000 + i for i in range(args.tune_seeds)], "trials": args.trials,
                          "epochs": args.epochs, "batch_size": args.batch_size, "torch": torch.__version__,
                          "python": platform.python_version(), "threads": args.threads,
                          "machine": f"{platform.machine()}, {args.threads} torch thread(s)"},
               "datasets": {}}
    for name in args.datasets:
        results["datasets"][name] = run_dataset(name, args.arms, args)
    results["config"]["wall_seconds"] = time.perf_counter() - t0
    results = json.loads(json.dumps(results))                 # the form the JSON file holds
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=1))
    (out / f"{args.name}.md").write_text(markdown(results))
    print((out / f"{args.name}.md").read_text())
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
