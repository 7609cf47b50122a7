"""SynIB settings on the synthetic data: ``python -m examples.sweep_synib --seeds 5``.

Every (``lambda_syn``, ``mask``) pair at ``p = 0.8``, plus ``p ∈ {0.5, 1.0}`` for the three
``p``-masks at ``lambda_syn = 1``, against plain joint training, on two settings of
:func:`examples.data.synthetic_views`:

* ``xor15-b128``: the main comparison (15 % synergistic XOR samples, batch size 128);
* ``xor30-b64``: 30 % XOR samples (fractions 0.3 / 0.2 / 0.2 / 0.3), batch size 64, where
  a single exploratory seed had suggested SynIB helps (no ``p`` variants).

Runs are paired: for one seed, every configuration sees the same split, initialisation and
batch order, so ``Δ`` (a configuration minus joint on the same seed) removes most of the
seed-to-seed spread. Each seed's data has a validation split (:data:`VAL_FRACTION`): a
setting's configuration is *chosen* on it (the best mean validation accuracy on the XOR
samples), and the test split only reports, with paired 95 % t-intervals and p-values that
Holm's method adjusts over the setting's grid (many configurations are compared with
joint). Writes ``synib_sweep.json`` (every run) and ``synib_sweep.md`` (the grid,
accuracies in %) to ``--out``; settings already in an existing ``synib_sweep.json`` and not
rerun are kept where it was run with the same ``--seeds`` and ``--epochs`` (otherwise they are
dropped, with a message). ``--configs`` restricts a setting's grid to the named configurations (joint
is always run). ``--replot JSON`` rewrites the summaries and the table of a saved sweep.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch

from fastpid.integrations import SynIBLoss

from . import data as datasets
from .arguments import (Distinct, HelpFormatter, add_output_options, as_json, command, int_at_least, machine,
                        read_saved_run, results_folder, run_arguments)
from .evaluate import evaluate
from .methods import Joint, SynIB
from .models import LateFusion
from .stats import missing, paired, paired_family, paired_runs, points
from .training import TrainConfig, train

SETTINGS = {
    "xor15-b128": {"fractions": (0.35, 0.25, 0.25, 0.15), "batch_size": 128, "p_variants": True},
    "xor30-b64": {"fractions": (0.3, 0.2, 0.2, 0.3), "batch_size": 64, "p_variants": False},
}
#: Share of each seed's samples (of all of them, class by class, not of the non-test ones) held
#: out for validation to choose a configuration: with the 30 % test split, 600 of the 2,800
#: non-test samples (21 %).
VAL_FRACTION = 0.15
LAMBDAS = (0.1, 0.5, 1.0, 2.0)
MASKS = ("random", "zero", "noise", "learned")


def configs(p_variants: bool) -> list:
    """``[(name, SynIBLoss kwargs or None for joint)]`` of one setting's grid."""
    out = [("joint", None)]
    out += [(f"{m} λ={lam:g} p=0.8" if m != "learned" else f"learned λ={lam:g}",
             {"mask": m, "lambda_syn": lam, "p": 0.8}) for m in MASKS for lam in LAMBDAS]
    if p_variants:
        out += [(f"{m} λ=1 p={p:g}", {"mask": m, "lambda_syn": 1.0, "p": p})
                for m in ("random", "zero", "noise") for p in (0.5, 1.0)]
    return out


def run(data, kwargs, cfg: TrainConfig) -> dict:
    """Train one late-fusion model (joint if ``kwargs`` is None, else SynIB) and return its
    test accuracies in [0, 1], and its validation ones under ``"val"``."""
    torch.manual_seed(cfg.seed)
    model = LateFusion(data.x1.shape[1], data.x2.shape[1], data.n_classes)
    method = Joint() if kwargs is None else SynIB(SynIBLoss(seed=cfg.seed, **kwargs))
    t0 = time.perf_counter()
    train(model, data, method, cfg)
    return {"seed": cfg.seed, "train_seconds": time.perf_counter() - t0, **evaluate(model, data),
            "val": evaluate(model, data, "val")}


