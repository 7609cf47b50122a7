"""Problem generators shared by the tests."""
from __future__ import annotations

import socket

import numpy as np


def random_joint(rng: np.random.Generator, shape, *, alpha=1.0, sparsity=0.0, tiny=None, tiny_class=None):
    """A random joint ``P[n1, n2, ny]`` (float64, sums to 1, except with ``tiny_class``).

    ``sparsity``: fraction of cells set to exactly zero; ``tiny``: if given, a fifth of the
    remaining cells get masses of this order (1e-13 down to subnormal 5e-320 in the tests);
    ``tiny_class``: if given, the last target value's slice is scaled to hold this much mass
    in all (the total is then no longer 1: the solvers normalise).
    """
    P = rng.dirichlet(np.full(int(np.prod(shape)), alpha)).reshape(shape)
    if sparsity:
        P[rng.random(shape) < sparsity] = 0.0
        if P.sum() == 0:
            P.flat[0] = 1.0
    if tiny is not None:
        small = (rng.random(shape) < 0.2) & (P > 0)
        P[small] = tiny * rng.random(int(small.sum()))
    P = P / P.sum()
    if tiny_class is not None and shape[-1] > 1 and P[..., -1].sum() > 0:
        P[..., -1] *= tiny_class / P[..., -1].sum()
    return P


def clustered_digits_joint(seed: int = 0) -> np.ndarray:
    """A 20x20x10 joint from real data, built as the probe does: sklearn's digits split into
    left and right halves, each standardised, reduced by PCA(5) and clustered by KMeans(20)."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    images = digits.images.reshape(-1, 8, 8)
    codes = []
    for view in (images[:, :, :4], images[:, :, 4:]):
        z = StandardScaler().fit_transform(view.reshape(len(view), -1))
        z = PCA(5, random_state=seed).fit_transform(z)
        codes.append(KMeans(20, n_init=4, random_state=seed).fit_predict(z))
    P = np.zeros((20, 20, 10))
    np.add.at(P, (codes[0], codes[1], digits.target), 1.0)
    return P / P.sum()


def free_port() -> int:
    """A free TCP port on the loopback interface, for torch.distributed tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replot_without_training(monkeypatch, main, results: dict, path) -> None:
    """Save ``results`` at ``path`` and run an example script's ``main(["--replot", path])``
    with training made impossible (torch.set_num_threads, which every run calls, fails)."""
    import json

    import torch

    path.write_text(json.dumps(results))

    def trained(*args):
        raise AssertionError("--replot started a training run")
    monkeypatch.setattr(torch, "set_num_threads", trained)
    main(["--replot", str(path), "--no-plots"])
