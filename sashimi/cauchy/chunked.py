"""Memory-bounded conjugate-paired Cauchy kernel.

A pair of conjugate poles shares one real-coefficient denominator:
    v/(z-w) + v̄/(z-w̄) = (2Re(v)·z - 2Re(v·w̄)) / (z² - 2Re(w)·z + |w|²),
so per block of z we form 1/den once (N·chunk) and get all M numerators with two real
matmuls. Autograd through the loop would keep every block's (N, chunk) intermediate, so
the backward recomputes one block at a time under autograd instead (activation
recomputation): memory stays bounded for L = 64000 and beyond.
"""
from __future__ import annotations

import torch

# Complex elements of one block's (batch, N, chunk) denominator kept live at once.
BLOCK_ELEMENTS = 1 << 22


def _chunk_size(batch_n: int, K: int) -> int:
    return max(1, min(K, BLOCK_ELEMENTS // max(1, batch_n)))


def _block(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """a = 2Re(v), b = 2Re(v·w̄) (..., M, N) real; w (..., N); z (chunk,)."""
    w = w.unsqueeze(-1)
    # The factored denominator keeps full relative precision when z ≈ i·Im(w); the expanded
    # z² - 2Re(w)z + |w|² cancels catastrophically there (|Im w| ~ 100 loses 3 digits).
    inv = 1 / ((z - w) * (z - w.conj()))  # (..., N, chunk)
    inv_r = torch.view_as_real(inv).flatten(-2)  # (..., N, 2·chunk) real
    za = torch.view_as_complex((a @ inv_r).unflatten(-1, (-1, 2)).contiguous())  # (..., M, chunk)
    zb = torch.view_as_complex((b @ inv_r).unflatten(-1, (-1, 2)).contiguous())
    return z * za - zb


def _split(v: torch.Tensor, w: torch.Tensor):
    a = 2 * v.real
    b = 2 * (v * w.conj().unsqueeze(-2)).real
    return a, b, w


class _CauchyChunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, z, w):
        ctx.save_for_backward(v, z, w)
        with torch.no_grad():
            a, b, wb = _split(v, w)
            K = z.shape[-1]
            out = torch.empty(a.shape[:-1] + (K,), dtype=v.dtype, device=v.device)
            step = _chunk_size(w.numel(), K)
            for s in range(0, K, step):
                out[..., s:s + step] = _block(a, b, wb, z[s:s + step])
        return out

    @staticmethod
    def backward(ctx, g):
        v, z, w = ctx.saved_tensors
        K = z.shape[-1]
        step = _chunk_size(w.numel(), K)
        gv, gw = torch.zeros_like(v), torch.zeros_like(w)
        with torch.enable_grad():
            vd, wd = v.detach().requires_grad_(), w.detach().requires_grad_()
            parts = _split(vd, wd)
            acc = [torch.zeros_like(p) for p in parts]
            for s in range(0, K, step):
                dps = [p.detach().requires_grad_() for p in parts]
                out = _block(*dps, z[s:s + step])
                grads = torch.autograd.grad(out, dps, g[..., s:s + step])
                for buf, gr in zip(acc, grads):
                    buf += gr
            gv, gw = torch.autograd.grad(parts, (vd, wd), acc)
        return gv, None, gw


def cauchy_chunked(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return _CauchyChunked.apply(v, z, w)
