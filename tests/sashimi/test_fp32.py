"""The SSM kernels' matmuls run in full float32 even when the process enabled TF32 (training.tf32 does, for
the linear layers): on an H200 a TF32 chunked Cauchy kernel was 4e-4 from float64 (sashimi/fp32.py). The
flags change nothing on a CPU, so these tests watch the flags each matmul runs under instead."""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from sashimi import fp32
from sashimi.cauchy import cauchy
from sashimi.vandermonde import vandermonde


class MatmulFlags(TorchFunctionMode):
    """Records (allow_tf32, float32 matmul precision) at every matmul call."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.matmul):
            self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def tf32_on():
    old = torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.set_float32_matmul_precision(old[1])
    torch.backends.cuda.matmul.allow_tf32 = old[0]


def _check(run):
    with MatmulFlags() as mode:
        run()
    assert mode.seen, "no matmul observed: the test watches nothing"
    assert set(mode.seen) == {(False, "highest")}, mode.seen
    assert (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()) == (True, "high")


def test_chunked_cauchy_forward_and_backward_matmuls_ignore_tf32(tf32_on):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 4, 8, dtype=torch.complex64, generator=g).requires_grad_()
    w = torch.complex(-torch.rand(3, 8, generator=g), 50 * torch.randn(3, 8, generator=g)).requires_grad_()
    z = torch.randn(64, dtype=torch.complex64, generator=g)
    _check(lambda: cauchy(v, z, w, "chunked").abs().sum().backward())
    assert v.grad is not None and w.grad is not None


def test_vandermonde_forward_and_backward_matmuls_ignore_tf32(tf32_on):
    g = torch.Generator().manual_seed(0)
    c = torch.randn(2, 8, dtype=torch.complex128, generator=g).requires_grad_()
    x = torch.complex(-torch.rand(2, 8, dtype=torch.float64, generator=g),
                      torch.randn(2, 8, dtype=torch.float64, generator=g)).requires_grad_()
    _check(lambda: vandermonde(c, x, 300).square().sum().backward())
    assert c.grad is not None and x.grad is not None


def test_fp32_matmul_gradients_equal_autograd():
    """The hand-written backward of fp32.matmul against autograd's, real and complex (float64: exact up
    to rounding, 1e-12)."""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float64, torch.complex128):
        a = torch.randn(2, 3, 5, dtype=dtype, generator=g, requires_grad=True)
        b = torch.randn(2, 5, 4, dtype=dtype, generator=g, requires_grad=True)
        gout = torch.randn(2, 3, 4, dtype=dtype, generator=g)
        ours = torch.autograd.grad((fp32.matmul(a, b) * gout.conj()).real.sum(), (a, b))
        ref = torch.autograd.grad(((a @ b) * gout.conj()).real.sum(), (a, b))
        for o, r in zip(ours, ref):
            torch.testing.assert_close(o, r, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="batch dimensions differ"):
        fp32.matmul(torch.zeros(2, 3, 4), torch.zeros(4, 5))
