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


def nll_bits_total(logits: torch.Tensor, targets: torch.Tensor,
                   mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(total NLL in bits, counted positions) over positions where `mask` is true, in float32 and
    differentiable: a training loss that is a sum, so shares of one batch on several ranks add up exactly."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    if mask is None:
        return ce.sum() / math.log(2), torch.tensor(float(ce.numel()), device=ce.device)
    m = mask.reshape(-1).to(ce.dtype)
    return (ce * m).sum() / math.log(2), m.sum()


def nll_bits_sums(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[total bits, counted positions] as a float64 tensor on the logits' device: validation adds these
    up batch after batch without a host sync, and ranks merge them by addition."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    ce = ce.double()  # sums over long sequences and many batches, kept exact enough to compare across runs
    if mask is None:
        count = torch.tensor(float(ce.numel()), dtype=torch.float64, device=ce.device)
        return torch.stack([ce.sum() / math.log(2), count])
    m = mask.reshape(-1).to(ce.dtype)
    return torch.stack([(ce * m).sum() / math.log(2), m.sum()])


def nll_bits_sum(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[float, int]:
    """(total bits, counted positions) on the host: lets evaluation average exactly over many batches or ranks."""
    bits, count = nll_bits_sums(logits, targets, mask).tolist()
    return bits, int(count)
