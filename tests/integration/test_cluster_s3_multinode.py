"""Nodes that share nothing but an object store: a simulated cluster (ray.cluster_utils.Cluster: a
CPU-less head and two 1-CPU worker nodes, each with its own TMPDIR and working directory), a real S3
server on 127.0.0.1 holding the shards, the checkpoints and the TensorBoard events. One worker node is
killed mid-run and replaced; the run resumes from the bucket's latest checkpoint, and its final
weights equal those of an uninterrupted run on the same cluster (exact resume across object storage).
"""
from __future__ import annotations

import json
import os

import pytest

from cluster import checkpoint as ck
from cluster.checkpoint import format as fmt, store
from cluster.train.faults import FAULTS_ENV
from cluster.driver.jobs import load_job
from cluster.driver.launch import run
from cluster_helpers import assert_same_training_state, run_with_node_loss, tiny_job, write_job
from data_prep import storage
from data_prep.cli import main as prep_main
from data_prep.demo import make_demo_corpus

pytestmark = pytest.mark.slow

MAX_STEPS = 12


def _add_node(cluster, tmp_path, i: int):
    """A worker node whose processes have their own TMPDIR and working directory (the raylet is started
    from there and its workers inherit it): no path of the job's is shared between nodes."""
    scratch = tmp_path / f"node{i}"
    (scratch / "tmp").mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        return cluster.add_node(num_cpus=1, resources={"sashimi_slot": 1},
                                env_vars={"TMPDIR": str(scratch / "tmp")})
    finally:
        os.chdir(cwd)


def test_node_loss_with_only_a_bucket_shared(tmp_path, s3_bucket):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    make_demo_corpus(tmp_path / "src", minutes=0.3, seed=0)
    data = f"{s3_bucket}/ds"
    assert prep_main(["shard", str(tmp_path / "src"), data, "--clip-seconds", "1", "--quiet"]) == 0
    runs = f"{s3_bucket}/runs"
    scaling = {"num_workers": 2, "placement_strategy": "SPREAD",
               "resources_per_worker": {"CPU": 1, "sashimi_slot": 1}}
    common = dict(scaling=scaling, training={"max_steps": MAX_STEPS}, failure={"max_failures": 3},
                  eval={"every": 4, "val_batches": 1, "val_batch_size": 2, "generate_samples": 0},
                  checkpoint={"every": 2, "keep": 3, "storage": runs}, logging={"every": 2})
    ref_job = write_job(tmp_path / "ref.yaml", tiny_job(data, runs, "ref", **common))
    job = write_job(tmp_path / "lossy.yaml", tiny_job(data, runs, "lossy", **common))
    plan = {"lossy": {"sleep": 0.4}}  # ~0.4 s per step: time to pull a node

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = [_add_node(cluster, tmp_path, i) for i in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env={"env_vars": {FAULTS_ENV: json.dumps(plan)}})
        ref = run(load_job(ref_job), str(ref_job))

        first = f"{runs}/lossy/{store.checkpoint_dir_name(4)}/{fmt.STATE_FILE}"
        info, events = run_with_node_loss(cluster, nodes[1], job, ready=lambda: storage.exists(first),
                                          add_node=lambda: _add_node(cluster, tmp_path, 2), outage_s=3)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert "removed" in events and "added" in events, events
    assert info.metrics["step"] == MAX_STEPS and ref.metrics["step"] == MAX_STEPS
    assert 4 <= info.metrics["resumed_from"] < MAX_STEPS, info.metrics  # restarted from a bucket checkpoint
    assert info.checkpoint_dir == f"{runs}/lossy/{store.checkpoint_dir_name(MAX_STEPS)}"
    a, b = ck.validate_checkpoint(info.checkpoint_dir), ck.validate_checkpoint(ref.checkpoint_dir)
    assert a["data"]["world_size"] == b["data"]["world_size"] == 2
    assert_same_training_state(a, b)  # the interrupted run ends exactly where the uninterrupted one does
    # checkpoint.keep (3) applied in the bucket: Ray prunes what it registered, the checkpoint manager
    # what the lost node wrote but Ray never registered (one or two of them, depending on when it died)
    kept = [store.step_of_dir(d) for d in ck.list_checkpoints(f"{runs}/lossy")]
    assert kept == [MAX_STEPS - 4, MAX_STEPS - 2, MAX_STEPS], kept
    assert storage.listdir(f"{runs}/lossy/tensorboard")  # events in the bucket
    assert not (tmp_path / "runs").exists()  # nothing of the run on a local path
