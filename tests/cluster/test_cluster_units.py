"""Pieces of the cluster package that need no Ray: data streams, checkpoint files, lr schedule."""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cluster import checkpoint as ck
from cluster.checkpoint import format as fmt, rng, store
from cluster.config import job_from_dict
from cluster.tasks.examples import TokenExamples, tokens_from_sample
from cluster.train.data import val_batches
from cluster.train.schedule import LRSchedule
from cluster.seeds import mix_seed
from cluster_helpers import take_batches
from data_prep.manifest import shard_paths
from data_prep.schema import Sample


def _take(urls, **kw):
    return take_batches(urls, examples=TokenExamples(256, "mu-law"), **kw)


def test_global_batches_are_deterministic_and_shaped(shards):
    urls = shard_paths(shards, "train")
    a, b = _take(urls), _take(urls, threads=2)  # reading ahead in threads changes nothing
    assert len(a) == 5
    for (ta, ma), (tb, mb) in zip(a, b):
        assert ta.shape == (2, 256) and ta.dtype == torch.int64 and ma.dtype == torch.bool
        assert torch.equal(ta, tb) and torch.equal(ma, mb)
        assert 0 <= int(ta.min()) and int(ta.max()) <= 255


def test_a_step_holds_the_same_clips_at_any_world_size_and_from_any_start(shards):
    urls = shard_paths(shards, "train")
    whole = _take(urls, global_batch=4, steps=3)
    for world in (2, 3, 4):
        shares = [_take(urls, global_batch=4, steps=3, rank=r, world=world, micro=1) for r in range(world)]
        for step in range(3):
            joined = torch.cat([shares[r][step][0] for r in range(world)])
            assert torch.equal(joined, whole[step][0]), (world, step)  # rank order = the global order
    assert torch.equal(_take(urls, global_batch=4, steps=1, start_step=2)[0][0], whole[2][0])  # resume at 2
    assert not torch.equal(_take(urls, global_batch=4, steps=1, seed=1)[0][0], whole[0][0])


def test_one_shard_serves_many_ranks(shards):
    urls = shard_paths(shards, "train")[:1]
    for rank in range(4):  # one shard, four ranks: each gets its share of every step
        assert [t.shape[0] for t, _ in _take(urls, global_batch=4, steps=3, rank=rank, world=4)] == [1, 1, 1]


def test_crop_stays_inside_valid_prefix():
    n, length = 1000, 700
    data = np.arange(n, dtype=np.float32)  # values = positions; "none" keeps them as tokens
    s = Sample(key="k", kind="audio", data=data, length=length, sample_rate=16000, label=None)
    rng = random.Random(0)
    starts = set()
    for _ in range(200):
        tok, mask = tokens_from_sample(s, 300, "none", rng)
        assert mask.all() and int(tok.max()) < length
        assert torch.equal(tok, torch.arange(int(tok[0]), int(tok[0]) + 300))
        starts.add(int(tok[0]))
    assert min(starts) == 0 or len(starts) > 50  # random offsets, not a fixed one


def test_short_clip_is_padded_and_masked():
    s = Sample(key="k", kind="audio", data=np.linspace(-1, 1, 500).astype(np.float32), length=100,
               sample_rate=16000, label=None)
    tok, mask = tokens_from_sample(s, 256, "mu-law", random.Random(0))
    assert mask[:100].all() and not mask[100:].any()
    assert (tok[100:] == 128).all()
    assert int(tok[:100].min()) == 0 and int(tok[:100].max()) == 255  # min-max scaled before mu-law


def test_val_batches_are_fixed(shards):
    urls = shard_paths(shards, "val")
    a = val_batches(urls, n_batches=2, batch_size=2, examples=TokenExamples(256, "linear"))
    b = val_batches(urls, n_batches=2, batch_size=2, examples=TokenExamples(256, "linear"))
    assert len(a) >= 1 and all(torch.equal(x[0], y[0]) for x, y in zip(a, b))


def test_val_shares_interleave_to_the_whole_and_loaders_pin_on_request(shards):
    """Rank r of w keeps val batches r, r + w, ...: shares are disjoint, cover the n batches, and differ
    in size by at most one (the trainer merges their sums, so uneven shares are fine). The train split
    plays val here: the tiny corpus' val split holds 2 clips."""
    urls = shard_paths(shards, "train")
    kw = dict(n_batches=3, batch_size=1, examples=TokenExamples(256, "mu-law"))
    whole = val_batches(urls, **kw)
    shares = [val_batches(urls, rank=r, world=2, **kw) for r in (0, 1)]
    assert len(whole) == 3 and [len(s) for s in shares] == [2, 1]
    for got, want in zip([shares[0][0], shares[1][0], shares[0][1]], whole):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert val_batches(urls, rank=3, world=4, **kw) == []  # more ranks than batches: an empty share


