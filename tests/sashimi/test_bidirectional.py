"""Bidirectional S4 (the non-causal SaShiMi's layer) against brute-force two-sided convolutions."""
import pytest
import torch

from sashimi import S4, SaShiMi, SaShiMiConfig
from sashimi.s4 import causal_conv
from test_kernels import brute_kernel


def two_sided_direct(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """u (B, L, H), k (2H, L): [Σ_{l<=t} k[h]_l u_{t-l}, Σ_{m<L-t} k[H+h]_m u_{t+m}] by direct sums."""
    B, L, H = u.shape
    fwd = torch.stack([sum(k[:H, l] * u[:, t - l] for l in range(t + 1)) for t in range(L)], 1)
    bwd = torch.stack([sum(k[H:, m] * u[:, t + m] for m in range(L - t)) for t in range(L)], 1)
    return torch.cat([fwd, bwd], -1)


def test_two_sided_fft_conv_matches_direct_sums_and_gradients():
    """The FFT convolution's two-sided mode and its hand-written backward against float64 sums."""
    u = torch.randn(2, 37, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(6, 37, dtype=torch.float64, requires_grad=True)
    direct = two_sided_direct(u, k)
    g = torch.randn_like(direct)
    gu, gk = torch.autograd.grad(direct, (u, k), g)
    u32, k32 = u.detach().float().requires_grad_(), k.detach().float().requires_grad_()
    out = causal_conv(u32, k32, two_sided=True)
    # float32 FFTs of length ~80 on O(1) data summing 37 terms: 1e-5 absolute (as the causal test)
    assert (out.double() - direct).abs().max() < 1e-5
    fu, fk = torch.autograd.grad(out, (u32, k32), g.float())
    assert (fu.double() - gu).abs().max() < 1e-5 and (fk.double() - gk).abs().max() < 1e-5


@pytest.mark.parametrize("kernel", ["dplr", "s4d"])
def test_bidirectional_s4_equals_brute_force_two_sided_convolution(kernel):
    """The layer's linear part: channel h forward = causal conv with K_h + D_h u, backward =
    Σ_m K'_h[m] u_{t+m} + D_h u (K' the second kernel), kernels from the float64 dense system."""
    H, N, L = 3, 8, 40
    layer = S4(H, d_state=N, l_max=L, kernel=kernel, bidirectional=True)
    dA, dB, C = layer.kernel.dense_system()
    k = brute_kernel(dA, dB, C, L)  # (2H, L) float64
    assert k.shape == (2 * H, L)
    u = torch.randn(2, L, H, dtype=torch.float64)
    D = layer.D.detach().double()
    ref = two_sided_direct(u, k) + torch.cat([D, D]) * u.repeat(1, 1, 2)
    with torch.no_grad():
        ours = layer.ssm(u.float())
    # complex64 kernels (2e-6 of max |K|, test_kernels) and float32 FFTs over 40 terms: 1e-4 of the scale
    assert (ours.double() - ref).abs().max() < 1e-4 * ref.abs().max()
    # and the projection mixes the 2H channels back to H
    with torch.no_grad():
        out = layer(u.float())
    assert out.shape == (2, L, H)
    expected = layer.out(torch.nn.functional.gelu(ref.float()))
    expected = torch.nn.functional.glu(expected, -1) if layer.glu else expected
    assert (out - expected).abs().max() < 1e-4


def test_bidirectional_layer_reads_both_ways_and_has_no_step():
    layer = S4(4, d_state=8, l_max=64, bidirectional=True).eval()
    u = torch.randn(1, 64, 4)
    v = u.clone()
    v[:, 40] += 5.0
    with torch.no_grad():
        d = (layer(u) - layer(v)).abs().amax(-1)[0]
    assert d[:40].max() > 1e-3 and d[41:].max() > 1e-3  # the past and the future both see it
    with pytest.raises(ValueError, match="no recurrent step"):
        layer.step_setup()


def test_autoregressive_sashimi_refuses_bidirectional_layers():
    with pytest.raises(ValueError, match="bidirectional.*must be causal"):
        SaShiMi(SaShiMiConfig(d_model=8, n_layers=1, d_state=8, l_max=64, bidirectional=True))
