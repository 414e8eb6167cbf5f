"""Decoded samples (data_prep.schema.Sample) as model inputs. What an example is belongs to the task:
token tasks (generate, classify) crop, min-max scale and quantise audio, or take pixels as they are; a
task on real-valued audio would define its own `examples()` callable. Every one is called as
`examples(sample, rng)` by the streams (cluster.train.data) and raises SampleError for a sample it
cannot use, which the stream's bad-data policy then reports and skips, or stops on."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from data_prep.schema import Sample, SampleError
from sashimi.quantize import minmax_scale, quantize, zero_class


def tokens_from_sample(sample: Sample, crop: int | None, quantization: str, rng: random.Random):
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


@dataclass(frozen=True)
class TokenExamples:
    """(tokens, mask), or (tokens, mask, label int64 scalar) when `n_labels` is set: a sample whose label is
    missing or not in 0..n_labels-1 raises SampleError. Plain data, so loader worker processes get it."""

    crop: int | None
    quantization: str
    n_labels: int | None = None

    def __call__(self, sample: Sample, rng: random.Random) -> tuple[torch.Tensor, ...]:
        tokens, mask = tokens_from_sample(sample, self.crop, self.quantization, rng)
        if self.n_labels is None:
            return tokens, mask
        if sample.label is None or not 0 <= sample.label < self.n_labels:
            raise SampleError(f"sample {sample.key!r}: label {sample.label!r} is not in 0..{self.n_labels - 1} "
                              f"(task classify)")
        return tokens, mask, torch.tensor(sample.label, dtype=torch.int64)
