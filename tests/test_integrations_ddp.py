"""The integrations under torch.distributed: two CPU processes on the gloo backend (loopback
only), each holding half of the data, against the same computation in one process."""
from __future__ import annotations

import datetime
import math
import os
import re
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

import fastpid
from helpers import free_port
from fastpid.integrations import DynCIM, ECSAsyncController, PIDProbe, SPICECurriculum, SPICESampler
from fastpid.integrations.ogm_ge import ogm_ge_scores
from fastpid.integrations.distributed import all_reduce_sum, gather_rows
from fastpid.integrations.spice_scores import SampleScores, pointwise_scores

WORLD = 2
TIMEOUT_S = 60
#: Epochs of a 10-epoch SPICE schedule that admit 18, 65 and 54 of 90 samples.
SAMPLER_EPOCHS = (0, 1, 7)
#: A probe set of 89 samples: DistributedSampler pads rank 1's part with sample 0 again.
PADDED_N = 89


def _problem():
    """A probe set with structure in both modalities and softmax predictions for 90 samples."""
    g = torch.Generator().manual_seed(0)
    n, c = 90, 3
    y = torch.randint(0, c, (n,), generator=g)
    centres = torch.randn(c, 4, generator=g, dtype=torch.float64) * 4
    emb1 = centres[y] + torch.randn(n, 4, generator=g, dtype=torch.float64)
    emb2 = torch.randn(n, 5, generator=g, dtype=torch.float64)
    preds = [torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 2, 1) for _ in range(3)]
    return y, emb1, emb2, preds


def _scores(n):
    """Fixed SampleScores for the sampler checks (ranking known in advance)."""
    r = torch.linspace(1.0, 0.0, n, dtype=torch.float64)
    return SampleScores(r, 1 - r, torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64))


def _controller():
    return ECSAsyncController(PIDProbe(n_clusters=5), warmup_epochs=0, baseline_permutations=2,
                              max_unimodal_epochs=10)


def _single_process():
    """The reference: every computation on the whole data in one process."""
    y, emb1, emb2, (p1, p2, p12) = _problem()
    probe = PIDProbe(n_clusters=5)(emb1, emb2, y)
    cur = SPICECurriculum(len(y), epochs=6)
    cur.update(p1, p2, p12, y)
    local = SPICECurriculum(len(y), epochs=6, estimator="local", estimator_kwargs={"k": 4})
    local.update(p1, p2, p12, y, embedding=emb1)
    dyn = DynCIM(len(y), 2, epochs=6)
    dyn.update(p12, [p1, p2], y)
    decision = _controller().update(0, emb1, emb2, y)
    metric = fastpid.PIDMetric((3, 3, 3))
    metric.update(p1, p2, y)
    padded = PIDProbe(n_clusters=5)(emb1[:PADDED_N], emb2[:PADDED_N], y[:PADDED_N])
    return {"probe": probe, "scores": cur.scores, "local_scores": local.scores, "dyn_weights": dyn.weights(),
            "dyn_lambda": dyn.modality_weights(), "decision": decision, "metric": metric.compute(),
            "probe_padded": padded, "ogm_scores": ogm_ge_scores([p1.log(), p2.log()], y)}


def _noisy_sum_codes(rank):
    """Codes ``(x1, x2, y)`` with ``y = x1 + x2 mod 3`` for 30 % of 300 samples, other per rank."""
    g = torch.Generator().manual_seed(10 + rank)
    x1, x2 = torch.randint(0, 3, (300,), generator=g), torch.randint(0, 3, (300,), generator=g)
    y = (x1 + x2) % 3
    flip = torch.rand(300, generator=g) < 0.3
    y[flip] = torch.randint(0, 3, (int(flip.sum()),), generator=g)
    return x1, x2, y


def _init(rank, port, timeout_s=None):
    """Join the gloo group; with ``timeout_s`` a rank left waiting fails its collective
    after that long instead of hanging."""
    kwargs = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=timeout_s)}
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            **kwargs)


