"""Runs whose data, checkpoints and TensorBoard events live only in an object store (a real S3 server
on 127.0.0.1), without Ray: exact resume across the bucket, torn checkpoints in the bucket, the tools
reading checkpoints from it, runs that stop for good, and bad storage caught before Ray starts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from cluster import checkpoint as ck
from cluster.checkpoint import format as fmt, store
from cluster.config import JobConfigError
from cluster.tools.evaluate import main as eval_main
from cluster.train.faults import FaultPlan
from cluster.tools.generate import main as gen_main
from cluster.driver.jobs import load_job
from cluster.driver.local import run_local
from cluster.driver.prepare import RAY_JOB_CONFIG_ENV, prepare
from cluster.train.runtime import Runtime
from cluster.train.trainer import NonFiniteTrainingError, train_rank
from cluster_helpers import assert_same_training_state, make_demo_shards, tiny_job, write_job
from data_prep import storage
from data_prep.cli import main as prep_main
from s3_server import free_port

STEPS = {"training": {"max_steps": 4}, "checkpoint": {"every": 2, "keep": 10},
         "eval": {"every": 2, "val_batches": 1, "val_batch_size": 2, "generate_samples": 0},
         "logging": {"every": 1}}


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory):
    return make_demo_shards(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def bucket_shards(local_shards, s3_bucket):
    """The demo corpus sharded straight into the bucket (sashimi-prep shard SRC s3://...)."""
    uri = f"{s3_bucket}/ds"
    assert prep_main(["shard", str(local_shards.parent / "src"), uri, "--clip-seconds", "1", "--workers", "1",
                      "--quiet", "--sample-rate", "16000"]) == 0
    return uri


def _job(tmp_path, shards, storage_root, name, overrides=(), **sections):
    merged = {k: dict(v) for k, v in STEPS.items()}
    for k, v in sections.items():
        merged[k] = {**merged.get(k, {}), **v}
    path = write_job(tmp_path / f"{name}.yaml", tiny_job(shards, storage_root, name, **merged))
    return load_job(path, list(overrides)), str(path)


def _run(tmp_path, shards, storage_root, name, overrides=(), faults=None, **sections):
    job, where = _job(tmp_path, shards, storage_root, name, overrides, **sections)
    return run_local(job, where, faults=faults)


def test_resume_across_the_bucket_equals_an_uninterrupted_local_run(tmp_path, local_shards, bucket_shards,
                                                                     s3_bucket, monkeypatch):
    """Shards streamed from the bucket and checkpoints in it give the same run as local disk; a run
    stopped at step 2 and resumed from the bucket ends with the same weights as an uninterrupted one."""
    monkeypatch.chdir(tmp_path)
    runs = f"{s3_bucket}/runs"
    _run(tmp_path, local_shards, tmp_path / "runs", "ref")  # uninterrupted, all local
    _run(tmp_path, bucket_shards, runs, "s3", ["training.max_steps=2"])
    _run(tmp_path, bucket_shards, runs, "s3")  # resumes at step 2 from the bucket
    run_dir = f"{runs}/s3"
    names = [store.name_of(d) for d in ck.list_checkpoints(run_dir)]
    assert names == [store.checkpoint_dir_name(2), store.checkpoint_dir_name(4)]
    ref = ck.validate_checkpoint(ck.latest_checkpoint(tmp_path / "runs" / "ref"))
    got = ck.validate_checkpoint(ck.latest_checkpoint(run_dir))
    assert got["step"] == ref["step"] == 4
    assert_same_training_state(got, ref)
    events = storage.listdir(f"{run_dir}/tensorboard")
    assert len(events) == 2 and all(e.startswith("events.out.tfevents") for e in events)  # one per attempt
    assert not (tmp_path / "s3:").exists()  # nothing was taken for a local path


def test_torn_checkpoint_in_the_bucket_is_skipped(tmp_path, bucket_shards, s3_bucket, cluster_log):
    runs = f"{s3_bucket}/runs"
    _run(tmp_path, bucket_shards, runs, "torn")
    newest = f"{runs}/torn/{store.checkpoint_dir_name(4)}/{fmt.STATE_FILE}"
    data = storage.read_bytes(newest)
    storage.write_bytes(newest, data[: len(data) // 2])  # truncated object
    lines = cluster_log
    state, used, problems = store.resolve_resume(None, f"{runs}/torn")
    assert state["step"] == 2 and used == f"{runs}/torn/{store.checkpoint_dir_name(2)}"
    assert any("is invalid, trying an older one" in line and newest in line for line in lines)
    storage.remove(newest)  # deleted object: the directory is an empty prefix, skipped the same way
    state, used, _ = store.resolve_resume(None, f"{runs}/torn")
    assert state["step"] == 2


def test_tools_read_a_checkpoint_from_the_bucket(tmp_path, bucket_shards, s3_bucket, capsys):
    _run(tmp_path, bucket_shards, f"{s3_bucket}/runs", "tools", ["training.max_steps=2"])
    ckpt = f"{s3_bucket}/runs/tools/{store.checkpoint_dir_name(2)}"
    out = tmp_path / "gen"
    assert gen_main([ckpt, "--seconds", "0.01", "--out", str(out), "--seed", "0"]) == 0
    assert list(out.glob("*.wav"))
    assert eval_main([ckpt, "--data", bucket_shards, "--split", "val", "--batch", "2",
                      "--out", str(tmp_path / "nll.json")]) == 0
    report = json.loads((tmp_path / "nll.json").read_text())
    assert report["checkpoint"] == ckpt and report["data"] == bucket_shards  # URIs kept, not made paths
    assert report["overall"]["bits_per_byte"] > 0


def test_a_stop_that_cannot_heal_is_recorded_and_not_replayed(tmp_path, bucket_shards, s3_bucket):
    """A non-finite stop is recorded in the bucket; the restarted group (what Ray does after a worker
    error) reports it without training a step; a new submission (prepare) clears it."""
    runs = f"{s3_bucket}/runs"
    job, where = _job(tmp_path, bucket_shards, runs, "nan", training={"max_nonfinite_steps": 1})
    config = prepare(job, where)  # what the driver hands the workers, once per submission
    faults = FaultPlan({"nan": [[0, 1], [0, 2], [0, 3]]}, "nan")

    def attempt(reports: list) -> None:
        rt = Runtime(rank=0, world_size=1, device=torch.device("cpu"), report=lambda m, c: reports.append(m))
        train_rank(config, rt, faults=faults)

    with pytest.raises(NonFiniteTrainingError):
        attempt([])
    assert "NonFiniteTrainingError" in json.loads(storage.read_text(f"{runs}/nan/FATAL.json"))["error"]
    reports = []
    attempt(reports)
    assert len(reports) == 1 and "non-finite" in reports[0]["fatal"] and reports[0]["step"] == 0
    prepare(job, where)
    assert not storage.exists(f"{runs}/nan/FATAL.json")


def test_bad_storage_is_caught_before_ray(tmp_path, local_shards, s3_endpoint, s3_bucket, no_ray, monkeypatch):
    cases = [
        ({"data": {"shards": "s3://no-such-bucket-1/ds"}}, r"data.shards: s3://no-such-bucket-1/ds: bucket"),
        ({"data": {"shards": f"{s3_bucket}/empty"}}, rf"data.shards: .*{s3_bucket}/empty/manifest.json: no manifest"),
        ({"checkpoint": {"storage": "s3://no-such-bucket-2/runs"}}, r"checkpoint.storage: s3://no-such-bucket-2"),
        ({"checkpoint": {"init_from": f"{s3_bucket}/nothing/here"}}, r"checkpoint.init_from: .*nothing/here"),
    ]
    for sections, message in cases:
        job, where = _job(tmp_path, local_shards, tmp_path / "runs", "bad", **sections)
        with pytest.raises(JobConfigError, match=message):
            prepare(job, where)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(storage, "_S3_CONFIG", {"connect_timeout": 1, "retries": {"max_attempts": 1}})
    job, where = _job(tmp_path, local_shards, f"{s3_bucket}/runs", "down")
    with pytest.raises(JobConfigError, match=rf"checkpoint.storage: {s3_bucket}/runs/?: cannot reach the bucket"):
        prepare(job, where)


def test_relative_paths_under_ray_job_submit_name_the_key(tmp_path, local_shards, no_ray, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(RAY_JOB_CONFIG_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}))
    job, where = _job(tmp_path, local_shards, "runs", "rel")  # checkpoint.storage: runs (relative)
    with pytest.raises(JobConfigError, match=r"checkpoint.storage: 'runs' is a relative path.*--working-dir"):
        prepare(job, where)
    job, where = _job(tmp_path, "data/missing-shards", str(tmp_path / "runs"), "rel2")
    with pytest.raises(JobConfigError, match=r"data.shards: 'data/missing-shards' is a relative path.*s3://"):
        prepare(job, where)


@pytest.mark.parametrize("reader", ["s3fs", "boto3"])
def test_tensorboard_serves_a_run_from_the_bucket(tmp_path, bucket_shards, s3_bucket, reader):
    """The README's `tensorboard --logdir s3://...`: TensorBoard finds the events the trainer uploaded and
    serves their scalars, through fsspec/s3fs (a base dependency: the base install has no boto3, hidden
    here) or through boto3 when that is installed (the test extra brings it), the AWS_* variables naming
    the endpoint either way."""
    runs = f"{s3_bucket}/runs"
    _run(tmp_path, bucket_shards, runs, "tb", ["training.max_steps=2"])
    env = dict(os.environ)
    if reader == "s3fs":
        (tmp_path / "no-boto3").mkdir()
        (tmp_path / "no-boto3" / "boto3.py").write_text("raise ImportError('not in the base install')\n")
        env["PYTHONPATH"] = str(tmp_path / "no-boto3")
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "tensorboard"), "--logdir", f"{runs}/tb/tensorboard",
                               "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline, tags = time.monotonic() + 120, ""
        while "train/loss_bits" not in tags and time.monotonic() < deadline and server.poll() is None:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = r.read().decode()
            except OSError:
                continue
    finally:
        server.terminate()
        err = server.communicate(timeout=30)[1].decode(errors="replace")
    assert "train/loss_bits" in tags and "val/nll_bits" in tags, err[-2000:]
