"""Memory-bounded Vandermonde product: the kernel of a diagonal SSM (S4D).

    K[..., l] = 2 Re Σ_n c[..., n] · exp(x[..., n] · l),   0 <= l < L

(the factor 2 and the real part add the implied conjugate half of the state). Materialising
exp(x·l) costs O(batch·N·L) memory (2 GB per layer at H = 64, N = 64, L = 128000) and autograd
keeps it for backward. Splitting l = q·T + j with T ≈ √L and Q = ⌈L/T⌉ factors it:

    exp(x·l) = exp(x·qT) · exp(x·j)   =>   K[q, j] = 2 Re Σ_n (c_n exp(x_n qT)) · exp(x_n j),

one batched real matmul (..., Q, 2N) @ (..., 2N, T) with [2Re a, -2Im a] and [Re e; Im e].
Memory is O(batch·N·√L) for the two factors plus the (batch, L) output, and autograd's backward
is two matmuls of the same shape that need only those factors (no hand-written backward).

Precision: the factors are formed from the exponent in float64 and rounded once to the matmul
dtype, so the phase x·l is exact even at l ~ 1e5 (in float32 it drifts by ~l·|x|·6e-8, the old
S4D kernel's dominant error at long L); only the O(N·L) product runs in float32. The matmul is
run with autocast disabled (a bf16 kernel would lose ~3 digits) and with TF32 off whatever the
process's setting (``sashimi.fp32``: training.tf32 is for the linear layers, not the kernels).
"""
from __future__ import annotations

import math

import torch

from . import fp32

# Block lengths are rounded up to a multiple of this: measured on this CPU (H = 64, N = 64),
# T ≈ √L rounded to 16 was within 10 % of the best T at L = 1024 ... 128000.
_ALIGN = 16


def block_length(L: int) -> int:
    """T ≈ √L (multiple of 16): balances the (Q, N) and (N, T) factors, Q·T - L < T wasted."""
    return -(-(math.isqrt(max(L, 1) - 1) + 1) // _ALIGN) * _ALIGN


def vandermonde(c: torch.Tensor, x: torch.Tensor, L: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """K (..., L) = 2 Re Σ_n c_n exp(x_n l) for c, x (..., N) complex; differentiable in c and x.

    ``dtype`` is the real dtype of the matmul and of the result (float32 for training; float64
    for exactness checks). Pass c and x in complex128 for the precision described above: the
    factors are computed in the inputs' precision before they are rounded to ``dtype``.
    """
    if not (c.is_complex() and x.is_complex()):
        raise TypeError(f"c and x must be complex, got {c.dtype} and {x.dtype}")
    if L < 1:
        raise ValueError(f"L must be >= 1, got {L}")
    c, x = torch.broadcast_tensors(c, x)
    T = block_length(L)
    Q = -(-L // T)
    real = x.real.dtype
    j = torch.arange(T, dtype=real, device=x.device)
    qT = torch.arange(Q, dtype=real, device=x.device) * T
    with torch.autocast(x.device.type, enabled=False):
        e = torch.exp(x.unsqueeze(-1) * j)  # (..., N, T)
        a = c.unsqueeze(-1) * torch.exp(x.unsqueeze(-1) * qT)  # (..., N, Q)
        left = torch.cat([2 * a.real, -2 * a.imag], dim=-2).transpose(-1, -2).to(dtype)  # (..., Q, 2N)
        right = torch.cat([e.real, e.imag], dim=-2).to(dtype)  # (..., 2N, T)
        return fp32.matmul(left, right).flatten(-2)[..., :L]
