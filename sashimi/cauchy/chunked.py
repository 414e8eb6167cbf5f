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

from ..fp32 import no_tf32

# Complex elements of one block's (batch, N, chunk) temporaries.
BLOCK_ELEMENTS = 1 << 17  # ~1 MB per complex64 temporary: stays in cache (3.5x faster than 32 MB blocks)


# On a GPU, launches cost more than memory traffic: big blocks (128 MB temporaries).
BLOCK_ELEMENTS_CUDA = 1 << 24


def _chunk_size(batch_n: int, K: int, device: torch.device | None = None) -> int:
    budget = BLOCK_ELEMENTS_CUDA if device is not None and device.type == "cuda" else BLOCK_ELEMENTS
    return max(1, min(K, budget // max(1, batch_n)))


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
        with torch.no_grad(), no_tf32():  # its matmuls in full float32 even under training.tf32
            a, b, wb = _split(v, w)
            K = z.shape[-1]
            out = torch.empty(a.shape[:-1] + (K,), dtype=v.dtype, device=v.device)
            step = _chunk_size(w.numel(), K, v.device)
            for s in range(0, K, step):
                out[..., s:s + step] = _block(a, b, wb, z[s:s + step])
        return out

    @staticmethod
    def backward(ctx, g):
        """Analytic gradients, block by block (PyTorch's convention for complex inputs):
            grad_v = Σ_k g·conj(a) + conj(g)·b,   a = 1/(z - w), b = 1/(z - w̄)
            grad_w = conj(v) ⊙ Σ_k [g·conj(a)² + conj(g)·b²]
        Each sum over k is a (M × chunk)·(chunk × N) matmul; nothing of size N·K is kept."""
        v, z, w = ctx.saved_tensors
        K = z.shape[-1]
        step = _chunk_size(w.numel(), K, v.device)
        need_v, _, need_w = ctx.needs_input_grad
        batch = torch.broadcast_shapes(v.shape[:-2], w.shape[:-1])
        M, N = v.shape[-2], v.shape[-1]
        sv = torch.zeros(batch + (M, N), dtype=v.dtype, device=v.device)
        sw = torch.zeros_like(sv) if need_w else None
        wk = w.unsqueeze(-2)  # (..., 1, N)
        wkc = wk.conj().resolve_conj()
        zcol, zccol = z.unsqueeze(-1), z.conj().resolve_conj().unsqueeze(-1)  # (K, 1)
        g = g.resolve_conj()
        gconj = g.conj().resolve_conj()  # materialised once, not per block inside matmul
        with no_tf32():
            for s in range(0, K, step):
                ac = 1 / (zccol[s:s + step] - wkc)  # conj(a): (..., chunk, N)
                b = 1 / (zcol[s:s + step] - wkc)
                gc, gcc = g[..., s:s + step], gconj[..., s:s + step]  # (..., M, chunk)
                sv += gc @ ac + gcc @ b
                if need_w:
                    sw += gc @ (ac * ac) + gcc @ (b * b)
        gv = _sum_to(sv, v.shape) if need_v else None
        gw = _sum_to((v.conj() * sw).sum(-2), w.shape) if need_w else None
        return gv, None, gw


def _sum_to(t: torch.Tensor, shape) -> torch.Tensor:
    """Undo broadcasting: sum the gradient down to an input's shape."""
    while t.dim() > len(shape):
        t = t.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and t.shape[i] != 1:
            t = t.sum(i, keepdim=True)
    return t


def cauchy_chunked(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return _CauchyChunked.apply(v, z, w)
