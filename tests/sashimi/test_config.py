"""SaShiMiConfig.weight_keys: the keys a checkpoint must agree on to be resumed. Checked against the
models themselves: every other key leaves the weights' names and shapes as they are, every weight key
but l_max changes them, and l_max changes what the DPLR kernel stores (C̃ = C(I - dA^l_max))."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from sashimi import SaShiMi, SaShiMiConfig

BASE = SaShiMiConfig(d_model=8, n_layers=1, d_state=8, pool=(4,), expand=2, ff=2, l_max=64)
CHANGED = {"d_model": 16, "n_layers": 2, "pool": (2,), "expand": 3, "ff": 0, "d_state": 4, "n_ssm": 2,
           "n_classes": 16, "kernel": "s4d", "glu": False, "unet": True, "l_max": 128, "s4d_init": "lin",
           "dt_min": 1e-4, "dt_max": 0.5, "dropout": 0.1, "cauchy_backend": "naive", "c_init_var": 0.5,
           "b_clip": None}


def _shapes(cfg: SaShiMiConfig) -> dict:
    torch.manual_seed(0)
    return {k: tuple(v.shape) for k, v in SaShiMi(cfg).state_dict().items()}


def test_every_field_is_classified():
    # bidirectional: a weight key of the U-Net that SaShiMi itself refuses (checked on DiffWave below)
    assert set(CHANGED) | {"bidirectional"} == {f.name for f in dataclasses.fields(SaShiMiConfig)}


def test_diffwave_weight_keys_change_its_weights_or_their_meaning():
    """The diffusion backbone's own weight keys: the step embedding's widths and bidirectional change the
    shapes; the noise schedule changes what the trained network means (its outputs are noise estimates
    under that schedule), so a resume must keep it too."""
    from sashimi import DiffWaveConfig, DiffWaveSaShiMi

    base = DiffWaveConfig(d_model=8, n_layers=1, d_state=8, pool=(4,), l_max=64, t_embed_dim=8, t_hidden_dim=16)

    def shapes(cfg):
        torch.manual_seed(0)
        return {k: tuple(v.shape) for k, v in DiffWaveSaShiMi(cfg).state_dict().items()}

    keys = base.weight_keys()
    for key, value in (("bidirectional", False), ("t_embed_dim", 16), ("t_hidden_dim", 32)):
        assert key in keys and shapes(dataclasses.replace(base, **{key: value})) != shapes(base), key
    for key in ("diffusion_steps", "beta_start", "beta_end"):
        assert key in keys
    assert "n_classes" not in keys and "cauchy_backend" not in keys


@pytest.mark.parametrize("key", sorted(CHANGED))
def test_only_weight_keys_change_the_weights(key):
    for kernel in ("dplr", "s4d"):
        base = dataclasses.replace(BASE, kernel=kernel)
        value = CHANGED[key] if key != "kernel" else ("dplr" if kernel == "s4d" else "s4d")
        other = dataclasses.replace(base, **{key: value})
        if key in base.weight_keys() and key != "l_max":
            assert _shapes(other) != _shapes(base), key
        else:
            assert _shapes(other) == _shapes(base), key


def test_l_max_is_a_weight_key_for_dplr_only():
    """The DPLR kernel stores C̃ = C(I - dA^l_max): the same tensors mean another kernel at another l_max,
    so loading them under a new l_max changes the model's output; S4D's kernel has no such tensor."""
    assert "l_max" in dataclasses.replace(BASE, kernel="dplr").weight_keys()
    assert "l_max" not in dataclasses.replace(BASE, kernel="s4d").weight_keys()
    x = torch.randint(0, 256, (1, 32))
    for kernel, same in (("dplr", False), ("s4d", True)):
        torch.manual_seed(0)
        a = SaShiMi(dataclasses.replace(BASE, kernel=kernel)).eval()
        b = SaShiMi(dataclasses.replace(BASE, kernel=kernel, l_max=128)).eval()
        b.load_state_dict(a.state_dict())
        with torch.no_grad():
            assert torch.allclose(a(x), b(x), atol=1e-5) is same, kernel
