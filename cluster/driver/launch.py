"""Driver side with Ray: prepare the run (cluster/driver/prepare.py), connect to Ray (the cluster in
RAY_ADDRESS, as under `ray job submit`, or a new loopback-only local one), and run Ray Train V2's
TorchTrainer with the job's scaling, storage, checkpoint and failure settings; the workers run
cluster.train.ray_worker.train_fn on the WorkerConfig, which becomes a dict only here."""
from __future__ import annotations

import time
from dataclasses import dataclass

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from data_prep import storage

from ..checkpoint.store import name_of
from ..config import JobConfig
from ..logs import log
from ..rundir import RunDir
from ..train.ray_worker import train_fn
from ..train.stops import RunStoppedError
from ..train.worker_config import WorkerConfig
from .connect import connect_ray
from .prepare import prepare

@dataclass
class RunInfo:
    run_dir: str
    tensorboard_dir: str
    checkpoint_dir: str | None
    metrics: dict
    seconds: float  # whole call: data prep, Ray start, training, shutdown
    submitted_unix: float  # just before TorchTrainer.fit()
    started_unix: float  # when run() was called


def build_trainer(config: WorkerConfig) -> TorchTrainer:
    job = config.job
    resources = dict(job.scaling.resources_per_worker)
    if job.scaling.use_gpu:
        resources.setdefault("GPU", 1)
    return TorchTrainer(
        train_fn,
        train_loop_config=config.to_dict(),
        # NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): a fractional GPU share uses gloo
        torch_config=TorchConfig(backend="nccl" if job.scaling.use_gpu and resources["GPU"] >= 1 else "gloo"),
        # [min, max]: Ray starts once min workers fit and restarts the group at the available size (from
        # the latest checkpoint) when it changes, checking every resize_check_s
        scaling_config=ScalingConfig(num_workers=_ray_num_workers(job), use_gpu=job.scaling.use_gpu,
                                     resources_per_worker=resources,
                                     placement_strategy=job.scaling.placement_strategy,
                                     elastic_resize_monitor_interval_s=job.scaling.resize_check_s),
        run_config=RunConfig(
            name=job.name,
            storage_path=job.checkpoint.storage,
            checkpoint_config=CheckpointConfig(num_to_keep=job.checkpoint.keep),
            # reclaims (spot/preemptible nodes drained with a notice) are counted apart from crashes
            failure_config=FailureConfig(max_failures=job.failure.max_failures,
                                         max_preemption_failures=job.failure.max_preemptions),
        ),
    )


def _ray_num_workers(job: JobConfig) -> int | tuple[int, int]:
    s = job.scaling
    return (s.min_workers, s.max_workers) if s.elastic else s.max_workers


def run(job: JobConfig, where: str = "<job>", fresh: bool = False, num_cpus: int | None = None) -> RunInfo:
    """Train `job` to completion (resuming its run dir if one exists). Raises on failure."""
    t0 = time.time()
    config = prepare(job, where, fresh)
    job = config.job  # paths made absolute
    run_dir = RunDir.of(job.checkpoint.storage, job.name)
    started = connect_ray(num_cpus)
    try:
        submitted = time.time()
        n = job.scaling.num_workers
        log.info(f"submitting {job.name}: {n if isinstance(n, int) else f'{n[0]} to {n[1]}'} worker(s), "
                 f"run dir {run_dir.root}")
        result = build_trainer(config).fit()
    finally:
        if started:
            ray.shutdown()
    # Ray's path has lost the URI scheme on object storage ("bucket/runs/..."): rebuild it in the run dir
    if (result.metrics or {}).get("fatal"):
        raise RunStoppedError(f"job {job.name!r} stopped for good (not retried): {result.metrics['fatal']}")
    ckpt = storage.join(run_dir.root, name_of(result.checkpoint.path)) if result.checkpoint is not None else None
    info = RunInfo(run_dir=run_dir.root, tensorboard_dir=run_dir.tensorboard,
                   checkpoint_dir=ckpt, metrics=dict(result.metrics or {}), seconds=time.time() - t0,
                   submitted_unix=submitted, started_unix=t0)
    log.info(f"done in {info.seconds:.0f} s; latest checkpoint: {ckpt}")
    return info
