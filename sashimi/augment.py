"""Waveform augmentation for the digit classifier: time shift, gain and additive noise.

The classifier judges generated clips, whose words sit anywhere in the second, at any loudness and
over model noise; training on shifted, rescaled, noisy copies keeps its features about the word. Every
draw comes from the caller's ``torch.Generator``, so a training step's augmentation is a function of
its seed (exact resume), and the whole batch is transformed at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .dataconf import strict_from_dict


@dataclass(frozen=True)
class AugmentConfig:
    """Per clip: shift by up to ``max_shift_s`` either way (zero-filled), scale by a gain drawn uniformly in
    [``gain_db_min``, ``gain_db_max``] dB, add white noise at an SNR (to the clip's RMS) drawn uniformly in
    [``snr_db_min``, ``snr_db_max``] dB with probability ``noise_prob``; then clip to [-1, 1]."""

    max_shift_s: float = 0.1
    gain_db_min: float = -6.0
    gain_db_max: float = 6.0
    noise_prob: float = 0.5
    snr_db_min: float = 10.0
    snr_db_max: float = 40.0

    def __post_init__(self):
        if self.max_shift_s < 0:
            raise ValueError(f"augment.max_shift_s must be >= 0, got {self.max_shift_s}")
        if self.gain_db_min > self.gain_db_max:
            raise ValueError(f"augment.gain_db_min ({self.gain_db_min}) > gain_db_max ({self.gain_db_max})")
        if self.snr_db_min > self.snr_db_max:
            raise ValueError(f"augment.snr_db_min ({self.snr_db_min}) > snr_db_max ({self.snr_db_max})")
        if not 0 <= self.noise_prob <= 1:
            raise ValueError(f"augment.noise_prob must be in [0, 1], got {self.noise_prob}")

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        return strict_from_dict(cls, d, "augment")


def time_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Row i of (B, L) moved right by shift[i] samples (left if negative), zeros filling the gap."""
    L = x.shape[-1]
    src = torch.arange(L, device=x.device)[None, :] - shift[:, None]
    inside = (src >= 0) & (src < L)
    return torch.where(inside, x.gather(1, src.clamp(0, L - 1)), torch.zeros((), dtype=x.dtype, device=x.device))


def augment(x: torch.Tensor, generator: torch.Generator, cfg: AugmentConfig = AugmentConfig(),
            sample_rate: int = 16000) -> torch.Tensor:
    """(B, L) waveforms in [-1, 1] -> augmented copies (the input is not modified)."""
    if x.ndim != 2:
        raise ValueError(f"augment: expected (batch, samples), got shape {tuple(x.shape)}")
    B, dev = x.shape[0], x.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(B, generator=generator, device=dev, dtype=torch.float64)

    s = int(round(cfg.max_shift_s * sample_rate))
    shift = torch.randint(-s, s + 1, (B,), generator=generator, device=dev)
    gain = 10 ** (uniform(cfg.gain_db_min, cfg.gain_db_max) / 20)
    snr = uniform(cfg.snr_db_min, cfg.snr_db_max)
    noisy = torch.rand(B, generator=generator, device=dev) < cfg.noise_prob
    noise = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
    y = time_shift(x, shift) * gain.to(x.dtype)[:, None]
    rms = y.pow(2).mean(1).sqrt()
    std = torch.where(noisy, rms * 10 ** (-snr.to(x.dtype) / 20), torch.zeros_like(rms))
    return (y + std[:, None] * noise).clamp(-1.0, 1.0)


def augment_each(x: torch.Tensor, seeds, cfg: AugmentConfig = AugmentConfig(), sample_rate: int = 16000
                 ) -> torch.Tensor:
    """(B, L) waveforms -> augmented copies, row i drawn from its own generator seeded ``seeds[i]``: an
    example's augmentation then depends on its seed alone, not on which batch or rank it landed in (the
    trainer splits a global batch differently at each world size)."""
    if x.ndim != 2:
        raise ValueError(f"augment_each: expected (batch, samples), got shape {tuple(x.shape)}")
    seeds = [int(s) for s in (seeds.tolist() if torch.is_tensor(seeds) else seeds)]
    if len(seeds) != x.shape[0]:
        raise ValueError(f"augment_each: {len(seeds)} seeds for {x.shape[0]} waveforms")
    rows = [augment(x[i:i + 1], torch.Generator(device=x.device).manual_seed(s), cfg, sample_rate)
            for i, s in enumerate(seeds)]
    return torch.cat(rows) if rows else x.clone()
