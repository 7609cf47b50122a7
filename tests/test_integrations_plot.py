"""fastpid.plot: each helper returns axes with the artists it promises (Agg backend)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from fastpid.integrations import ECSAsyncController, SPICECurriculum  # noqa: E402
from fastpid.plot import plot_curriculum, plot_ecs_decisions, plot_pid_terms  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_pid_terms_with_bands():
    ep = [0, 1, 2, 3]
    terms = {"synergy": [0.1, 0.2, 0.3, 0.2], "redundancy": [0.5, 0.4, 0.4, 0.3], "unique1": [0, 0, 0.1, 0.1]}
    with pytest.warns(UserWarning, match=r"\['redundancy', 'unique1'\] without an uncertainty band"):
        ax = plot_pid_terms(ep, terms, {"synergy": ([0.0, 0.1, 0.2, 0.1], [0.2, 0.3, 0.4, 0.3])})
    assert len(ax.lines) == 3 and len(ax.collections) == 1
    assert ax.collections[0].get_facecolor()[0][:3] == pytest.approx(matplotlib.colors.to_rgb(ax.lines[0].get_color()))
    with pytest.raises(ValueError, match="4 values"):
        plot_pid_terms(ep, {"synergy": [0.1, 0.2]})
    fig, own = plt.subplots()
    with pytest.warns(UserWarning, match="without an uncertainty band"):
        assert plot_pid_terms(ep, terms, ax=own) is own


def test_pid_terms_from_results_in_their_units_and_refusing_bad_epochs_and_bands():
    """plot_pid_terms took no result objects (AttributeError: no .items) and labelled bits as
    nats; unsorted or NaN epochs and bands with lower above upper were drawn as given."""

    import fastpid

    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(12), size=3).reshape(3, 2, 3, 2)
    res = fastpid.pid(P, base=2, tol=1e-3)
    ax = plot_pid_terms([0, 1, 2], res)
    # each term with its certificate: a band of +-gap (cut at 0), as an estimate has its intervals
    assert ax.get_ylabel() == "bits" and len(ax.lines) == 4 and len(ax.collections) == 4
    top = ax.collections[3].get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(float(np.max(np.asarray(res.synergy) + np.asarray(res.gap))))
    x1, x2 = rng.integers(0, 2, 90), rng.integers(0, 2, 90)
    est = fastpid.estimate(x1, x2, x1 ^ x2, groups=np.arange(90) % 3, seed=0, n_null=5, progress=False)
    ax = plot_pid_terms([0, 1, 2], est, units="my units")
    assert ax.get_ylabel() == "my units" and len(ax.lines) == 4 and len(ax.collections) == 4
    for line, term in zip(ax.lines, ("redundancy", "unique1", "unique2", "synergy")):   # the corrected values
        assert line.get_label() == term and np.allclose(line.get_ydata(), getattr(est, term)), term
    band = ax.collections[3].get_paths()[0].vertices[:, 1]   # synergy's band spans its interval
    assert band.min() == pytest.approx(float(est.ci_low.synergy.min()))
    assert band.max() == pytest.approx(float(est.ci_high.synergy.max()))
    with pytest.raises(TypeError, match="terms must be a mapping"):
        plot_pid_terms([0], [0.1])
    with pytest.raises(ValueError, match=r"a PIDResult of batch shape \(\); plot_pid_terms needs one problem per epoch"):
        plot_pid_terms([0], fastpid.pid(P[0]))
    for bad in ([0, 2, 1], [0, float("nan"), 2]):
        with pytest.raises(ValueError, match="epochs must be finite and strictly increasing"):
            plot_pid_terms(bad, {"synergy": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match=r"intervals\['synergy'\] has a lower end above its upper one at epoch 1"):
        plot_pid_terms([0, 1], {"synergy": [0.1, 0.2]}, {"synergy": ([0.0, 0.3], [0.2, 0.25])})


def test_pid_terms_legend_says_what_the_bands_are():
    """The bands had no legend entry: an estimate's 95% interval and a result's +-gap looked alike."""

    import fastpid

    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(12), size=3).reshape(3, 2, 3, 2)

    def legend(ax):
        return [t.get_text() for t in ax.get_legend().get_texts()]

    assert legend(plot_pid_terms([0, 1, 2], fastpid.pid(P, tol=1e-3)))[-1] == "certified (± gap)"
    x1, x2 = rng.integers(0, 2, 90), rng.integers(0, 2, 90)
    est = fastpid.estimate(x1, x2, x1 ^ x2, groups=np.arange(90) % 3, seed=0, n_null=5, progress=False,
                           confidence=0.9)
    assert legend(plot_pid_terms([0, 1, 2], est)) == ["redundancy", "unique1", "unique2", "synergy", "90% interval"]
    ep, terms = [0, 1], {"synergy": [0.1, 0.2]}
    assert legend(plot_pid_terms(ep, terms, {"synergy": ([0, 0.1], [0.2, 0.3])})) == ["synergy", "interval"]
    assert legend(plot_pid_terms(ep, terms, {"synergy": ([0, 0.1], [0.2, 0.3])}, band_label="bootstrap 90%"))[-1] \
        == "bootstrap 90%"
    with pytest.warns(UserWarning, match="without an uncertainty band"):
        assert legend(plot_pid_terms(ep, terms)) == ["synergy"]     # no bands, no band entry
    with pytest.raises(TypeError, match="band_label must be a string, got int"):
        plot_pid_terms(ep, terms, band_label=3)


def _estimate_per_epoch(n, k, seed):
    """An estimate of 3 epochs (groups) where Y is X1 (k codes) except at epoch 0 (X1 + X2 mod k):
    at small N it flags some terms unreliable, at some epochs or all."""
    import fastpid

    rng = np.random.default_rng(seed)
    g = np.arange(n) % 3
    x1, x2 = rng.integers(0, k, n), rng.integers(0, 2, n)
    y = x1.copy()
    y[g == 0] = (x1[g == 0] + x2[g == 0]) % k
    return fastpid.estimate(x1, x2, y, groups=g, seed=0, n_null=5, progress=False)


def _x_extents(collection):
    return sorted((round(float(p.vertices[:, 0].min()), 9), round(float(p.vertices[:, 0].max()), 9))
                  for p in collection.get_paths())


def test_bands_an_estimate_flags_unreliable_are_hatched_and_named_so():
    """The bands of terms an estimate flags unreliable were drawn as its trusted ones (the
    table marks them "reliable: no"): nothing told a reader of the plot not to trust them."""
    terms = ("redundancy", "unique1", "unique2", "synergy")
    est = _estimate_per_epoch(90, 4, 1)
    flags = {t: np.asarray(getattr(est.reliable, t)) for t in terms}
    assert any(f.all() for f in flags.values()) and any(not f.any() for f in flags.values())   # the case tested
    assert all(f.all() or not f.any() for f in flags.values())   # one look per term: a band each
    ax = plot_pid_terms([0, 1, 2], est)
    assert len(ax.collections) == 4
    alphas = {True: [], False: []}
    for term, band, line in zip(terms, ax.collections, ax.lines):
        trusted = bool(flags[term].all())
        assert bool(band.get_hatch()) != trusted, term
        alphas[trusted].append(band.get_facecolor()[0][3])
        # still the term's colour, and its interval
        assert band.get_facecolor()[0][:3] == pytest.approx(matplotlib.colors.to_rgb(line.get_color())), term
        assert band.get_paths()[0].vertices[:, 1].max() == pytest.approx(float(getattr(est.ci_high, term).max()))
    assert max(alphas[False]) < min(alphas[True])                                   # lighter, too
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    pct = f"{100 * est.confidence:g}% interval"
    assert texts[-2:] == [pct, f"{pct}, flagged unreliable at this N"]
    (flagged_handle,) = [h for h in ax.get_legend().legend_handles if "unreliable" in h.get_label()]
    assert flagged_handle.get_hatch()
    # Intervals of the caller's around the estimate's values: the flags are the estimate's still.
    flagged = next(t for t in terms if not flags[t].any())
    with pytest.warns(UserWarning, match="without an uncertainty band"):     # the other three terms
        ax = plot_pid_terms([0, 1, 2], est, {flagged: (getattr(est.ci_low, flagged), getattr(est.ci_high, flagged))},
                            band_label="bootstrap")
    assert ax.collections[0].get_hatch() and [t.get_text() for t in ax.get_legend().get_texts()][-1] \
        == "bootstrap, flagged unreliable at this N"


def test_a_term_flagged_at_some_epochs_is_hatched_there_only():
    terms = ("redundancy", "unique1", "unique2", "synergy")
    est = _estimate_per_epoch(60, 3, 2)
    ep = np.array([0.0, 1.0, 3.0])
    flags = {t: np.asarray(getattr(est.reliable, t)) for t in terms}
    mixed = [t for t in terms if flags[t].any() and not flags[t].all()]
    assert mixed                                                                           # the case tested
    ax = plot_pid_terms(ep, est)
    bands = iter(ax.collections)
    for term in terms:
        if term not in mixed:
            assert bool(next(bands).get_hatch()) != flags[term].all(), term
            continue
        trusted, hatched = next(bands), next(bands)
        assert not trusted.get_hatch() and hatched.get_hatch(), term
        # Each epoch owns the band from halfway to its neighbours: the flagged epochs' stretches
        # are hatched, the others' not, and together they cover the epochs.
        for band, bad in ((trusted, False), (hatched, True)):
            runs, start = [], None
            for i, f in enumerate(list(~flags[term]) + [None]):
                if f == bad and start is None:
                    start = i
                elif f != bad and start is not None:
                    lo = ep[start] if start == 0 else (ep[start - 1] + ep[start]) / 2
                    hi = ep[i - 1] if i == len(ep) else (ep[i - 1] + ep[i]) / 2
                    runs.append((round(lo, 9), round(hi, 9)))
                    start = None
            assert _x_extents(band) == runs, (term, bad)
    assert next(bands, None) is None
    # One epoch: a bar, dashed where flagged.
    i = next(i for i in range(3) if not all(flags[t][i] for t in terms) and any(flags[t][i] for t in terms))
    ax = plot_pid_terms([i], est[i:i + 1])
    styles = {flags[t][i]: bar.get_linestyle()[0] for t, bar in zip(terms, ax.collections)}
    assert len(styles) == 2 and styles[True] != styles[False]


def test_terms_without_a_band_are_warned_of():
    """A mapping of terms without intervals was drawn bare without a word, though a value from
    samples has an uncertainty the plot then hides."""
    import fastpid

    ep, terms = [0, 1], {"synergy": [0.1, 0.2], "redundancy": [0.3, 0.3]}
    with pytest.warns(UserWarning, match=r"\['synergy', 'redundancy'\] without an uncertainty band: pass "
                                         r"intervals=.*PIDEstimate"):
        plot_pid_terms(ep, terms)
    with pytest.warns(UserWarning, match=r"\['redundancy'\] without an uncertainty band"):
        plot_pid_terms(ep, terms, {"synergy": ([0, 0.1], [0.2, 0.3])})
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(12), size=2).reshape(2, 2, 3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_pid_terms(ep, terms, {"synergy": ([0, 0.1], [0.2, 0.3]), "redundancy": ([0.2, 0.2], [0.4, 0.4])})
        ax = plot_pid_terms([0, 1, 2], _estimate_per_epoch(60, 3, 2))
        assert len(ax.collections) >= 4
        ax = plot_pid_terms(ep, fastpid.pid(P, tol=1e-3))
    # A result's certificate stays as it was: one plain band a term, one legend entry.
    assert len(ax.collections) == 4 and not any(c.get_hatch() for c in ax.collections)
    assert [t.get_text() for t in ax.get_legend().get_texts()][4:] == ["certified (± gap)"]


def test_curriculum_from_a_spice_schedule_and_from_fractions():
    ax = plot_curriculum(SPICECurriculum(100, epochs=10))
    assert len(ax.lines) == 1 and len(ax.patches) == 3                    # three phases
    ys = ax.lines[0].get_ydata()
    assert ys[0] == pytest.approx(0.2) and ys[2] == 1.0                   # c0, then a full last epoch
    ax = plot_curriculum([0.2, 0.5, 1.0, 0.3, 1.0], phases=["a", "a", "a", "b", "b"])
    assert len(ax.lines) == 1 and len(ax.patches) == 2
    with pytest.raises(ValueError, match="one phase per epoch"):
        plot_curriculum([0.2, 0.5], phases=["a"])
    for kwargs in ({"epochs": range(100, 110)}, {"phases": ["x"] * 10}):   # had been replaced silently
        with pytest.raises(ValueError, match="are for a sequence of fractions"):
            plot_curriculum(SPICECurriculum(100, epochs=10), **kwargs)


def test_ecs_decisions():
    ctrl = ECSAsyncController(warmup_epochs=1, baseline=None, max_unimodal_epochs=4, eps=1e-9)
    for e, (u1, u2) in enumerate([(0.9, 0.1), (0.9, 0.1), (0.1, 0.9), (0.2, 0.2), (0.2, 0.2)]):
        ctrl.step(e, {"unique1": u1, "unique2": u2, "synergy": 0.01})
    ax = plot_ecs_decisions(ctrl)
    bars = [len(c.get_paths()) for c in ax.collections]
    assert bars == [1, 1]                       # modality 1 paused at epoch 1, modality 2 at epoch 2
    assert len(ax.patches) == 1 and len(ax.lines) == 1                    # warm-up, stage 2 at epoch 4
    assert ax.lines[0].get_xdata()[0] == 4


def test_curriculum_plot_draws_what_is_admitted_and_takes_grad_histories():
    """min_samples raises the admitted share above the pacing value: the plot drew the pacing
    value (0.2) where indices() admitted 50 of 100 samples."""
    import torch

    import fastpid

    cur = SPICECurriculum(100, epochs=7, min_samples=50)
    p = torch.softmax(torch.randn(100, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), 1)
    cur.update(p, p, p, torch.arange(100) % 3)
    admitted = []
    for epoch in range(7):
        cur.set_epoch(epoch)
        admitted.append(len(cur.indices()) / 100)
    ax = plot_curriculum(cur)
    assert list(ax.lines[0].get_ydata()) == admitted and min(admitted) == 0.5
    # A per-epoch history of differentiable results (0-d tensors that require grad).
    P = np.random.default_rng(1).random((3, 2, 2, 2))
    history = [fastpid.pid(torch.tensor(P[i], requires_grad=True)).synergy for i in range(3)]
    with pytest.warns(UserWarning, match="without an uncertainty band"):
        ax = plot_pid_terms([0, 1, 2], {"synergy": history})
    assert np.allclose(ax.lines[0].get_ydata(), [float(h.detach()) for h in history])
    plt.close("all")


def test_spans_follow_the_epochs_spacing():
    """Epochs logged every 5 had phase spans of ±0.5 around each point (epochs 5.5–9.5 in no
    phase) and the last ECS probe's bar one epoch wide."""
    ax = plot_curriculum([0.2, 0.5, 1.0], epochs=[0, 5, 10], phases=["a", "b", "b"])
    spans = sorted(p.get_x() for p in ax.patches)
    widths = {round(p.get_x(), 6): p.get_width() for p in ax.patches}
    assert spans == [-2.5, 2.5] and widths[-2.5] == 5.0 and widths[2.5] == 10.0
    history = {"epoch": [0, 5, 10], "train1": [False, True, False], "train2": [True, True, True],
               "stage": ["unimodal"] * 3, "warmup_epochs": 0, "switch_epoch": None}
    ax = plot_ecs_decisions(history)
    bars = [path.get_extents() for path in ax.collections[0].get_paths()]
    assert [(b.x0, b.x1) for b in bars] == [(0.0, 5.0), (10.0, 15.0)]


