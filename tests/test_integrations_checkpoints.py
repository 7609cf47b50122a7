"""Checkpoints: every stateful piece survives torch.save + torch.load(weights_only=True), and a
run that is saved mid-training and resumed in fresh objects ends bit-identical to an
uninterrupted one."""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastpid
from fastpid.integrations import (DynCIM, DynCIMLoss, ECSAsyncController, GatedFusion, IndexedDataset,
                                  SPICECurriculum, SPICESampler, SynIBLoss)


def roundtrip(obj):
    """``obj`` through torch.save and a weights-only torch.load."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def data(n=64, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    centres = torch.randn(c, 4, generator=g) * 2
    return centres[y] + torch.randn(n, 4, generator=g), centres[y] + torch.randn(n, 4, generator=g), y


class Net(nn.Module):
    def __init__(self, c=3, h=8):
        super().__init__()
        torch.manual_seed(0)
        self.enc1, self.enc2 = nn.Linear(4, h), nn.Linear(4, h)
        self.head1, self.head2 = nn.Linear(h, c), nn.Linear(h, c)
        self.fuse = nn.Linear(2 * h, c)

    def forward(self, x1, x2):
        z1, z2 = torch.tanh(self.enc1(x1)), torch.tanh(self.enc2(x2))
        return z1, z2, self.head1(z1), self.head2(z2)

    def fusion(self, a, b):
        return self.fuse(torch.cat([a, b], 1))


def resumed_equals_uninterrupted(make, run_epochs, epochs=3, stop=1):
    """``make()`` builds fresh ``{name: stateful object}``; ``run_epochs(objs, range)`` trains.
    Returns the final state dicts of the uninterrupted and the resumed run."""
    full = make()
    run_epochs(full, range(epochs))
    first = make()
    run_epochs(first, range(stop))
    saved = roundtrip({k: v.state_dict() for k, v in first.items()})
    resumed = make()
    for k, v in resumed.items():
        v.load_state_dict(saved[k])
    run_epochs(resumed, range(stop, epochs))
    return ({k: v.state_dict() for k, v in full.items()}, {k: v.state_dict() for k, v in resumed.items()})


def assert_same(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, z) in enumerate(zip(a, b)):
            assert_same(x, z, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):  # NaN: a value none was computed for (one permutation's spread)
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, path


# ---------------------------------------------------------------- SynIB

@pytest.mark.parametrize("mask", ["random", "noise", "learned"])
def test_synib_resumes_identically(mask):
    x1, x2, y = data()

    def make():
        net = Net()
        return {"net": net, "opt": torch.optim.Adam(net.parameters(), lr=1e-2),
                "loss": SynIBLoss(mask=mask, lambda_syn=0.5, gate_steps=2, seed=1)}

    def run(o, epochs):
        for _ in epochs:
            for s in range(0, len(y), 32):
                z1, z2, l1, l2 = o["net"](x1[s:s + 32], x2[s:s + 32])
                out = o["loss"](z1, z2, y[s:s + 32], o["net"].fusion, o["net"].head1, o["net"].head2)
                o["opt"].zero_grad()
                out.loss.backward()
                o["opt"].step()

    full, resumed = resumed_equals_uninterrupted(make, run)
    assert_same(full, resumed)
    kept = {"noise": "running_var1", "learned": "gate_logit2"}.get(mask)
    if kept:                                     # the statistics are in the state, and sized
        assert full["loss"][kept].shape == (8,)


def test_synib_state_is_buffers_that_move_with_the_module():
    loss_fn = SynIBLoss(mask="noise", p=0.5)
    fusion = lambda a, b: a + b  # noqa: E731
    y = torch.tensor([0, 1, 2, 0])
    loss_fn(torch.randn(4, 3), torch.randn(4, 3), y, fusion, lambda z: z, lambda z: z)
    names = {n for n, _ in loss_fn.named_buffers()}
    assert {"running_mean1", "running_var1", "running_mean2", "running_var2"} <= names
    moved = loss_fn.to(torch.float64)
    assert moved.running_mean1.dtype == torch.float64 and moved.running_mean1.shape == (3,)
    state = loss_fn.state_dict()
    assert state["_extra_state"]["rng_state"].dtype == torch.uint8
    # Loading into a fresh loss sizes its buffers and continues the random stream.
    fresh = SynIBLoss(mask="noise", p=0.5)
    fresh.load_state_dict(roundtrip(state))
    z = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(fresh.withhold(z, 1), loss_fn.withhold(z, 1), rtol=0, atol=0)



def test_synib_loads_a_cuda_checkpoint_on_a_cpu_machine():
    """set_extra_state built torch.Generator(device=state["rng_device"]), so a state saved on
    CUDA ("cuda:0" and its 16-byte generator state) could not be loaded on a CPU-only machine
    even with map_location="cpu" ("RuntimeError: Cannot get CUDA generator without ATen_cuda
    library"). The generator is now reseeded on the loss's device, from the saved state:
    the same state gives the same draws, another state other draws."""
    fusion = lambda a, b: a + b  # noqa: E731
    loss_fn = SynIBLoss(mask="noise", p=0.5)
    loss_fn(torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), fusion, lambda z: z, lambda z: z)

    def on_cuda(rng_state):
        state = dict(loss_fn.state_dict(), _extra_state={"rng_state": rng_state, "rng_device": "cuda:0"})
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        fresh = SynIBLoss(mask="noise", p=0.5)
        fresh.load_state_dict(torch.load(buf, map_location="cpu", weights_only=True))
        return fresh

    assert on_cuda(torch.zeros(16, dtype=torch.uint8)).get_extra_state()["rng_device"] == "cpu"
    z = torch.randn(4, 3)
    same, again, other = (on_cuda(torch.arange(16, dtype=torch.uint8) + k).withhold(z, 1) for k in (0, 0, 1))
    torch.testing.assert_close(same, again, rtol=0, atol=0)
    assert not torch.equal(same, other)


# ---------------------------------------------------------------- SPICE

def test_spice_resumes_identically():
    x1, x2, y = data()

    def make():
        net = Net()
        cur = SPICECurriculum(len(y), epochs=3)
        return {"net": net, "opt": torch.optim.SGD(net.parameters(), lr=0.1), "cur": cur,
                "sampler": SPICESampler(cur, generator=torch.Generator().manual_seed(5))}

    def run(o, epochs):
        loader = DataLoader(TensorDataset(torch.arange(len(y))), batch_size=16, sampler=o["sampler"])
        for epoch in epochs:
            if o["cur"].due(epoch):
                with torch.no_grad():
                    z1, z2, l1, l2 = o["net"](x1, x2)
                    l12 = o["net"].fusion(z1, z2)
                o["cur"].update(l1.softmax(1), l2.softmax(1), l12.softmax(1), y)
            o["cur"].set_epoch(epoch)
            for (idx,) in loader:
                z1, z2, l1, l2 = o["net"](x1[idx], x2[idx])
                loss = nn.functional.cross_entropy(o["net"].fusion(z1, z2), y[idx])
                o["opt"].zero_grad()
                loss.backward()
                o["opt"].step()

    full, resumed = resumed_equals_uninterrupted(make, run)
    assert full["cur"]["scores"] is not None and full["cur"]["epoch"] == 2
    assert_same(full, resumed)


def test_spice_sampler_resumes_in_the_middle_of_an_epoch():
    """A checkpoint taken during an epoch held the generator's state after the epoch's
    shuffle: the resumed sampler drew another order, repeating and skipping samples. It now
    yields the rest of the interrupted epoch, then the epochs an uninterrupted run yields; an
    epoch left early (a loop that breaks) and resumed at the next epoch goes on as before."""
    def make(**kw):
        cur = SPICECurriculum(22, epochs=4)
        return cur, SPICESampler(cur, **kw)

    def batches(sampler, epoch, stop=None):
        sampler.set_epoch(epoch)
        out = []
        for (idx,) in DataLoader(TensorDataset(torch.arange(22)), batch_size=4, sampler=sampler):
            if stop is not None and len(out) == stop:
                break
            out.append(idx.tolist())
        return out

    for kw in ({"generator": torch.Generator().manual_seed(3)}, {"num_replicas": 2, "rank": 1, "seed": 3}):
        def fresh(generator=None):  # kw with a copy of its generator, or with another generator
            return {k: (generator or v.clone_state() if k == "generator" else v) for k, v in kw.items()}
        cur, sampler = make(**fresh())
        full = [batches(sampler, e) for e in range(3)]
        cur, sampler = make(**fresh())
        first = batches(sampler, 0)
        sampler.set_epoch(1)
        loader = iter(DataLoader(TensorDataset(torch.arange(22)), batch_size=4, sampler=sampler))
        taken = [next(loader)[0].tolist() for _ in range(2)]  # the checkpoint after two steps
        state = roundtrip({"cur": cur.state_dict(), "sampler": sampler.state_dict()})
        cur, sampler = make(**fresh(torch.Generator().manual_seed(99)))
        cur.load_state_dict(state["cur"])
        sampler.load_state_dict(state["sampler"])
        sampler.load_state_dict(roundtrip(sampler.state_dict()))  # saved again before iterating: kept (was lost)
        sampler.set_epoch(1)
        assert len(sampler) == sum(map(len, full[1])) - 8
        rest = batches(sampler, 1)
        assert [first, taken + rest, batches(sampler, 2)] == [full[0], full[1], full[2]], kw
    # An epoch left after two batches, checkpointed and resumed at the next epoch.
    gen = torch.Generator().manual_seed(4)
    cur, sampler = make(generator=gen.clone_state())
    short = [batches(sampler, e, stop=2) for e in range(3)]
    cur, sampler = make(generator=gen.clone_state())
    batches(sampler, 0, stop=2)
    state = roundtrip(sampler.state_dict())
    cur, sampler = make(generator=torch.Generator())
    sampler.load_state_dict(state)
    assert [batches(sampler, e, stop=2) for e in (1, 2)] == short[1:]


def test_spice_sampler_checkpoint_after_an_epochs_last_batch_yields_nothing_more_of_it():
    """A DataLoader exhausts its sampler before a partial last batch only: a checkpoint taken
    after that batch said no epoch was in progress, and the sampler resumed at that epoch
    yielded a whole new epoch (37 samples in batches of 4: 10 batches more, from a generator
    already moved on). Full or partial, the finished epoch now yields nothing more, and the
    epochs after it are the uninterrupted run's, also where the sharding changes between."""
    for n in (36, 37):  # last batch full, partial
        full = []
        cur = SPICECurriculum(n, epochs=4)
        sampler = SPICESampler(cur, generator=torch.Generator().manual_seed(5))
        for epoch in range(3):
            sampler.set_epoch(epoch)
            full.append([idx.tolist() for (idx,) in DataLoader(TensorDataset(torch.arange(n)), batch_size=4,
                                                               sampler=sampler)])
            if epoch == 0:
                state = roundtrip({"cur": cur.state_dict(), "sampler": sampler.state_dict()})
        assert state["sampler"]["finished"] and state["sampler"]["taken"] == n
        cur = SPICECurriculum(n, epochs=4)
        cur.load_state_dict(state["cur"])
        sampler = SPICESampler(cur, generator=torch.Generator().manual_seed(99))
        sampler.load_state_dict(state["sampler"])
        again = roundtrip(sampler.state_dict())   # saved again before iterating: the same position
        assert {k: again[k] for k in ("epoch", "taken", "finished")} == {"epoch": 0, "taken": n, "finished": True}
        sampler.load_state_dict(again)
        sampler.set_epoch(0)
        assert len(sampler) == 0 and list(sampler) == []
        resumed = []
        for epoch in (1, 2):
            sampler.set_epoch(epoch)
            resumed.append([idx.tolist() for (idx,) in DataLoader(TensorDataset(torch.arange(n)), batch_size=4,
                                                                  sampler=sampler)])
        assert resumed == full[1:], n
    # A finished epoch of one of 2 ranks loads into one process: nothing left of that epoch.
    cur = SPICECurriculum(37, epochs=4)
    rank0 = SPICESampler(cur, num_replicas=2, rank=0, seed=3)
    rank0.set_epoch(1)
    assert len(list(DataLoader(TensorDataset(torch.arange(37)), batch_size=4, sampler=rank0))) == 5
    one = SPICESampler(cur, num_replicas=1, rank=0, seed=3)
    one.load_state_dict(roundtrip(rank0.state_dict()))
    one.set_epoch(1)
    assert list(one) == []
    one.set_epoch(2)
    assert sorted(one) == list(range(37))


def test_spice_sampler_refuses_a_position_in_an_epoch_of_other_shards():
    """A mid-epoch state of one of 2 ranks loaded into a sampler of one process went on from
    the saved position in another order: 8 of 40 samples were never yielded that epoch. A
    position within an epoch is refused where the sharding differs; between epochs, loads."""
    cur = SPICECurriculum(40, epochs=4)
    saver = SPICESampler(cur, num_replicas=2, rank=0, seed=3)
    saver.set_epoch(1)
    loader = iter(DataLoader(TensorDataset(torch.arange(40)), batch_size=4, sampler=saver))
    next(loader)
    state = roundtrip(saver.state_dict())
    for kw in ({"num_replicas": 1, "rank": 0, "seed": 3}, {"num_replicas": 2, "rank": 0, "seed": 4},
               {"num_replicas": 2, "rank": 0, "seed": 3, "drop_last": True}):
        with pytest.raises(ValueError, match="stops within an epoch of a sampler with"):
            SPICESampler(cur, **kw).load_state_dict(state)
    SPICESampler(cur, num_replicas=2, rank=1, seed=3).load_state_dict(state)  # every rank may load one rank's
    between = roundtrip(SPICESampler(cur, num_replicas=2, rank=0, seed=3).state_dict())
    SPICESampler(cur, num_replicas=1, rank=0, seed=3).load_state_dict(between)
    # One process shuffles with its generator: seed and drop_last play no part there.
    one = SPICESampler(cur, generator=torch.Generator().manual_seed(1))
    one.set_epoch(1)
    next(iter(DataLoader(TensorDataset(torch.arange(40)), batch_size=4, sampler=one)))
    state = roundtrip(one.state_dict())
    SPICESampler(cur, generator=torch.Generator(), seed=7, drop_last=True).load_state_dict(state)
    with pytest.raises(ValueError, match="stops within an epoch"):
        SPICESampler(cur, generator=torch.Generator(), shuffle=False).load_state_dict(state)


def test_spice_documented_loop_resumes_in_the_middle_of_an_epoch():
    """The module docstring's loop (``if cur.due(epoch): cur.update(...)``, then ``set_epoch``)
    resumed from a checkpoint taken in epoch 4: due(4) is false, so the scores the sampler's
    order was drawn from are kept and the epoch yields exactly what an uninterrupted run does
    (estimated again from other predictions, they repeated 12 and skipped 18 of 73 samples).
    The other order (set_epoch, then due/update) is unaffected, and epochs go on being due."""
    N, C, E = 100, 4, 10
    y = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(0))

    def predict(seed):   # predictions that change with every call, as a training model's do
        g = torch.Generator().manual_seed(seed)
        return [torch.softmax(3 * torch.randn(N, C, generator=g), 1) for _ in range(3)]

    def epoch_of(cur, sampler, epoch, seed, stop=None, update_first=True):
        if not update_first:
            cur.set_epoch(epoch)
        if cur.due(epoch):
            cur.update(*predict(seed), y)
        cur.set_epoch(epoch)
        out, ckpt = [], None
        for (idx,) in DataLoader(TensorDataset(torch.arange(N)), batch_size=8, sampler=sampler):
            out += idx.tolist()
            if stop is not None and len(out) == stop:
                ckpt = roundtrip({"cur": cur.state_dict(), "sampler": sampler.state_dict()})
        return out, ckpt

    for update_first in (True, False):
        cur = SPICECurriculum(N, E)
        sampler = SPICESampler(cur, generator=torch.Generator().manual_seed(1))
        runs = [epoch_of(cur, sampler, e, e, 24 if e == 4 else None, update_first) for e in range(6)]
        assert cur._scored_epoch == 5 and not cur.due(5) and cur.due(6)
        full, ckpt = [r[0] for r in runs], runs[4][1]
        cur = SPICECurriculum(N, E)
        cur.load_state_dict(ckpt["cur"])
        sampler = SPICESampler(cur, generator=torch.Generator().manual_seed(99))
        sampler.load_state_dict(ckpt["sampler"])
        rest, _ = epoch_of(cur, sampler, 4, 104, update_first=update_first)   # other predictions
        assert full[4][:24] + rest == full[4] and len(set(full[4])) == len(full[4])
        assert epoch_of(cur, sampler, 5, 5, update_first=update_first)[0] == full[5]


