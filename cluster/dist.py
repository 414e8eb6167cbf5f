"""The collectives the trainer joins, each a no-op in a one-process run (world size 1).

Collective discipline (a mismatch deadlocks DDP): every rank calls each of these at the same steps.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def any_rank(flag: bool, device: torch.device, world: int) -> bool:
    """True on every rank if `flag` is True on any rank (all-reduce MAX)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_from_rank0(values: torch.Tensor, world: int) -> torch.Tensor:
    """Rank 0's `values` on every rank (in place)."""
    if world > 1:
        dist.broadcast(values, src=0)
    return values


def gather_objects(obj, world: int) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, world: int):
    """Rank 0's `obj` (any picklable value) on every rank."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
