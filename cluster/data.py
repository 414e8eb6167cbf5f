"""Per-rank WebDataset streams of fixed-length token crops.

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
(`data.on_bad_sample`): a truncated/corrupt tar or a sample that fails to decode is logged with its shard
and skipped ("skip") or raised as BadDataError naming the shard ("stop"). Skipping is local to a rank and
cannot hang DDP: the resampled stream simply reads on, and every rank still yields exactly n batches.
This module turns decoded samples into token tensors and batches.
"""
from __future__ import annotations

import itertools
import random
from typing import Iterator

import numpy as np
import torch
import webdataset as wds

from data_prep.reader import BadSamplePolicy, raw_samples, samples
from data_prep.schema import SampleError
from sashimi.quantize import minmax_scale, quantize, zero_class

from .seeds import mix_seed


def _loader_worker_id() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else info.id


def tokens_from_sample(sample, crop: int | None, quantization: str, rng: random.Random):
    """(tokens int64 (crop,), mask bool (crop,)) from a decoded Sample; random crop inside the valid prefix."""
    data, length = sample.data, sample.length
    if crop is None:
        crop = data.shape[0]
        start = 0
    else:
        start = rng.randrange(0, length - crop + 1) if length >= crop else 0
    n = min(crop, length - start)
    piece = torch.from_numpy(np.ascontiguousarray(data[start:start + n]))
    if quantization == "none":
        tok = piece.to(torch.int64)
        pad = 0
    else:
        tok = quantize(minmax_scale(piece.to(torch.float32)), quantization)
        pad = zero_class()
    tokens = torch.full((crop,), pad, dtype=torch.int64)
    tokens[:n] = tok
    mask = torch.zeros(crop, dtype=torch.bool)
    mask[:n] = True
    return tokens, mask


class CropShuffle:
    """Pipeline stage: decode, shuffle within a buffer, crop and quantise; RNG seeded per loader worker.
    With `n_labels` (classify jobs) each item also carries its label, checked to be in 0..n_labels-1."""

    def __init__(self, seed: int, crop: int | None, quantization: str, buffer: int,
                 policy: BadSamplePolicy | None = None, n_labels: int | None = None):
        self.seed, self.crop, self.quantization, self.buffer = seed, crop, quantization, buffer
        self.policy = policy or BadSamplePolicy("stop")
        self.n_labels = n_labels

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
                out = make_item(sample, item, self.crop, self.quantization, rng, self.policy, self.n_labels)
                if out is not None:
                    yield out


def make_item(sample, raw: dict, crop: int | None, quantization: str, rng: random.Random,
              policy: BadSamplePolicy, n_labels: int | None):
    """(tokens, mask), or (tokens, mask, label int64 scalar) when `n_labels` is set; None (after the
    policy handled it) for a sample whose label is missing or out of range."""
    tokens, mask = tokens_from_sample(sample, crop, quantization, rng)
    if n_labels is None:
        return tokens, mask
    if sample.label is None or not 0 <= sample.label < n_labels:
        policy.sample_error(raw, SampleError(f"sample {sample.key!r}: label {sample.label!r} is not in "
                                             f"0..{n_labels - 1} (task classify)"))
        return None
    return tokens, mask, torch.tensor(sample.label, dtype=torch.int64)


class _ShardMembers:
    """Pipeline stage: ResampledShards' {"url": ...} items -> the raw samples of each shard."""

    def __init__(self, policy: BadSamplePolicy):
        self.policy = policy

    def __call__(self, src: Iterator[dict]) -> Iterator[dict]:
        return raw_samples((item["url"] for item in src), self.policy)


def collate(items):
    """Stack (tokens, mask[, label]) items into (tokens (B, L), mask (B, L)[, labels (B,)])."""
    return tuple(torch.stack(column) for column in zip(*items))


def train_loader(urls: list[str], *, seed: int, rank: int, start_step: int, n_batches: int, batch_size: int,
                 crop: int | None, quantization: str, shuffle_buffer: int = 64, loader_workers: int = 0,
                 on_bad_sample: str = "skip", n_labels: int | None = None, pin_memory: bool = False):
    """Exactly `n_batches` batches (tokens (B, crop) int64, mask (B, crop) bool[, labels (B,) int64 when
    `n_labels` is set]) for this rank's segment. `pin_memory` (for a CUDA device) puts each batch in
    page-locked memory, so the trainer's `.to(device, non_blocking=True)` is an asynchronous copy."""
    seg_seed = mix_seed(seed, rank, start_step)
    policy = BadSamplePolicy(on_bad_sample)
    pipeline = wds.DataPipeline(
        wds.ResampledShards(urls, seed=seg_seed, worker_seed=_loader_worker_id, deterministic=True),
        _ShardMembers(policy),
        CropShuffle(seg_seed, crop, quantization, shuffle_buffer, policy, n_labels),
        wds.batched(batch_size, collation_fn=collate, partial=False),
    )
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=loader_workers, pin_memory=pin_memory,
                           persistent_workers=False, prefetch_factor=2 if loader_workers else None)
    return loader.with_epoch(n_batches)


def split_batches(urls: list[str], *, batch_size: int, crop: int | None, quantization: str, seed: int = 0,
                  on_bad_sample: str = "skip", n_labels: int | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
    """Every example of `urls` in shard order, in batches of `batch_size` (the last one may be short), with
    seeded crops. Batches as train_loader's (with labels when `n_labels` is set)."""
    rng = random.Random(mix_seed(seed, 7919))
    items = []
    policy = BadSamplePolicy(on_bad_sample)
    for raw, sample in samples(urls, policy):
        item = make_item(sample, raw, crop, quantization, rng, policy, n_labels)
        if item is None:
            continue
        items.append(item)
        if len(items) == batch_size:
            yield collate(items)
            items = []
    if items:
        yield collate(items)


def val_batches(urls: list[str], *, n_batches: int, batch_size: int, crop: int | None, quantization: str,
                seed: int = 0, on_bad_sample: str = "skip", n_labels: int | None = None, rank: int = 0,
                world: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """This rank's share of the first `n_batches` batches of the val split in shard order, with seeded
    crops: the same examples at every evaluation, so val metrics are comparable across steps and across
    restarts. Rank r of `world` keeps batches r, r + world, ... (shares may differ by one batch, and a
    short last batch is fine: the trainer merges sums, not means)."""
    if n_batches <= 0:
        return []
    return list(itertools.islice(split_batches(urls, batch_size=batch_size, crop=crop, quantization=quantization,
                                               seed=seed, on_bad_sample=on_bad_sample, n_labels=n_labels),
                                 rank, n_batches, world))
