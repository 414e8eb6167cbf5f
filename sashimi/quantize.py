"""8-bit quantisation of waveforms in [-1, 1] to class indices and back.

The paper min-max scales each clip to [-1, 1] before quantising; `minmax_scale` does that.
Mu-law compands before quantising (fine steps near zero where audio lives); linear does not.
The decoder must match the encoder a checkpoint was trained with: see `dequantize`.
"""
from __future__ import annotations

import math

import torch

METHODS = ("mu-law", "linear")


def minmax_scale(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale the last dimension to [-1, 1]; a constant signal maps to 0."""
    lo = x.amin(dim=-1, keepdim=True)
    hi = x.amax(dim=-1, keepdim=True)
    span = (hi - lo).clamp_min(eps)
    return torch.where(hi - lo > eps, 2 * (x - lo) / span - 1, torch.zeros_like(x))


def mu_law_encode(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """[-1, 1] float -> integer classes in [0, 2**bits)."""
    q = 2**bits
    mu = q - 1
    x = x.clamp(-1, 1)
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return ((y + 1) / 2 * mu + 0.5).floor().long().clamp(0, mu)


def mu_law_decode(c: torch.Tensor, bits: int = 8) -> torch.Tensor:
    mu = 2**bits - 1
    y = 2 * c.to(torch.float32) / mu - 1
    return torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu


def linear_encode(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    mu = 2**bits - 1
    return ((x.clamp(-1, 1) + 1) / 2 * mu + 0.5).floor().long().clamp(0, mu)


def linear_decode(c: torch.Tensor, bits: int = 8) -> torch.Tensor:
    mu = 2**bits - 1
    return 2 * c.to(torch.float32) / mu - 1


_CODECS = {"mu-law": (mu_law_encode, mu_law_decode), "linear": (linear_encode, linear_decode)}


def _codec(method: str):
    if method not in _CODECS:
        raise ValueError(f"unknown quantisation {method!r}; expected one of {METHODS}")
    return _CODECS[method]


def quantize(x: torch.Tensor, method: str, bits: int = 8) -> torch.Tensor:
    return _codec(method)[0](x, bits)


def dequantize(c: torch.Tensor, method: str, bits: int = 8) -> torch.Tensor:
    return _codec(method)[1](c, bits)


def zero_class(bits: int = 8) -> int:
    """The class of silence (128 for 8 bits) under both methods; the first input token."""
    return 2 ** (bits - 1)
