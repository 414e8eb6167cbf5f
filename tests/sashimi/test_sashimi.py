"""The SaShiMi U-Net: multi-rate step == conv, causality, length independence, size, restore."""
import io

import pytest
import torch

from sashimi import SaShiMi, SaShiMiConfig
from sashimi.generate import generate, torch_threads
from sashimi.metrics import shift_inputs
from sashimi.optim import make_optimizer

SMALL = dict(d_model=16, n_layers=2, d_state=16, l_max=1024)


def conv_and_step(model, tokens):
    """The same tokens through convolution mode and through multi-rate step mode, one sample at a time."""
    with torch.no_grad(), torch_threads(1):  # tiny per-step ops: one thread avoids OpenMP barriers
        conv = model(tokens)
        state, steps = model.default_state(tokens.shape[0]), []
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            steps.append(logits)
    return conv, torch.stack(steps, 1), state


@pytest.mark.parametrize("kernel", ["dplr", "s4d"])
def test_multirate_step_equals_conv(kernel):
    """1030 samples (not a multiple of the total pool 16) through pool [4, 4]."""
    model = SaShiMi(SaShiMiConfig(kernel=kernel, **SMALL)).eval()
    conv, steps, _ = conv_and_step(model, torch.randint(0, 256, (2, 1030)))
    # Logits are O(1-10); 16+ stacked float32 layers, FFT vs recurrence: 1e-4 absolute.
    assert (steps - conv).abs().max() < 1e-4


@pytest.mark.parametrize("variant", [dict(unet=True, pool=(2, 4)), dict(pool=()), dict(pool=(3,), ff=0)])
def test_other_variants_step_equal_conv(variant):
    model = SaShiMi(SaShiMiConfig(d_model=8, n_layers=1, d_state=8, l_max=256, **variant)).eval()
    conv, steps, _ = conv_and_step(model, torch.randint(0, 256, (1, 70)))
    assert (steps - conv).abs().max() < 1e-4


def test_causal():
    model = SaShiMi(SaShiMiConfig(**SMALL)).eval()
    tokens = torch.randint(0, 256, (1, 512))
    for k in (1, 37, 256):  # inside a pooled block, at odd offsets and on a block boundary
        other = tokens.clone()
        other[:, k:] = torch.randint(0, 256, other[:, k:].shape)
        with torch.no_grad():
            a, b = model(tokens), model(other)
        assert (a[:, :k] - b[:, :k]).abs().max() < 1e-5
        assert (a[:, k:] - b[:, k:]).abs().max() > 1e-3


def test_length_independent():
    model = SaShiMi(SaShiMiConfig(**SMALL)).eval()
    tokens = torch.randint(0, 256, (1, 2000))  # longer than l_max
    with torch.no_grad():
        full = model(tokens)
        for L in (5, 333, 1024):
            assert (model(tokens[:, :L]) - full[:, :L]).abs().max() < 1e-4


def test_paper_config_parameter_count():
    """Paper 8-layer config (unet=False, one (Λ, P, B) per layer): 4.76M, paper says ≈4.8M."""
    n = SaShiMi(SaShiMiConfig()).num_parameters()
    assert 4.6e6 < n < 5.0e6, n


def test_checkpoint_restores_exactly_and_config_round_trips():
    model = SaShiMi(SaShiMiConfig(**SMALL))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "config": model.config.to_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    fresh = SaShiMi.from_config(ckpt["config"])
    fresh.load_state_dict(ckpt["model"])
    tokens = torch.randint(0, 256, (1, 100))
    with torch.no_grad():
        assert torch.equal(model(tokens), fresh(tokens))


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="unknown key.*'d_modle'"):
        SaShiMiConfig.from_dict({"d_modle": 3})
    with pytest.raises(ValueError, match="model.kernel"):
        SaShiMiConfig(kernel="s5")
    with pytest.raises(ValueError, match="d_state must be even"):
        SaShiMiConfig(d_state=15)


def test_optimizer_groups():
    model = SaShiMi(SaShiMiConfig(**SMALL))
    opt = make_optimizer(model, lr=4e-3, weight_decay=0.1, ssm_lr=1e-3)
    groups = {g["name"]: g for g in opt.param_groups}
    ssm_ids = {id(p) for p in groups["ssm"]["params"]}
    assert groups["ssm"]["lr"] == 1e-3 and groups["ssm"]["weight_decay"] == 0.0
    assert groups["decay"]["weight_decay"] == 0.1
    for name, p in model.named_parameters():
        is_ssm = any(name.endswith(s) for s in ("log_neg_re", ".im", "log_dt", ".P", ".B"))
        assert (id(p) in ssm_ids) == is_ssm, name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_greedy_generation_matches_conv_argmax():
    model = SaShiMi(SaShiMiConfig(d_model=8, n_layers=1, d_state=8, l_max=256))
    out = generate(model, 64, batch=3, temperature=0.0, seed=0)
    with torch.no_grad():
        logits = model(shift_inputs(out, 128))
    assert torch.equal(logits.argmax(-1), out)
    primed = generate(model, 20, temperature=0.0, prime=out[:, :44])
    assert torch.equal(primed, out[:, 44:])


def test_step_constants_follow_parameter_updates():
    """The cached recurrence constants must never outlive a weight change."""
    model = SaShiMi(SaShiMiConfig(d_model=8, n_layers=1, d_state=8, l_max=64)).eval()
    first = model.step_constants()
    assert model.step_constants() is first  # unchanged weights: reused
    with torch.no_grad():
        model.center[0].s4.kernel.log_dt.add_(0.5)
    conv, steps, state = conv_and_step(model, torch.randint(0, 256, (1, 40)))
    assert state.consts is not first
    assert (steps - conv).abs().max() < 1e-4
    fresh = SaShiMi(SaShiMiConfig(d_model=8, n_layers=1, d_state=8, l_max=64))
    model.load_state_dict(fresh.state_dict())
    assert model.step_constants() is not state.consts