def test_mix_seed_is_stable():
    assert mix_seed(0, 1, 2) == mix_seed(0, 1, 2) != mix_seed(0, 2, 1)
    # golden value: changing the derivation would silently change the data order of resumed old runs
    assert mix_seed(1, 2, 3) == 1479714026269226309


def _trained(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt, LRSchedule(opt, "plateau", 100)


def test_checkpoint_manager_round_trip_restores_everything_it_holds(tmp_path):
    """save() then load() into fresh objects: weights, AdamW moments, the schedule, the TrainState and the
    RNG streams come back exactly; the file is tensors and primitives (weights_only=True reads it) with a
    job.json beside it."""
    job = job_from_dict({"name": "x", "seed": 3, "data": {"shards": "/d"}, "model": {"d_model": 4}}, "<test>")
    model, opt, sched = _trained(0)
    sched.observe(2.0)
    state = ck.TrainState(step=7, nonfinite_steps=2, metrics={"val_nll_bits": 1.5})
    saver = ck.CheckpointManager(job, str(tmp_path), model=model, optimizer=opt, schedule=sched, state=state,
                                 sample_rate=16000)
    path = saver.save()
    after_save = torch.rand(3)
    assert sorted(p.name for p in Path(path).iterdir()) == [fmt.JOB_FILE, fmt.STATE_FILE]  # no temp file left
    back = store.load_state(path)  # weights_only=True
    assert fmt.job_of(back) == job.to_dict() and back["data"] == {"seed": 3, "step": 7, "world_size": 1}
    assert back["sample_rate"] == 16000 and back["format_version"] == fmt.FORMAT_VERSION
    torch.load(Path(path) / fmt.STATE_FILE, weights_only=True)

    model2, opt2, sched2 = _trained(1)
    state2 = ck.TrainState()
    loader = ck.CheckpointManager(job, str(tmp_path), model=model2, optimizer=opt2, schedule=sched2, state=state2)
    assert loader.load() and loader.resumed_from == 7
    assert torch.equal(torch.rand(3), after_save)  # this rank's RNG as it was when saved
    assert state2 == state and sched2.state_dict() == sched.state_dict()
    assert torch.equal(model2.weight, model.weight) and torch.equal(model2.bias, model.bias)
    for k in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(opt2.state_dict()["state"][0][k], opt.state_dict()["state"][0][k])
    fresh = ck.CheckpointManager(job, str(tmp_path / "empty"), model=model2, state=ck.TrainState())
    assert not fresh.load() and fresh.resumed_from == -1


def test_rng_capture_restore_reproduces_draws():
    torch.manual_seed(1); np.random.seed(1); random.seed(1)
    np.random.randn()  # has_gauss state
    state = rng.capture_rng()
    first = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    torch.manual_seed(99); np.random.seed(99); random.seed(99)
    rng.restore_rng(state)
    again = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2] and first[3] == again[3]


def test_latest_checkpoint_by_step(tmp_path):
    for step in (9, 100, 20):
        d = tmp_path / store.checkpoint_dir_name(step)
        d.mkdir()
        (d / fmt.STATE_FILE).write_bytes(b"x")
    (tmp_path / store.checkpoint_dir_name(500)).mkdir()  # incomplete: no state file
    assert store.name_of(ck.latest_checkpoint(tmp_path)) == store.checkpoint_dir_name(100)


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_and_cosine():
    opt = _opt()
    s = LRSchedule(opt, "cosine", max_steps=110, warmup_steps=10, min_scale=0.1)
    lrs = []
    for step in range(110):
        s.apply(step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_plateau_reduces_by_factor_after_patience_and_resumes_exactly():
    opt = _opt(4e-3)
    s = LRSchedule(opt, "plateau", 100, factor=0.2, patience=1)
    assert not s.observe(2.0)   # best
    assert not s.observe(2.0)   # 1 bad eval (patience 1)
    assert s.observe(2.1)       # 2nd bad eval -> reduce
    s.apply(5)
    assert opt.param_groups[0]["lr"] == pytest.approx(4e-3 * 0.2)
    opt2 = _opt(4e-3)
    s2 = LRSchedule(opt2, "plateau", 100, factor=0.2, patience=1)
    s2.load_state_dict(s.state_dict())
    s2.apply(5)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert s2.observe(3.0) == s.observe(3.0)


def test_constant_ignores_val():
    opt = _opt(0.5)
    s = LRSchedule(opt, "constant", 10)
    for v in (1.0, 2.0, 3.0, 4.0, 5.0):
        assert not s.observe(v)
    s.apply(9)
    assert opt.param_groups[0]["lr"] == 0.5 and math.isinf(LRSchedule(_opt(), "plateau", 1).best)