def test_spice_state_before_any_update_and_wrong_size():
    cur = SPICECurriculum(10, epochs=4)
    cur.set_epoch(2)
    fresh = SPICECurriculum(10, epochs=4)
    fresh.load_state_dict(roundtrip(cur.state_dict()))
    assert fresh.epoch == 2 and fresh.scores is None and fresh.indices().tolist() == list(range(10))
    p = torch.full((10, 2), 0.5, dtype=torch.float64)
    cur.update(p, p, p, torch.arange(10) % 2)
    with pytest.raises(ValueError, match="n_samples"):
        SPICECurriculum(11, epochs=4).load_state_dict(cur.state_dict())


# ---------------------------------------------------------------- DynCIM

def test_dyncim_resumes_identically():
    x1, x2, y = data()
    h = 8

    class GatedNet(Net):
        def __init__(self):
            super().__init__()
            self.gate = GatedFusion(h, 2)

    def make():
        net = GatedNet()
        return {"net": net, "opt": torch.optim.Adam(net.parameters(), lr=1e-2),
                "dyn": DynCIM(len(y), 2, epochs=3, window=2), "crit": DynCIMLoss(beta=0.1)}

    def run(o, epochs):
        net = o["net"]
        for epoch in epochs:
            with torch.no_grad():
                z1, z2, l1, l2 = net(x1, x2)
                fused, _ = net.gate([z1, z2])
                o["dyn"].update(net.head1(fused).softmax(1), [l1.softmax(1), l2.softmax(1)], y)
            loader = DataLoader(IndexedDataset(TensorDataset(x1, x2, y)), batch_size=32, shuffle=True,
                                generator=torch.Generator().manual_seed(epoch))
            for idx, a, b, t in loader:
                z1, z2, l1, l2 = net(a, b)
                fused, gate = net.gate([z1, z2])
                loss = o["crit"](net.head1(fused), [l1, l2], t, gate=gate, **o["dyn"].loss_inputs(idx))
                o["opt"].zero_grad()
                loss.backward()
                o["opt"].step()

    full, resumed = resumed_equals_uninterrupted(make, run)
    assert full["dyn"]["epoch"] == 2 and len(full["dyn"]["losses"]) == 3 and full["dyn"]["hmir"] is not None
    assert_same(full, resumed)