def test_pause_bars_end_where_stage_2_starts():
    """Stage 2 started at epoch 7, between probes at 5 and 10: modality 1's bar ran on to 10,
    across the stage-2 line."""
    ctrl = ECSAsyncController(probe_every=5, max_unimodal_epochs=7, warmup_epochs=0, baseline=None,
                              min_score=10)
    for epoch in range(15):
        if ctrl.wants_probe(epoch):
            ctrl.step(epoch, {"unique1": 1.0, "unique2": 0.1, "synergy": 0.0})
        else:
            ctrl.update(epoch)
    assert ctrl.switch_epoch == 7
    ax = plot_ecs_decisions(ctrl)
    bars = [path.get_extents() for path in ax.collections[0].get_paths()]
    assert [(b.x0, b.x1) for b in bars] == [(0.0, 5.0), (5.0, 7.0)]
    plt.close("all")


def test_out_of_range_fractions_and_short_histories_are_refused():
    """Percentages drew nothing inside the fixed y range; a history with fewer decisions than
    epochs dropped the rest silently."""
    with pytest.raises(ValueError, match=r"fractions must lie in \[0, 1\]"):
        plot_curriculum([20, 50, 100])
    with pytest.raises(ValueError, match=r"fractions must lie in \[0, 1\]"):
        plot_curriculum([0.2, float("nan")])
    with pytest.raises(ValueError, match="strictly increasing"):
        plot_curriculum([0.2, 0.5], epochs=[3, 1])
    with pytest.raises(ValueError, match=r"history\['train1'\] has 1 entries, history\['epoch'\] 4"):
        plot_ecs_decisions({"epoch": [0, 1, 2, 3], "train1": [True], "train2": [True] * 4,
                            "stage": ["unimodal"] * 4})


