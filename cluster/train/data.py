"""Per-rank WebDataset streams of examples (what an example is, the task decides: cluster/tasks/examples.py).

Training stream: every rank resamples shards from the *whole* shard list (`ResampledShards`,
`deterministic=True`) with its own seed, so ranks never need disjoint shards (fewer shards than
workers is fine) and no `split_by_node` stage is needed (it would be wrong with resampling). Batches
are `partial=False` and the loader is cut with `.with_epoch(n)`, so every rank yields exactly n
batches and DDP never waits on a rank that ran dry.

Exact resume: the stream is rebuilt at every checkpoint boundary ("segment") from a seed that is a
pure function of (job seed, rank, segment start step). A run resumed at step k therefore reads the
very same batches an uninterrupted run reads from step k: no stream position has to be saved
beyond the step count.

Shards are read through data_prep.reader (the project's one shard reader) and its bad-data policy
(`data.on_bad_sample`): a truncated/corrupt tar, a sample that fails to decode, or one the task's
`examples` refuses (SampleError: e.g. a label out of range) is logged with its shard and skipped ("skip")
or raised as BadDataError naming the shard ("stop"). Skipping is local to a rank and cannot hang DDP: the
resampled stream simply reads on, and every rank still yields exactly n batches. This module shuffles,
applies `examples(sample, rng)` and batches.
"""
from __future__ import annotations

import itertools
import random
from typing import Callable, Iterator

import torch
import webdataset as wds

from data_prep.reader import BadSamplePolicy, raw_samples, samples
from data_prep.schema import Sample, SampleError

from ..seeds import mix_seed

Examples = Callable[[Sample, random.Random], tuple]  # a task's examples(): decoded sample -> tensors


def _loader_worker_id() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else info.id


def make_example(examples: Examples, sample: Sample, raw: dict, rng: random.Random,
                 policy: BadSamplePolicy) -> tuple | None:
    """examples(sample, rng), or None after the policy handled a sample the task refused."""
    try:
        return examples(sample, rng)
    except SampleError as e:
        policy.sample_error(raw, e)
        return None


class CropShuffle:
    """Pipeline stage: decode, shuffle within a buffer, make each example; RNG seeded per loader worker."""

    def __init__(self, seed: int, examples: Examples, buffer: int, policy: BadSamplePolicy | None = None):
        self.seed, self.examples, self.buffer = seed, examples, buffer
        self.policy = policy or BadSamplePolicy("stop")

    def __call__(self, src: Iterator[dict]):
        rng = random.Random(mix_seed(self.seed, _loader_worker_id(), 1))
        buf = []
        for raw in src:
            buf.append(raw)
            if len(buf) < self.buffer:
                continue
            item = buf.pop(rng.randrange(len(buf)))
            sample = self.policy.decode(item)
            if sample is not None:
                out = make_example(self.examples, sample, item, rng, self.policy)
                if out is not None:
                    yield out


class _ShardMembers:
    """Pipeline stage: ResampledShards' {"url": ...} items -> the raw samples of each shard."""

    def __init__(self, policy: BadSamplePolicy):
        self.policy = policy

    def __call__(self, src: Iterator[dict]) -> Iterator[dict]:
        return raw_samples((item["url"] for item in src), self.policy)


def collate(items):
    """Stack examples column by column: (tokens, mask[, label]) items -> (tokens (B, L), mask (B, L)[, labels (B,)])."""
    return tuple(torch.stack(column) for column in zip(*items))


def train_loader(urls: list[str], *, examples: Examples, seed: int, rank: int, start_step: int, n_batches: int,
                 batch_size: int, shuffle_buffer: int = 64, loader_workers: int = 0, on_bad_sample: str = "skip",
                 pin_memory: bool = False):
    """Exactly `n_batches` batches of `examples` (e.g. tokens (B, crop) int64, mask (B, crop) bool[, labels
    (B,) int64]) for this rank's segment. `pin_memory` (for a CUDA device) puts each batch in page-locked
    memory, so the trainer's `.to(device, non_blocking=True)` is an asynchronous copy."""
    seg_seed = mix_seed(seed, rank, start_step)
    policy = BadSamplePolicy(on_bad_sample)
    pipeline = wds.DataPipeline(
        wds.ResampledShards(urls, seed=seg_seed, worker_seed=_loader_worker_id, deterministic=True),
        _ShardMembers(policy),
        CropShuffle(seg_seed, examples, shuffle_buffer, policy),
        wds.batched(batch_size, collation_fn=collate, partial=False),
    )
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=loader_workers, pin_memory=pin_memory,
                           persistent_workers=False, prefetch_factor=2 if loader_workers else None)
    return loader.with_epoch(n_batches)


def split_batches(urls: list[str], *, examples: Examples, batch_size: int, seed: int = 0,
                  on_bad_sample: str = "skip") -> Iterator[tuple[torch.Tensor, ...]]:
    """Every example of `urls` in shard order, in batches of `batch_size` (the last one may be short), with
    seeded crops. Batches as train_loader's."""
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
