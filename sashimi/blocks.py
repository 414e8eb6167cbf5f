"""SaShiMi's building blocks: residual S4 and feed-forward blocks, and the pooling layers.

Each block has a convolution-mode ``forward`` over (B, L, H) and a ``step`` over one time step,
so the U-Net can run either way with the same weights.
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.s4(self.norm(x)))

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
        ``forward`` keeps its module calls: sashimi.roofline counts the nn.Linear calls with hooks."""
        n = self.norm
        h = F.gelu(F.linear(F.layer_norm(x, n.normalized_shape, n.weight, n.bias, n.eps), self.fc1.weight,
                            self.fc1.bias))
        return x + F.linear(h, self.fc2.weight, self.fc2.bias)


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
    pooled step j-1, which only saw inputs before jp.
    """

    def __init__(self, H: int, expand: int, pool: int):
        super().__init__()
        self.pool, self.H_out = pool, H // expand
        self.proj = nn.Linear(H, self.H_out * pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, Lp, _ = x.shape
        y = F.pad(self.proj(x)[:, :-1], (0, 0, 1, 0))
        return y.reshape(B, Lp * self.pool, self.H_out)

    def chunk(self, x: torch.Tensor) -> torch.Tensor:
        """Step mode: one pooled input (B, H) -> the next p outputs (B, p, H/expand)."""
        return self.proj(x).reshape(x.shape[0], self.pool, self.H_out)


def make_blocks(H: int, n_layers: int, ff: int, dropout: float, **s4_kwargs) -> nn.ModuleList:
    layers = []
    for _ in range(n_layers):
        layers.append(S4Block(H, dropout=dropout, **s4_kwargs))
        if ff > 0:
            layers.append(FFBlock(H, ff, dropout))
    return nn.ModuleList(layers)
