"""The fair-protocol grid: ``python -m examples.run_fair --name avdigits_reduced``.

For each data set: every arm of :mod:`examples.arms` is tuned with the same number of trials
on validation accuracy (tuning seeds 1000, 1001, …, whose training and validation data never
include an evaluation seed's test data: the synthetic data draw new samples per seed, and
AV-digits keeps one test split of speakers and images for every seed), then trained with its
chosen configuration on the evaluation seeds 0 … n−1, each seed its own split and
initialisation, all arms on the same seeds. The tables give paired 95 % t-intervals and, for
the headline family (each arm's final accuracy against fused+heads), p-values adjusted by
Holm's method. Per seed it also trains
each modality's encoder alone, for the probe gap. Writes to ``--out``: ``<name>.json`` (every
run), ``<name>.md`` (tables with paired 95 % t-intervals; on the synthetic data also the
accuracy on its XOR subset; how often ECS-async's synergy rule fired) and three figures,
``<name>_deltas.png`` (each arm's paired difference to fused+heads), ``<name>_probe_gaps.png``
and ``<name>_fractions.png`` (the curricula's share of the training set per epoch).

Runs (1 torch thread; the AV-digits cache is generated with espeak-ng on first use):

* reduced grid, every arm, a few minutes on 2 shared cores::

      python -m examples.run_fair --name fair_reduced --datasets avdigits synthetic --seeds 2 --trials 2 --epochs 5

* the full grid of ``examples/results/fair_full.md`` (about an hour on 2 shared cores)::

      python -m examples.run_fair --name fair_full --datasets avdigits synthetic --seeds 10 --trials 6 --tune-seeds 2 --epochs 30

* tables and figures again from a saved JSON file, without training::

      python -m examples.run_fair --replot examples/results/fair_full.json

* some arms again, with a saved run's settings, after a change that touches them alone (their
  results replace the saved ones; the other arms' stay, and the report names the rerun)::

      python -m examples.run_fair --rerun examples/results/fair_full.json --arms "SPICE (pointwise)" \
          --note "why they were run again"
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import arms as arm_defs
from . import fair
from .arguments import (BATCH_SIZE, Distinct, HelpFormatter, add_output_options, as_json, command, float_between,
                        int_at_least, machine, read_saved_run, results_folder, run_arguments)
from .stats import holm, holm_text, mean_interval, missing, paired, paired_runs, pct

BASELINES = ("fused", "fused+heads")
#: The synthetic data's XOR (synergy) subset: its accuracy key in a run's ``test`` numbers.
XOR = "acc_synergy"
#: (arm, the baseline it is compared with on its own architecture or schedule).
OWN_BASELINE = {"DynCIM (gated)": "gated fused+heads"}
#: The data sets :func:`loader` loads (``--datasets``, checked before any training).
DATASETS = ("avdigits", "synthetic")
#: The synthetic data's test share; ``--val-fraction`` takes part of the rest.
SYNTHETIC_TEST = 0.3


def loader(name: str, val_fraction: float):
    """``seed -> TwoViewData`` for ``avdigits`` (speaker split 48/16/16) or ``synthetic``."""
    from . import data as datasets
    from .avdigits import avdigits_views

    if name == "avdigits":
        return lru_cache(maxsize=None)(lambda seed: avdigits_views(seed, verbose=False))
    if name == "synthetic":
        return lru_cache(maxsize=None)(lambda seed: datasets.synthetic_views(
            seed=seed, test_fraction=SYNTHETIC_TEST, val_fraction=val_fraction))
    raise SystemExit(f"unknown data set {name!r}: choose from {list(DATASETS)}")


def run_dataset(load, arm_names, args, name: str) -> dict:
    """Tuning, then every evaluation seed of every arm, on the data set ``load(seed)``."""
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
    (mean and t-interval), and paired differences against the baselines. The differences pair
    runs by position, so two arms compared must hold the same seeds in the same order
    (run_dataset() appends them so; a merged or edited file that does not is refused, not
    mispaired)."""
    runs = out["runs"]
    col = {a: {"final": [r["test"]["acc"] for r in runs[a]], "best": [r["best_test"] for r in runs[a]]}
           for a in arm_names}
    for a in arm_names:
        if all(XOR in r["test"] for r in runs[a]):
            col[a]["xor"] = [r["test"][XOR] for r in runs[a]]
    def mod(d, m):                # modality keys: 1, 2 in memory, "1", "2" in the JSON file
        return d[m] if m in d else d[str(m)]
    summ = {"alone": {m: mean_interval([mod(s, m)["acc"] for s in out["alone"]]) for m in (1, 2)},
            "alone_probe": {m: mean_interval([mod(s, m)["probe"] for s in out["alone"]]) for m in (1, 2)},
            "arms": {}}
    for a in arm_names:
        s = {"final": mean_interval(col[a]["final"]), "best": mean_interval(col[a]["best"]),
             "acc1": mean_interval([r["test"]["acc1"] for r in runs[a]]),
             "acc2": mean_interval([r["test"]["acc2"] for r in runs[a]]),
             "probe_gap": {m: mean_interval([mod(r["probe_gap"], m) for r in runs[a]]) for m in (1, 2)},
             "visits": runs[a][0]["visits"], "steps": int(np.mean([r["steps"] for r in runs[a]])),
             "epochs_run": runs[a][0]["epochs_run"], "seconds": float(np.mean([r["seconds"] for r in runs[a]])),
             "vs": {}}
        if "xor" in col[a]:
            s["xor"] = mean_interval(col[a]["xor"])
            s["by_type"] = {k[4:]: mean_interval([r["test"][k] for r in runs[a]])
                            for k in runs[a][0]["test"] if k.startswith("acc_")}
        for b in (*BASELINES, OWN_BASELINE.get(a)):
            if b is not None and b in col and b != a:
                if paired_runs(runs[a], runs[b], lambda r: r) == "seeds not paired":
                    raise ValueError(f"the runs of {a!r} and {b!r} are not on the same seeds in the same order, "
                                     "so they cannot be paired by position")
                s["vs"][b] = {k: paired(col[a][k], col[b][k]) for k in ("final", "best", "xor")
                              if k in col[a] and k in col[b]}
        ecs = [r["summary"] for r in runs[a] if "synergy_fired" in r["summary"]]
        if ecs:
            s["synergy_rule"] = {"rule": ecs[0]["synergy_rule"], "k": ecs[0]["k"],
                                 "fired": [e["synergy_fired"] for e in ecs],
                                 "fired_counted": [e["synergy_fired_counted"] for e in ecs],
                                 "tests": [e["synergy_tests"] for e in ecs],
                                 "switch_epoch": [e["switch_epoch"] for e in ecs],
                                 "peak_epoch": [e["peak_epoch"] for e in ecs]}
        summ["arms"][a] = s
    # The headline family: every arm's final accuracy against fused+heads on this data set.
    # Holm's adjustment keeps the chance of any false "it helps" (or "it hurts") below 5 %.
    family = [a for a in arm_names if "fused+heads" in summ["arms"][a]["vs"]]
    for a, p in zip(family, holm([summ["arms"][a]["vs"]["fused+heads"]["final"]["p"] for a in family])):
        summ["arms"][a]["vs"]["fused+heads"]["final"]["holm_p"] = p
    return summ


