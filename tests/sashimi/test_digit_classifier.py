"""The digit classifiers that judge SC09 samples: config validation, the log-mel front end, features vs
logits, loudness invariance, and learning a synthesised labelled corpus well above chance."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_prep.digits import plan_clips, render
from sashimi.augment import AugmentConfig, augment
from sashimi.digit_classifier import DigitClassifier, DigitClassifierConfig, LogMel, classify_clips

SMALL = {  # fast variants of each architecture for the unit tests
    "conv": dict(arch="conv", channels=[8, 16, 32]),
    "s4_mel": dict(arch="s4_mel", d_model=16, n_layers=1, d_state=8),
    "s4_wave": dict(arch="s4_wave", d_model=8, n_layers=1, d_state=8, stem=4, pool=[4, 4], sample_rate=4000),
}


def test_config_round_trip_and_errors():
    cfg = DigitClassifierConfig.from_dict(SMALL["conv"])
    assert DigitClassifierConfig.from_dict(cfg.to_dict()) == cfg and cfg.channels == (8, 16, 32)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['widht'\]"):
        DigitClassifierConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="model.arch"):
        DigitClassifierConfig(arch="resnext")
    with pytest.raises(ValueError, match="model.d_state must be even"):
        DigitClassifierConfig(d_state=7)
    with pytest.raises(ValueError, match="model.n_labels"):
        DigitClassifierConfig(n_labels=1)


def test_log_mel_is_the_reference_32x32_image_of_a_tone():
    mel = LogMel(DigitClassifierConfig())
    t = torch.arange(16000) / 16000
    x = torch.stack([0.5 * torch.sin(2 * math.pi * 1000 * t), 0.5 * torch.sin(2 * math.pi * 3000 * t)])
    m = mel(x)
    assert m.shape == (2, 32, 32)  # 32 mels x (1 + 16000 // 512) frames, as the paper's classifier input
    assert float(m.max()) == pytest.approx(1.0) and float(m.min()) >= -1.0  # 0 dB -> 1, -80 dB floor -> -1
    fb = mel.mel.mel_scale.fb  # (freq bins, mels): the mel whose filter weighs each tone's bin most
    for row, f in zip(m, (1000, 3000)):
        expected = int(fb[round(f * 2048 / 16000)].argmax())
        assert int(row[:, 16].argmax()) == expected


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_features_feed_the_head_and_ignore_loudness(arch):
    cfg = DigitClassifierConfig.from_dict(SMALL[arch])
    model = DigitClassifier(cfg).eval()
    x = torch.rand(3, cfg.sample_rate) * 1.6 - 0.8
    with torch.no_grad():
        f = model.features(x)
        assert f.shape == (3, model.trunk.dim)
        assert torch.allclose(model(x), model.head(f))  # features are exactly the last linear layer's input
        # dB relative to each clip's maximum (mel) / peak scaling (wave): a quieter copy scores the same
        assert torch.allclose(model.features(0.25 * x), f, atol=1e-4, rtol=1e-4)
    feats, probs = classify_clips(model.train(), x, batch=2)
    assert model.training  # restored
    assert feats.dtype == probs.dtype == np.float64 and probs.shape == (3, 10)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-12)
    assert np.allclose(feats, f.double().numpy(), atol=1e-5)  # eval mode: no dropout


def test_s4_wave_pads_to_its_pooling():
    model = DigitClassifier(DigitClassifierConfig.from_dict(SMALL["s4_wave"])).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 4001) + 0.1).shape == (2, 10)  # 4001 is no multiple of 64


def _tones(per_digit: int, seed: int):
    clips = plan_clips("tones", per_digit, seed)
    return torch.from_numpy(np.stack([render(c, "tones") for c in clips])), torch.tensor([c.digit for c in clips])


def test_conv_classifier_learns_synthesised_digits():
    torch.manual_seed(0)
    x, y = _tones(10, seed=0)
    x_test, y_test = _tones(5, seed=1)  # other clips (pitch, length, timbre, position, noise all redrawn)
    model = DigitClassifier(DigitClassifierConfig.from_dict(SMALL["conv"]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for step in range(60):
        idx = torch.randint(len(x), (32,), generator=gen)
        loss = F.cross_entropy(model(augment(x[idx], gen, AugmentConfig())), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, probs = classify_clips(model, x_test)
    accuracy = float((probs.argmax(1) == y_test.numpy()).mean())
    assert accuracy >= 0.8, accuracy  # chance is 0.1; this run reaches 1.0 (0.68 with two conv stages)


CHANGED = {"n_labels": 5, "sample_rate": 8000, "n_mels": 16, "n_fft": 1024, "hop": 256, "top_db": 60.0,
           "channels": (8, 16), "d_model": 12, "n_layers": 2, "d_state": 4, "kernel": "dplr", "stem": 8,
           "pool": (2,), "dropout": 0.3}


def test_every_field_is_classified():
    import dataclasses

    assert set(CHANGED) | {"arch"} == {f.name for f in dataclasses.fields(DigitClassifierConfig)}


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_only_weight_keys_change_what_loaded_weights_compute(arch):
    """A checkpoint may be resumed under another value of a key outside weight_keys(): the same weights load
    and compute the same logits. Every weight key changes the weights' shapes or what they compute, except
    sample_rate: the mel filterbank is a buffer loaded with the weights and the S4D kernels take any length,
    so the same weights compute the same logits, but it is kept as the rate the weights were trained to hear
    (the data's rate is checked against it)."""
    base = DigitClassifierConfig.from_dict(SMALL[arch])
    keys = base.weight_keys()
    assert "arch" in keys and "dropout" not in keys
    x = 0.3 * torch.randn(2, base.sample_rate, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    a = DigitClassifier(base).eval()
    with torch.no_grad():
        want = a(x)
    for key, value in CHANGED.items():
        b = DigitClassifier(DigitClassifierConfig(**{**base.to_dict(), key: value})).eval()
        try:
            b.load_state_dict(a.state_dict())
            with torch.no_grad():
                same = torch.allclose(b(x), want, atol=1e-5)
        except RuntimeError:  # missing, unexpected or differently shaped tensors
            same = False
        if key in keys and key != "sample_rate":
            assert not same, key
        elif key not in keys:
            assert same, key
