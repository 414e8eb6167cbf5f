"""The collectives the trainer joins, each a no-op in a one-process run (world size 1).

Collective discipline (a mismatch deadlocks DDP): every rank calls each of these at the same steps.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def max_over_ranks(values: torch.Tensor, world: int) -> torch.Tensor:
    """Element-wise max of `values` over the ranks, in place (one all-reduce MAX)."""
    if world > 1:
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def sum_over_ranks(values: torch.Tensor, world: int) -> torch.Tensor:
    """Element-wise sum of `values` over the ranks, in place (one all-reduce SUM). Every rank receives
    the same reduced tensor, so decisions taken from it agree."""
    if world > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
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