def test_dyncim_checkpoint_size_mismatch():
    with pytest.raises(ValueError, match="samples"):
        DynCIM(5, 2, epochs=3).load_state_dict(DynCIM(6, 2, epochs=3).state_dict())


# ---------------------------------------------------------------- ECS-async and the metric

def test_ecs_resumes_identically_through_weights_only_load():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (60,), generator=g)
    centres = torch.randn(3, 4, generator=g) * 4
    emb = [centres[y] + s * torch.randn(60, 4, generator=g) for s in (0.5, 1.0, 2.0, 3.0)]
    enc = nn.Linear(2, 2)

    def make():
        return {"ctrl": ECSAsyncController(fastpid.integrations.PIDProbe(n_clusters=3, n_init=1), warmup_epochs=1,
                                           baseline_permutations=1, min_score=-1.0, max_unimodal_epochs=10,
                                           modules=[enc])}

    def run(o, epochs):
        for e in epochs:
            with torch.no_grad():
                enc.weight.fill_(float(e))
            o["ctrl"].update(e, emb[e], emb[3 - e], y)

    full, resumed = resumed_equals_uninterrupted(make, run, epochs=4, stop=2)
    assert len(full["ctrl"]["history"]) == 4 and full["ctrl"]["snapshot"] is not None
    assert_same(full, resumed)


