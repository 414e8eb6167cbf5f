"""What runs a rank provides: the Ray worker (cluster/train/ray_worker.py), the one-process runtime
(cluster/driver/local.py) and the tests each build a `Runtime` and call `cluster.train.trainer.train_rank`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def _as_is(model: torch.nn.Module) -> torch.nn.Module:
    return model


@dataclass(frozen=True)
class Runtime:
    """Rank, world size, device, and how this runtime handles reports and checkpoints.

    `report(metrics, checkpoint_dir)` is called by every rank at every checkpoint step (a barrier under
    Ray); rank 0 passes the checkpoint it wrote, the others None. `registry` names a runtime that keeps
    the run's checkpoints itself ("Ray": it copies the reported directory into the run dir, registers it
    and applies checkpoint.keep, and offers `latest_checkpoint` on a restart); None: the checkpoint
    manager writes into the run dir and prunes it, and there is nothing to offer."""

    rank: int
    world_size: int
    device: torch.device
    report: Callable[[dict, str | None], None]
    registry: str | None = None
    latest_checkpoint: str | None = None  # what the registry offers to resume from (may be stale or torn)
    prepare_model: Callable[[torch.nn.Module], torch.nn.Module] = _as_is  # device placement, DDP
    # The reclaim notice of a node of this run (ray.train.get_preemption_info: None, or an object with
    # deadline_ms, preempted_node_ids and preempted_ranks); a barrier every rank calls as often. None: the
    # runtime has no reclaims (one process, the tests' ranks).
    preemption_info: Callable[[], object] | None = None
