"""Negative log-likelihood in bits, the paper's metric (cross-entropy in nats / ln 2)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def shift_inputs(tokens: torch.Tensor, start: int = 128) -> torch.Tensor:
    """Autoregressive inputs for targets `tokens`: prepend `start`, drop the last token."""
    first = torch.full_like(tokens[..., :1], start)
    return torch.cat([first, tokens[..., :-1]], dim=-1)


def nll_bits(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean NLL in bits over positions where `mask` is true (all if None). logits (..., L, C)."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    if mask is None:
        return ce.mean() / math.log(2)
    m = mask.reshape(-1).to(ce.dtype)
    return (ce * m).sum() / m.sum().clamp_min(1) / math.log(2)


def nll_bits_sum(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[float, int]:
    """(total bits, counted positions): lets evaluation average exactly over many batches or ranks."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    if mask is None:
        return float(ce.sum()) / math.log(2), ce.numel()
    m = mask.reshape(-1).to(ce.dtype)
    return float((ce * m).sum()) / math.log(2), int(m.sum())