def summarise(runs: dict) -> dict:
    """Per configuration: the mean test ``acc`` and ``acc_synergy`` (and their std over seeds,
    ``acc_std``, ``acc_synergy_std``) and their paired differences to joint (``d_acc``,
    ``d_xor``: :func:`examples.stats.paired_family`, fractions of 1, Holm-adjusted over the
    grid), and the mean paired validation difference on the XOR samples (``val_d_xor``; with its
    paired t-interval, ``val_d_xor_paired``); and ``"chosen"``: the configuration with the
    largest ``val_d_xor``, and ``"margin"``: its paired validation XOR difference to the next
    (``runner_up``), by which another run may choose otherwise."""
    others = [n for n in runs if n != "joint"]
    rows = {name: {f"{k}{part}": float(f([r[k] for r in rs])) for k in ("acc", "acc_synergy")
                   for part, f in (("", np.mean), ("_std", lambda v: np.std(v, ddof=1) if len(v) > 1 else np.nan))}
            for name, rs in runs.items()}
    for key, value in (("d_acc", lambda r: r["acc"]), ("d_xor", lambda r: r["acc_synergy"])):
        family = paired_family({n: paired_runs(runs[n], runs["joint"], value) for n in others})
        for n in others:
            rows[n][key] = family[n]
    for n in others:
        # The selection's own difference, with its paired interval (no p: it selects, it tests nothing).
        val = paired(*paired_runs(runs[n], runs["joint"], lambda r: r["val"]["acc_synergy"]))
        rows[n]["val_d_xor"] = val["mean"]
        rows[n]["val_d_xor_paired"] = {**val, "p": float("nan"), "holm_p": float("nan")}
    ranked = sorted(others, key=lambda n: rows[n]["val_d_xor"], reverse=True)
    chosen = ranked[0] if ranked else None
    out = {"rows": rows, "chosen": chosen}
    if len(ranked) > 1:
        # A lead of 0.1 points (one XOR sample on one seed) had decided the choice: another host's
        # arithmetic chose the runner-up.
        lead = paired(*paired_runs(runs[chosen], runs[ranked[1]], lambda r: r["val"]["acc_synergy"]))
        out["margin"] = {"runner_up": ranked[1], **lead, "p": float("nan"), "holm_p": float("nan")}
    return out


def _mean_std(row: dict, key: str) -> str:
    """``row[key]`` (a fraction) in % with its std over the seeds (none for one seed)."""
    std = row.get(f"{key}_std", float("nan"))
    return f"{100 * row[key]:.1f}" + ("" if missing(std) else f" ± {100 * std:.1f}")


