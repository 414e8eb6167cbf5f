"""Decoded samples (data_prep.schema.Sample) as model inputs. What an example is belongs to the task:
token tasks (generate, classify) crop, min-max scale and quantise audio, or take pixels as they are; the
digit classifier (classify with model.arch) reads the waveform itself (`WaveExamples`), and the
diffusion task takes the waveform as it is, with the example's noise draw (`NoisedWaveExamples`). Every
one is called as `examples(sample, rng)` by the streams (cluster.train.data) and raises SampleError for a
sample it cannot use, which the stream's bad-data policy then reports and skips, or stops on."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from data_prep.schema import Sample, SampleError
from sashimi.quantize import minmax_scale, quantize, zero_class


def crop_window(sample: Sample, crop: int | None, rng: random.Random) -> tuple[torch.Tensor, int]:
    """(the cropped piece of the sample's valid prefix, as stored; the crop length): a random window of
    `crop` samples when the valid prefix is longer, else the whole prefix (shorter than the crop: the
    caller pads). `crop` None: the whole stored array. One draw from `rng` when a window is chosen."""
    data, length = sample.data, sample.length
    if crop is None:
        crop = data.shape[0]
        start = 0
    else:
        start = rng.randrange(0, length - crop + 1) if length >= crop else 0
    n = min(crop, length - start)
    return torch.from_numpy(np.ascontiguousarray(data[start:start + n])), crop


def tokens_from_sample(sample: Sample, crop: int | None, quantization: str, rng: random.Random):
    """(tokens int64 (crop,), mask bool (crop,)) from a decoded Sample; random crop inside the valid prefix."""
    piece, crop = crop_window(sample, crop, rng)
    n = piece.shape[0]
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


@dataclass(frozen=True)
class WaveExamples:
    """(waveform float32 (length,), augmentation seed int64 scalar, label int64 scalar) for the digit
    classifier: the decoded clip as it is (float in [-1, 1], no scaling, no quantisation), its first
    `length` samples with zeros past its valid prefix. The seed is drawn from the example's RNG (a
    function of its place in the global order), so the training-time augmentation the task applies to it
    (sashimi.augment.augment_each) is the same after a resume or at another world size."""

    length: int
    sample_rate: int
    n_labels: int

    def __call__(self, sample: Sample, rng: random.Random) -> tuple[torch.Tensor, ...]:
        if sample.kind != "audio" or sample.sample_rate != self.sample_rate:
            got = f"{sample.sample_rate} Hz audio" if sample.kind == "audio" else f"a {sample.kind} sample"
            raise SampleError(f"sample {sample.key!r}: {got}, the digit classifier reads {self.sample_rate} Hz "
                              f"audio (model.sample_rate)")
        if sample.label is None or not 0 <= sample.label < self.n_labels:
            raise SampleError(f"sample {sample.key!r}: label {sample.label!r} is not in 0..{self.n_labels - 1} "
                              f"(task classify; shard digits with --preset sc09)")
        n = min(self.length, sample.length, len(sample.data))
        wave = torch.zeros(self.length, dtype=torch.float32)
        wave[:n] = torch.from_numpy(np.ascontiguousarray(sample.data[:n], dtype=np.float32))
        return (wave, torch.tensor(rng.getrandbits(63), dtype=torch.int64),
                torch.tensor(sample.label, dtype=torch.int64))


@dataclass(frozen=True)
class NoisedWaveExamples:
    """(x0 float32 (crop,), t int64 scalar, ε float32 (crop,)) for task diffusion: the raw waveform as
    decoded (in [-1, 1], no min-max scaling, no quantisation), zero-padded to the crop as the reference
    trains, with the example's diffusion step t uniform in [0, steps) and its Gaussian noise ε. Both are
    drawn from the example's RNG, which the global order seeds from (job seed, stream position): the
    noise a clip is trained with is then as fixed as its crop, the same for any number of workers and
    after any restart, and the loss of a batch is a function of the batch."""

    crop: int
    steps: int  # the schedule's T

    def __call__(self, sample: Sample, rng: random.Random) -> tuple[torch.Tensor, ...]:
        if sample.kind != "audio":
            raise SampleError(f"sample {sample.key!r}: task diffusion trains on audio, got {sample.kind!r}")
        piece, crop = crop_window(sample, self.crop, rng)
        x0 = torch.zeros(crop, dtype=torch.float32)
        x0[:piece.shape[0]] = piece.to(torch.float32)
        t = torch.tensor(rng.randrange(self.steps), dtype=torch.int64)
        eps = torch.randn(crop, generator=torch.Generator().manual_seed(rng.getrandbits(63)))
        return x0, t, eps
