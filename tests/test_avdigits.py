"""AV-digits (examples/avdigits.py): a tiny clip pool synthesised with espeak-ng into a
temporary cache; speaker-disjoint splits, shapes and labels, the cache, determinism."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from examples import avdigits  # noqa: E402

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")
TINY = dict(n_speakers=6, clips_per_digit=1, speakers=(3, 1, 2), verbose=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("avdigits")


@pytest.fixture(scope="module")
def tiny(cache):
    return avdigits.avdigits_views(0, cache_dir=cache, **TINY)


@needs_espeak
def test_splits_are_speaker_disjoint_and_image_disjoint(tiny):
    spk = {p: set(tiny.meta["speaker"][tiny.indices(p)].tolist()) for p in ("train", "val", "test")}
    assert [len(spk[p]) for p in ("train", "val", "test")] == [3, 1, 2]
    assert not (spk["train"] & spk["val"] or spk["train"] & spk["test"] or spk["val"] & spk["test"])
    img = {p: set(tiny.meta["image"][tiny.indices(p)].tolist()) for p in ("train", "val", "test")}
    assert not (img["train"] & img["val"] or img["train"] & img["test"] or img["val"] & img["test"])


@needs_espeak
def test_the_test_split_is_the_same_for_every_seed_and_no_other_seed_trains_or_tunes_on_it(cache):
    """Seeds tune on validation accuracy (run_fair's tuning seeds 1000, 1001); with a test split
    drawn per seed, their validation speakers had held up to 7 of an evaluation seed's 16
    test speakers. The test speakers and images are now drawn once for every seed."""
    views = [avdigits.avdigits_views(s, cache_dir=cache, **TINY) for s in (0, 1, 2, 1000, 1001)]

    def part(v, p, key):
        return set(v.meta[key][v.indices(p)].tolist())
    test_speakers = part(views[0], "test", "speaker")
    test_images = set().union(*(part(v, "test", "image") for v in views))   # each seed pairs its own
    for v in views:
        assert part(v, "test", "speaker") == test_speakers
        assert not (part(v, "train", "speaker") | part(v, "val", "speaker")) & test_speakers
        assert not (part(v, "train", "image") | part(v, "val", "image")) & test_images
    assert len({tuple(sorted(part(v, "train", "speaker"))) for v in views}) > 1   # the rest still varies


@needs_espeak
def test_shapes_and_labels(tiny):
    from sklearn.datasets import load_digits

    n = 6 * 10
    assert tiny.x1.shape == (n, 40 * 49) and tiny.x2.shape == (n, 64)
    assert tiny.x1.dtype == torch.float32 and tiny.n_classes == 10
    assert len(tiny.train) + len(tiny.val) + len(tiny.test) == n
    for p in ("train", "val", "test"):
        assert sorted(tiny.y[tiny.indices(p)].unique().tolist()) == list(range(10))   # every word per speaker
    # each clip is paired with an image of its own digit
    assert np.array_equal(load_digits().target[tiny.meta["image"].numpy()], tiny.y.numpy())
    # standardised with training statistics
    assert tiny.x2[tiny.train].mean(0).abs().max() < 1e-4


@needs_espeak
def test_cache_is_reused_and_features_are_deterministic(cache, tiny, tmp_path, monkeypatch):
    first = avdigits.load_features(6, 1, snr_db=-5.0, cache_dir=cache, verbose=False)
    assert first["generation_seconds"] == 0.0                 # read from the cache the fixture wrote
    fresh = avdigits.load_features(6, 1, snr_db=-5.0, cache_dir=tmp_path, verbose=False)
    assert fresh["generation_seconds"] > 0
    np.testing.assert_array_equal(first["features"], fresh["features"])
    monkeypatch.setattr(avdigits, "_synthesise", lambda *a, **k: pytest.fail("synthesised despite the cache"))
    again = avdigits.avdigits_views(0, cache_dir=cache, **TINY)
    assert torch.equal(again.x1, tiny.x1) and torch.equal(again.x2, tiny.x2)
    splits = {tuple(avdigits.avdigits_views(s, cache_dir=cache, **TINY).meta["speaker"].tolist())
              for s in range(4)}
    assert len(splits) > 1                                    # each seed draws its own speaker split


@needs_espeak
def test_noise_knobs(cache):
    clean = avdigits.avdigits_views(0, cache_dir=cache, image_noise=0.0, snr_db=None, **TINY)
    noisy = avdigits.avdigits_views(0, cache_dir=cache, image_noise=8.0, snr_db=None, **TINY)
    assert torch.equal(clean.x1, noisy.x1) and torch.equal(clean.y, noisy.y)
    assert not torch.allclose(clean.x2, noisy.x2)


def test_white_noise_has_the_requested_snr():
    rng = np.random.default_rng(0)
    waves = np.zeros((3, 20000), np.float32)
    waves[:, :10000] = rng.uniform(-0.5, 0.5, (3, 10000))
    noisy = avdigits.add_white_noise(waves, 6.0, seed=0)
    noise = noisy - waves
    snr = 10 * np.log10((waves[:, :10000] ** 2).mean(1) / (noise ** 2).mean(1))
    np.testing.assert_allclose(snr, 6.0, atol=0.1)


def test_mel_filterbank_and_log_mel_of_a_tone():
    fb = avdigits.mel_filterbank(40)
    assert fb.shape == (40, avdigits.N_FFT // 2 + 1) and (fb >= 0).all()
    assert (fb.max(1) > 0.5).all() and (fb.max(1) <= 1.0).all()   # no empty band at low frequencies
    assert (np.diff(fb.argmax(1)) >= 0).all()                 # centres rise with the band index
    t = np.arange(avdigits.SAMPLE_RATE) / avdigits.SAMPLE_RATE
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)[None]
    feats = avdigits.log_mel(tone)
    assert feats.shape == (1, 40, 49) and feats.max() == 0.0 and feats.min() >= -80.0
    freqs = np.linspace(0, avdigits.SAMPLE_RATE / 2, avdigits.N_FFT // 2 + 1)
    # the loudest band is one of the (overlapping) bands that cover 1 kHz
    assert abs(int(feats[0].mean(1).argmax()) - int(fb[:, np.abs(freqs - 1000).argmin()].argmax())) <= 1


def test_missing_espeak_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(avdigits.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        avdigits.load_features(6, 1, cache_dir=tmp_path, verbose=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_speakers"):
        avdigits.speaker_pool(10_000)
    with pytest.raises(ValueError, match="image_noise"):
        avdigits.avdigits_views(0, image_noise=-1.0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="snr_db"):
        avdigits.load_features(6, 1, snr_db=float("nan"), cache_dir=tmp_path)


def test_validation_split_of_the_other_loaders():
    from examples.data import synthetic_views

    d = synthetic_views(n=400, seed=3, val_fraction=0.2)
    parts = [set(d.indices(p).tolist()) for p in ("train", "val", "test")]
    assert sum(map(len, parts)) == 400 and len(set.union(*parts)) == 400
    assert abs(len(parts[1]) - 80) <= 4
    legacy = synthetic_views(n=400, seed=3)
    assert legacy.val is None and torch.equal(legacy.test, d.test)   # same test split as without validation
    with pytest.raises(ValueError, match="no validation split"):
        legacy.split("val")