def _seconds(values) -> str:
    """Wall seconds per run, ``mean ± SD`` over seeds (ddof 1): a spread, not an interval (run
    times vary with the host's load: a mean alone read 29 where the SD was 13.8); one run: its value."""
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if v.size > 1 else f"{v.mean():.1f}"


def _rerun_text(r: dict) -> str:
    """A sentence on arms run again later (``--rerun``) for the report's header."""
    alone = (f"its per-seed encoders trained alone reproduced the saved accuracies ({r['alone_compared']} values)"
             if not r["alone_differ"] else
             f"its per-seed encoders trained alone reproduced {r['alone_compared'] - r['alone_differ']} of the "
             f"{r['alone_compared']} saved accuracies, the others by {100 * r['alone_max_difference']:.2g} points "
             "or less (this host's arithmetic: its runs of the other arms would differ alike)")
    return (f"{', '.join(r['arms'])} run again later (`{command('run_fair', r['argv'])}`), "
            f"{r['wall_seconds'] / 60:.1f} min on {r['machine']}; {alone}.")


def markdown(results: dict) -> str:
    """The tables of ``results`` as saved in the JSON file (modality keys ``"1"``, ``"2"``)."""
    cfg = results["config"]
    lines = [f"# Fair-protocol grid: {cfg['name']}", "",
             f"`{command('run_fair', cfg['argv'])}` — {cfg['seeds']} evaluation seeds (each its "
             f"own split and initialisation, the same for every arm"
             + ("; avdigits' test speakers and images are the same on every seed, so its intervals cover "
                "the training's variation, not that of a new test sample" if "avdigits" in results["datasets"] else "")
             + f"), {cfg['trials']} tuning trials per arm on "
             f"validation accuracy of tuning seed(s) {cfg['tune_seeds_list']}, a budget of {cfg['epochs']} "
             f"passes over the training set (sample visits) per run, batch {cfg['batch_size']}. Wall time "
             f"{cfg['wall_seconds'] / 60:.1f} min on {cfg['machine']}"
             + (f" (load average {cfg['load_at_start']:.1f} at the start: the cores were shared with other work)"
                if cfg.get("load_at_start") is not None else "") + "."
             + "".join(f" {_rerun_text(r)}" for r in cfg.get("reruns", [])), "",
             "Accuracies in %, test split; `[lo, hi]` is the 95 % t-interval over seeds (of the mean, cut to "
             "[0, 100], or of the mean paired difference). *Final*: last epoch; *best-val*: the epoch with the best validation "
             "accuracy. *Δ vs X*: the per-seed difference to baseline X on the same seed, with the seeds it won. "
             "Many comparisons are made: only *Δ final vs fused+heads*, the headline family, carries a p-value "
             "adjusted by Holm's method over the arms of its data set (p_Holm); read the other "
             "intervals as descriptive (at 95 % each, about 1 in 20 excludes 0 by chance). *heads 1 / 2*: each "
             "unimodal head's accuracy, mean [95 % t-interval] as above. *s / run*: wall seconds per run, mean ± SD "
             "over seeds (the spread of the run times, not an interval).", ""]
    for dname, d in results["datasets"].items():
        s = d["summary"]
        xor = all("xor" in v for v in s["arms"].values())
        lines += [f"## {dname}", "",
                  f"Each modality trained alone (encoder + head): modality 1 {pct(s['alone']['1'])}, "
                  f"modality 2 {pct(s['alone']['2'])}; linear probes on those encoders: "
                  f"{pct(s['alone_probe']['1'])} / {pct(s['alone_probe']['2'])}.", "",
                  "| arm | final | best-val | Δ final vs fused | Δ final vs fused+heads | Δ best-val vs fused+heads "
                  + ("| XOR subset (final) " if xor else "")
                  + "| heads 1 / 2 | visits | steps | s / run (mean ± SD) |",
                  "|---|---|---|---|---|---|" + ("---|" if xor else "") + "---|---|---|---|"]

        def cell(vs, b, k):
            if b not in vs or k not in vs[b]:
                return "—"
            p = vs[b][k]
            holm_p = f", {holm_text(p['holm_p'])}" if not missing(p.get("holm_p")) else ""
            return f"{pct(p, True)} ({p['wins']}/{p['n']}{holm_p})"
        for a, v in s["arms"].items():
            vs = v["vs"]
            lines.append(f"| {a} | {pct(v['final'])} | {pct(v['best'])} | {cell(vs, 'fused', 'final')} | "
                         f"{cell(vs, 'fused+heads', 'final')} | {cell(vs, 'fused+heads', 'best')} | "
                         + (f"{pct(v['xor'])} | " if xor else "")
                         + f"{pct(v['acc1'])} / {pct(v['acc2'])} | {v['visits']} | {v['steps']} | "
                         f"{_seconds([r['seconds'] for r in d['runs'][a]])} |")
        if xor:
            counts = [r.get("test_counts", {}).get("synergy") for r in d["runs"][next(iter(d["runs"]))]]
            n_xor = f"{np.mean(counts):.0f}" if all(c is not None for c in counts) else None
            lines += ["", "XOR (synergy) subset of the test split, final epoch: each view alone is independent of the "
                      "label there, both together determine it" + (f" (on average {n_xor} test samples per seed)" if n_xor else "")
                      + ". Paired differences, points; the last column gives the accuracy on the other "
                      "interaction types (redundant / unique to view 1 / unique to view 2), each mean [95 % "
                      "t-interval], for comparison:", "",
                      "| arm | XOR accuracy | Δ XOR vs fused | Δ XOR vs fused+heads | R / U1 / U2 |",
                      "|---|---|---|---|---|"]
            for a, v in s["arms"].items():
                other = " / ".join(pct(v["by_type"][t]) for t in ("redundant", "unique1", "unique2")
                                   if t in v.get("by_type", {}))
                lines.append(f"| {a} | {pct(v['xor'])} | {cell(v['vs'], 'fused', 'xor')} | "
                             f"{cell(v['vs'], 'fused+heads', 'xor')} | {other or '—'} |")
        own = [(a, b) for a, b in OWN_BASELINE.items() if a in s["arms"] and b in s["arms"][a]["vs"]]
        for a, b in own:
            p = s["arms"][a]["vs"][b]
            lines += ["", f"{a} against {b} (same gated architecture): Δ final {pct(p['final'], True)} "
                          f"({p['final']['wins']}/{p['final']['n']} seeds), Δ best-val {pct(p['best'], True)}"
                      + (f", Δ XOR {pct(p['xor'], True)} ({p['xor']['wins']}/{p['xor']['n']})" if "xor" in p else "")
                      + "."]
        lines += ["", "Mechanism check — probe gap, points: linear-probe test accuracy of each modality's encoder "
                  "trained alone minus that of the same encoder inside the joint model (positive = the joint "
                  "model's encoder learned less about its modality):", "",
                  "| arm | gap modality 1 | gap modality 2 |", "|---|---|---|"]
        for a, v in s["arms"].items():
            lines.append(f"| {a} | {pct(v['probe_gap']['1'], True)} | {pct(v['probe_gap']['2'], True)} |")
        lines += ["", "Chosen configurations (validation): " + "; ".join(
            f"{a}: " + ", ".join(f"{k}={v}" for k, v in t["best"].items()) for a, t in d["tuning"].items()), ""]
        for a in (a for a in d["runs"] if "ECS" in a):
            rule = s["arms"][a].get("synergy_rule")
            if rule is None:              # results saved before the rule was counted
                sw = [r["summary"].get("switch_epoch") for r in d["runs"][a]]
                peak = [r["summary"].get("peak_epoch") for r in d["runs"][a]]
                lines.append(f"- {a}: stage 2 began at epochs {sw}; peak synergy score at epochs {peak} "
                             "(None: no probe passed min_score, nothing restored), per seed.")
                continue
            fired, counted, tests = rule["fired"], rule["fired_counted"], rule["tests"]
            per_seed = ", ".join(f"{f}/{t} ({c})" for f, t, c in zip(fired, tests, counted))
            lines.append(f"- {a}: synergy rule `{rule['rule']}` (k = {rule['k']} clusters per modality) fired on "
                         f"{per_seed} stage-1 probes per seed (in brackets: firings after the warm-up, the only "
                         f"ones that can become the restored peak); {sum(fired)} of {sum(tests)} probes in all, "
                         f"{sum(counted)} after the warm-up. Stage 2 began at epochs {rule['switch_epoch']}; peak "
                         f"restored from epochs {rule['peak_epoch']} (None: nothing restored).")
            if sum(fired) == 0:
                lines.append(f"  The synergy rule never fired for {a} on {dname}: no stage-1 probe's test of "
                             "\"synergy > 0\" rejected, so stage 2 always started from the current parameters.")
            elif sum(counted) == 0:
                lines.append(f"  After the warm-up the rule never fired for {a} on {dname}: no snapshot was "
                             "restored on any seed.")
        lines.append("")
    return "\n".join(lines)


