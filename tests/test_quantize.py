import math

import torch

from sashimi.metrics import nll_bits, nll_bits_sum, shift_inputs
from sashimi.quantize import dequantize, minmax_scale, quantize, zero_class


def test_round_trips():
    codes = torch.arange(256)
    for method in ("mu-law", "linear"):
        assert torch.equal(quantize(dequantize(codes, method), method), codes)
        x = torch.linspace(-1, 1, 10001)
        err = (dequantize(quantize(x, method), method) - x).abs()
        bound = 1 / 255 + 1e-6 if method == "linear" else 0.05  # half a step; mu-law's widest step is near ±1
        assert err.max() <= bound
    assert quantize(torch.zeros(1), "mu-law").item() == zero_class() == quantize(torch.zeros(1), "linear").item()
    # mu-law spends its resolution near zero: small signals are finer than linear
    small = torch.linspace(-0.01, 0.01, 101)
    assert quantize(small, "mu-law").unique().numel() > 4 * quantize(small, "linear").unique().numel()


def test_minmax_scale():
    x = torch.tensor([[2.0, 4.0, 3.0], [5.0, 5.0, 5.0]])
    y = minmax_scale(x)
    assert torch.allclose(y[0], torch.tensor([-1.0, 1.0, 0.0])) and torch.equal(y[1], torch.zeros(3))


def test_nll_bits():
    logits = torch.zeros(2, 5, 256)
    targets = torch.randint(0, 256, (2, 5))
    assert math.isclose(nll_bits(logits, targets).item(), 8.0, rel_tol=1e-6)  # uniform = 8 bits
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[:, :2] = True
    logits[..., 7] = 100.0
    targets[:, :2] = 7
    assert nll_bits(logits, targets, mask).item() < 1e-6  # padding never counts
    total, count = nll_bits_sum(logits, targets, mask)
    assert count == 4 and total < 1e-5
    assert torch.equal(shift_inputs(torch.tensor([[5, 6, 7]])), torch.tensor([[128, 5, 6]]))


def test_unknown_method_is_named():
    import pytest

    with pytest.raises(ValueError, match="'ulaw'"):
        quantize(torch.zeros(2), "ulaw")
