"""DiffWave's diffusion (Kong et al. 2021; DDPM, Ho et al. 2020) on the raw waveform in [-1, 1].

Steps are 0-based, t = 0 … T-1 (the network sees this integer): β linear from beta_start to
beta_end, α_t = 1 - β_t, ᾱ_t = Π_{s<=t} α_s. Training draws t uniformly and noises in closed
form, x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, and the loss is the mean squared error of the predicted ε
(no μ-law, no quantisation). Sampling is ancestral over all T steps with σ_t² = β̃_t =
β_t (1-ᾱ_{t-1}) / (1-ᾱ_t), as DiffWave+SaShiMi samples.

A shorter schedule is optional and off by default (``steps`` < T): an evenly strided
subsequence of the T steps with the DDIM update (Song et al. 2021), which for consecutive kept
steps s < t is the same chain with ᾱ_t / ᾱ_s in place of α_t; ``eta`` = 1 is its ancestral
(respaced DDPM) form and, over all T steps, exactly the sampler above; ``eta`` = 0 is DDIM's
deterministic sampler. Schedule constants are float64; the network and the sample are float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm

from .config import DiffWaveConfig

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t (B, L), t (B,)) -> ε̂ (B, L)


@dataclass(frozen=True)
class Schedule:
    """The noise schedule's per-step constants (float64, CPU; index t = 0 … T-1)."""

    betas: torch.Tensor

    @classmethod
    def linear(cls, T: int = 200, beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def of(cls, config: DiffWaveConfig) -> "Schedule":
        return cls.linear(config.diffusion_steps, config.beta_start, config.beta_end)

    @property
    def T(self) -> int:
        return self.betas.numel()

    @property
    def alpha_bars(self) -> torch.Tensor:
        return torch.cumprod(1 - self.betas, 0)

    @property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t), with ᾱ_{-1} = 1 (so β̃_0 = 0: the last step adds no noise)."""
        ab = self.alpha_bars
        prev = torch.cat([ab.new_ones(1), ab[:-1]])
        return self.betas * (1 - prev) / (1 - ab)

    def noise(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε in closed form: x0, eps (B, L), t (B,) -> (B, L) in x0's dtype."""
        ab = self.alpha_bars.to(x0.device)[t].unsqueeze(-1)
        return (ab.sqrt() * x0 + (1 - ab).sqrt() * eps).to(x0.dtype)


def _schedule(model, schedule: Schedule | None) -> Schedule:
    """``schedule``, or the one in the model's config (through a DDP wrapper's ``module``)."""
    return schedule if schedule is not None else Schedule.of(getattr(model, "module", model).config)


def _randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal draws from ``generator`` (on its own device, so a CPU generator gives the
    same numbers whatever device the model is on), moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


def squared_error(model, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                  schedule: Schedule | None = None) -> torch.Tensor:
    """(ε̂_θ(x_t, t) - ε)² per position, float32 (B, L), for given steps t (B,) and noise ε (B, L):
    the loss with its randomness supplied (a trainer that draws t and ε from its own seeded streams)."""
    sched = _schedule(model, schedule)
    return (model(sched.noise(x0, t, eps), t).float() - eps.float()).pow(2)


def per_example_loss(model, x0: torch.Tensor, generator: torch.Generator | None = None,
                     mask: torch.Tensor | None = None, schedule: Schedule | None = None):
    """The ε-prediction MSE of each clip at a random step. x0 (B, L) in [-1, 1]; ``mask`` (B, L),
    optional, counts only its true positions (padding). -> (losses (B,), t (B,) int64)."""
    sched = _schedule(model, schedule)
    B = x0.shape[0]
    t = torch.randint(sched.T, (B,), generator=generator,
                      device=generator.device if generator is not None else x0.device).to(x0.device)
    eps = _randn(x0.shape, generator, x0.device)
    sq = squared_error(model, x0, t, eps, sched)
    if mask is None:
        return sq.mean(-1), t
    m = mask.to(sq.dtype)
    return (sq * m).sum(-1) / m.sum(-1).clamp_min(1), t


