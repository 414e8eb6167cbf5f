"""Per-rank data for training and validation (what an example is, the task decides:
cluster/tasks/examples.py).

Training reads the global sample order (cluster/train/order.py): rank r's share of global batch k is a
fixed list of clips whose crops are seeded from (seed, position), so the clips of a step do not depend
on the number of workers, and resuming at step k needs only k. A clip is one ranged read of its shard
(data_prep.index: the shard's member offsets, from its sidecar index or a scan of its tar headers, loaded
once per shard and process), done by `data.loader_workers` threads ahead of the step that needs it.

A clip that cannot be read or decoded, or that the task's `examples` refuses (SampleError: e.g. a
label out of range), goes to the bad-data policy (`data.on_bad_sample`, data_prep.reader): logged and
left out of its batch ("skip"), or BadDataError naming the shard ("stop"). Every rank still runs every
step: a share left empty trains on a stand-in example with weight zero, so DDP never waits on a rank.

Validation and end-of-run scoring read whole shards in order through the same shard reader.
"""
from __future__ import annotations

import itertools
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from data_prep.index import ShardIndex, load_index, read_sample
from data_prep.reader import TAR_ERRORS, BadDataError, BadSamplePolicy, samples
from data_prep.schema import Sample, SampleError

from ..seeds import mix_seed
from .order import ClipLocator, GlobalOrder

Examples = Callable[[Sample, random.Random], tuple]  # a task's examples(): decoded sample -> tensors


def make_example(examples: Examples, sample: Sample, raw: dict, rng: random.Random,
                 policy: BadSamplePolicy) -> tuple | None:
    """examples(sample, rng), or None after the policy handled a sample the task refused."""
    try:
        return examples(sample, rng)
    except SampleError as e:
        policy.sample_error(raw, e)
        return None


def collate(items):
    """Stack examples column by column: (tokens, mask[, label]) items -> (tokens (B, L), mask (B, L)[, labels (B,)])."""
    return tuple(torch.stack(column) for column in zip(*items))


@dataclass(frozen=True)
class MicroBatch:
    """Examples collated for one forward/backward; `weight` 0 marks a stand-in (an empty share)."""

    tensors: tuple
    weight: float = 1.0


class GlobalBatches:
    """This rank's micro-batches of each global batch, read ahead by a thread pool.

    `batches(step)` -> the micro-batches (at most `micro` examples each) of global batch `step` (the one
    optimiser step step + 1 trains on). Reads of the next `prefetch` steps are in flight while a step
    trains; a step's batches are handed out once."""

    def __init__(self, locator: ClipLocator, order: GlobalOrder, *, examples: Examples, rank: int, world: int,
                 micro: int, on_bad_sample: str = "skip", threads: int = 0, prefetch: int = 2,
                 pin_memory: bool = False):
        self.locator, self.order, self.examples = locator, order, examples
        self.rank, self.world, self.micro, self.prefetch = rank, world, max(1, micro), max(1, prefetch)
        self.policy = BadSamplePolicy(on_bad_sample)
        self.pin_memory = pin_memory
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="clip-reader") if threads > 0 else None
        self.pending: dict[int, list] = {}
        self.indexes: dict[str, ShardIndex] = {}
        self.index_lock = threading.Lock()
        self.last_good: tuple | None = None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _index(self, shard: str) -> ShardIndex:
        with self.index_lock:  # one load per shard and process (a scan reads the whole shard)
            if shard not in self.indexes:
                self.indexes[shard] = load_index(shard)
            return self.indexes[shard]

    def _read(self, position: int):
        """(raw sample, its shard) for a stream position, or (None, shard, error) when the read failed."""
        shard, i = self.locator.locate(self.order.clip(position))
        try:
            return read_sample(shard, self._index(shard), i), shard, None
        except TAR_ERRORS as e:
            return None, shard, e

    def _submit(self, step: int) -> None:
        if step in self.pending:
            return
        positions = self.order.positions(step, self.rank, self.world)
        if self.pool is None:
            self.pending[step] = [(p, self._read(p)) for p in positions]
        else:
            self.pending[step] = [(p, self.pool.submit(self._read, p)) for p in positions]

    def _example(self, position: int, read) -> tuple | None:
        """The example at `position` from its read, or None after the policy handled a bad one."""
        raw, shard, error = read if isinstance(read, tuple) else read.result()
        if raw is None:
            self.policy.read_error(shard, error)
            return None
        sample = self.policy.decode(raw)
        if sample is None:
            return None
        return make_example(self.examples, sample, raw, random.Random(self.order.example_seed(position)), self.policy)

    def _stand_in(self, step: int) -> tuple:
        """Any good example (the last one this rank made, else the first good one of the stream after this
        step): trained on with weight zero when a share has no good clip, so every rank still runs the
        step's forward and backward. The policy stops the search after too many bad clips in a row."""
        if self.last_good is None:
            position = (step + 1) * self.order.global_batch
            while self.last_good is None:
                item = self._example(position, self._read(position))
                if item is not None:
                    self.last_good = collate([item])
                position += 1
                if position - (step + 1) * self.order.global_batch > self.order.n_clips:
                    raise BadDataError(f"rank {self.rank}: no readable clip in the train split "
                                       f"(last: {self.policy.last}); check the shards with `sashimi-prep verify`")
        return self.last_good

    def batches(self, step: int) -> list[MicroBatch]:
        for ahead in range(self.prefetch + 1):
            self._submit(step + ahead)
        items = [item for item in (self._example(p, r) for p, r in self.pending.pop(step)) if item is not None]
        if not items:  # every clip of this share was bad: a zero-weight stand-in keeps DDP in step
            return [MicroBatch(self._stand_in(step), 0.0)]
        self.last_good = collate(items[:1])
        out = [MicroBatch(collate(items[i:i + self.micro])) for i in range(0, len(items), self.micro)]
        if self.pin_memory:
            out = [MicroBatch(tuple(t.pin_memory() for t in b.tensors), b.weight) for b in out]
        return out


def split_batches(urls: list[str], *, examples: Examples, batch_size: int, seed: int = 0,
                  on_bad_sample: str = "skip") -> Iterator[tuple[torch.Tensor, ...]]:
    """Every example of `urls` in shard order, in batches of `batch_size` (the last one may be short), with
    seeded crops. Batches as GlobalBatches collates them."""
    rng = random.Random(mix_seed(seed, 7919))
    items = []
    policy = BadSamplePolicy(on_bad_sample)
    for raw, sample in samples(urls, policy):
        item = make_example(examples, sample, raw, rng, policy)
        if item is None:
            continue
        items.append(item)
        if len(items) == batch_size:
            yield collate(items)
            items = []
    if items:
        yield collate(items)


def val_batches(urls: list[str], *, examples: Examples, n_batches: int, batch_size: int, seed: int = 0,
                on_bad_sample: str = "skip", rank: int = 0, world: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """This rank's share of the first `n_batches` batches of the val split in shard order, with seeded
    crops: the same examples at every evaluation, so val metrics are comparable across steps and across
    restarts. Rank r of `world` keeps batches r, r + world, ... (shares may differ by one batch, and a
    short last batch is fine: the trainer merges sums, not means)."""
    if n_batches <= 0:
        return []
    return list(itertools.islice(split_batches(urls, examples=examples, batch_size=batch_size, seed=seed,
                                               on_bad_sample=on_bad_sample), rank, n_batches, world))
