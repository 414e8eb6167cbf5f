"""Training in this process without Ray (the driver's alternative to launch.run): rank 0 of 1. The checkpoint manager writes straight into the
run directory and keeps checkpoint.keep of them (what Ray does for a Ray run); reported metrics are
returned. Used by the loop tests, and handy for debugging a job without a cluster."""
from __future__ import annotations

import torch

from ..config import JobConfig
from ..train.faults import NoFaults
from ..train.precision import Precision
from ..train.runtime import Runtime
from ..train.trainer import train_rank
from .prepare import prepare


def run_local(job: JobConfig, where: str = "<job>", fresh: bool = False, faults: NoFaults | None = None,
              device: str = "cpu", precision: Precision | None = None) -> list[dict]:
    """Prepare `job` as the driver does (paths, data, compatibility checks) and train it here.
    Returns the metrics of every report (one per checkpoint step). `precision` overrides what the job
    asks for on this device (e.g. fp16 with its GradScaler forced on a CPU)."""
    reports: list[dict] = []
    runtime = Runtime(rank=0, world_size=1, device=torch.device(device),
                      report=lambda metrics, checkpoint_dir: reports.append(dict(metrics)))
    train_rank(prepare(job, where, fresh), runtime, faults, precision)
    return reports
