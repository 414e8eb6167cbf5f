"""A result independent of the world size (issue 21), without Ray: the global sample order, the loss
normalisation that makes uneven shares exact, resuming at another world size, the job keys of elastic
runs, and the reclaim-notice checkpoint driven by a fake notice. The Ray runs (nodes removed, added and
drained on a simulated cluster) are in tests/integration/test_elastic_ray.py."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cluster import checkpoint as ck
from cluster.checkpoint import store
from cluster.config import JobConfigError, job_from_dict
from cluster.driver.jobs import load_job
from cluster.driver.prepare import prepare
from cluster.train.order import ClipLocator, GlobalOrder, rank_slice
from cluster.train.runtime import Runtime
from cluster.train.trainer import train_rank
from cluster_helpers import assert_same_weights, flat_weights, spawn_ranks, tiny_job, write_job

STEPS = {"training": {"max_steps": 4, "global_batch": 4, "batch_per_worker": 1},
         "checkpoint": {"every": 2, "keep": 10},
         "eval": {"every": 2, "val_batches": 1, "val_batch_size": 2, "generate_samples": 0}}


def _job(tmp_path, shards, name, overrides=()):
    path = write_job(tmp_path / f"{name}.yaml", tiny_job(shards, tmp_path / "runs", name, **STEPS))
    return load_job(path, list(overrides)), str(path)


def _rank(rank, world, port, config, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        metrics = []
        runtime = Runtime(rank=rank, world_size=world, device=torch.device("cpu"),
                          report=lambda m, d: metrics.append(dict(m)),
                          prepare_model=torch.nn.parallel.DistributedDataParallel if world > 1 else (lambda m: m))
        train_rank(config, runtime)
        Path(out, f"m{rank}.json").write_text(json.dumps(metrics))
    finally:
        dist.destroy_process_group()


def _train(tmp_path, shards, name, world, overrides=()):
    job, where = _job(tmp_path, shards, name, [*overrides, f"scaling.num_workers={world}"])
    out = tmp_path / f"out-{name}-{world}"
    out.mkdir(exist_ok=True)
    spawn_ranks(_rank, world, prepare(job, where), str(out))
    return json.loads((out / "m0.json").read_text())


def _final(tmp_path, name):
    return ck.validate_checkpoint(ck.latest_checkpoint(tmp_path / "runs" / name))


# ---------------------------------------------------------------- the order itself

def test_rank_slices_partition_every_global_batch_whatever_the_world_size():
    order = GlobalOrder(n_clips=10, global_batch=7, seed=3)
    for world in (1, 2, 3, 7):
        for step in (0, 1, 5):
            parts = [list(order.positions(step, r, world)) for r in range(world)]
            assert sum(parts, []) == list(range(7 * step, 7 * step + 7))  # contiguous, in rank order
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert rank_slice(10, 4, 0) == (0, 3) and rank_slice(10, 4, 3) == (8, 2)


def test_each_epoch_is_a_permutation_and_the_order_depends_on_seed_and_step_only():
    order = GlobalOrder(n_clips=10, global_batch=4, seed=0)
    clips = [order.clip(p) for p in range(30)]
    for e in range(3):
        assert sorted(clips[10 * e:10 * e + 10]) == list(range(10))
    assert clips[:10] != clips[10:20]  # a new shuffle each epoch
    assert [order.clip(p) for p in range(30)] == clips == [GlobalOrder(10, 4, 0).clip(p) for p in range(30)]
    assert [GlobalOrder(10, 4, 1).clip(p) for p in range(10)] != clips[:10]
    assert order.example_seed(5) == GlobalOrder(10, 8, 0).example_seed(5) != order.example_seed(6)


def test_clip_locator_maps_clip_numbers_across_shards_including_empty_ones():
    loc = ClipLocator(("a", "b", "c", "d"), (3, 0, 2, 1))
    assert [loc.locate(i) for i in range(6)] == [("a", 0), ("a", 1), ("a", 2), ("c", 0), ("c", 1), ("d", 0)]
    with pytest.raises(IndexError):
        loc.locate(6)


# ---------------------------------------------------------------- the same weights at any world size

def test_world_sizes_1_2_3_4_train_the_same_weights(tmp_path, shards):
    """Global batch 4 over 1, 2, 3 (uneven: 2+1+1) and 4 workers, micro-batches of 1: after 4 steps every
    run has the same weights, up to the order of float sums."""
    for world in (1, 2, 3, 4):
        _train(tmp_path, shards, f"w{world}", world)
    one = _final(tmp_path, "w1")
    start = ck.validate_checkpoint(tmp_path / "runs" / "w1" / store.checkpoint_dir_name(2))
    assert (flat_weights(one) - flat_weights(start)).abs().max() > 1e-3  # steps 3 and 4 moved the weights
    for world in (2, 3, 4):
        other = _final(tmp_path, f"w{world}")
        assert other["data"]["world_size"] == world and other["step"] == 4
        assert_same_weights(one, other, start)
    _train(tmp_path, shards, "other-batch", 1, ["training.global_batch=8"])  # the check can fail
    with pytest.raises(AssertionError):
        assert_same_weights(one, _final(tmp_path, "other-batch"), start)


def test_resuming_at_another_world_size_continues_the_same_run(tmp_path, shards):
    """2 steps at world 2, then the same run resumed at world 1 (a resize), then at world 2 again: the
    same weights as a fixed-size run; the resizes are counted and reported."""
    fixed = _train(tmp_path, shards, "fixed", 2)
    _train(tmp_path, shards, "resized", 2, ["training.max_steps=2"])
    _train(tmp_path, shards, "resized", 1, ["training.max_steps=3", "checkpoint.every=1"])
    last = _train(tmp_path, shards, "resized", 2)
    start = ck.validate_checkpoint(tmp_path / "runs" / "fixed" / store.checkpoint_dir_name(2))
    assert_same_weights(_final(tmp_path, "fixed"), _final(tmp_path, "resized"), start)
    assert last[-1]["resizes"] == 2 and last[-1]["world_size"] == 2 and fixed[-1]["resizes"] == 0


# ---------------------------------------------------------------- job keys

@pytest.mark.parametrize("scaling,training,message", [
    ({"num_workers": [3, 2]}, {}, r"scaling.num_workers: \[min, max\] needs 1 <= min <= max, got \[3, 2\]"),
    ({"num_workers": [1, 2, 3]}, {}, r"scaling.num_workers: expected a number of workers or \[min, max\]"),
    ({"num_workers": [1, 4]}, {}, r"scaling.num_workers \[1, 4\] lets the number of workers change: set "
                                  r"training.global_batch"),
    ({"num_workers": [2, 4]}, {"global_batch": 3}, r"training.global_batch 3 cannot be split over "
                                                     r"scaling.num_workers \[2, 4\]"),
])
def test_bad_elastic_keys_are_refused_naming_them(scaling, training, message):
    with pytest.raises(JobConfigError, match=message):
        job_from_dict({"name": "j", "scaling": scaling, "training": training}, "j.yaml")


def test_elastic_keys_parse_and_round_trip():
    job = job_from_dict({"name": "j", "scaling": {"num_workers": [1, 4], "resize_check_s": 5},
                         "training": {"global_batch": 8}}, "j.yaml")
    assert (job.scaling.min_workers, job.scaling.max_workers, job.scaling.elastic) == (1, 4, True)
    assert job.global_batch(3) == 8
    assert job_from_dict(job.to_dict()).scaling.num_workers == (1, 4)
    fixed = job_from_dict({"name": "j", "scaling": {"num_workers": [2, 2]},
                           "training": {"batch_per_worker": 3, "grad_accum": 2}}, "j.yaml")
    assert fixed.scaling.num_workers == 2 and not fixed.scaling.elastic and fixed.global_batch(2) == 12


def test_a_resume_with_another_global_batch_is_refused_naming_both(tmp_path, shards):
    _train(tmp_path, shards, "gb", 1, ["training.max_steps=2"])
    job, where = _job(tmp_path, shards, "gb", ["training.global_batch=6"])
    with pytest.raises(JobConfigError, match=r"training.global_batch: checkpoint 4, job 6"):
        prepare(job, where)


# ---------------------------------------------------------------- reclaim notice

def test_a_reclaim_notice_checkpoints_the_step_once_and_is_counted(tmp_path, shards):
    """A fake notice from step 3 on (the runtime keeps answering it, as Ray does until the node goes):
    one just-in-time checkpoint at step 3 beside the periodic ones at 2 and 4."""
    job, where = _job(tmp_path, shards, "reclaim", ["training.max_steps=5"])
    calls = []

    def notice():
        calls.append(None)
        if len(calls) < 3:
            return None
        return SimpleNamespace(deadline_ms=None, preempted_node_ids=["node-b"], preempted_ranks=[1])

    reports = []
    runtime = Runtime(rank=0, world_size=1, device=torch.device("cpu"), report=lambda m, d: reports.append(dict(m)),
                      preemption_info=notice)
    train_rank(prepare(job, where), runtime)
    assert [r["step"] for r in reports] == [2, 3, 4, 5] and len(calls) == 5
    assert reports[-1]["reclaims"] == 1
    assert sorted(p.name for p in (tmp_path / "runs" / "reclaim").glob("checkpoint_step*"))[:2] == [
        store.checkpoint_dir_name(2), store.checkpoint_dir_name(3)]
