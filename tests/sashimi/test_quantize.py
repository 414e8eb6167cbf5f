import math

import pytest
import torch

from sashimi.metrics import nll_bits, nll_bits_sum, nll_bits_sums, shift_inputs
from sashimi.quantize import METHODS, dequantize, minmax_scale, mu_law_expand, quantize, zero_class


# The paper's bins (state-spaces/s4 audio.py): u = (y + 1) / 2, level = floor(u * 255.99 + 0.005), so level q
# starts at y_q = 2 (q - 0.005) / 255.99 - 1 and decodes to q / 128 - 1 (before mu-law expansion).
def _edge(q: int) -> float:
    return 2 * (q - 0.005) / 255.99 - 1


def test_paper_bins_hand_computed_points():
    assert _edge(1) == pytest.approx(-0.99222626, abs=1e-8)  # 1.99 / 255.99 - 1, by hand
    assert _edge(128) == 0.0 and _edge(255) == pytest.approx(0.99222626, abs=1e-8)  # bins symmetric about 0
    lin = lambda v: quantize(torch.tensor(v, dtype=torch.float64), "linear").tolist()
    assert lin([-1.0, 0.0, 1.0, -0.5, 0.5]) == [0, 128, 255, 64, 191]  # 0.25*255.99+.005 = 64.0025; .75*.. = 191.9975
    for q in (1, 2, 64, 127, 128, 129, 200, 255):  # 1e-9 either side of an edge: float64 resolves it
        assert lin([_edge(q) - 1e-9, _edge(q) + 1e-9]) == [q - 1, q], q
    mu = lambda v: quantize(torch.tensor(v, dtype=torch.float64), "mu-law").tolist()
    assert mu([-1.0, 0.0, 1.0]) == [0, 128, 255]
    for q in (1, 100, 128, 129, 255):  # the same edges in the companded domain
        x = mu_law_expand(torch.tensor([_edge(q) - 1e-9, _edge(q) + 1e-9], dtype=torch.float64))
        assert quantize(x, "mu-law").tolist() == [q - 1, q], q
    # decode: q / 128 - 1 (linear), then mu-law expansion: sign(y) ((1 + 255)^|y| - 1) / 255
    c = torch.tensor([0, 64, 128, 192, 255])
    assert dequantize(c, "linear").tolist() == [-1.0, -0.5, 0.0, 0.5, 0.9921875]
    assert dequantize(c, "mu-law")[[0, 2]].tolist() == [-1.0, 0.0]
    assert dequantize(c, "mu-law")[4].item() == pytest.approx((256 ** (127 / 128) - 1) / 255, rel=1e-6)  # 0.957437
    assert dequantize(c, "mu-law")[1].item() == pytest.approx(-(16 - 1) / 255, rel=1e-6)  # y=-0.5: -(256^.5-1)/255
    for dtype in (torch.float32, torch.float64):  # silence is the first input token in either precision
        for method in METHODS:
            assert quantize(torch.zeros(3, dtype=dtype), method).tolist() == [zero_class()] * 3 == [128] * 3


def test_paper_bins_are_equal_width():
    # 256 equal bins (the end ones 0.995 of a bin): a dense uniform grid fills every level almost equally.
    # The old scheme (255 interior bins, half-width end bins) gives min/max = 0.5 and fails this.
    counts = torch.bincount(quantize(torch.linspace(-1, 1, 2**20 + 1, dtype=torch.float64), "linear"), minlength=256)
    assert counts.min() / counts.max() > 0.99


def test_round_trips():
    codes = torch.arange(256)
    x = torch.linspace(-1, 1, 200001, dtype=torch.float64)
    for method in METHODS:
        # q / 128 - 1 sits inside bin q for q <= 128 and 3e-7 (q - 128) below bin q's lower edge above that
        expect = torch.where(codes > 128, codes - 1, codes)
        assert torch.equal(quantize(dequantize(codes, method), method), expect), method
    # Linear: the decoder returns (about) the bin's lower edge, so x - decode(encode(x)) lies in [0, one bin]:
    # one bin is 2/255.99 = 0.0078128, plus the decoder's drift of 3.05e-7 per level (<= 7.8e-5 at q = 255);
    # below zero by at most 0.01/255.99 = 3.9e-5 (q < 128 decodes slightly above its edge).
    err = x - dequantize(quantize(x, "linear"), "linear").double()
    assert -4e-5 <= err.min() and err.max() < 0.0079
    assert err.max() > 0.0077  # a bin-centre decoder (max err ~0.0039) would be a different convention
    # Mu-law: the same bounds in the companded domain times the expansion's slope, ln(256) 256^|y| / 255:
    # 5.57 at |y| = 1 -> [-2.2e-4, 0.044]; at |x| <= 0.01 (|y| <= 0.23) the slope is <= 0.078 -> 6.1e-4.
    err = x - dequantize(quantize(x, "mu-law"), "mu-law").double()
    assert -2.5e-4 <= err.min() and err.max() <= 0.044
    small = x.abs() <= 0.01
    assert err[small].abs().max() <= 6.5e-4  # mu-law spends its resolution near zero; linear's error is 0.0078 here
    small_x = torch.linspace(-0.01, 0.01, 101)
    assert quantize(small_x, "mu-law").unique().numel() > 4 * quantize(small_x, "linear").unique().numel()


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
    sums = nll_bits_sums(logits, targets, mask)  # the device-side form validation accumulates
    assert sums.dtype == torch.float64 and sums.tolist() == [total, count]
    uniform = nll_bits_sums(torch.zeros(2, 5, 256), targets)  # no mask: every position, 8 bits each
    # per-position cross-entropy is float32 (log 256 to ~1e-7 relative), summed in float64
    assert uniform[1].item() == 10 and math.isclose(uniform[0].item(), 80.0, rel_tol=1e-6)
    assert torch.equal(shift_inputs(torch.tensor([[5, 6, 7]])), torch.tensor([[128, 5, 6]]))


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="'ulaw'"):
        quantize(torch.zeros(2), "ulaw")
