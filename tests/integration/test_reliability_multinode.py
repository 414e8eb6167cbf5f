"""Node loss on a simulated 2-node cluster (ray.cluster_utils.Cluster on this machine: a CPU-less head
plus two 1-CPU worker nodes, each with one `sashimi_slot`, so each training worker lands on its own node;
storage is a shared local path). A worker node is killed mid-run and a replacement added a few seconds
later: Ray Train restarts the group from the last checkpoint once capacity is back and the run finishes."""
from __future__ import annotations

import json

import pytest

from cluster import checkpoint as ck
from cluster.checkpoint import format as fmt, store
from cluster.train.faults import FAULTS_ENV as TEST_FAULTS_ENV
from cluster_helpers import make_demo_shards, run_with_node_loss, tiny_job, write_job

pytestmark = pytest.mark.slow

MAX_STEPS = 16
NODE = {"num_cpus": 1, "resources": {"sashimi_slot": 1}}


def test_node_loss_and_return(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    shards = make_demo_shards(tmp_path / "data")
    storage = tmp_path / "runs"
    job = tiny_job(shards, storage, "nodeloss", scaling={"num_workers": 2, "placement_strategy": "SPREAD",
                                                          "resources_per_worker": {"CPU": 1, "sashimi_slot": 1}},
                   training={"max_steps": MAX_STEPS}, failure={"max_failures": 3},
                   eval={"every": 8, "val_batches": 1, "val_batch_size": 2, "generate_samples": 0})
    path = write_job(tmp_path / "nodeloss.yaml", job)
    plan = {"nodeloss": {"dir": str(tmp_path), "sleep": 0.4}}  # ~0.4 s per step: time to pull a node

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = [cluster.add_node(**NODE) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env={"env_vars": {TEST_FAULTS_ENV: json.dumps(plan)}})
        run_dir = storage / "nodeloss"

        info, events = run_with_node_loss(
            cluster, nodes[1], path, ready=lambda: (run_dir / store.checkpoint_dir_name(2) / fmt.STATE_FILE).is_file(),
            add_node=lambda: cluster.add_node(**NODE), outage_s=5)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert "removed" in events and "added" in events, f"node was not removed/added during the run: {events}"
    assert info.metrics["step"] == MAX_STEPS
    assert 2 <= info.metrics["resumed_from"] < MAX_STEPS, info.metrics  # restarted from a checkpoint
    assert info.metrics["resumed_from"] % 2 == 0
    dirs = ck.list_checkpoints(run_dir)
    assert dirs and store.step_of_dir(dirs[-1]) == MAX_STEPS
    for d in dirs:  # no corrupt checkpoint: every one loads with weights_only=True and is finite
        state = ck.validate_checkpoint(d)
        assert state["step"] == store.step_of_dir(d) and state["data"]["world_size"] == 2
