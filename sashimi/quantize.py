"""8-bit quantisation of waveforms in [-1, 1] to class indices and back, with the paper's bins.

The paper's code (state-spaces/s4, `src/dataloaders/audio.py`) min-max scales each clip to [-1, 1]
(`minmax_scale`), optionally mu-law compands it (µ = 2**bits - 1), maps y to u = (y + 1) / 2 in [0, 1]
and takes level `floor(u·(2**bits − 0.01) + 0.005)`: 2**bits equal bins, the first and last only 0.005/2**bits
narrower. Level q decodes to `q / 2**(bits-1) − 1` (then mu-law expansion): the lower edge of its bin, so
+1 decodes to 1 − 2**(1-bits) and encode(decode(q)) is q − 1 (not q) for q above the middle. We use the
same bins so NLL in bits is comparable with the paper's tables. The decoder must match the encoder a
checkpoint was trained with: see `dequantize`.
"""
from __future__ import annotations

import math

import torch

METHODS = ("mu-law", "linear")
EPSILON = 0.01  # the paper's `quantize(samples, bits, epsilon=0.01)`


def minmax_scale(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale the last dimension to [-1, 1]; a constant signal maps to 0."""
    lo = x.amin(dim=-1, keepdim=True)
    hi = x.amax(dim=-1, keepdim=True)
    span = (hi - lo).clamp_min(eps)
    return torch.where(hi - lo > eps, 2 * (x - lo) / span - 1, torch.zeros_like(x))


def _to_level(y: torch.Tensor, bits: int) -> torch.Tensor:
    """y in [-1, 1] -> level in [0, 2**bits): the paper's equal bins."""
    q = 2**bits
    u = (y.clamp(-1, 1) + 1) / 2
    return (u * (q - EPSILON) + EPSILON / 2).floor().long().clamp(0, q - 1)


def _from_level(c: torch.Tensor, bits: int) -> torch.Tensor:
    """Level -> y = q / 2**(bits-1) - 1 in [-1, 1): the paper's decoder (before mu-law expansion)."""
    return c.to(torch.float32) / 2 ** (bits - 1) - 1


def mu_law_compress(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    mu = 2**bits - 1
    x = x.clamp(-1, 1)
    return torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)


def mu_law_expand(y: torch.Tensor, bits: int = 8) -> torch.Tensor:
    mu = 2**bits - 1
    return torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu


def mu_law_encode(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """[-1, 1] float -> integer classes in [0, 2**bits), mu-law companded first."""
    return _to_level(mu_law_compress(x, bits), bits)


def mu_law_decode(c: torch.Tensor, bits: int = 8) -> torch.Tensor:
    return mu_law_expand(_from_level(c, bits), bits)


def linear_encode(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    return _to_level(x, bits)


def linear_decode(c: torch.Tensor, bits: int = 8) -> torch.Tensor:
    return _from_level(c, bits)


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
    """The class of silence (128 for 8 bits) under both methods; the first input token.

    0.0 -> u = 0.5 -> floor(0.5·255.99 + 0.005) = 128, and 128 decodes to exactly 0.0.
    """
    return 2 ** (bits - 1)