def _worker(rank, port, out_dir):
    _init(rank, port)
    try:
        torch.set_num_threads(1)
        y, emb1, emb2, (p1, p2, p12) = _problem()
        n = len(y)
        half = slice(rank * n // WORLD, (rank + 1) * n // WORLD)     # contiguous shards
        inter = torch.arange(rank, n, WORLD)                          # interleaved shards
        out = {}
        probe = PIDProbe(n_clusters=5)
        res = probe(emb1[half], emb2[half], y[half])
        out["probe"] = (res.terms(), res.codes1, res.codes2, res.labels)
        res = probe(emb1[inter].numpy(), emb2[inter].numpy(), y[inter].numpy(), index=inter.numpy())
        out["probe_index"] = (res.terms(), res.codes1, res.codes2)
        # DistributedSampler's padding repeats a sample: one row is kept, as assemble() does.
        padded = torch.tensor(list(DistributedSampler(range(PADDED_N), WORLD, rank, shuffle=False)))
        out["probe_padded"] = _attempt(lambda: probe(emb1[padded], emb2[padded], y[padded], index=padded))
        gap = inter[inter != 1]                                         # sample 1 on no rank
        out["probe_gap"] = _outcome(lambda: probe(emb1[gap], emb2[gap], y[gap], index=gap))

        # OGM-GE's scores of each rank's batch: the whole step's batch on every rank.
        out["ogm_scores"] = ogm_ge_scores([p1[inter].log(), p2[inter].log()], y[inter])
        cur = SPICECurriculum(n, epochs=6)
        cur.update(p1[inter], p2[inter], p12[inter], y[inter], index=inter)
        out["scores"] = cur.scores
        local = SPICECurriculum(n, epochs=6, estimator="local", estimator_kwargs={"k": 4})
        local.update(p1[inter], p2[inter], p12[inter], y[inter], embedding=emb1[inter], index=inter)
        out["local_scores"] = local.scores

        sampler_cur = SPICECurriculum(n, epochs=10, estimator=lambda *a: _scores(n))
        sampler_cur.update(None, None, None, None)
        sampler = SPICESampler(sampler_cur, seed=3)
        out["shards"] = {}
        for epoch in SAMPLER_EPOCHS:
            sampler.set_epoch(epoch)
            out["shards"][epoch] = (list(sampler), len(sampler), sampler_cur.indices().tolist())

        dyn = DynCIM(n, 2, epochs=6)
        dyn.update(p12[inter], [p1[inter], p2[inter]], y[inter], index=inter)
        out["dyn"] = (dyn.weights(), dyn.modality_weights())

        ctrl = _controller()
        out["decision"] = ctrl.update(0, emb1[half], emb2[half], y[half])
        # step() takes rank 0's terms: rank 1's (which would pause modality 2) are overruled.
        skew = {"unique1": 0.5, "unique2": 0.1, "synergy": 0.3} if rank == 0 else \
            {"unique1": 0.1, "unique2": 0.5, "synergy": 0.3}
        out["step"] = ctrl.step(1, skew, {"synergy": 0.0})
        # NaN terms on rank 1 only: overruled like any of its terms (it used to raise alone and
        # leave rank 0 waiting in the broadcast); NaN on rank 0: every rank raises.
        nan = {"unique1": math.nan, "unique2": 0.1, "synergy": 0.3}
        out["step_nan_rank1"] = ctrl.step(2, skew if rank == 0 else nan, {"synergy": 0.0})
        try:
            ctrl.step(3, nan if rank == 0 else skew, {"synergy": 0.0})
            out["step_nan_rank0"] = None
        except ValueError as error:
            out["step_nan_rank0"] = str(error)

        metric = fastpid.PIDMetric((3, 3, 3))
        metric.update(p1[half], p2[half], y[half])
        out["metric"] = metric.compute()
        out["metric_local_mass"] = float(metric.counts.sum())
        codes = fastpid.PIDMetric((3, 3, 3))
        codes.update(*_noisy_sum_codes(rank))
        est = codes.estimate(n_null=5, n_pilot=3)                        # no seed
        out["metric_estimate"] = [float(getattr(f, t)) for f in (est, est.ci_low, est.ci_high)
                                  for t in ("redundancy", "unique1", "unique2", "synergy")]
        out["metric_estimate"].append(float(est.p_value.synergy))
        # Two batches, with a checkpoint between them or without: each rank saves and loads
        # its own state.
        batches = [(p1[half][s], p2[half][s], y[half][s]) for s in (slice(0, 20), slice(20, None))]
        uninterrupted, saved, resumed = (fastpid.PIDMetric((3, 3, 3)) for _ in range(3))
        for batch in batches:
            uninterrupted.update(*batch)
        saved.update(*batches[0])
        path = os.path.join(out_dir, f"metric_rank{rank}.pt")
        torch.save(saved.state_dict(), path)
        resumed.load_state_dict(torch.load(path, weights_only=True))
        resumed.update(*batches[1])
        out["metric_resumed"] = (resumed.compute(), uninterrupted.compute(),
                                 torch.equal(resumed.counts, uninterrupted.counts))
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _attempt(f):
    """``f()``, or the error that it raised as ``"Type: message"``."""
    try:
        return f()
    except Exception as error:
        return f"{type(error).__name__}: {error}"


def _outcome(f) -> str:
    """``"ok"``, or the error that ``f()`` raised as ``"Type: message"``."""
    result = _attempt(f)
    return result if isinstance(result, str) else "ok"


def _error_worker(rank, port, out_dir):
    """Errors that only one rank's inputs cause (or that only rank 0 meets): every rank must
    raise the same error, and none may be left waiting in a collective."""
    # A short timeout: a rank left waiting fails its next collective instead of hanging.
    _init(rank, port, TIMEOUT_S // 3)
    try:
        torch.set_num_threads(1)
        y, emb1, emb2, _ = _problem()
        out = {}
        # synergy_rule="test" runs the estimate on rank 0 only; here it fails there.
        ctrl = ECSAsyncController(PIDProbe(n_clusters=3), synergy_rule="test", warmup_epochs=0)
        if rank == 0:
            def fail(*args, **kwargs):
                raise ValueError("the estimate failed on rank 0")
            ctrl.probe.estimated = fail
        out["ecs_estimate_error"] = _outcome(lambda: ctrl.update(0, emb1[rank::WORLD], emb2[rank::WORLD],
                                                                 y[rank::WORLD]))
        # Embeddings of another width on rank 1: gloo aborted the process (EnforceNotMet).
        wide = torch.cat([emb1, emb1], 1)
        out["probe_width"] = _outcome(lambda: PIDProbe(n_clusters=3)(emb1 if rank == 0 else wide, emb2, y))
        # Negative labels on rank 1: only rank 1 raised, before the gather the others entered.
        out["probe_labels"] = _outcome(lambda: PIDProbe(n_clusters=3)(emb1, emb2, y if rank == 0 else -1 - y))
        out["dtype"] = _outcome(lambda: gather_rows(emb1 if rank == 0 else emb1.float()))
        out["rows_rank1"] = _outcome(lambda: gather_rows(emb1, emb2 if rank == 0 else emb2[1:]))
        out["after"] = float(all_reduce_sum(torch.tensor([1.0 + rank]))[0])   # nobody is left behind
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _input_error_worker(rank, port, out_dir):
    """Bad inputs on rank 1 alone before a gather (SPICE and DynCIM's index= paths, the
    probe's index, n_classes from a rank's own labels) and PIDMetric sizes that differ per
    rank: every rank must raise the same error, and none may be left waiting."""
    _init(rank, port, TIMEOUT_S // 6)
    try:
        torch.set_num_threads(1)
        y, emb1, emb2, (p1, p2, p12) = _problem()
        n = len(y)
        inter = torch.arange(rank, n, WORLD)
        # Bad on rank 1 only: a label of -100 (ignore_index padding), an index one entry
        # short, one unimodal prediction of two.
        bad_labels, bad_index, bad_modalities = y[inter].clone(), inter, [p1[inter], p2[inter]]
        if rank == 1:
            bad_labels[0] = -100
            bad_index, bad_modalities = inter[:-1], bad_modalities[:1]

        def spice(labels=y[inter], index=inter):
            SPICECurriculum(n, epochs=6).update(p1[inter], p2[inter], p12[inter], labels, index=index)

        def dyncim(labels=y[inter], modalities=(p1[inter], p2[inter])):
            DynCIM(n, 2, epochs=6).update(p12[inter], list(modalities), labels, index=inter)

        out = {"spice_labels": _outcome(lambda: spice(labels=bad_labels)),
               "spice_index": _outcome(lambda: spice(index=bad_index)),
               "dyncim_labels": _outcome(lambda: dyncim(labels=bad_labels)),
               "dyncim_modalities": _outcome(lambda: dyncim(modalities=bad_modalities)),
               "probe_index": _outcome(lambda: PIDProbe(n_clusters=3)(emb1[inter], emb2[inter], y[inter],
                                                                      index=bad_index))}
        # The paths without index= (each rank passes the whole set), index= or epoch= on rank 1
        # only, another epoch on rank 1, and a probe epoch without its probe set on rank 1: only
        # rank 1 raised, and rank 0 waited in the broadcast (or the collectives did not match).
        whole = y.clone()
        if rank == 1:
            whole[0] = -100
        out["spice_whole"] = _outcome(lambda: SPICECurriculum(n, epochs=6).update(p1, p2, p12, whole))
        out["dyncim_whole"] = _outcome(lambda: DynCIM(n, 2, epochs=6).update(p12, [p1, p2], whole))
        out["spice_index_one_rank"] = _outcome(lambda: SPICECurriculum(n, epochs=6).update(
            *((p1, p2, p12, y) if rank == 0 else (p1[inter], p2[inter], p12[inter], y[inter])),
            index=None if rank == 0 else inter))
        out["dyncim_epoch_one_rank"] = _outcome(lambda: DynCIM(n, 2, epochs=6).update(
            p12, [p1, p2], y, epoch=0 if rank == 0 else None))
        out["dyncim_epoch"] = _outcome(lambda: DynCIM(n, 2, epochs=6).update(p12, [p1, p2], y, epoch=rank))
        out["ecs_no_rows"] = _outcome(lambda: _controller().update(
            0, *((emb1[inter], emb2[inter], y[inter]) if rank == 0 else (None, None, None))))
        # Epoch 0 probes with probe_every=2 and epoch 1 does not: rank 0 entered the probe's
        # gather, rank 1 returned.
        out["ecs_epoch"] = _outcome(lambda: ECSAsyncController(PIDProbe(n_clusters=5), probe_every=2).update(
            rank, emb1[inter], emb2[inter], y[inter]))
        # Another number of modalities on rank 1 (the all-reduce waited), and each rank's own
        # scores, without any collective.
        logits = [p1[inter].log(), p2[inter].log()] + ([p12[inter].log()] if rank == 1 else [])
        out["ogm_modalities"] = _outcome(lambda: ogm_ge_scores(logits, y[inter]))
        out["ogm_own"] = _attempt(lambda: ogm_ge_scores(logits[:2 + rank], y[inter], all_ranks=False))
        # n_classes from each rank's own labels: rank 1's part has no class 2.
        part = inter if rank == 0 else inter[y[inter] < 2]
        out["probe_n_classes"] = _outcome(lambda: PIDProbe(n_clusters=3)(
            emb1[part], emb2[part], y[part], n_classes=int(y[part].max()) + 1))
        # Failures that were not ValueError / TypeError, or came after the per-rank checks: a
        # user's SPICE estimator raising RuntimeError on rank 1, a sparse embedding, an index
        # holding None, and PIDMetric.estimate arguments refused on rank 1 only.
        def estimator(q1, q2, q12, labels, embedding):
            if rank == 1:
                raise RuntimeError("estimator failed on this rank")
            return pointwise_scores(q1, q2, q12, labels)
        out["spice_estimator"] = _outcome(lambda: SPICECurriculum(n, epochs=6, estimator=estimator).update(
            p1[inter], p2[inter], p12[inter], y[inter], index=inter))
        out["probe_sparse"] = _outcome(lambda: PIDProbe(n_clusters=3)(
            emb1[inter].to_sparse() if rank == 1 else emb1[inter], emb2[inter], y[inter]))
        out["spice_seed"] = _outcome(lambda: SPICECurriculum(n, epochs=6, seed=rank).update(
            p1[inter], p2[inter], p12[inter], y[inter], index=inter))
        nan_emb = emb1[inter].clone()
        if rank == 1:
            nan_emb[3, 0] = float("nan")
        out["probe_nan_row"] = _outcome(lambda: PIDProbe(n_clusters=3)(nan_emb, emb2[inter], y[inter], index=inter))
        none_index = inter.tolist()
        if rank == 1:
            none_index[0] = None
        out["probe_index_none"] = _outcome(lambda: PIDProbe(n_clusters=3)(emb1[inter], emb2[inter], y[inter],
                                                                          index=none_index))
        counted = fastpid.PIDMetric((3, 3, 3))
        counted.update(y[inter], (y[inter] + 1) % 3, y[inter])
        out["metric_estimate_groups"] = _outcome(lambda: counted.estimate(
            seed=0, **({"groups": torch.zeros(5, dtype=torch.long)} if rank == 1 else {})))
        out["metric_estimate_confidence"] = _outcome(lambda: counted.estimate(
            seed=0, n_null=0, confidence=2.0 if rank == 1 else 0.95))
        # Sizes from each rank's own labels (last: gloo aborted the process).
        metric = fastpid.PIDMetric((2, 2, int(y[part].max()) + 1))
        metric.update(y[part] % 2, (y[part] + 1) % 2, y[part])
        out["metric_sizes"] = _outcome(metric.compute)
        out["after"] = float(all_reduce_sum(torch.tensor([1.0 + rank]))[0])   # nobody is left behind
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _tempered(preds, epoch):
    """Softmax rows ``preds`` sharpened by ``epoch``: another epoch's predictions."""
    return [torch.softmax(p.log() * (1 + epoch / 2), 1) for p in preds]


def _rank0_checkpoint_worker(rank, port, out_dir):
    """A DynCIM checkpoint loaded on rank 0 only: the next update(index=) must give every
    rank rank 0's state, the uninterrupted run's; its epoch= is checked against rank 0's
    epoch on every rank (the fresh rank 1 refused epoch 2 alone and rank 0 waited)."""
    _init(rank, port, TIMEOUT_S // 6)
    try:
        torch.set_num_threads(1)
        y, _, _, preds = _problem()
        n = len(y)
        inter = torch.arange(rank, n, WORLD)
        uninterrupted, resumed = DynCIM(n, 2, epochs=6), DynCIM(n, 2, epochs=6)
        for epoch in range(2):
            p1, p2, p12 = _tempered(preds, epoch)
            uninterrupted.update(p12, [p1, p2], y)
        if rank == 0:
            resumed.load_state_dict(uninterrupted.state_dict())
        p1, p2, p12 = _tempered(preds, 2)
        resumed.update(p12[inter], [p1[inter], p2[inter]], y[inter], index=inter, epoch=2)
        uninterrupted.update(p12, [p1, p2], y)
        torch.save({"resumed": resumed.state_dict(), "uninterrupted": uninterrupted.state_dict()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _spawn(target, out_dir):
    """Run ``target(rank, port, out_dir)`` in two processes; the per-rank outputs."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, port, out_dir)) for r in range(WORLD)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + TIMEOUT_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, f"the distributed workers did not finish within {TIMEOUT_S} s"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run :func:`_worker` in two processes; the per-rank outputs."""
    return _spawn(_worker, str(tmp_path_factory.mktemp("ddp")))


@pytest.fixture(scope="module")
def rank_errors(tmp_path_factory):
    """Run :func:`_error_worker` in two processes; the per-rank outputs."""
    return _spawn(_error_worker, str(tmp_path_factory.mktemp("ddp_errors")))


@pytest.fixture(scope="module")
def input_errors(tmp_path_factory):
    """Run :func:`_input_error_worker` in two processes; the per-rank outputs."""
    return _spawn(_input_error_worker, str(tmp_path_factory.mktemp("ddp_input_errors")))


@pytest.fixture(scope="module")
def reference():
    return _single_process()


def test_probe_gathers_every_rank(ranks, reference):
    ref = reference["probe"]
    for out in ranks:
        terms, c1, c2, labels = out["probe"]
        assert torch.equal(c1, ref.codes1) and torch.equal(c2, ref.codes2)
        assert torch.equal(labels, ref.labels)
        for k, v in ref.terms().items():
            assert terms[k] == pytest.approx(v, abs=1e-12), k
        terms, c1, c2 = out["probe_index"]                 # interleaved shards put back in order
        assert torch.equal(c1, ref.codes1) and torch.equal(c2, ref.codes2)
        assert terms["synergy"] == pytest.approx(ref.synergy, abs=1e-12)


def test_ogm_ge_scores_are_the_whole_batchs_on_every_rank(ranks, reference):
    """Each rank's own scores gave each rank its own coefficients, applied after DDP averaged
    the gradients: the copies of the model drifted apart (0.831 and 0.955 on one step)."""
    for out in ranks:
        torch.testing.assert_close(out["ogm_scores"], reference["ogm_scores"], rtol=1e-12, atol=0)


def test_sampler_shards_are_disjoint_and_cover(ranks):
    sizes = []
    for epoch in SAMPLER_EPOCHS:
        shards = [out["shards"][epoch][0] for out in ranks]
        admitted = ranks[0]["shards"][epoch][2]
        assert admitted == ranks[1]["shards"][epoch][2]
        assert not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == sorted(admitted)
        assert [out["shards"][epoch][1] for out in ranks] == [len(s) for s in shards]
        assert abs(len(shards[0]) - len(shards[1])) <= 1
        sizes.append(len(admitted))
    assert sizes == [18, 65, 54]                               # 65: shards of 33 and 32


def test_spice_scores_and_dyncim_state_match_one_process(ranks, reference):
    for out in ranks:
        for k in ("redundancy", "unique1", "unique2", "synergy"):
            torch.testing.assert_close(getattr(out["scores"], k), getattr(reference["scores"], k), rtol=0, atol=1e-12)
        assert out["scores"].gap is None                        # closed forms: nothing solved
        for k in ("redundancy", "unique1", "unique2", "synergy", "gap"):  # the solves' gaps broadcast too
            torch.testing.assert_close(getattr(out["local_scores"], k), getattr(reference["local_scores"], k),
                                       rtol=0, atol=1e-12)
        torch.testing.assert_close(out["dyn"][0], reference["dyn_weights"], rtol=0, atol=1e-12)
        torch.testing.assert_close(out["dyn"][1], reference["dyn_lambda"], rtol=0, atol=1e-12)


def test_ecs_decisions_are_identical_on_every_rank(ranks, reference):
    assert ranks[0]["decision"] == ranks[1]["decision"] == reference["decision"]
    assert ranks[0]["step"] == ranks[1]["step"]
    assert (ranks[1]["step"].train1, ranks[1]["step"].train2) == (False, True)   # rank 0's terms


def test_metric_all_reduces_the_counts(ranks, reference):
    ref = reference["metric"]
    for out in ranks:
        assert out["metric_local_mass"] == 45                 # the local state stays local
        for k in ("redundancy", "unique1", "unique2", "synergy"):
            assert float(getattr(out["metric"], k)) == pytest.approx(float(getattr(ref, k)), abs=1e-10)
    assert math.isfinite(float(ref.synergy))


def test_invalid_terms_raise_on_every_rank_or_none(ranks):
    """Rank 0's terms decide: NaN terms on rank 1 alone are overruled, NaN terms on rank 0
    raise on every rank (no rank is left waiting in a broadcast)."""
    assert ranks[0]["step_nan_rank1"] == ranks[1]["step_nan_rank1"]
    for out in ranks:
        assert out["step_nan_rank0"] is not None and "NaN" in out["step_nan_rank0"]


def test_metric_state_per_rank_resumes_bit_identically(ranks):
    """Each rank saves and loads its own PIDMetric state: the resumed counts and the
    all-reduced result equal the uninterrupted run's exactly."""
    for out in ranks:
        resumed, uninterrupted, same_counts = out["metric_resumed"]
        assert same_counts
        for k in ("redundancy", "unique1", "unique2", "synergy"):
            assert float(getattr(resumed, k)) == float(getattr(uninterrupted, k)), k
        assert float(resumed.synergy) == pytest.approx(float(out["metric"].synergy), abs=1e-10)


def test_rank_local_errors_raise_on_every_rank(rank_errors):
    """A failing estimate on rank 0 (synergy_rule="test") left rank 1 waiting in step()'s
    broadcast until the process group timed out; embeddings of other widths aborted a
    process in gloo; other dtypes, or row counts that differ within one rank's call,
    failed alike. Each now raises the same ValueError on every rank, and the group goes on."""
    for key, match in (("ecs_estimate_error", "ValueError: the estimate failed on rank 0"),
                       ("probe_width", r"ValueError: gather_rows: every rank must pass tensors of the same "
                                       r"trailing shapes and dtypes; .*rank 0: \[\(\[4\], 'torch.float64'\)"),
                       ("probe_labels", r"ValueError: on rank 1: ValueError: labels\[0\] = -\d+ is negative"),
                       ("dtype", r"ValueError: gather_rows: .*rank 1: \[\(\[4\], 'torch.float32'\)\]"),
                       ("rows_rank1", r"ValueError: gather_rows: the tensors have different row counts on "
                                      r"rank 1: \[90, 89\]")):
        assert rank_errors[0][key] == rank_errors[1][key], key
        assert re.match(match, rank_errors[0][key]), (key, rank_errors[0][key])
    assert rank_errors[0]["after"] == rank_errors[1]["after"] == 3.0


def test_one_ranks_bad_inputs_raise_on_every_rank(input_errors):
    """Labels of -100 or an index of the wrong length on rank 1 alone (SPICE and DynCIM's
    paths with and without index=, the probe's index), index= or epoch= given on rank 1 only,
    another epoch there, or a probe epoch without its probe set raised there only, leaving
    rank 0 waiting in a collective;
    labels outside rank 1's own n_classes split the ranks (rank 0 returned a result);
    PIDMetric sizes that differ per rank aborted a process in gloo. Each now raises the
    same ValueError on every rank, and the group goes on."""
    rank1 = "ValueError: on rank 1: "   # every rank's error, naming rank 1's
    on_rank1 = rank1 + "ValueError: "
    for key, match in (
            ("spice_labels", on_rank1 + r"y\[0\] = -100 is negative"),
            ("spice_index", on_rank1 + r"index must be a 1-D vector with one entry per row; got index of "
                                       r"shape \(44,\) for rows \[45, 45, 45, 45\]"),
            ("dyncim_labels", on_rank1 + r"y\[0\] = -100 is negative"),
            ("dyncim_modalities", on_rank1 + "expected 2 unimodal predictions, got 1"),
            ("probe_index", on_rank1 + r"index must have one entry per row \(45\), got shape \(44,\)"),
            ("probe_n_classes", on_rank1 + r"labels\[\d+\] = 2 is out of range for n_classes = 2"),
            # checked after the gather, it had named neither the rank nor the rank's own row
            # ties at the cut are drawn by the seed: another per rank admitted other samples
            ("spice_seed", r"ValueError: SPICECurriculum's seed differs between ranks: rank 0: 0, rank 1: 1"),
            ("probe_nan_row", on_rank1 + r"emb1 has NaN or Inf entries \(1 of 45 rows, the first at row 3\)"),
            ("metric_sizes", r"ValueError: PIDMetric.compute\(\): every rank must build the metric with the "
                             r"same sizes .*by rank: \[\(2, 2, 3\), \(2, 2, 2\)\]"),
            ("spice_whole", on_rank1 + r"y\[0\] = -100 is negative"),
            ("dyncim_whole", on_rank1 + r"y\[0\] = -100 is negative"),
            ("spice_index_one_rank", r"ValueError: whether update\(\) got index= differs between ranks: "
                                     r"rank 0: False, rank 1: True"),
            ("dyncim_epoch_one_rank", r"ValueError: whether update\(\) got \(index=, epoch=\) differs between "
                                      r"ranks: rank 0: \(False, True\), rank 1: \(False, False\)"),
            ("dyncim_epoch", on_rank1 + r"update\(epoch=1\): the next epoch is 0"),
            ("ecs_no_rows", on_rank1 + "epoch 0 is a probe epoch"),
            ("ecs_epoch", r"ValueError: update\(\)'s epoch differs between ranks: rank 0: 0, rank 1: 1"),
            ("ogm_modalities", r"ValueError: the number of modalities of ogm_ge_scores differs between ranks: "
                               r"rank 0: 2, rank 1: 3"),
            ("spice_estimator", rank1 + "RuntimeError: estimator failed on this rank"),
            ("probe_sparse", rank1 + "TypeError: emb1 is a torch.sparse_coo tensor; pass a dense one"),
            ("probe_index_none",
             rank1 + r"TypeError: index \(row positions\) must be a list of integer sample indices"),
            ("metric_estimate_groups", on_rank1 + r"PIDMetric.estimate\(\) cannot take groups"),
            ("metric_estimate_confidence", on_rank1 + "confidence")):
        assert input_errors[0][key] == input_errors[1][key], key
        assert re.match(match, input_errors[0][key]), (key, input_errors[0][key])
    assert input_errors[0]["after"] == input_errors[1]["after"] == 3.0
    assert [len(out["ogm_own"]) for out in input_errors] == [2, 3]   # all_ranks=False: no collective


def test_probe_takes_distributed_sampler_padding(ranks, reference):
    """DistributedSampler pads 89 samples to 90 over two ranks, repeating sample 0: the probe
    refused it ("must be a permutation of 0 .. 89") where assemble() keeps one row. It now
    equals one process on the 89 samples; a sample on no rank is named."""
    ref = reference["probe_padded"]
    for out in ranks:
        res = out["probe_padded"]
        assert not isinstance(res, str), res
        assert torch.equal(res.codes1, ref.codes1) and torch.equal(res.labels, ref.labels)
        assert res.terms() == pytest.approx(ref.terms(), abs=1e-12)
        assert re.match(r"ValueError: the indices \(over every rank\) cover 89 of 90 samples; missing e.g. "
                        r"\[1\]", out["probe_gap"]), out["probe_gap"]


def test_metric_estimate_without_seed_is_the_same_on_every_rank(ranks):
    """estimate() without a seed drew fresh entropy per process: each rank got another
    corrected synergy, interval and p-value. Rank 0's seed is now broadcast."""
    assert ranks[0]["metric_estimate"] == ranks[1]["metric_estimate"]
    assert all(math.isfinite(v) for v in ranks[0]["metric_estimate"])


def test_dyncim_checkpoint_loaded_on_rank0_only_takes_rank0s_state(tmp_path):
    """Loaded on rank 0 only, rank 0 broadcast one tensor more than the fresh rank 1 (its
    HMIR) and the update hung. Every rank now takes rank 0's state (epoch, loss history,
    HMIR included), the uninterrupted run's."""
    for out in _spawn(_rank0_checkpoint_worker, str(tmp_path)):
        resumed, uninterrupted = out["resumed"], out["uninterrupted"]
        assert resumed.keys() == uninterrupted.keys() and resumed["epoch"] == uninterrupted["epoch"] == 2
        assert resumed["hmir"] is not None and len(resumed["losses"]) == 3
        for key, value in uninterrupted.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-12, msg=key)
            elif isinstance(value, list):
                torch.testing.assert_close(torch.stack(resumed[key]), torch.stack(value), rtol=0, atol=1e-12)
            else:
                assert resumed[key] == value, key
