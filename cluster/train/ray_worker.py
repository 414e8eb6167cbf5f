"""The Ray Train worker entry point: a thin adapter that turns Ray's train_loop_config back into the
driver's WorkerConfig, builds the Runtime from `ray.train` (rank, world size, device, DDP wrapping,
report, the checkpoint Ray offers) and calls `train_rank`."""
from __future__ import annotations

import ray.train
import ray.train.torch
from ray.train import Checkpoint

from data_prep import storage

from ..checkpoint.store import name_of
from ..rundir import RunDir
from .faults import FaultPlan
from .runtime import Runtime
from .trainer import train_rank
from .worker_config import WorkerConfig


def report(metrics: dict, checkpoint_dir: str | None) -> None:
    """ray.train.report (a barrier: every rank calls it); the checkpoint keeps its directory's name."""
    if checkpoint_dir is None:
        ray.train.report(metrics, checkpoint=None)
    else:
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(checkpoint_dir),
                         checkpoint_dir_name=name_of(checkpoint_dir))


def train_fn(raw: dict) -> None:
    """`raw`: WorkerConfig.to_dict() of the driver's config (cluster/driver/launch.py)."""
    config = WorkerConfig.from_dict(raw)
    job = config.job
    ctx = ray.train.get_context()
    offered = ray.train.get_checkpoint()
    # Ray hands out the newest checkpoint it registered; it lives in the run directory (where Ray
    # persisted it: a local path or a URI), which rank 0 then checks for a torn or a newer unregistered one.
    run_dir = RunDir.of(job.checkpoint.storage, job.name)
    runtime = Runtime(rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
                      device=ray.train.torch.get_device(), report=report, registry="Ray",
                      latest_checkpoint=storage.join(run_dir.root, name_of(offered.path)) if offered else None,
                      prepare_model=ray.train.torch.prepare_model, preemption_info=ray.train.get_preemption_info)
    train_rank(config, runtime, faults=FaultPlan.from_env(job.name))
