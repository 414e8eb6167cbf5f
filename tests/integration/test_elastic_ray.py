"""Elastic and preemptible training on a simulated cluster (ray.cluster_utils.Cluster on this machine: a
CPU-less head plus 1-CPU worker nodes, each with one `sashimi_slot`, so each training worker lands on its
own node; storage is a shared local path). Issue 21's proofs:

- elastic start and growth: `num_workers: [1, 2]` with one node starts at once; a node added later joins at
  the next resize check (perf/world_size shows 1, then 2);
- reclaim: a node drained with a deadline makes every rank checkpoint the step it is at; the node removed,
  the run resumes from that checkpoint (no older step is redone) and finishes;
- a node lost without notice: the run goes on at the smaller size from its last periodic checkpoint (up to
  checkpoint.every steps redone) and grows back when a node returns;
- in both, the final weights are the ones a fixed-size run gets (world size 1, no Ray), to the tolerance of
  tests/cluster/test_elastic_units.py (only the order of float sums differs).
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import pytest

from cluster import checkpoint as ck
from cluster.checkpoint import store
from cluster.driver.jobs import load_job
from cluster.driver.local import run_local
from cluster.train.faults import FAULTS_ENV as TEST_FAULTS_ENV
from cluster_helpers import assert_same_weights, make_demo_shards, tiny_job, write_job

pytestmark = pytest.mark.slow

MAX_STEPS, EVERY = 48, 8
NODE = {"num_cpus": 1, "resources": {"sashimi_slot": 1}}
WAIT_S = 240


def _job(tmp_path: Path, shards: Path, name: str) -> Path:
    job = tiny_job(shards, tmp_path / "runs", name,
                   scaling={"num_workers": [1, 2], "resize_check_s": 2, "placement_strategy": "SPREAD",
                            "resources_per_worker": {"CPU": 1, "sashimi_slot": 1}},
                   training={"max_steps": MAX_STEPS, "global_batch": 4, "batch_per_worker": 2},
                   checkpoint={"every": EVERY, "keep": 20}, failure={"max_failures": 5},
                   eval={"every": EVERY, "val_batches": 1, "val_batch_size": 2, "generate_samples": 0},
                   logging={"every": 1})
    return write_job(tmp_path / f"{name}.yaml", job)


def _progress(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return {"step": 0, "world_size": 0}


def _wait(what: str, cond, thread: threading.Thread) -> None:
    end = time.time() + WAIT_S
    while not cond():
        assert thread.is_alive(), f"the run ended while waiting for {what}"
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def _start(cluster_nodes: int, tmp_path: Path, sleep_s: float):
    """A Cluster with `cluster_nodes` worker nodes and Ray initialised against it."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(**NODE) for _ in range(cluster_nodes)]
    cluster.wait_for_nodes()
    plan = {"dir": str(tmp_path), "sleep": sleep_s}  # a slow step: time to act between steps
    env = {TEST_FAULTS_ENV: json.dumps({"elastic": plan, "lost": plan}),
           "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "0.5", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "20"}
    ray.init(address=cluster.address, runtime_env={"env_vars": env})
    return cluster, nodes


def _run_in_thread(path: Path):
    from cluster.driver.launch import run

    result = {}

    def go():
        try:
            result["info"] = run(load_job(path), str(path))
        except BaseException as e:  # noqa: BLE001 - re-raised by the test
            result["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, result


@contextlib.contextmanager
def _run_on_cluster(cluster_nodes: int, tmp_path: Path, path: Path):
    """The job at `path` running in a thread on a fresh simulated cluster: yields (cluster, nodes, thread,
    result); on leaving, waits for the run to finish, shuts Ray and the cluster down and re-raises the
    run's error."""
    cluster, nodes = _start(cluster_nodes, tmp_path, sleep_s=0.5)
    try:
        t, result = _run_in_thread(path)
        yield cluster, nodes, t, result
        t.join(timeout=WAIT_S)
        assert not t.is_alive(), "the run did not finish"
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    if "error" in result:
        raise result["error"]


def _lose_node(cluster, node, run_dir: Path, t: threading.Thread) -> float:
    """Remove `node` at once (no notice) and wait for training at 1 worker past the step it had reached;
    returns the seconds that took."""
    reached = _progress(run_dir)["step"]
    cluster.remove_node(node, allow_graceful=False)
    t_lost = time.time()
    _wait("training again at 1 worker", lambda: _progress(run_dir)["world_size"] == 1
          and _progress(run_dir)["step"] > reached, t)
    return time.time() - t_lost


def _fixed_size_reference(tmp_path: Path, shards: Path, name: str) -> dict:
    """The same job at world size 1 in one process (no Ray): what every elastic run must end equal to."""
    path = _job(tmp_path, shards, name)
    run_local(load_job(path, ["scaling.num_workers=1"]), str(path))
    return ck.validate_checkpoint(ck.latest_checkpoint(tmp_path / "runs" / name))


def _world_sizes(run_dir: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.value for e in acc.Scalars("perf/world_size")]


def test_elastic_start_growth_and_reclaim(tmp_path):
    from ray._raylet import GcsClient
    from ray.core.generated import autoscaler_pb2

    shards = make_demo_shards(tmp_path / "data")
    path = _job(tmp_path, shards, "elastic")
    run_dir = tmp_path / "runs" / "elastic"
    with _run_on_cluster(1, tmp_path, path) as (cluster, nodes, t, result):
        _wait("training at world size 1", lambda: _progress(run_dir)["step"] >= 1, t)
        assert _progress(run_dir)["world_size"] == 1  # min 1: it did not wait for the second node
        extra = cluster.add_node(**NODE)
        t_added = time.time()
        _wait("the resize to 2 workers", lambda: _progress(run_dir)["world_size"] == 2, t)
        grow_s = time.time() - t_added
        _wait("a few steps at 2 workers", lambda: _progress(run_dir)["step"] % EVERY >= 3, t)
        gcs = GcsClient(address=cluster.gcs_address)
        ok, why = gcs.drain_node(extra.node_id, autoscaler_pb2.DrainNodeReason.DRAIN_NODE_REASON_PREEMPTION,
                                 "test reclaim", int((time.time() + 60) * 1000))
        assert ok, why
        _wait("the just-in-time checkpoint", lambda: any(store.step_of_dir(d) % EVERY for d in ck.list_checkpoints(run_dir)), t)
        jit = max(store.step_of_dir(d) for d in ck.list_checkpoints(run_dir) if store.step_of_dir(d) % EVERY)
        shrink_s = _lose_node(cluster, extra, run_dir, t)
    m = result["info"].metrics
    print(f"elastic: grow 1->2 took {grow_s:.1f} s, reclaim checkpoint at step {jit}, node lost -> training at 1 "
          f"worker in {shrink_s:.1f} s; resizes {m['resizes']}, reclaims {m['reclaims']}, redone {m['steps_redone']}")
    assert m["step"] == MAX_STEPS and m["reclaims"] >= 1 and m["resizes"] >= 2
    assert m["resumed_from"] >= jit  # resumed from the just-in-time checkpoint (or a later one), never older
    sizes = _world_sizes(run_dir)
    assert sizes[0] == 1 and 2 in sizes and sizes[-1] == 1
    reference = _fixed_size_reference(tmp_path, shards, "elastic-fixed")
    assert_same_weights(reference, ck.validate_checkpoint(ck.latest_checkpoint(run_dir)),
                        ck.validate_checkpoint(tmp_path / "runs" / "elastic-fixed" / store.checkpoint_dir_name(EVERY)))


def test_node_lost_without_notice_shrinks_then_grows_back(tmp_path):
    shards = make_demo_shards(tmp_path / "data")
    path = _job(tmp_path, shards, "lost")
    run_dir = tmp_path / "runs" / "lost"
    with _run_on_cluster(2, tmp_path, path) as (cluster, nodes, t, result):
        _wait("training at 2 workers past a checkpoint",
              lambda: _progress(run_dir) == {"step": _progress(run_dir)["step"], "world_size": 2}
              and _progress(run_dir)["step"] >= EVERY + 3, t)
        shrink_s = _lose_node(cluster, nodes[1], run_dir, t)
        cluster.add_node(**NODE)
        t_added = time.time()
        _wait("the resize back to 2 workers", lambda: _progress(run_dir)["world_size"] == 2, t)
        grow_s = time.time() - t_added
    m = result["info"].metrics
    print(f"lost: node lost -> training at 1 worker in {shrink_s:.1f} s, node back -> 2 workers in {grow_s:.1f} s; "
          f"resizes {m['resizes']}, redone {m['steps_redone']}")
    assert m["step"] == MAX_STEPS and m["resizes"] >= 2 and m["reclaims"] == 0
    assert 0 < m["steps_redone"] <= 2 * EVERY  # each restart redoes up to checkpoint.every steps
    reference = _fixed_size_reference(tmp_path, shards, "lost-fixed")
    assert_same_weights(reference, ck.validate_checkpoint(ck.latest_checkpoint(run_dir)),
                        ck.validate_checkpoint(tmp_path / "runs" / "lost-fixed" / store.checkpoint_dir_name(EVERY)))
