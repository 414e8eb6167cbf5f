"""The non-causal SaShiMi as DiffWave's noise predictor ε_θ(x_t, t) (DiffWave+SaShiMi).

Same tiers, blocks and U-Net wiring as the autoregressive model (``model.UNetTiers``), changed
only where the task differs: a real waveform in and out instead of tokens and logits, UpPools
without the causal shift, bidirectional S4 layers, and every residual block conditioned on the
diffusion step. Layout after albertfgu/diffwave-sashimi (``models/sashimi.py``):

    x (B, L) ─ 1x1 conv, ReLU ─ U-Net of StepConditionedBlocks ─ LN ─ 1x1 conv, ReLU ─ 1x1 conv (zero init) ─ ε̂ (B, L)
    t (B,) ─ sinusoid(128) ─ Linear 512, swish ─ Linear 512, swish ─ e ─ (each block: its own Linear(512 -> H) of e)

It only runs in convolution mode: sampling evaluates the whole clip once per diffusion step.

Where it differs from the reference's checkpoints (the S4 of January 2022) — the parameter counts
(22.0M for d_model 128 vs 22.96M; 7.0M for 64 vs 7.48M) differ by exactly these: the reference
trains a separate low-rank vector Q per channel and direction (stored with C, 64 reals each) and
keeps Λ, P, B and Δ frozen, where our DPLR layer ties Q to P, shares (Λ, P, B) per layer and
trains them with Δ; its norms normalise over channels with one scalar scale and shift (ours:
nn.LayerNorm, per-channel affine); its 1x1 convolutions carry weight normalisation (ours: plain
nn.Linear). ``unet: false`` follows the paper's wiring (sashimi.unet), which has a residual
around each up tier that the reference fork's unused ``unet: false`` path lacks.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiffWaveConfig
from .model import UNetTiers


def step_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """DiffWave's sinusoidal embedding of the integer step t (B,) -> (B, dim):
    [sin(t·f_0) … sin(t·f_{h-1}), cos(t·f_0) … cos(t·f_{h-1})], f_i = 10000^(-i/(h-1)), h = dim/2."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    arg = t.to(torch.float32)[:, None] * freqs
    return torch.cat([arg.sin(), arg.cos()], dim=-1)


class DiffWaveSaShiMi(UNetTiers):
    config_class = DiffWaveConfig

    def __init__(self, config: DiffWaveConfig | None = None, **overrides):
        super().__init__()
        cfg = self._set_config(config, overrides)
        H, E = cfg.d_model, cfg.t_hidden_dim
        self.stem = nn.Linear(1, H)
        self.t_mlp = nn.Sequential(nn.Linear(cfg.t_embed_dim, E), nn.SiLU(), nn.Linear(E, E), nn.SiLU())
        self._build_tiers(cfg, causal=False, cond_dim=E)
        self.norm = nn.LayerNorm(H)
        self.head = nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Linear(H, 1))
        with torch.no_grad():  # the zero-initialised last layer: ε̂ = 0 at init, as DiffWave
            self.head[-1].weight.zero_()
            self.head[-1].bias.zero_()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, L) noisy waveform, t (B,) int64 diffusion steps in [0, T) -> predicted noise (B, L).

        L must be a multiple of the total pooling (16 for pool [4, 4]): padding would leak
        into the real samples through the anti-causal kernels, so none is added."""
        L = x.shape[-1]
        if L % self.config.total_pool:
            raise ValueError(f"the diffusion backbone needs a length divisible by the total pooling "
                             f"{self.config.total_pool} (prod of model.pool), got L = {L}")
        emb = self.t_mlp(step_embedding(t, self.config.t_embed_dim))
        h = F.relu(self.stem(x.unsqueeze(-1)))
        h = self._tier(0, h, lambda layer, a: layer(a, emb))
        return self.head(self.norm(h)).squeeze(-1)