def _balanced(ctrl, epochs):
    for e in epochs:
        ctrl.step(e, {"unique1": 0.2, "unique2": 0.2, "synergy": 0.01})
    return ctrl


def test_ecs_axis_covers_the_run_and_the_warm_up_its_own_epochs():
    """A run that never paused had an x axis of one point (-0.055, 0.055), or the warm-up's
    alone; the warm-up was drawn from the first probe (5) back to warmup_epochs (3), and past
    a stage 2 that started before its end."""
    never = plot_ecs_decisions(_balanced(ECSAsyncController(baseline=None, warmup_epochs=0), range(10)))
    assert never.get_xlim()[0] == 0 and never.get_xlim()[1] >= 9 and not never.patches
    late = plot_ecs_decisions(_balanced(ECSAsyncController(baseline=None, warmup_epochs=3), [5, 6]))
    (warm,) = late.patches
    assert (warm.get_x(), warm.get_x() + warm.get_width()) == (0, 3)
    early = _balanced(ECSAsyncController(baseline=None, warmup_epochs=10, max_unimodal_epochs=4), range(6))
    ax = plot_ecs_decisions(early)
    (warm,) = ax.patches
    assert warm.get_x() + warm.get_width() == early.switch_epoch == 4
    assert ax.get_xlim()[1] >= 5   # the probes of stage 2 stay on the axis