def markdown(results: dict) -> str:
    c = results["config"]
    # Sweeps saved before each setting's command was: the default grid, one command.
    commands = any("argv" in st for st in results["settings"].values())
    lines = ["# SynIB sweep on the synthetic data", "",
             f"{c['seeds']} seeds, {c['epochs']} epochs" + (f", on {c['machine']}" if "machine" in c else "")
             + "; accuracies in %, test split. Δ = configuration − joint "
             "on the same seed (same split, initialisation and batch order), in points: mean [paired 95 % "
             "t-interval] (seeds won / seeds), p_Holm: two-sided paired t-test, Holm-adjusted over the "
             + ("configurations of the setting's table, each Δ column apart. " if commands else "setting's grid. ")
             + "Overall and XOR samples: mean ± std over the seeds. The chosen configuration (**bold**) has "
             "the largest mean Δ XOR on the validation "
             f"split ({100 * VAL_FRACTION:.0f} % of each seed's samples, per class, none of them test samples); "
             "the test split only reports; that column's interval is paired too, without a p-value (it "
             "selects, it tests nothing). "
             + ("Each setting's command is under its heading." if commands
                else "Generated by `python -m examples.sweep_synib`."), ""]
    for s, summ in results["summary"].items():
        st, rows = results["settings"][s], summ["rows"]
        lines += [f"## {s}: XOR fraction {st['fractions'][3]:.2f}, batch size {st['batch_size']}", ""]
        if commands:
            # --configs cuts the grid, and Holm's families with it.
            family = {k: sum(not isinstance(row[k], str) and not missing(row[k]["p"])
                             for n, row in rows.items() if n != "joint") for k in ("d_acc", "d_xor")}
            run = (f"Run by `{command('sweep_synib', st['argv'])}`" if "argv" in st
                   else "Run before commands were saved, on the whole grid")
            lines += [f"{run}; Holm's families: the configurations compared with joint that have a p-value, "
                      f"{family['d_acc']} for Δ overall, {family['d_xor']} for Δ XOR.", ""]
        lines += ["| configuration | overall | XOR samples | Δ overall | Δ XOR | validation Δ XOR |",
                  "|---|---|---|---|---|---|"]
        for name, row in rows.items():
            label = f"**{name}**" if name == summ["chosen"] else name
            lines.append(f"| {label} | {_mean_std(row, 'acc')} | {_mean_std(row, 'acc_synergy')} | "
                         + ("— | — | — |" if name == "joint" else
                            f"{points(row['d_acc'])} | {points(row['d_xor'])} | {points(row['val_d_xor_paired'])} |"))
        margin = summ.get("margin")
        if margin:
            # A tie (no spread, mean 0) came down to the sort order: noise too.
            noise = margin["lo"] <= 0 if not missing(margin["lo"]) else margin["mean"] == 0
            lines += ["", f"The chosen configuration minus the next, {margin['runner_up']}, on the validation XOR "
                      f"samples: {points(margin)}" + (": within validation noise, another run may choose "
                                                     "either" if noise else "") + "."]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--seeds", type=int_at_least(1), default=5, help="paired seeds per method")
    ap.add_argument("--epochs", type=int_at_least(1), default=40, help="training epochs per run")
    ap.add_argument("--settings", nargs="+", action=Distinct, default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--configs", nargs="+", action=Distinct, default=None,
                    help='configuration names, e.g. "random λ=0.1 p=0.8"')
    add_output_options(ap, "rewrite the summaries and the table of a saved sweep (in --out, else next to "
                           "it); no training")
    args = ap.parse_args(argv)
    if args.configs is not None:
        # A name outside the grid (say "lambda" for "λ") used to be dropped in silence: only
        # joint trained, nothing was chosen, and the run still succeeded.
        grids = {s: [n for n, kw in configs(SETTINGS[s]["p_variants"]) if kw is not None] for s in args.settings}
        valid = list(dict.fromkeys(n for grid in grids.values() for n in grid))
        unknown = [n for n in args.configs if n not in valid and n != "joint"]
        if unknown:
            ap.error(f"--configs: unknown configuration(s) {unknown}; choose from {valid}")
        empty = [s for s, grid in grids.items() if not set(grid) & set(args.configs)]
        if empty:
            ap.error(f"--configs: none of {args.configs} is in the grid of setting(s) {empty}; "
                     f"choose from {list(dict.fromkeys(n for s in empty for n in grids[s]))}")
    if args.replot:
        results = read_saved_run(ap, args.replot, ("config", "settings", "runs"))
        results["summary"] = {s: summarise(runs) for s, runs in results["runs"].items()}
        folder = results_folder(ap, args)
        (folder / args.replot.name).write_text(as_json(results))
        (folder / f"{args.replot.stem}.md").write_text(markdown(results))
        return results
    out = results_folder(ap, args)
    torch.set_num_threads(1)
    results = {"config": {"seeds": args.seeds, "epochs": args.epochs, "torch": torch.__version__,
                          "python": platform.python_version(), "machine": machine()},
               "settings": {}, "runs": {}, "summary": {}}
    if (out / "synib_sweep.json").exists():
        old = read_saved_run(ap, out / "synib_sweep.json", ("config", "settings", "runs", "summary"), "--out")
        same = old["config"]["seeds"] == args.seeds and old["config"]["epochs"] == args.epochs
        # Settings run before validation splits were recorded cannot choose: rerun them.
        kept = [s for s in old["runs"] if s not in args.settings and "val" in old["runs"][s]["joint"][0]] \
            if same else []
        for k in ("settings", "runs", "summary"):
            results[k] = {s: old[k][s] for s in kept}
        dropped = [s for s in old["runs"] if s not in args.settings and s not in kept]
        if dropped:
            why = (f"run with --seeds {old['config']['seeds']} --epochs {old['config']['epochs']}, not this run's"
                   if not same else "run before validation splits were recorded")
            print(f"sweep_synib: {out / 'synib_sweep.json'} held setting(s) {dropped}, {why}: they are not "
                  "kept in the new file (rerun them with --settings to have them)", file=sys.stderr, flush=True)
    for s in args.settings:
        st = SETTINGS[s]
        results["settings"][s] = {**st, "argv": run_arguments(argv)}
        grid = [(n, kw) for n, kw in configs(st["p_variants"]) if kw is None or args.configs is None
                or n in args.configs]
        runs = {name: [] for name, _ in grid}
        for seed in range(args.seeds):
            data = datasets.synthetic_views(fractions=st["fractions"], seed=seed, val_fraction=VAL_FRACTION)
            cfg = TrainConfig(epochs=args.epochs, batch_size=st["batch_size"], seed=seed, progress=False)
            for name, kwargs in grid:
                r = run(data, kwargs, cfg)
                runs[name].append(r)
                print(f"{s} seed {seed} {name:22s} acc {100 * r['acc']:.1f}  XOR {100 * r['acc_synergy']:.1f}",
                      flush=True)
        results["runs"][s] = runs
        results["summary"][s] = summarise(runs)
        (out / "synib_sweep.json").write_text(as_json(results))
    (out / "synib_sweep.md").write_text(markdown(results))
    print((out / "synib_sweep.md").read_text())
    return results


if __name__ == "__main__":
    main()
