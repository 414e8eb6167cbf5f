"""The S4 layer: conv mode == step mode, causality, length independence, exact restore."""
import io

import pytest
import torch

from sashimi import S4
from sashimi.generate import torch_threads
from sashimi.s4 import stack_step_constants, state_terms, state_update

# float32 conv (FFT) vs float32 recurrence over thousands of steps: differences come from FFT
# rounding (~1e-7 relative per output) and accumulate mildly; 2e-5 absolute on O(1) outputs.
STEP_TOL = 2e-5


@pytest.mark.parametrize("kernel", ["dplr", "s4d"])
def test_conv_equals_step_4096(kernel):
    layer = S4(8, d_state=16, l_max=4096, kernel=kernel).eval()
    u = torch.randn(2, 4096, 8)
    with torch.no_grad(), torch_threads(1):  # tiny per-step ops: one thread avoids OpenMP barriers
        y = layer(u)
        consts, x, ys = layer.step_setup(), layer.default_state(2), []
        for t in range(u.shape[1]):
            yt, x = layer.step(u[:, t], x, consts)
            ys.append(yt)
    assert (torch.stack(ys, 1) - y).abs().max() < STEP_TOL


@pytest.mark.parametrize("kernel", ["dplr", "s4d"])
def test_stacked_layers_step_as_each_layer_alone(kernel):
    """A tier runs the state-only terms of all its S4 layers as one stacked op (tier_step): slice j
    of it must be layer j's own step. Same elementwise ops on each slice, so 1e-6 (float32)."""
    layers = [S4(8, d_state=16, l_max=64, kernel=kernel).eval() for _ in range(3)]
    consts = [layer.step_setup() for layer in layers]
    x = [torch.randn(2, 8, 2, 8) for _ in layers]
    u = [torch.randn(2, 8) for _ in layers]
    with torch.no_grad():
        c = stack_step_constants(consts)
        pre, base = state_terms(torch.stack(x), c)
        new = state_update(pre, c["dB"], torch.stack(u))
        for j, layer in enumerate(layers):
            y_j, x_j = layer.step(u[j], x[j], consts[j])
            assert (layer.readout(u[j], base[j], c["cu"][j]) - y_j).abs().max() < 1e-6
            assert (new[j] - x_j).abs().max() < 1e-6
    with pytest.raises(ValueError, match="must all be DPLR or all diagonal"):
        stack_step_constants([consts[0], {**consts[1], "dplr": not consts[1]["dplr"]}])


@pytest.mark.parametrize("kernel", ["dplr", "s4d"])
def test_causal(kernel):
    layer = S4(4, d_state=8, l_max=256, kernel=kernel)
    u = torch.randn(1, 256, 4)
    k = 100
    v = u.clone()
    v[:, k:] += torch.randn_like(v[:, k:]) * 10
    y1, y2 = layer(u), layer(v)
    assert torch.equal(y1[:, :k], y2[:, :k]) or (y1[:, :k] - y2[:, :k]).abs().max() < 1e-6
    assert (y1[:, k:] - y2[:, k:]).abs().max() > 1e-2  # and the perturbation does reach later outputs


@pytest.mark.parametrize("kernel", ["dplr", "s4d"])
def test_length_independent(kernel):
    """A layer configured for l_max = 512 runs at 100, 512 and 1500 consistently."""
    layer = S4(4, d_state=8, l_max=512, kernel=kernel)
    u = torch.randn(1, 1500, 4)
    with torch.no_grad():
        full = layer(u)
        for L in (100, 512):
            assert (layer(u[:, :L]) - full[:, :L]).abs().max() < 1e-5


def test_checkpoint_restores_exactly():
    layer = S4(4, d_state=8, l_max=128)
    u = torch.randn(1, 300, 4)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    fresh = S4(4, d_state=8, l_max=128)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        assert torch.equal(layer(u), fresh(u))
        assert torch.equal(layer(u[:, :50]), fresh(u[:, :50]))


def test_fft_conv_matches_direct_convolution_and_gradients():
    """The FFT convolution and its hand-written backward against a float64 direct sum."""
    from sashimi.s4 import causal_conv

    u = torch.randn(2, 37, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 37, dtype=torch.float64, requires_grad=True)
    direct = torch.stack([sum(k[:, l] * u[:, t - l] for l in range(t + 1)) for t in range(37)], 1)
    g = torch.randn_like(direct)
    gu, gk = torch.autograd.grad(direct, (u, k), g)
    u32, k32 = u.detach().float().requires_grad_(), k.detach().float().requires_grad_()
    out = causal_conv(u32, k32)
    assert (out.double() - direct).abs().max() < 1e-5
    fu, fk = torch.autograd.grad(out, (u32, k32), g.float())
    assert (fu.double() - gu).abs().max() < 1e-5 and (fk.double() - gk).abs().max() < 1e-5