def test_a_new_figure_keeps_its_labels_and_the_legend_beside_the_rows():
    """Without a layout engine a plain savefig cut the 'epoch' label (and the rows' tick
    labels) off the image; the ECS legend sat over modality 2's bars."""
    ax = plot_ecs_decisions(_balanced(ECSAsyncController(baseline=None, warmup_epochs=1), range(4)))
    assert type(ax.figure.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1   # right of the axes
    terms_ax = plot_pid_terms([0, 1], {"s": [0.1, 0.2]}, {"s": ([0, 0.1], [0.2, 0.3])})
    for fig_ax in (terms_ax, plot_curriculum([0.2, 0.5])):
        assert type(fig_ax.figure.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"


def test_bad_values_are_refused_before_anything_is_drawn():
    """NaN and inf were dropped silently (2 of 4 points drawn, a band lost); a refused call
    left an empty figure open, or its first lines in the caller's axes."""
    nan = float("nan")
    with pytest.raises(ValueError, match=r"terms\['synergy'\] is nan at epoch 1"):
        plot_pid_terms([0, 1, 2], {"synergy": [0.1, nan, 0.3]})
    with pytest.raises(ValueError, match=r"intervals\['synergy'\] is inf at epoch 2"):
        plot_pid_terms([0, 1, 2], {"synergy": [0.1, 0.2, 0.3]}, {"synergy": ([0, 0, 0], [1, 1, float("inf")])})
    before = plt.get_fignums()
    with pytest.raises(ValueError):
        plot_pid_terms([0, 1, 2], {"synergy": [0.1, 0.2]})
    with pytest.raises(ValueError):
        plot_curriculum([0.2, 0.5], phases=["a"])
    assert plt.get_fignums() == before
    _, ax = plt.subplots()
    with pytest.raises(ValueError):
        plot_pid_terms([0, 1, 2], {"synergy": [0.1, 0.2, 0.3]}, {"synergy": ([0, 0.1], [0.2, 0.3])}, ax=ax)
    assert not ax.lines


def test_a_single_epoch_is_visible():
    """A one-point step line and a one-point band drew nothing."""
    ax = plot_curriculum([0.4])
    assert ax.lines[0].get_marker() == "o"
    ax = plot_pid_terms([3], {"s": [0.5]}, {"s": ([0.3], [0.7])})
    (bar,) = ax.collections
    assert bar.get_segments()[0].tolist() == [[3.0, 0.3], [3.0, 0.7]]


def test_a_curriculum_line_is_labelled_as_its_schedule():
    """The schedule was labelled 'fraction admitted', though every sample is admitted until
    the first scores (epoch 0 drew 0.2 where the run admitted 1.0)."""
    ax = plot_curriculum(SPICECurriculum(100, epochs=9))
    assert ax.lines[0].get_label() == "scheduled fraction (once scores exist)"
    assert plot_curriculum([0.2, 0.5]).lines[0].get_label() == "fraction admitted"


def test_hand_made_ecs_histories_are_checked():
    """A missing key was a bare KeyError, 'Unimodal' or the string 'False' drew no pause, and
    a stage 2 before the first probe drew bars of negative width."""
    history = {"epoch": [0, 1, 2], "train1": [True, False, True], "train2": [True, True, True],
               "stage": ["unimodal"] * 3}
    with pytest.raises(ValueError, match=r"history lacks \['stage'\]"):
        plot_ecs_decisions({k: v for k, v in history.items() if k != "stage"})
    with pytest.raises(ValueError, match="the stages are 'unimodal' and 'joint'"):
        plot_ecs_decisions({**history, "stage": ["Unimodal"] * 3})
    with pytest.raises(ValueError, match=r"history\['train1'\] must hold booleans"):
        plot_ecs_decisions({**history, "train1": ["True", "False", "True"]})
    ax = plot_ecs_decisions({**history, "switch_epoch": 0.5})
    assert [len(c.get_paths()) for c in ax.collections] == [0, 0]
    assert [len(c.get_paths()) for c in plot_ecs_decisions(history).collections] == [1, 0]


def test_arguments_of_the_wrong_kind_are_told_so():
    """A band given as one number raised "object of type 'float' has no len()", ax="x" an
    AttributeError from inside, complex values were drawn without their imaginary parts, bool
    tensors of decisions were "not booleans", and a NaN switch_epoch drew no pause at all."""
    import torch

    with pytest.raises(ValueError, match=r"intervals\['synergy'\] must be a pair \(lower, upper\) of per-epoch "
                                         r"values, got 0.1"):
        plot_pid_terms([0, 1, 2], {"synergy": [0.1, 0.2, 0.3]}, {"synergy": 0.1})
    with pytest.raises(TypeError, match="ax must be matplotlib axes"):
        plot_pid_terms([0, 1, 2], {"synergy": [0.1, 0.2, 0.3]}, ax="x")
    with pytest.raises(TypeError, match=r"terms\['synergy'\] must be real numbers"):
        plot_pid_terms([0, 1, 2], {"synergy": [0.1 + 1j, 0.2, 0.3]})
    history = {"epoch": [0, 1, 2], "train1": torch.tensor([True, False, True]),
               "train2": torch.ones(3, dtype=torch.bool), "stage": ["unimodal"] * 3}
    assert [len(c.get_paths()) for c in plot_ecs_decisions(history).collections] == [1, 0]
    for band in (0.1, np.array(0.1), torch.tensor(0.1)):
        with pytest.raises(ValueError, match=r"intervals\['synergy'\] must be a pair"):
            plot_pid_terms([0, 1, 2], {"synergy": [0.1, 0.2, 0.3]}, {"synergy": band})
    saved = plot_ecs_decisions({**history, "switch_epoch": np.array(2), "warmup_epochs": torch.tensor(1)})
    assert [len(c.get_paths()) for c in saved.collections] == [1, 0]          # 0-d, as np.savez keeps them
    for key, bad in (("switch_epoch", float("nan")), ("warmup_epochs", -5), ("switch_epoch", "2")):
        with pytest.raises(ValueError, match=rf"history\['{key}'\] must be an epoch >= 0"):
            plot_ecs_decisions({**history, key: bad})
