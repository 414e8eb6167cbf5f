"""The U-Net wiring is the paper's (state-spaces/s4 models/sashimi/sashimi.py), in conv and step mode.

Two independent checks: (1) with every residual branch zeroed, each tier's output is a known
multiple of its inputs, which a missing or extra skip changes; (2) a transcription of the paper's
forward loop (one flat list of layers and one stack of stored activations) over our modules
gives our logits with random weights, which also pins down the order in which skips are popped.
"""
import pytest
import torch
from torch import nn

from sashimi import SaShiMi, SaShiMiConfig
from sashimi.blocks import FFBlock, S4Block, UpPool
from sashimi.optim import SSM_ATTR

TOKENS = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(1))


def _model(unet: bool, ff: int = 2) -> SaShiMi:
    cfg = SaShiMiConfig(d_model=8, n_layers=2, d_state=8, l_max=64, pool=(2, 4), ff=ff, unet=unet)
    return SaShiMi(cfg).eval()


def _step_logits(model, tokens):
    with torch.no_grad():
        state, out = model.default_state(tokens.shape[0]), []
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            out.append(logits)
    return torch.stack(out, 1)


def _zero_branches(model):
    """Every residual block becomes the identity: S4 output projection and FF second layer zero."""
    with torch.no_grad():
        for m in model.modules():
            lin = m.s4.out if isinstance(m, S4Block) else m.fc2 if isinstance(m, FFBlock) else None
            if lin is not None:
                lin.weight.zero_()
                lin.bias.zero_()
    model.norm = nn.Identity()  # LayerNorm is scale-invariant and would hide a factor of 2 at the top


@pytest.mark.parametrize("unet", [False, True])
@pytest.mark.parametrize("ff", [2, 0])
def test_zeroed_blocks_leave_the_skips(unet, ff):
    """unet: false — centre 2x, each up tier 2·(UpPool(x) + s). unet: true — each up tier
    UpPool(x) + (layers + 1)·s (its input and every identity layer's output are stored and added
    back), centre 2x. The old wiring (no tier residual / one skip per tier) gives factors of 1."""
    model = _model(unet, ff)
    _zero_branches(model)
    n_layers = len(model.up_blocks[0])  # S4 + FF blocks per tier
    with torch.no_grad():
        d0 = model.embed(TOKENS)
        d1 = model.down_pools[0](d0)
        c = 2 * model.down_pools[1](d1)
        if unet:
            u1 = model.up_pools[1](c) + (n_layers + 1) * d1
            u0 = model.up_pools[0](u1) + (n_layers + 1) * d0
        else:
            u1 = 2 * (model.up_pools[1](c) + d1)
            u0 = 2 * (model.up_pools[0](u1) + d0)
        expected = model.head(u0)
        # float32 through a few linear layers of width 8-32: 1e-5 absolute on O(1) logits
        assert (model(TOKENS) - expected).abs().max() < 1e-5
    assert (_step_logits(model, TOKENS) - expected).abs().max() < 1e-5


def _paper_forward(model, tokens, tier_residual: bool = True):
    """The paper's SaShiMi.forward, transcribed: d_layers = per tier [blocks if unet] + DownPool,
    u_layers = per tier (deepest first) [UpPool, blocks]; one stack of stored outputs."""
    cfg = model.config
    d_layers = [layer for i in range(len(cfg.pool)) for layer in (*model.down_blocks[i], model.down_pools[i])]
    u_layers = [[model.up_pools[i], *model.up_blocks[i]] for i in reversed(range(len(cfg.pool)))]
    x = model.embed(tokens)
    outputs = [x]
    for layer in d_layers:
        x = layer(x)
        outputs.append(x)
    for layer in model.center:
        x = layer(x)
    x = x + outputs.pop()
    for block in u_layers:
        if cfg.unet:
            for layer in block:
                x = layer(x) + outputs.pop()
        else:
            for layer in block:
                x = layer(x)
                if isinstance(layer, UpPool):
                    x = x + outputs.pop()
                    outputs.append(x)
            x = x + outputs.pop() if tier_residual else x + 0 * outputs.pop()
    assert not outputs
    return model.head(model.norm(x))


@pytest.mark.parametrize("unet", [False, True])
def test_forward_equals_the_papers_loop(unet):
    model = _model(unet)
    with torch.no_grad():  # give every bias and skip path a non-trivial value
        for p in model.parameters():
            if p.dim() == 1 and not getattr(p, SSM_ATTR, False):
                p.add_(0.1 * torch.randn_like(p))
        ours, paper = model(TOKENS), _paper_forward(model, TOKENS)
    # Same modules, same ops in another order of evaluation: float32 rounding only.
    assert (ours - paper).abs().max() < 1e-5
    if not unet:  # the comparison has teeth: without the tier residual the logits move by O(1)
        assert (ours - _paper_forward(model, TOKENS, tier_residual=False)).abs().max() > 0.1


@pytest.mark.parametrize("unet", [False, True])
def test_step_equals_conv_and_causal(unet):
    model = _model(unet)
    tokens = torch.randint(0, 256, (1, 96))
    with torch.no_grad():
        conv = model(tokens)
        other = tokens.clone()
        other[:, 41:] = torch.randint(0, 256, other[:, 41:].shape)
        assert (model(other)[:, :41] - conv[:, :41]).abs().max() < 1e-5  # causal
    assert (_step_logits(model, tokens) - conv).abs().max() < 1e-4


def test_building_for_a_state_dict_skips_the_init_but_loads_the_same_model():
    from sashimi.kernels import weights_will_be_loaded

    trained = _model(False)
    with weights_will_be_loaded():
        loaded = SaShiMi(trained.config)
    loaded.load_state_dict(trained.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded.eval()(TOKENS), trained(TOKENS))
