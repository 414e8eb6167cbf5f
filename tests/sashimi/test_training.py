"""Training really works: a periodic 8-bit signal is learned far below 8 bits."""
import torch

from sashimi import SaShiMi, SaShiMiConfig
from sashimi.metrics import nll_bits, shift_inputs
from sashimi.optim import make_optimizer
from sashimi.quantize import quantize


def test_learns_periodic_signal():
    torch.set_num_threads(2)
    t = torch.arange(2048 + 512)
    wave = 0.8 * torch.sin(2 * torch.pi * t / 32) + 0.2 * torch.sin(2 * torch.pi * t / 8)
    tokens = quantize(wave, "mu-law")
    model = SaShiMi(SaShiMiConfig(d_model=32, n_layers=1, d_state=16, l_max=512, pool=(4,)))
    opt = make_optimizer(model, lr=1e-2, ssm_lr=1e-3)
    for step in range(60):
        starts = torch.randint(0, 2048, (8,))
        batch = torch.stack([tokens[s:s + 512] for s in starts])
        loss = nll_bits(model(shift_inputs(batch, 128)), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        held_out = tokens[None, 2048:2048 + 512]
        final = nll_bits(model(shift_inputs(held_out, 128)), held_out).item()
    assert final < 1.5, final  # uniform guessing is 8 bits
