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
"""
from __future__ import annotations

import hashlib
import random
from typing import Iterator

import numpy as np
import torch
import webdataset as wds

from data_prep.schema import decode_sample
from sashimi.quantize import minmax_scale, quantize, zero_class


def mix_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (hash() of tuples is salted per process for str; avoid it)."""
    h = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


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
    """Pipeline stage: decode, shuffle within a buffer, crop and quantise; RNG seeded per loader worker."""

    def __init__(self, seed: int, crop: int | None, quantization: str, buffer: int):
        self.seed, self.crop, self.quantization, self.buffer = seed, crop, quantization, buffer

    def __call__(self, src: Iterator[dict]):
        rng = random.Random(mix_seed(self.seed, _loader_worker_id(), 1))
        buf = []
        for raw in src:
            buf.append(raw)
            if len(buf) < self.buffer:
                continue
            item = buf.pop(rng.randrange(len(buf)))
            yield tokens_from_sample(decode_sample(item), self.crop, self.quantization, rng)


def collate(items):
    tokens, masks = zip(*items)
    return torch.stack(tokens), torch.stack(masks)


def train_loader(urls: list[str], *, seed: int, rank: int, start_step: int, n_batches: int, batch_size: int,
                 crop: int | None, quantization: str, shuffle_buffer: int = 64, loader_workers: int = 0):
    """Exactly `n_batches` batches (tokens (B, crop) int64, mask (B, crop) bool) for this rank's segment."""
    seg_seed = mix_seed(seed, rank, start_step)
    pipeline = wds.DataPipeline(
        wds.ResampledShards(urls, seed=seg_seed, worker_seed=_loader_worker_id, deterministic=True),
        wds.tarfile_to_samples(handler=wds.reraise_exception),
        CropShuffle(seg_seed, crop, quantization, shuffle_buffer),
        wds.batched(batch_size, collation_fn=collate, partial=False),
    )
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=loader_workers,
                           persistent_workers=False, prefetch_factor=2 if loader_workers else None)
    return loader.with_epoch(n_batches)


def val_batches(urls: list[str], *, n_batches: int, batch_size: int, crop: int | None, quantization: str,
                seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `n_batches` batches of the val split in shard order, with seeded crops: the same
    examples at every evaluation, so val NLL is comparable across steps and across restarts."""
    rng = random.Random(mix_seed(seed, 7919))
    out, items = [], []
    if n_batches <= 0:
        return out
    for raw in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(handler=wds.reraise_exception)):
        items.append(tokens_from_sample(decode_sample(raw), crop, quantization, rng))
        if len(items) == batch_size:
            out.append(collate(items))
            items = []
            if len(out) == n_batches:
                return out
    if items:
        out.append(collate(items))  # a short last batch is fine: val runs on rank 0 only
    return out
