"""Training in this process without Ray: rank 0 of 1. Checkpoints are copied into the run directory
and pruned to checkpoint.keep (what Ray does for a Ray run); reported metrics are returned. Used by the
loop tests, and handy for debugging a job without a cluster."""
from __future__ import annotations

import torch

from .checkpoint import copy_checkpoint_dir, prune
from .config import JobConfig, job_from_dict
from .faults import NoFaults
from .precision import Precision
from .prepare import prepare
from .rundir import RunDir
from .trainer import Runtime, TrainData, Trainer


def run_local(job: JobConfig, where: str = "<job>", fresh: bool = False, faults: NoFaults | None = None,
              device: str = "cpu", log=print, precision: Precision | None = None) -> list[dict]:
    """Prepare `job` as the driver does (paths, data, compatibility checks) and train it here.
    Returns the metrics of every report (one per checkpoint step). `precision` overrides what the job
    asks for on this device (e.g. fp16 with its GradScaler forced on a CPU)."""
    cfg = prepare(job, where, fresh, log)
    job = job_from_dict(cfg["job"], where)
    run_dir = RunDir.of(job.checkpoint.storage, job.name).root  # a local path or a URI
    reports: list[dict] = []

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        reports.append(dict(metrics))
        if checkpoint_dir is not None:
            copy_checkpoint_dir(checkpoint_dir, run_dir)
            prune(run_dir, job.checkpoint.keep)

    runtime = Runtime(rank=0, world_size=1, device=torch.device(device), report=report)
    Trainer(job, runtime, TrainData.from_worker_config(cfg), faults=faults, precision=precision).run()
    return reports
