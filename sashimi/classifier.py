"""An S4 sequence classifier (sequential MNIST: 784 pixels, one per step, then a label).

The S4 paper's sMNIST model: token embedding, a stack of residual S4 + feed-forward blocks at
full rate (no pooling: the label needs the whole sequence), LayerNorm, mean over time, linear
head. Its hyperparameters reuse ``SaShiMiConfig`` (d_model, n_layers, d_state, kernel, ff,
dropout, dt range, l_max, n_classes = input vocabulary), so a job's ``model:`` section validates
the same way for both models; ``pool``, ``expand`` and ``unet`` are ignored.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import make_blocks
from .config import SaShiMiConfig


class S4Classifier(nn.Module):
    def __init__(self, config: SaShiMiConfig, n_labels: int = 10):
        super().__init__()
        cfg = self.config = config
        self.n_labels = n_labels
        self.embed = nn.Embedding(cfg.n_classes, cfg.d_model)
        self.blocks = make_blocks(cfg.d_model, cfg.n_layers, cfg.ff, cfg.dropout, l_max=cfg.l_max,
                                  **cfg.s4_kwargs())
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, n_labels)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, L) int64 -> label logits (B, n_labels); ``mask`` (B, L) excludes padding from the mean."""
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        if mask is None:
            return self.head(x.mean(1))
        m = mask.to(x.dtype)[..., None]
        return self.head((x * m).sum(1) / m.sum(1).clamp_min(1))
