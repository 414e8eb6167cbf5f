"""SaShiMi's building blocks: residual S4 and feed-forward blocks, and the pooling layers.

Each block has a convolution-mode ``forward`` over (B, L, H) and a ``step`` over one time step,
so the U-Net can run either way with the same weights. The diffusion backbone uses the same
blocks, paired and conditioned on the diffusion step (``StepConditionedBlock``); it never steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .s4 import S4


class S4Block(nn.Module):
    """x + Dropout(S4(LayerNorm(x))): the paper's pre-norm residual block (the S4 layer has its own
    dropout after the activation; this one is on the residual branch)."""

    def __init__(self, H: int, dropout: float = 0.0, **s4_kwargs):
        super().__init__()
        self.norm = nn.LayerNorm(H)
        self.s4 = S4(H, dropout=dropout, **s4_kwargs)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``cond`` (B, 1, H), optional: added after the norm, before the S4 layer (DiffWave's
        diffusion-step conditioning, broadcast over time)."""
        h = self.norm(x)
        return x + self.dropout(self.s4(h if cond is None else h + cond))

    def step(self, x: torch.Tensor, base: torch.Tensor, cu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step mode (inference: dropout is the identity) -> (output, the S4 input u). The state-only part
        ``base`` comes from s4.state_terms, run by the tier for all its layers at once; the tier also
        applies u to the state. Functional calls only: at batch 1 a module call costs as much as its op."""
        n = self.norm
        u = F.layer_norm(x, n.normalized_shape, n.weight, n.bias, n.eps)
        return x + self.s4.readout(u, base, cu), u


class FFBlock(nn.Module):
    """x + Dropout(W2 Dropout(GELU(W1 LayerNorm(x)))): position-wise, so its step is its forward."""

    def __init__(self, H: int, expand: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(H)
        self.fc1 = nn.Linear(H, expand * H)
        self.fc2 = nn.Linear(expand * H, H)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(self.norm(x))))))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` at inference (no dropout) in functional calls, for step mode (see S4Block.step).
        ``forward`` keeps its module calls: bench.roofline counts the nn.Linear calls with hooks."""
        n = self.norm
        h = F.gelu(F.linear(F.layer_norm(x, n.normalized_shape, n.weight, n.bias, n.eps), self.fc1.weight,
                            self.fc1.bias))
        return x + F.linear(h, self.fc2.weight, self.fc2.bias)


class StepConditionedBlock(nn.Module):
    """DiffWave+SaShiMi's residual block: x + S4(LN(x) + W·e), then the feed-forward block, where
    e is the shared diffusion-step embedding and W this block's own projection of it.

    One U-Net layer (one stored skip in the ``unet: true`` wiring) for the pair, as the reference
    (albertfgu/diffwave-sashimi), whose U-Net stores one activation per such block."""

    def __init__(self, H: int, cond_dim: int, ff: int, dropout: float = 0.0, **s4_kwargs):
        super().__init__()
        self.cond = nn.Linear(cond_dim, H)
        self.s4 = S4Block(H, dropout=dropout, **s4_kwargs)
        self.ff = FFBlock(H, ff, dropout) if ff > 0 else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x (B, L, H), emb (B, cond_dim) -> (B, L, H)."""
        x = self.s4(x, self.cond(emb).unsqueeze(1))
        return x if self.ff is None else self.ff(x)


class DownPool(nn.Module):
    """Fold p consecutive steps into channels, then project: (B, L, H) -> (B, L/p, expand·H)."""

    def __init__(self, H: int, expand: int, pool: int):
        super().__init__()
        self.pool = pool
        self.proj = nn.Linear(H * pool, H * expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, H = x.shape
        return self.proj(x.reshape(B, L // self.pool, self.pool * H))


class UpPool(nn.Module):
    """Project, shift right by one pooled step, unfold into p steps: (B, L', H) -> (B, L'·p, H/expand).

    The shift is what keeps the U-Net causal: outputs for positions [jp, (j+1)p) come from
    pooled step j-1, which only saw inputs before jp. A non-causal U-Net (``causal=False``, the
    diffusion backbone) unfolds pooled step j into [jp, (j+1)p) itself, without the shift.
    """

    def __init__(self, H: int, expand: int, pool: int, causal: bool = True):
        super().__init__()
        self.pool, self.H_out, self.causal = pool, H // expand, causal
        self.proj = nn.Linear(H, self.H_out * pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, Lp, _ = x.shape
        y = self.proj(x)
        if self.causal:
            y = F.pad(y[:, :-1], (0, 0, 1, 0))
        return y.reshape(B, Lp * self.pool, self.H_out)

    def chunk(self, x: torch.Tensor) -> torch.Tensor:
        """Step mode: one pooled input (B, H) -> the next p outputs (B, p, H/expand)."""
        return self.proj(x).reshape(x.shape[0], self.pool, self.H_out)


def make_blocks(H: int, n_layers: int, ff: int, dropout: float, cond_dim: int | None = None,
                **s4_kwargs) -> nn.ModuleList:
    """n_layers S4 blocks, each followed by a feed-forward block when ff > 0; with ``cond_dim``,
    n_layers StepConditionedBlocks (each pair one layer)."""
    if cond_dim is not None:
        return nn.ModuleList(StepConditionedBlock(H, cond_dim, ff, dropout, **s4_kwargs) for _ in range(n_layers))
    layers = []
    for _ in range(n_layers):
        layers.append(S4Block(H, dropout=dropout, **s4_kwargs))
        if ff > 0:
            layers.append(FFBlock(H, ff, dropout))
    return nn.ModuleList(layers)