def test_pid_metric_state_roundtrip():
    m = fastpid.PIDMetric((2, 2, 2))
    m.update([0, 1, 1], [1, 1, 0], [1, 0, 1])
    fresh = fastpid.PIDMetric((2, 2, 2))
    fresh.load_state_dict(roundtrip(m.state_dict()))
    assert torch.equal(fresh.counts, m.counts) and float(fresh.counts.sum()) == 3
    with pytest.raises(ValueError, match="shape"):
        fastpid.PIDMetric((2, 2, 3)).load_state_dict(m.state_dict())


def test_a_resumed_ecs_run_warns_of_a_thin_probe_set_once_in_all():
    """The probe's warn-once flag was not in the state: a run resumed after the warning
    warned again (2 warnings where the uninterrupted run gives 1)."""
    import io
    import warnings

    from fastpid.integrations import ECSAsyncController, PIDProbe

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (60,), generator=g)
    e1, e2 = torch.randn(60, 4, generator=g), torch.randn(60, 4, generator=g)

    def run(ctrl, epochs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for epoch in epochs:
                ctrl.update(epoch, e1, e2, y)
        return sum("PIDProbe:" in str(w.message) for w in caught)

    first = ECSAsyncController(PIDProbe(n_clusters=5, n_init=1), warmup_epochs=0)
    assert run(first, range(2)) == 1
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = ECSAsyncController(PIDProbe(n_clusters=5, n_init=1), warmup_epochs=0)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert run(resumed, range(2, 4)) == 0


def test_spice_a_due_question_in_between_does_not_move_the_scored_epoch():
    """refresh=2: a log line asking due(epoch + 1) (no) between due(epoch) and update() left
    the scores counted as the previous epoch's, and a resume in epoch 2 estimated them again."""
    N, C = 40, 3
    y = torch.arange(N) % C
    p = torch.softmax(torch.randn(N, C, generator=torch.Generator().manual_seed(0)), 1)
    cur = SPICECurriculum(N, 10, refresh=2)
    for epoch in range(3):
        if cur.due(epoch):
            assert not cur.due(epoch + 1)
            cur.update(p, p, p, y)
        cur.set_epoch(epoch)
    resumed = SPICECurriculum(N, 10, refresh=2)
    resumed.load_state_dict(roundtrip(cur.state_dict()))
    assert cur.state_dict()["scored_epoch"] == 2 and not resumed.due(2) and resumed.due(4)


def test_the_integrations_results_load_with_weights_only():
    """PCA and k-means fits (to code validation rows with the training fit), probe results
    and SPICE's scores were refused by torch.load's default ("Unsupported global")."""
    from fastpid.integrations import PIDProbe, pointwise_scores
    from fastpid.integrations.cluster import kmeans, pca

    e1, e2, y = data()
    fit, km = pca(e1, 2), kmeans(e1, 3, seed=0)
    assert torch.equal(roundtrip(fit).transform(e2), fit.transform(e2))
    assert torch.equal(roundtrip(km).predict(e2), km.predict(e2))
    probe = PIDProbe(n_components=2, n_clusters=3)(e1, e2, y)
    back = roundtrip(probe)
    assert back.synergy == probe.synergy and torch.equal(back.codes1, probe.codes1)
    p = torch.softmax(e1[:, :3], 1)
    scores = pointwise_scores(p, p.flip(1), (p + p.flip(1)) / 2, y)
    assert torch.equal(roundtrip(scores).synergy, scores.synergy)
