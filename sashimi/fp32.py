"""True float32 matmuls for the SSM kernels, whatever the process's TF32 setting.

`training.tf32` (on by default) lets cuBLAS round float32 matmul inputs to TF32 (a 10-bit mantissa):
right for the linear layers, wrong for the S4 kernels, which sum many poles and feed a long convolution.
It is a process-wide flag, so the kernels' own matmuls (the chunked Cauchy kernel's, forward and
backward, and the blocked Vandermonde product of S4D) turn it off around themselves and restore it.
Measured on an H200 (bench/gpu.sh, 2026-12-04): with TF32 left on, the chunked Cauchy kernel was
4e-4 relative from float64 and conv and step mode of a small SaShiMi disagreed by 1e-3; the same
tests pass at 1e-5 / 1e-4 with TF32 off. On a CPU the flags change nothing.
"""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def no_tf32():
    """float32 matmuls in full precision inside the block; the caller's settings restored after."""
    old_flag, old_precision = torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
    if not old_flag and old_precision == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")  # also clears allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old_precision)
        torch.backends.cuda.matmul.allow_tf32 = old_flag


class _Matmul(torch.autograd.Function):
    """a @ b with the forward and both backward products under ``no_tf32`` (autograd's own backward
    would run after the forward's block has restored TF32). a (..., m, k), b (..., k, n), equal batch dims."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        with no_tf32():
            return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ga = gb = None
        with no_tf32():
            if ctx.needs_input_grad[0]:
                ga = g @ b.transpose(-1, -2).conj()
            if ctx.needs_input_grad[1]:
                gb = a.transpose(-1, -2).conj() @ g
        return ga, gb


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in full float32 (see the module docstring); batch dimensions must match exactly."""
    if a.shape[:-2] != b.shape[:-2]:
        raise ValueError(f"batch dimensions differ: {tuple(a.shape)} @ {tuple(b.shape)}")
    return _Matmul.apply(a, b)
