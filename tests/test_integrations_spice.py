"""SPICE: per-sample scores on hand-made predictions, pacing, phases, ranking, sampler, and a
seconds-long training run."""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastpid
from fastpid.integrations.pacing import PhaseSchedule, RootCompetence
from fastpid.integrations.spice import SPICECurriculum, SPICESampler
from fastpid.integrations.spice_scores import (SampleScores, local_scores, nearest_neighbours,
                                               pointwise_scores)

LOG2 = math.log(2.0)


def rows(*ps):
    """Two-class probability rows from the probabilities of class 0."""
    p = torch.tensor(ps, dtype=torch.float64)
    return torch.stack([p, 1 - p], 1)


# ---------------------------------------------------------------- pointwise scores

def test_pointwise_scores_on_the_four_archetypes():
    # y = 0 everywhere, uniform prior; columns: redundant, unique-1, unique-2, synergistic.
    p1 = rows(1.0, 1.0, 0.5, 0.5)
    p2 = rows(1.0, 0.5, 1.0, 0.5)
    p12 = rows(1.0, 1.0, 1.0, 1.0)
    s = pointwise_scores(p1, p2, p12, torch.zeros(4, dtype=torch.long), prior=[0.5, 0.5])
    torch.testing.assert_close(s.redundancy, torch.tensor([LOG2, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(s.unique1, torch.tensor([0, LOG2, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(s.unique2, torch.tensor([0, 0, LOG2, 0], dtype=torch.float64))
    torch.testing.assert_close(s.synergy, torch.tensor([0, 0, 0, LOG2], dtype=torch.float64))


@pytest.mark.parametrize("prior, match", [
    # was NaN scores
    ([float("nan"), 0.5, 0.5], r"prior must be a probability vector of shape \(3,\) .*summing to nan"),
    ([0.0, 0.5, 0.5], "prior gives class 0 probability 0, but y holds it"),  # was r = 26.5 nats
])
def test_pointwise_scores_refuse_a_prior_that_is_nan_or_rules_out_a_label(prior, match):
    p = torch.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match=match):
        pointwise_scores(p, p, p, torch.tensor([0, 1, 2, 0]), prior=prior)


def test_shares_refuse_a_negative_eps():
    s = SampleScores(*(torch.zeros(3, dtype=torch.float64) for _ in range(4)))
    assert torch.equal(s.shares(), torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="eps must be"):
        s.shares(eps=-1.0)  # had given NaN shares


def test_pointwise_scores_negative_pmi_and_partial_overlap():
    # p1(y)=0.25 < prior: i1 = log 0.5 < 0, so r = 0 and u1 = 0; p2(y)=1: u2 = log 2.
    # Second sample: i1 = log 1.6, i2 = log 1.2, i12 = log 1.8: r = log 1.2, u1 = log(1.6/1.2),
    # s = log(1.8/1.6).
    p1 = rows(0.25, 0.8)
    p2 = rows(1.0, 0.6)
    p12 = rows(0.5, 0.9)
    s = pointwise_scores(p1, p2, p12, torch.tensor([0, 0]), prior=[0.5, 0.5])
    torch.testing.assert_close(s.redundancy, torch.tensor([0.0, math.log(1.2)], dtype=torch.float64))
    torch.testing.assert_close(s.unique1, torch.tensor([0.0, math.log(1.6 / 1.2)], dtype=torch.float64))
    torch.testing.assert_close(s.unique2, torch.tensor([LOG2, 0.0], dtype=torch.float64))
    torch.testing.assert_close(s.synergy, torch.tensor([0.0, math.log(1.8 / 1.6)], dtype=torch.float64))


def test_pointwise_default_prior_is_label_frequency():
    y = torch.tensor([0, 0, 0, 1])                      # p(0) = 0.75, p(1) = 0.25
    one = rows(1.0, 1.0, 1.0, 0.0)                      # every head certain and right
    s = pointwise_scores(one, one, one, y)
    expect = torch.tensor([math.log(4 / 3)] * 3 + [math.log(4)], dtype=torch.float64)
    torch.testing.assert_close(s.redundancy, expect)
    assert float(s.synergy.abs().max()) == 0.0


def test_pointwise_zero_probability_stays_finite():
    s = pointwise_scores(rows(0.0), rows(1.0), rows(1.0), torch.tensor([0]), prior=[0.5, 0.5])
    assert torch.isfinite(torch.stack([s.redundancy, s.unique1, s.unique2, s.synergy])).all()
    assert float(s.unique2) == pytest.approx(LOG2)


@pytest.mark.parametrize("bad, err", [
    (dict(p1=torch.zeros(2, 2)), "sum to 1"),
    (dict(p1=torch.tensor([[2.0, -1.0], [0.5, 0.5]])), "negative"),
    (dict(p2=rows(0.5, 0.5, 0.5)), "rows"),
    (dict(y=torch.tensor([0, 2])), r"\[0, 2\)"),
    (dict(y=torch.tensor([0.0, 1.5])), "not an integer"),
    (dict(p12=[[0.5, 0.5]]), "torch.Tensor"),
])
def test_pointwise_bad_input(bad, err):
    args = dict(p1=rows(0.5, 0.5), p2=rows(0.5, 0.5), p12=rows(0.5, 0.5), y=torch.tensor([0, 1]))
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=err):
        pointwise_scores(args["p1"], args["p2"], args["p12"], args["y"])


def test_shares_sum_to_one_or_zero():
    s = SampleScores(redundancy=torch.tensor([1.0, 0.0]), unique1=torch.tensor([1.0, 0.0]),
                     unique2=torch.tensor([0.0, 0.0]), synergy=torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(s.shares(), torch.tensor([[0.25, 0.0], [0.25, 0.0], [0.5, 0.0]]))


# ---------------------------------------------------------------- neighbours and local scores

def test_nearest_neighbours_on_a_line():
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    assert nearest_neighbours(x, 2).tolist() == [[0, 1], [1, 0], [2, 1], [3, 2]]
    # Duplicated points: each is still its own first neighbour.
    dup = torch.tensor([[5.0], [5.0], [0.0]])
    assert nearest_neighbours(dup, 1).flatten().tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(x, 5)
    # an embedding of no features (had failed inside torch's max())
    with pytest.raises(ValueError, match=r"embedding must have shape \(N, D\) with N, D >= 1, got \(4, 0\)"):
        nearest_neighbours(torch.zeros(4, 0), 2)


def test_ties_in_distance_go_to_the_lower_index():
    """topk chose among rows tied at the k-th distance in no set order: row 0 of [[0], [1], [1],
    [1]] got neighbour 2, and sample 0's local redundancy was 0.693 nats with those neighbours,
    0 with the documented ones. Checked against a stable sort of the exact distances, also
    across chunks (32 points of small integer coordinates: their mean, the centring, and every
    distance the solver forms are exact in binary, so its ties are the exact ones)."""
    assert nearest_neighbours(torch.tensor([[0.0], [1.0], [1.0], [1.0]]), 2).tolist() == [[0, 1], [1, 2],
                                                                                        [2, 1], [3, 1]]
    assert nearest_neighbours(torch.zeros(20, 3), 3)[5].tolist() == [5, 0, 1]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x = torch.randint(0, 3, (32, 2), generator=g).double()  # many exact ties
        d = torch.cdist(x, x) ** 2
        d.fill_diagonal_(-1.0)
        want = d.sort(dim=1, stable=True).indices[:, :5].sort(1).values  # the set (its order is free)
        for got in (nearest_neighbours(x, 5), nearest_neighbours(x, 5, chunk=7)):
            assert torch.equal(got[:, 0], torch.arange(32)) and torch.equal(got.sort(1).values, want)


def test_exact_ties_survive_a_scale_and_the_chunking():
    """Where the centring or the expansion is not exact (600 points, a scale of 3), distances
    tied in exact arithmetic came out a few ulps apart and the rounding chose: 184 of 600
    neighbour sets changed with the scale, 47 with the chunk, 196 broke the lower-index rule."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (600, 4), generator=g).double()
    d = torch.cdist(x, x) ** 2  # small integers: exact
    d.fill_diagonal_(-1.0)
    want = d.sort(dim=1, stable=True).indices[:, :8].sort(1).values
    for got in (nearest_neighbours(x, 8), nearest_neighbours(x * 3, 8), nearest_neighbours(x, 8, chunk=1),
                nearest_neighbours(x * 3 - 1e6, 8, chunk=37), nearest_neighbours(x * 0.75, 8, chunk=599)):
        assert torch.equal(got[:, 0], torch.arange(600)) and torch.equal(got.sort(1).values, want)
    # Not small integers, and one row far out (whose squares had made every row a near tie):
    # the float64 distances of direct differences, ties to the lower index.
    for z in (x * 0.3, torch.cat([x[:1] * 1e8, x[1:] + 0.1])):
        d = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist")
        d.fill_diagonal_(-1.0)
        want = d.sort(dim=1, stable=True).indices[:, :8].sort(1).values
        for got in (nearest_neighbours(z, 8), nearest_neighbours(z, 8, chunk=7)):
            assert torch.equal(got.sort(1).values, want)


def test_local_scores_recover_xor_and_copy_neighbourhoods():
    # Cluster A (near 0): one-hot heads a, b and y = a xor b over all four pairs -> S = log 2.
    # Cluster B (near 100): both heads copy y, y uniform -> R = log 2.
    a = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1])
    b = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    y = torch.cat([a[:4] ^ b[:4], a[4:]])
    emb = torch.cat([torch.zeros(4, 1), torch.full((4, 1), 100.0)]) + torch.arange(8.0)[:, None] * 1e-3
    eye = torch.eye(2, dtype=torch.float64)
    s = local_scores(eye[a], eye[b], y, emb, k=4, method="exact")
    zero, half = torch.zeros(4, dtype=torch.float64), torch.full((4,), LOG2, dtype=torch.float64)
    torch.testing.assert_close(s.synergy, torch.cat([half, zero]), atol=1e-6, rtol=0)
    torch.testing.assert_close(s.redundancy, torch.cat([zero, half]), atol=1e-6, rtol=0)
    torch.testing.assert_close(s.unique1 + s.unique2, torch.zeros(8, dtype=torch.float64), atol=1e-6, rtol=0)


def test_local_scores_carry_each_samples_certificate():
    """The scores of solves carried no uncertainty ("The gaps are not kept"): with
    method="fast" the gaps reach 4e-2 nats where the terms are about 1e-2. Each sample's gap
    bounds each term of its neighbourhood joint's PID (against a solve to 1e-12); closed forms
    have none."""
    g = torch.Generator().manual_seed(3)
    p1, p2 = (torch.softmax(torch.randn(30, 3, generator=g), 1) for _ in range(2))
    y, emb = torch.randint(0, 3, (30,), generator=g), torch.randn(30, 2, generator=g)
    nbr = nearest_neighbours(emb, 5)
    P = torch.stack([fastpid.joint(p1[i], p2[i], y[i], sizes=(3, 3, 3)) for i in nbr])
    ref = fastpid.pid(P, tol=1e-12)
    for method in ("exact", "fast"):
        s = local_scores(p1, p2, y, emb, k=5, method=method)
        assert s.gap.shape == (30,) and bool((s.gap >= 0).all())
        for t in ("redundancy", "unique1", "unique2", "synergy"):
            assert bool(((getattr(s, t) - getattr(ref, t)).abs() <= s.gap + ref.gap + 1e-12).all()), (method, t)
    assert float(s.gap.max()) > 1e-6                            # "fast": a bound worth reporting
    assert pointwise_scores(p1, p2, p1, y).gap is None


def test_local_scores_say_when_ties_pick_the_neighbourhoods():
    """A collapsed fused embedding (every row equal) made every neighbourhood the sample and
    the first k - 1 rows: class-skewed admission by row order, with no word of it. One-hot
    rows of many codes (fewer duplicates than k) tie at the k-th distance as well."""
    g = torch.Generator().manual_seed(4)
    p = torch.softmax(torch.randn(40, 3, generator=g), 1)
    y = torch.randint(0, 3, (40,), generator=g)
    with pytest.warns(UserWarning, match=r"local_scores: ties in distance pick the neighbourhoods of 40 of 40 "
                                         r"samples \(their k-th and \(k\+1\)-th nearest rows, k = 5"):
        local_scores(p, p, y, torch.zeros(40, 8), k=5)
    one_hot = torch.eye(20)[torch.arange(40) % 20]                   # two rows a code
    assert nearest_neighbours(one_hot, 5)[0].tolist() == [0, 20, 1, 2, 3]   # the ties went by index
    with pytest.warns(UserWarning, match="ties in distance pick the neighbourhoods of 40 of 40 samples"):
        local_scores(p, p, y, one_hot, k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        local_scores(p, p, y, torch.randn(40, 8, generator=g), k=5)
        # duplicates of at most k rows leave no choice to ties
        local_scores(p, p, y, torch.arange(8.0).repeat_interleave(5)[:, None], k=5)


def test_local_scores_check_the_embedding():
    p = rows(0.5, 0.5)
    with pytest.raises(ValueError, match="embedding"):
        local_scores(p, p, torch.tensor([0, 1]), torch.zeros(3, 2), k=1)


# ---------------------------------------------------------------- pacing and phases

def test_root_competence_values():
    c = RootCompetence(0.2)
    assert c(0, 10) == pytest.approx(0.2)
    assert c(5, 10) == pytest.approx(math.sqrt(0.5 * 0.96 + 0.04))
    assert c(10, 10) == 1.0 and c(50, 10) == 1.0
    with pytest.raises(ValueError, match="c0"):
        RootCompetence(0.0)
    with pytest.raises(ValueError, match="T > 0"):
        c(1, 0)


def test_phase_schedule_boundaries():
    s = PhaseSchedule(10)
    assert s.ends == (3, 6, 10)
    assert [(p.index, p.step, p.length) for p in map(s.position, (0, 2, 3, 6, 9, 12))] == \
        [(0, 0, 3), (0, 2, 3), (1, 0, 3), (2, 0, 4), (2, 3, 4), (2, 6, 4)]
    assert PhaseSchedule(7).ends == (2, 4, 7)
    assert PhaseSchedule(4, (0.5, 0.0, 0.5)).position(2).index == 2   # empty phase skipped
    for bad in [(0.5, 0.6, 0.0), (-0.1, 0.6, 0.5)]:
        with pytest.raises(ValueError, match="sum to 1"):
            PhaseSchedule(10, bad)


# ---------------------------------------------------------------- the curriculum

def hand_scores():
    """Ten samples: 0-3 mostly redundant (0 most), 4-6 mostly unique, 7-9 mostly synergistic."""
    r = torch.tensor([9, 8, 7, 6, 1, 1, 1, 0, 0, 0], dtype=torch.float64)
    u = torch.tensor([1, 2, 3, 4, 9, 8, 7, 1, 2, 0], dtype=torch.float64)
    s = torch.tensor([0, 0, 0, 0, 0, 1, 2, 9, 8, 0], dtype=torch.float64)
    return SampleScores(redundancy=r, unique1=u / 2, unique2=u / 2, synergy=s)


def test_curriculum_admits_by_phase_and_pacing():
    cur = SPICECurriculum(10, epochs=10, pacing=RootCompetence(0.2),
                          estimator=lambda *args: hand_scores())
    assert cur.indices().tolist() == list(range(10))           # warm-up: all, before any update
    assert not cur.due(0) and cur.due(1)
    cur.update(None, None, None, None)
    cur.set_epoch(0)                                            # redundancy phase, c = 0.2
    assert cur.phase() == "redundancy" and cur.fraction() == pytest.approx(0.2)
    assert cur.indices().tolist() == [0, 1]
    cur.set_epoch(3)                                            # uniqueness phase starts again at c0
    assert cur.phase() == "uniqueness" and cur.indices().tolist() == [4, 5]
    cur.set_epoch(6)
    assert cur.phase() == "synergy" and cur.indices().tolist() == [7, 8]
    cur.set_epoch(9)                                            # last epoch of a phase: everyone
    assert sorted(cur.indices().tolist()) == list(range(10))
    # Sample 9 has no information at all: it ranks last in every phase.
    assert cur.indices()[-1] == 9
    w = cur.weights()
    assert w.sum() == 10 and set(w.tolist()) == {1.0}


def test_curriculum_tie_break_by_total_information():
    r = torch.tensor([1.0, 3.0, 2.0])                           # all redundancy share 1
    z = torch.zeros(3)
    cur = SPICECurriculum(3, epochs=3, pacing=lambda t, T: 1.0,
                          estimator=lambda *a: SampleScores(r, z, z, z))
    cur.update(None, None, None, None)
    assert cur.indices().tolist() == [1, 2, 0]


def test_ties_at_the_cut_are_drawn_at_random_not_by_index():
    """Ties broken by index admitted a class-sorted training set class by class where the
    scores were 0 (local scores of a fitted model): classes 0-6 in full, none of 8 and 9."""
    n, c = 500, 10
    y = torch.arange(c).repeat_interleave(n // c)                     # stored class by class
    z = torch.zeros(n)
    r = torch.zeros(n)
    r[::50] = 1.0                                                    # one informative sample a class
    cur = SPICECurriculum(n, epochs=3, pacing=lambda t, T: 0.4, estimator=lambda *a: SampleScores(r, z, z, z))
    with pytest.warns(UserWarning, match="490 of 500 samples score 0"):
        cur.update(None, None, None, None)
    cur.set_epoch(1)
    idx = cur.indices()
    assert len(idx) == 200 and idx[:10].tolist() == list(range(0, 500, 50))   # the informative first
    per_class = torch.bincount(y[idx], minlength=c)
    assert per_class.min() >= 10 and per_class.max() <= 30, per_class     # by index: 50 x 3, 40, 0 x 6
    assert idx[10:].tolist() == sorted(idx[10:].tolist())          # listed in the ranking's order
    again = SPICECurriculum(n, epochs=3, pacing=lambda t, T: 0.4, estimator=lambda *a: SampleScores(r, z, z, z))
    again.load_state_dict(cur.state_dict())
    assert torch.equal(again.indices(), idx)                         # the same draw after a checkpoint
    other = SPICECurriculum(n, epochs=3, pacing=lambda t, T: 0.4, seed=1,
                            estimator=lambda *a: SampleScores(r, z, z, z))
    other.load_state_dict(cur.state_dict())
    assert not torch.equal(other.indices(), idx)
    # Without ties at the cut the admitted samples are the ranking's first, in its order.
    distinct = SPICECurriculum(n, epochs=3, pacing=lambda t, T: 0.4,
                               estimator=lambda *a: SampleScores(torch.arange(n, 0, -1.0), z, z, z))
    distinct.update(None, None, None, None)
    distinct.set_epoch(1)
    assert distinct.indices().tolist() == list(range(200))


def test_forgetting_set_epoch_is_said():
    cur = SPICECurriculum(40, epochs=6)
    assert not cur.due(0) and cur.due(1)
    with pytest.warns(UserWarning, match=r"asked for epochs \[0, 1, 2\] while the curriculum stayed at epoch 0: "
                                         r"call set_epoch"):
        cur.due(2)
    # A question one epoch ahead, and a fresh curriculum asked at a resumed epoch, say nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ahead = SPICECurriculum(40, epochs=30, refresh=2)
        for epoch in range(6):
            if ahead.due(epoch):
                ahead.due(epoch + 1)
            ahead.set_epoch(epoch)
        SPICECurriculum(40, epochs=10).due(7)
    with pytest.raises(ValueError, match="seed"):
        SPICECurriculum(40, epochs=6, seed=2 ** 64)


def test_updating_without_set_epoch_is_said():
    """A loop that re-scored every epoch through update() alone, never asking due() nor
    setting the epoch, admitted the first phase's first-epoch share (20 of 100) for ever,
    silently."""
    p = torch.full((100, 3), 1 / 3)
    y = torch.arange(100) % 3
    cur = SPICECurriculum(100, epochs=10, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=".*score 0")   # uninformative predictions tie
        cur.update(p, p, p, y)
        cur.update(p, p, p, y)
    with pytest.warns(UserWarning, match=r"update\(\) was called 3 times while the curriculum stayed at epoch 0: "
                                         r"call set_epoch"):
        cur.update(p, p, p, y)
    # A loop that sets the epoch says nothing, however often it updates.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=".*score 0")
        fine = SPICECurriculum(100, epochs=10, seed=0)
        for epoch in range(5):
            fine.set_epoch(epoch)
            fine.update(p, p, p, y)
            fine.update(p, p, p, y)


def test_due_refuses_an_epoch_that_is_not_a_whole_number():
    """due(1.5) raised "'float' object cannot be interpreted as an integer", naming nothing."""
    cur = SPICECurriculum(40, epochs=10)
    for bad in (1.5, -1):
        with pytest.raises(ValueError, match=rf"epoch must be an integer >= 0, got {bad}"):
            cur.due(bad)
    assert cur.due(torch.tensor(1)) and not cur.due(0)


def test_estimator_options_are_checked_when_the_curriculum_is_made():
    """estimator_kwargs=0 read as {}, and an unknown option raised a TypeError from inside
    pointwise_scores at the first update()."""
    with pytest.raises(TypeError, match="estimator_kwargs must be a dict"):
        SPICECurriculum(40, epochs=10, estimator_kwargs=0)
    with pytest.raises(TypeError, match=r"\['foo'\] are not options of the 'pointwise' estimator; it takes "
                                        r"\['eps', 'prior'\]"):
        SPICECurriculum(40, epochs=10, estimator_kwargs={"foo": 1})
    with pytest.raises(TypeError, match=r"\['kk'\] are not options of the 'local' estimator"):
        SPICECurriculum(40, epochs=10, estimator="local", estimator_kwargs={"kk": 3})
    local = SPICECurriculum(40, epochs=10, estimator="local", estimator_kwargs={"k": 3, "tol": 1e-6})
    assert local.estimator_kwargs == {"k": 3, "tol": 1e-6}            # its own and pid()'s options
    # Fewer samples than the default neighbourhood (16): refused here, not at the first update()
    # after the warm-up with "k must be an integer in [1, N] = [1, 10], got 16".
    with pytest.raises(ValueError, match=r"estimator='local' takes each sample's k nearest samples: k must be an "
                                         r"integer in \[1, n_samples\] = \[1, 10\] \(set it with estimator_kwargs="):
        SPICECurriculum(10, epochs=10, estimator="local")
    assert SPICECurriculum(10, epochs=10, estimator="local", estimator_kwargs={"k": 10}).estimator_kwargs == {"k": 10}

    # A callable's options are its own, passed to it (they had been checked, then dropped); a
    # dataclass instance (unhashable) had failed in the check.
    @dataclasses.dataclass
    class Scaled:
        factor: float = 1.0

        def __call__(self, p1, p2, p12, y, embedding, *, shift=0.0):
            h = hand_scores()
            return SampleScores(h.redundancy * self.factor + shift, h.unique1, h.unique2, h.synergy)

    own = SPICECurriculum(10, epochs=10, estimator=Scaled(2.0), estimator_kwargs={"shift": 1.0})
    own.update(None, None, None, None)
    assert own.scores.redundancy.tolist() == (hand_scores().redundancy * 2 + 1).tolist()


def test_curriculum_refresh_and_errors():
    cur = SPICECurriculum(4, epochs=6, refresh=2)
    assert [cur.due(e) for e in range(6)] == [False, False, True, False, True, False]
    p = rows(0.9, 0.1, 0.5, 0.5)
    y = torch.tensor([0, 1, 0, 1])
    scores = cur.update(p, p, p, y)
    assert scores.redundancy.shape == (4,)
    with pytest.raises(ValueError, match="n_samples"):
        SPICECurriculum(5, epochs=6).update(p, p, p, y)
    with pytest.raises(ValueError, match="embedding"):
        SPICECurriculum(4, epochs=6, estimator="local", estimator_kwargs={"k": 2}).update(p, p, p, y)
    with pytest.raises(ValueError, match="estimator"):
        SPICECurriculum(4, epochs=6, estimator="global")
    with pytest.raises(ValueError, match="phases"):
        SPICECurriculum(4, epochs=6, phases=(0.5, 0.5))
    with pytest.raises(TypeError, match=r"pacing must be a callable \(t, T\) -> fraction admitted.*got 0.3"):
        SPICECurriculum(4, epochs=6, pacing=0.3)  # was Python's "'float' object is not callable"
    # Refused when the curriculum is made, without the warning that a phase admits everyone first.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"the pacing function returned 1.5 at epoch 0; it must lie in \[0, 1\]"):
            SPICECurriculum(10, epochs=6, pacing=lambda t, T: 1.5, estimator=lambda *a: hand_scores())
        with pytest.raises(ValueError, match=r"returned nan at epoch 1"):  # the first phase's last step
            SPICECurriculum(10, epochs=6, pacing=lambda t, T: float("nan") if t == T else 0.5)


def test_sampler_yields_the_admitted_set_shuffled():
    cur = SPICECurriculum(10, epochs=10, estimator=lambda *a: hand_scores())
    cur.update(None, None, None, None)
    sampler = SPICESampler(cur, generator=torch.Generator().manual_seed(0))
    cur.set_epoch(7)                                            # synergy phase, c(1 of 3)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == len(cur.indices())
    assert sorted(drawn) == sorted(cur.indices().tolist())
    orders = {tuple(sampler) for _ in range(5)}
    assert len(orders) > 1                                      # shuffled each epoch
    with pytest.raises(TypeError, match="SPICECurriculum"):
        SPICESampler(object())


# ---------------------------------------------------------------- smoke training run

class TwoViewNet(nn.Module):
    def __init__(self, d1, d2, c, h=16):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Linear(d1, h), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Linear(d2, h), nn.ReLU())
        self.head1, self.head2, self.head12 = nn.Linear(h, c), nn.Linear(h, c), nn.Linear(2 * h, c)

    def forward(self, x1, x2):
        z1, z2 = self.enc1(x1), self.enc2(x2)
        z = torch.cat([z1, z2], 1)
        return self.head1(z1), self.head2(z2), self.head12(z), z


@pytest.mark.parametrize("estimator", ["pointwise", "local"])
def test_spice_smoke_training(estimator):
    torch.manual_seed(0)
    n, c = 240, 3
    y = torch.randint(0, c, (n,))
    centres = torch.randn(c, 4) * 2
    x1 = centres[y] + torch.randn(n, 4)
    x2 = centres[y] + torch.randn(n, 4)
    model = TwoViewNet(4, 4, c)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    epochs = 6
    cur = SPICECurriculum(n, epochs, estimator=estimator, estimator_kwargs={"k": 8} if estimator == "local" else None)
    loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=32,
                        sampler=SPICESampler(cur, generator=torch.Generator().manual_seed(0)))
    seen = []
    for epoch in range(epochs):
        if cur.due(epoch):
            with torch.no_grad():
                l1, l2, l12, z = model(x1, x2)
            cur.update(l1.softmax(1), l2.softmax(1), l12.softmax(1), y, embedding=z)
        cur.set_epoch(epoch)
        count = 0
        for (idx,) in loader:
            l1, l2, l12, _ = model(x1[idx], x2[idx])
            loss = sum(nn.functional.cross_entropy(l, y[idx]) for l in (l1, l2, l12))
            opt.zero_grad()
            loss.backward()
            opt.step()
            count += len(idx)
        seen.append(count)
    assert seen[0] == n and min(seen) < n                        # warm-up, then a curriculum
    with torch.no_grad():
        acc = (model(x1, x2)[2].argmax(1) == y).float().mean()
    assert acc > 0.7                                             # chance is 1/3


def test_nearest_neighbours_far_from_the_origin():
    """|a|^2 - 2 a.b + |b|^2 on rows offset by 1e8 scrambled 94% of the neighbour sets; the
    rows are centred (and scaled) first, so an offset or a huge scale changes nothing."""
    x = torch.randn(200, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref = torch.cdist(x, x).topk(5, largest=False).indices
    for shifted in (x + 1e8, x * 1e200, x - 3e7):
        got = nearest_neighbours(shifted, 5)
        assert torch.equal(got[:, 0], torch.arange(200))
        assert torch.equal(got.sort(1).values, ref.sort(1).values)


def test_a_one_epoch_phase_admits_c0():
    """The module's documented choice: 5 epochs give phases of 2, 1 and 2 epochs; the middle one
    admits c0 of its ranking, the others reach every sample at their last epoch."""
    cur = SPICECurriculum(10, epochs=5, pacing=RootCompetence(0.2), estimator=lambda *args: hand_scores())
    cur.update(None, None, None, None)
    assert cur.schedule.ends == (2, 3, 5)
    assert [cur.fraction(e) for e in range(5)] == [0.2, 1.0, 0.2, 0.2, 1.0]


def test_epochs_past_a_schedule_whose_last_phase_has_no_epochs():
    """phases=(0.5, 0.5, 0.0): epoch 10 of 10 fell in the empty synergy phase at step 0, and
    admission dropped back to c0 (20 of 100) after the schedule; it stays in the uniqueness
    phase, whole."""
    schedule = PhaseSchedule(10, (0.5, 0.5, 0.0))
    place = lambda e: (lambda p: (p.index, p.step, p.length))(schedule.position(e))  # noqa: E731
    assert place(9) == (1, 4, 5) and place(10) == (1, 5, 5) and place(12) == (1, 7, 5)
    cur = SPICECurriculum(100, 10, phases=(0.5, 0.5, 0.0))
    p = torch.softmax(torch.randn(100, 3, generator=torch.Generator().manual_seed(0)), 1)
    cur.update(p, p, p, torch.arange(100) % 3)
    for epoch in (10, 11, 30):
        cur.set_epoch(epoch)
        assert cur.phase() == "uniqueness" and len(cur.indices()) == 100


def test_a_phase_that_cannot_restrict_is_said_at_once():
    """The first scores come at epoch refresh, and a phase's pacing counts from its first epoch:
    with epochs=6 (refresh=1), 11 (refresh=2) or 10 (refresh=3) phase 0 admitted every sample
    in each of its epochs, silently; so did the uniqueness phase with phases=(0, 0.5, 0.5) and
    epochs=4, and after the redundancy phase with epochs=10 and refresh=5, which only phase 0
    was checked for."""
    for epochs, refresh in ((6, 1), (11, 2), (10, 3)):
        with pytest.warns(UserWarning, match=r"the redundancy phase \(epochs 0-\d\) admits every sample") as said:
            SPICECurriculum(60, epochs, refresh=refresh)
        # refresh is at least 1: "a smaller refresh" is advice only above it
        assert ("smaller refresh" in str(said[0].message)) == (refresh > 1)
    with pytest.warns(UserWarning, match=r": the uniqueness phase \(epochs 0-1\) admits every sample"):
        SPICECurriculum(10, 4, phases=(0.0, 0.5, 0.5))
    with pytest.warns(UserWarning, match=r"the redundancy phase \(epochs 0-2\) and the uniqueness phase "
                                         r"\(epochs 3-5\) admit every sample"):
        SPICECurriculum(10, 10, refresh=5)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SPICECurriculum(60, 30, refresh=2)
        SPICECurriculum(60, 10, phases=(0.0, 0.5, 0.5))


def test_scores_that_are_not_information_are_refused():
    """eps=0 gave a NaN synergy where every head put 0 on the true class, and the curriculum
    ranked the NaN as a share of 0; a custom estimator's negative or NaN scores, or its fields
    of other shapes, passed too."""
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    y = torch.tensor([1, 0, 1])
    for eps in (0.0, -1e-3, 2.0, float("nan")):
        with pytest.raises(ValueError, match="eps must"):
            pointwise_scores(p, p, p, y, eps=eps)
    ok = torch.ones(3)
    for bad, match in ((torch.tensor([1.0, float("nan"), 1.0]), r"scores.synergy\[1\] = nan"),
                       (torch.tensor([1.0, 1.0, -0.5]), r"scores.synergy\[2\] = -0.5"),
                       (torch.ones(4), r"scores.synergy has shape \(4,\)")):
        cur = SPICECurriculum(3, 9, estimator=lambda *a, b=bad: SampleScores(ok, ok, ok, b))
        with pytest.raises(ValueError, match=match):
            cur.update(p, p, p, y)
        cur = SPICECurriculum(3, 9, estimator=lambda *a, b=bad: SampleScores(ok, ok, ok, ok, gap=b))
        with pytest.raises(ValueError, match=match.replace("synergy", "gap")):
            cur.update(p, p, p, y)


def test_a_custom_pacing_is_asked_within_its_phase_past_the_schedule():
    """Epochs past the schedule stay in its last phase, but the pacing function was asked for
    steps past that phase's end: a plain t / T returned 1.33 there and was refused."""
    from fastpid.integrations import SPICECurriculum

    g = torch.Generator().manual_seed(0)
    cur = SPICECurriculum(20, 10, pacing=lambda t, T: t / T)
    p1, p2, p12 = (torch.softmax(torch.randn(20, 2, generator=g), 1) for _ in range(3))
    cur.update(p1, p2, p12, torch.randint(0, 2, (20,), generator=g))
    for epoch in (9, 10, 25):
        cur.set_epoch(epoch)
        assert cur.fraction() == 1.0 and len(cur.indices()) == 20
    assert cur.scheduled_fraction(11) == 1.0


@pytest.mark.parametrize("seed", [0.7, "5", -1, True])
def test_the_sampler_checks_its_seed(seed):
    """SPICESampler took int(seed): 0.7 seeded with 0 and "5" with 5, silently."""
    from fastpid.integrations import SPICECurriculum, SPICESampler

    with pytest.raises((TypeError, ValueError), match="seed"):
        SPICESampler(SPICECurriculum(20, 10), seed=seed)


@pytest.mark.parametrize("generator", [0, "0", torch.tensor(0)])
def test_the_sampler_checks_its_generator(generator):
    """Anything was taken, and iterating failed: "'int' object has no attribute 'get_state'"."""
    kind = type(generator).__name__
    with pytest.raises(TypeError, match=rf"generator must be a torch.Generator or None, got {kind} \("):
        SPICESampler(SPICECurriculum(20, 10), generator=generator)


@pytest.mark.parametrize("t, T", [(math.nan, 10), (math.inf, 10), (1, math.nan), (1, math.inf), (-1, 10), (1, 0)])
def test_root_competence_needs_finite_progress(t, T):
    """t = NaN gave 1.0 (every sample admitted), t = inf too."""
    with pytest.raises(ValueError, match=r"pacing needs finite t >= 0 and T > 0, got t="):
        RootCompetence()(t, T)
    with pytest.raises(TypeError, match=r"t must be a real number, got str \('1'\)"):
        RootCompetence()("1", 10)
    assert RootCompetence(0.5)(3, 4) == pytest.approx(math.sqrt(3 * 0.75 / 4 + 0.25))


@pytest.mark.parametrize("fractions, match", [
    ("1", r"fractions must be a sequence of numbers, got str \('1'\)"),
    (5, r"fractions must be a sequence of numbers, got int \(5\)"),
    ([True, False], r"fractions\[0\] must be a real number, got a bool \(True\)"),
    ([0.5, "0.5"], r"fractions\[1\] must be a real number, got str \('0.5'\)"),
    ([0.5, None, 0.5], r"fractions\[1\] must be a real number, got NoneType \(None\)"),
])
def test_phase_fractions_must_be_numbers(fractions, match):
    """PhaseSchedule(10, "1") and [True, False] were taken (float("1"), float(True)), "0.5"
    parsed; SPICECurriculum(phases="abc") said "could not convert string to float: 'a'"."""
    with pytest.raises(TypeError, match=match):
        PhaseSchedule(10, fractions)
    with pytest.raises(TypeError, match=match.replace("fractions", "phases")):
        SPICECurriculum(20, 10, phases=fractions)


def test_phase_fractions_of_numpy_and_torch_are_taken():
    ref = PhaseSchedule(10, (0.3, 0.3, 0.4)).ends
    assert PhaseSchedule(10, np.array([0.3, 0.3, 0.4])).ends == ref
    assert PhaseSchedule(10, torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64)).ends == ref
    assert SPICECurriculum(20, 10, phases=iter([0.3, 0.3, 0.4])).schedule.ends == ref
    with pytest.raises(TypeError, match=r"phases must be a sequence of numbers, got str \('abc'\)"):
        SPICECurriculum(20, 10, phases="abc")