def loss(model, x0: torch.Tensor, generator: torch.Generator | None = None,
         mask: torch.Tensor | None = None, schedule: Schedule | None = None) -> torch.Tensor:
    """The training loss: mean over the batch of ``per_example_loss``."""
    return per_example_loss(model, x0, generator, mask, schedule)[0].mean()


def loss_by_level(losses: torch.Tensor, t: torch.Tensor, T: int, buckets: int = 10) -> torch.Tensor:
    """Per-example losses bucketed by noise level: (2, buckets) float64, [sum of losses; count] for
    t in [i·T/buckets, (i+1)·T/buckets). Sums, so batches and ranks merge by addition; the
    mean of bucket i is row 0 / row 1 (low t = little noise)."""
    idx = (t.to(torch.int64) * buckets) // T
    sums = torch.zeros(2, buckets, dtype=torch.float64, device=losses.device)
    sums[0].index_add_(0, idx, losses.detach().double())
    sums[1].index_add_(0, idx, torch.ones_like(losses, dtype=torch.float64))
    return sums


def timesteps(T: int, steps: int | None = None) -> list[int]:
    """The steps the sampler visits, descending: all T, or ``steps`` of them evenly strided
    from T-1 down to 0 (both ends always kept)."""
    if steps is None or steps >= T:
        return list(range(T - 1, -1, -1))
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps == 1:
        return [T - 1]
    return sorted({round(i * (T - 1) / (steps - 1)) for i in range(steps)}, reverse=True)


@torch.no_grad()
def sample(model: EpsModel, n: int, length: int, steps: int | None = None, eta: float = 1.0,
           generator: torch.Generator | None = None, batch_size: int | None = None,
           schedule: Schedule | None = None, device=None, progress: bool = False) -> torch.Tensor:
    """``n`` clips of ``length`` samples from the reverse process -> (n, length) float32.

    ``steps`` None (default): ancestral DDPM over all T steps, σ_t² = β̃_t. ``steps`` < T: the
    shorter strided schedule (see the module docstring), ``eta`` 1 ancestral, 0 deterministic.
    ``batch_size`` bounds how many clips one network evaluation takes (memory); the draws come
    from ``generator`` in order, batch after batch. The model runs in eval mode and is put back."""
    sched = _schedule(model, schedule)
    ts = timesteps(sched.T, steps)
    if isinstance(model, torch.nn.Module):
        device = device or next(model.parameters()).device
        was_training = model.training
        model.eval()
    device = device or "cpu"
    ab = sched.alpha_bars.tolist()
    out = []
    try:
        bs = batch_size or n
        for start in range(0, n, bs):
            b = min(bs, n - start)
            x = _randn((b, length), generator, device)
            bar = tqdm(ts, desc=f"diffusion steps (clips {start}-{start + b - 1})", disable=not progress)
            for i, t in enumerate(bar):
                a_t = ab[t]
                a_s = ab[ts[i + 1]] if i + 1 < len(ts) else 1.0  # ᾱ of the next kept step (1 after the last)
                eps = model(x, torch.full((b,), t, dtype=torch.int64, device=device)).float()
                # x_s = √ᾱ_s x̂_0 + √(1-ᾱ_s-σ²) ε̂ + σ z with x̂_0 = (x_t - √(1-ᾱ_t) ε̂)/√ᾱ_t, as two
                # float64 coefficients; σ² = η² β̃ of the (respaced) step.
                var = eta ** 2 * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
                c_x = (a_s / a_t) ** 0.5
                c_eps = max(1 - a_s - var, 0.0) ** 0.5 - (a_s * (1 - a_t) / a_t) ** 0.5
                x = c_x * x + c_eps * eps
                if var > 0:
                    x = x + var ** 0.5 * _randn((b, length), generator, device)
            out.append(x)
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)
    return torch.cat(out)


__all__ = ["Schedule", "loss", "loss_by_level", "per_example_loss", "sample", "squared_error", "timesteps"]
