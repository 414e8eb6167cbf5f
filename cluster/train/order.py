"""The global sample order: which clips form global batch k, and how each is cropped, is a function of
(job seed, k) alone; each rank takes its slice. A run that changes its number of workers between
checkpoints (elastic training, a spot reclaim) therefore takes the same optimiser steps on the same
clips as a fixed-size run, and resuming at step k needs no stream position, only k.

The train split's clips are numbered across its shards in manifest order (0..N-1). The clip stream is
the concatenation of one permutation of 0..N-1 per epoch, epoch e's drawn from (seed, e); global batch k
is stream positions [k·G, (k+1)·G) for the global batch G, and position p's example is made with an
RNG seeded from (seed, p) (its crop offset, augmentation). Rank r of W takes a contiguous slice of the G
positions: the first G mod W ranks one more than the others (so any W <= G works; the trainer's loss
normalisation makes uneven shares exact, cluster/train/trainer.py).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..seeds import mix_seed

PURPOSE_PERMUTATION, PURPOSE_EXAMPLE = 101, 102


def rank_slice(global_batch: int, world: int, rank: int) -> tuple[int, int]:
    """(offset, count) of rank's share of a global batch: counts differ by at most one."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    base, extra = divmod(global_batch, world)
    return rank * base + min(rank, extra), base + (rank < extra)


@dataclass(frozen=True)
class GlobalOrder:
    n_clips: int
    global_batch: int
    seed: int

    def __post_init__(self):
        if self.n_clips < 1:
            raise ValueError("the train split has no clips")
        if self.global_batch < 1:
            raise ValueError(f"global batch {self.global_batch} < 1")

    def _permutation(self, epoch: int) -> np.ndarray:
        return _permutation(self.n_clips, mix_seed(self.seed, PURPOSE_PERMUTATION, epoch))

    def clip(self, position: int) -> int:
        """The clip (0..N-1) at stream position `position`."""
        epoch, j = divmod(position, self.n_clips)
        return int(self._permutation(epoch)[j])

    def example_seed(self, position: int) -> int:
        """Seed of the RNG that makes position's example (its crop offset): a function of (seed, position)."""
        return mix_seed(self.seed, PURPOSE_EXAMPLE, position)

    def positions(self, step: int, rank: int = 0, world: int = 1) -> range:
        """Stream positions of rank's share of global batch `step` (0-based: the batch of optimiser step
        step + 1)."""
        off, count = rank_slice(self.global_batch, world, rank)
        start = step * self.global_batch + off
        return range(start, start + count)


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


@dataclass(frozen=True)
class ClipLocator:
    """Clip number -> (shard, index in the shard), from the shards' sample counts in manifest order."""

    shards: tuple[str, ...]
    counts: tuple[int, ...]

    def __post_init__(self):
        if len(self.shards) != len(self.counts):
            raise ValueError(f"{len(self.shards)} shards but {len(self.counts)} sample counts")
        object.__setattr__(self, "_starts", tuple(np.cumsum((0,) + tuple(self.counts))[:-1].tolist()))

    @property
    def n_clips(self) -> int:
        return int(sum(self.counts))

    def locate(self, clip: int) -> tuple[str, int]:
        if not 0 <= clip < self.n_clips:
            raise IndexError(f"clip {clip} outside 0..{self.n_clips - 1}")
        s = bisect.bisect_right(self._starts, clip) - 1
        while self.counts[s] == 0:  # an empty shard shares its start with the next one
            s += 1
        return self.shards[s], clip - self._starts[s]