def figures(results: dict, out: Path, name: str) -> list[str]:
    """The grid's three figures (:mod:`examples.plots`); returns their file names."""
    from . import plots

    files = [f"{name}_deltas.png", f"{name}_probe_gaps.png", f"{name}_fractions.png"]
    plots.plot_fair_deltas(results, out / files[0])
    plots.plot_fair_probe_gaps(results, out / files[1], [*BASELINES, *arm_defs.IMBALANCE_ARMS])
    plots.plot_fair_fractions(results, out / files[2])
    return files


def write(results: dict, out: Path, plots: bool = True, name: str | None = None) -> None:
    """``<name>.json``, ``<name>.md`` and (``plots``) the figures of ``results``; ``name``:
    the run's ``--name`` unless given (a replot's: the saved file's stem)."""
    name = results["config"]["name"] if name is None else name
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(as_json(results))
    md = markdown(results)
    if plots:
        files = figures(results, out, name)
        md += "\n".join(["", "## Figures", "",
                         f"- `{files[0]}`: each arm's paired difference in final test accuracy to fused+heads with its "
                         "unadjusted 95 % t-interval, coloured by its Holm-adjusted p (p_Holm < 0.05: green above 0, "
                         "red below; blue: not significant after the adjustment), one panel per data set; each "
                         "arm's label gives its accuracy with its 95 % interval.",
                         f"- `{files[1]}`: probe gaps of the baselines and the imbalance arms.",
                         f"- `{files[2]}`: the curricula's fraction of the training set per epoch, against the "
                         "budget spent (the last epoch is cut where the budget ends).", ""])
    (out / f"{name}.md").write_text(md)


