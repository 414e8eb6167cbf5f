"""The Ray Train worker entry point: a thin adapter that builds the trainer's Runtime from `ray.train`
(rank, world size, device, DDP wrapping, report, the checkpoint Ray offers) and runs the Trainer."""
from __future__ import annotations

import gc

import ray.train
import ray.train.torch
from ray.train import Checkpoint

from data_prep import storage

from .checkpoint import name_of
from .config import job_from_dict
from .faults import FaultPlan
from .rundir import RunDir
from .trainer import Runtime, TrainData, Trainer


def report(metrics: dict, checkpoint_dir: str | None) -> None:
    """ray.train.report (a barrier: every rank calls it); the checkpoint keeps its directory's name."""
    if checkpoint_dir is None:
        ray.train.report(metrics, checkpoint=None)
    else:
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(checkpoint_dir),
                         checkpoint_dir_name=name_of(checkpoint_dir))


def train_fn(cfg: dict) -> None:
    """cfg (from cluster.prepare): {"job": JobConfig dict, "shards": {"train", "val"[, "test"]},
    "sample_rate": int | None[, "test_split": str]}."""
    job = job_from_dict(cfg["job"], "<job from driver>")
    ctx = ray.train.get_context()
    offered = ray.train.get_checkpoint()
    # Ray hands out the newest checkpoint it registered; it lives in the run directory (where Ray
    # persisted it: a local path or a URI), which rank 0 then checks for a torn or a newer unregistered one.
    run_dir = RunDir.of(job.checkpoint.storage, job.name)
    runtime = Runtime(rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
                      device=ray.train.torch.get_device(), report=report,
                      latest_checkpoint=storage.join(run_dir.root, name_of(offered.path)) if offered else None,
                      prepare_model=ray.train.torch.prepare_model)
    Trainer(job, runtime, TrainData.from_worker_config(cfg), faults=FaultPlan.from_env(job.name)).run()
    # Free the DDP reducer (and any cycle holding it) now, while its process group lives: Ray destroys
    # the group after train_fn returns, and a gloo group destroyed under a live reducer hangs in its
    # destructor (seen in a test, tests/cluster/test_cluster_trainer._val_rank).
    gc.collect()
