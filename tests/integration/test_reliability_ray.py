"""Faults under real Ray Train V2 runs on the CPU: SIGKILLed workers, a checkpoint torn by a crash while it
was written, NaN losses, a truncated shard under 2-worker DDP, and a soak run with all of them. Every run
is tiny (d_model 16, 1 layer, crop 256, checkpoint every 2 steps); faults come from the test-only
SASHIMI_TEST_FAULTS plan (cluster/train/faults.py), each kill/tear firing once."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from cluster import checkpoint as ck
from cluster.checkpoint import store
from cluster.driver.jobs import load_job
from cluster.driver.connect import local_ray_init_kwargs
from cluster.driver.launch import run
from cluster.train.faults import FAULTS_ENV as TEST_FAULTS_ENV
from cluster_helpers import make_demo_shards, tiny_job, write_job

pytestmark = pytest.mark.slow

EVERY = 2
TWO = {"scaling": {"num_workers": 2}, "training": {"max_steps": 8}, "checkpoint": {"every": EVERY, "keep": 10},
       "eval": {"every": 4, "val_batches": 1, "val_batch_size": 2, "generate_samples": 0}}


def _plans(root: Path) -> dict:
    plans = {
        "kill": {"kill": [[1, 3]]},  # rank 1 SIGKILLed after step 3 (last checkpoint: 2)
        "torn": {"tear": [4]},  # checkpoint 4 truncated on storage, rank 0 SIGKILLed
        "soak": {"kill": [[1, 3], [0, 7]], "tear": [6]},
        "nan": {"nan": [[0, 2], [0, 3]]},
        "nanstop": {"nan": [[0, 1], [0, 2], [0, 3]]},
    }
    for name, plan in plans.items():  # one marker dir per job: each job's faults fire once for it
        plan["dir"] = str(root / "marks" / name)
        Path(plan["dir"]).mkdir(parents=True)
    return plans


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One local Ray cluster for the module, started with the project's own ray.init arguments."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    root = tmp_path_factory.mktemp("rel")
    shards = make_demo_shards(root / "data")
    plans = _plans(root)
    old = os.environ.get(TEST_FAULTS_ENV)
    os.environ[TEST_FAULTS_ENV] = json.dumps(plans)
    try:
        ctx = ray.init(**local_ray_init_kwargs(2))  # forwards SASHIMI_* to the workers
    finally:
        if old is None:
            os.environ.pop(TEST_FAULTS_ENV)
        else:
            os.environ[TEST_FAULTS_ENV] = old
    yield {"root": root, "shards": shards, "marks": root / "marks", "dashboard": ctx.dashboard_url}
    ray.shutdown()


def _run(env, name, overrides=(), shards=None, **sections):
    merged = {k: dict(v) for k, v in TWO.items()}
    for k, v in sections.items():
        merged[k] = {**merged.get(k, {}), **v}
    path = write_job(env["root"] / f"{name}.yaml", tiny_job(shards or env["shards"], env["root"] / "runs", name,
                                                            **merged))
    return run(load_job(path, list(overrides)), str(path))


def _assert_all_checkpoints_valid_or_known_torn(run_dir: Path, torn=()):
    for d in ck.list_checkpoints(run_dir):
        if store.name_of(d) in torn:  # list_checkpoints gives paths as str (URIs too)
            with pytest.raises(ck.CheckpointError):
                ck.validate_checkpoint(d)
        else:
            ck.validate_checkpoint(d)  # weights_only load, complete, finite


def _same_params(a_dir, b_dir):
    a, b = store.load_state(a_dir), store.load_state(b_dir)
    assert a["step"] == b["step"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6, msg=k)


@pytest.fixture(scope="module")
def clean(env):
    info = _run(env, "clean")
    assert info.metrics["step"] == 8 and info.metrics["resumed_from"] == -1
    return info


def test_local_cluster_started_by_the_project_serves_its_dashboard_on_loopback(env):
    assert env["dashboard"] and env["dashboard"].split(":")[0] == "127.0.0.1", env["dashboard"]


def test_sigkilled_worker_restarts_from_last_checkpoint(env, clean):
    info = _run(env, "kill", failure={"max_failures": 2})
    assert (env["marks"] / "kill" / "kill-r1-s3").exists(), "the SIGKILL hook never fired"
    assert info.metrics["step"] == 8
    lost = 3 - info.metrics["resumed_from"]  # steps done before the kill that had to be redone
    assert info.metrics["resumed_from"] == 2 and 0 < lost <= EVERY
    _assert_all_checkpoints_valid_or_known_torn(Path(info.run_dir))
    _same_params(clean.checkpoint_dir, info.checkpoint_dir)  # exact resume: same result as no fault


def test_torn_checkpoint_falls_back_to_previous_valid_one(env, clean):
    info = _run(env, "torn", failure={"max_failures": 2})
    assert (env["marks"] / "torn" / "tear-s4").exists(), "the tear hook never fired"
    # Ray handed out checkpoint 4 (torn); the worker resumed from 2 and said so in its metrics
    assert info.metrics["step"] == 8 and info.metrics["resumed_from"] == 2
    assert info.metrics["resume_skipped_invalid"] == 1
    run_dir = Path(info.run_dir)
    torn = store.checkpoint_dir_name(4)
    names = [store.name_of(d) for d in ck.list_checkpoints(run_dir)]
    assert torn in names and any(n.startswith(torn + "-r") for n in names), names  # rewritten under a new name
    _assert_all_checkpoints_valid_or_known_torn(run_dir, torn=[torn])
    _same_params(clean.checkpoint_dir, info.checkpoint_dir)


def test_nan_steps_are_skipped_counted_and_never_checkpointed(env):
    info = _run(env, "nan", scaling={"num_workers": 1}, training={"max_steps": 4}, checkpoint={"every": 1})
    assert info.metrics["step"] == 4 and info.metrics["nonfinite_steps"] == 2
    run_dir = Path(info.run_dir)
    s1, s3, s4 = (ck.validate_checkpoint(run_dir / store.checkpoint_dir_name(s)) for s in (1, 3, 4))
    for k in s1["model"]:  # steps 2 and 3 were skipped: no optimiser step, so weights and moments unchanged
        assert torch.equal(s1["model"][k], s3["model"][k]), k
    for pid, st in s1["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg"], s3["optimizer"]["state"][pid]["exp_avg"])
    assert any(not torch.equal(s3["model"][k], s4["model"][k]) for k in s3["model"])  # step 4 trained
    assert s4["nonfinite_steps"] == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/nonfinite_steps")] == [(1, 0), (2, 1), (3, 2), (4, 2)]


def test_too_many_nan_steps_in_a_row_stop_the_run(env):
    from ray.train import TrainingFailedError

    with pytest.raises(TrainingFailedError, match=r"2 consecutive steps .*non-finite.*max_nonfinite_steps=2"):
        _run(env, "nanstop", scaling={"num_workers": 1}, training={"max_steps": 4, "max_nonfinite_steps": 2},
             failure={"max_failures": 0})
    assert ck.list_checkpoints(env["root"] / "runs" / "nanstop") == []  # nothing saved after the NaNs


def test_two_workers_over_a_truncated_shard_complete(env):
    data = env["root"] / "baddata"
    shutil.copytree(env["shards"], data)
    manifest = json.loads((data / "manifest.json").read_text())
    entry = manifest["splits"]["train"]["shards"][0]
    good = data / entry["path"]
    raw = good.read_bytes()
    torn = good.with_name("shard-torn.tar")
    torn.write_bytes(raw[: len(raw) // 3 + 700])  # a crash mid-copy: cut inside a member
    # every rank reads the torn shard half the time; a missing-member sample is in it as well
    manifest["splits"]["train"]["shards"].append({**entry, "path": str(torn.relative_to(data))})
    (data / "manifest.json").write_text(json.dumps(manifest))
    info = _run(env, "badshard", shards=data, training={"max_steps": 4}, data={"on_bad_sample": "skip"})
    assert info.metrics["step"] == 4
    _assert_all_checkpoints_valid_or_known_torn(Path(info.run_dir))


def test_branch_off_an_older_checkpoint_with_init_from(env, clean):
    """Picking an older checkpoint by hand: a new run name started from it continues exactly."""
    older = Path(clean.run_dir) / store.checkpoint_dir_name(4)
    info = _run(env, "branch", [f"checkpoint.init_from={older}"])
    assert info.metrics["resumed_from"] == 4 and info.metrics["step"] == 8
    _same_params(clean.checkpoint_dir, info.checkpoint_dir)


def test_soak_two_kills_and_a_torn_checkpoint_match_a_clean_run(env, clean):
    info = _run(env, "soak", failure={"max_failures": 4})
    for m in ("kill-r1-s3", "tear-s6", "kill-r0-s7"):
        assert (env["marks"] / "soak" / m).exists(), f"fault {m} never fired"
    assert info.metrics["step"] == clean.metrics["step"] == 8
    torn = store.checkpoint_dir_name(6)
    _assert_all_checkpoints_valid_or_known_torn(Path(info.run_dir), torn=[torn])
    _same_params(clean.checkpoint_dir, info.checkpoint_dir)