def probe_gaps(runs: list, alone: list) -> list:
    """``runs`` with each seed's probe gaps taken against ``alone``, the saved run's encoders
    trained alone, the reference of every other arm (this host's own had differed by up to
    0.13 points on 3 of 80)."""
    for r, a in zip(runs, alone):  # the runs' modality keys 1, 2 (in memory), the saved ones "1", "2"
        r["probe_gap"] = {m: a[str(m)]["probe"] - r["probe"][m] for m in (1, 2)}
    return runs


def rerun(ap: argparse.ArgumentParser, args, argv) -> dict:
    """``--rerun``: the arms of ``--arms`` trained again (tuning and every seed) with the saved
    run's settings, their results in place of the saved ones; written under the saved file's
    name (to ``--out``, else its folder)."""
    given = [f"--{dest.replace('_', '-')}" for dest, value in vars(args).items()
             if dest not in ("out", "rerun", "note", "arms", "no_plots") and value != ap.get_default(dest)]
    if given:
        ap.error(f"--rerun takes the saved run's settings: {', '.join(given)} would be ignored; drop them")
    if args.arms == ap.get_default("arms") or not args.note:
        ap.error("--rerun needs --arms naming the arms to run again (not every arm: that is a new run) and --note "
                 "saying why")
    unknown = [a for a in args.arms if a not in arm_defs.ARMS]
    if unknown:
        ap.error(f"--arms: unknown arm(s) {unknown}; choose from {list(arm_defs.ARMS)}")
    results = read_saved_run(ap, args.rerun, ("config", "datasets"), option="--rerun")
    saved = ap.parse_args(results["config"]["argv"])
    out = args.out if args.out is not None else args.rerun.parent
    args.replot, args.out = None, out
    out = results_folder(ap, args)
    torch.set_num_threads(saved.threads)
    t0, load = time.perf_counter(), os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    compared, differ = 0, []
    for name, d in results["datasets"].items():
        new = run_dataset(loader(name, saved.val_fraction), args.arms, saved, name)
        # The same seeds give the same splits and initialisations; the encoders trained alone
        # show whether this host's arithmetic gives the same runs too.
        pairs = [(a[m][k], b[m][k]) for a, b in zip(json.loads(json.dumps(new["alone"])), d["alone"])
                 for m in a for k in a[m]]
        compared += len(pairs)
        differ += [abs(x - y) for x, y in pairs if x != y]
        for a in args.arms:
            d["tuning"][a], d["runs"][a] = new["tuning"][a], probe_gaps(new["runs"][a], d["alone"])
        d["summary"] = summarise(d, list(d["runs"]))
    results["config"].setdefault("reruns", []).append(
        {"arms": args.arms, "argv": run_arguments(argv), "note": args.note, "wall_seconds": time.perf_counter() - t0,
         "machine": f"{machine()}, {saved.threads} torch thread(s)" + (f", load average {load:.1f} at the start"
                                                                     if load is not None else ""),
         "torch": torch.__version__, "alone_compared": compared, "alone_differ": len(differ),
         "alone_max_difference": max(differ, default=0.0)})
    results = json.loads(json.dumps(results))
    write(results, out, plots=not args.no_plots, name=args.rerun.stem)
    return results


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--name", default="avdigits_reduced", help="output file stem")
    ap.add_argument("--datasets", nargs="+", action=Distinct, default=["avdigits"], help=", ".join(DATASETS))
    ap.add_argument("--arms", nargs="+", action=Distinct, default=list(arm_defs.ARMS),
                    help="names from examples.arms.ARMS")
    ap.add_argument("--seeds", type=int_at_least(1), default=3, help="evaluation seeds per arm")
    ap.add_argument("--tune-seeds", type=int_at_least(1), default=1, help="seeds per tuning trial")
    ap.add_argument("--trials", type=int_at_least(1), default=3, help="tuning trials per arm")
    ap.add_argument("--epochs", type=int_at_least(1), default=20, help="training epochs per run")
    ap.add_argument("--batch-size", type=BATCH_SIZE, default=64, help="training batch size")
    ap.add_argument("--val-fraction", default=0.15, help="synthetic data's validation share",
                    type=float_between(0, 1 - SYNTHETIC_TEST, f" (tuning needs a validation split; the test share "
                                                              f"is {SYNTHETIC_TEST}, training gets the rest)"))
    ap.add_argument("--threads", type=int_at_least(1), default=1, help="torch intra-op threads")
    ap.add_argument("--no-plots", action="store_true", help="skip the figures")
    add_output_options(ap, "rewrite the tables and figures of a saved run (in --out, else next to it); "
                           "no training")
    ap.add_argument("--rerun", metavar="JSON", type=Path,
                    help="run --arms again with the settings of this saved run and put their results into it")
    ap.add_argument("--note", default=None, help="with --rerun: why the arms were run again (in the report)")
    args = ap.parse_args(argv)
    if args.rerun:
        return rerun(ap, args, argv)
    if args.note is not None:
        ap.error("--note goes with --rerun")
    if args.replot:
        results = read_saved_run(ap, args.replot, ("config", "datasets"))
        for d in results["datasets"].values():
            d["summary"] = json.loads(json.dumps(summarise(d, list(d["runs"]))))
        write(results, results_folder(ap, args), plots=not args.no_plots, name=args.replot.stem)
        return results
    unknown = [a for a in args.arms if a not in arm_defs.ARMS]
    if unknown:
        ap.error(f"--arms: unknown arm(s) {unknown}; choose from {list(arm_defs.ARMS)}")
    # Checked before any training: a misspelt name used to fail after the data sets before it
    # had trained, their results lost.
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        ap.error(f"--datasets: unknown data set(s) {unknown}; choose from {list(DATASETS)}")
    # The arms' own requirements (pre-training's 3 passes, enough configurations for
    # --trials) and the data (AV-digits needs espeak-ng once) before any training: they
    # failed after the arms or data sets before them had trained, nothing saved.
    try:
        for a in args.arms:
            fair.check_arm(a, trials=args.trials, epochs=args.epochs)
    except ValueError as e:
        ap.error(str(e))
    if not args.name or Path(args.name).name != args.name or args.name in (".", ".."):
        # A folder in it failed after training, when the results were written (lost).
        ap.error(f"--name: a file stem without folders, got {args.name!r} (--out sets the folder)")
    from .avdigits import can_load, make_cache_folder

    if "avdigits" in args.datasets and not can_load():
        ap.error("--datasets avdigits: its audio is synthesised once with the espeak-ng program, which is not "
                 "on the PATH, and the clips are not cached (Debian/Ubuntu: apt-get install espeak-ng)")
    if "avdigits" in args.datasets:
        try:
            make_cache_folder()
        except OSError as e:
            ap.error(f"--datasets avdigits: {e}")
    out = results_folder(ap, args)  # after the checks, which would leave it empty
    if "fused+heads" not in args.arms:
        print("run_fair: --arms leaves out fused+heads, the baseline of the headline comparison: the table's "
              "Δ ... vs fused+heads columns and the deltas figure will be empty", file=sys.stderr, flush=True)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = {"config": {"name": args.name, "argv": run_arguments(argv), "seeds": args.seeds,
                          "tune_seeds_list": [1000 + i for i in range(args.tune_seeds)], "trials": args.trials,
                          "epochs": args.epochs, "batch_size": args.batch_size, "torch": torch.__version__,
                          "python": platform.python_version(), "threads": args.threads,
                          "machine": f"{machine()}, {args.threads} torch thread(s)",
                          "load_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
               "datasets": {}}
    for name in args.datasets:
        results["datasets"][name] = run_dataset(loader(name, args.val_fraction), args.arms, args, name)
    results["config"]["wall_seconds"] = time.perf_counter() - t0
    results = json.loads(json.dumps(results))                 # as the JSON file holds it (NaN as NaN)
    write(results, out, plots=not args.no_plots)
    print((out / f"{args.name}.md").read_text())
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
