"""Waveform augmentation: exact shifts, gains and SNRs, and a function of the generator's seed."""
import pytest
import torch

from sashimi.augment import AugmentConfig, augment, augment_each, time_shift


def test_time_shift_moves_and_zero_fills():
    x = torch.arange(1.0, 7.0).repeat(3, 1)
    y = time_shift(x, torch.tensor([2, -1, 0]))
    assert y.tolist() == [[0, 0, 1, 2, 3, 4], [2, 3, 4, 5, 6, 0], [1, 2, 3, 4, 5, 6]]


def test_same_seed_same_copies_other_seed_other_copies():
    x = torch.rand(4, 1600) - 0.5
    a = augment(x, torch.Generator().manual_seed(1), sample_rate=1600)
    b = augment(x, torch.Generator().manual_seed(1), sample_rate=1600)
    c = augment(x, torch.Generator().manual_seed(2), sample_rate=1600)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.abs().max() <= 1.0


def test_gain_only_scales_within_its_range():
    x = 0.01 * torch.randn(64, 800)
    cfg = AugmentConfig(max_shift_s=0.0, gain_db_min=-6.0, gain_db_max=3.0, noise_prob=0.0)
    y = augment(x, torch.Generator().manual_seed(0), cfg)
    g = (y * x).sum(1) / (x * x).sum(1)  # least-squares gain per clip: exact for a pure scaling
    assert torch.allclose(y, g[:, None] * x, atol=1e-7)
    db = 20 * torch.log10(g)
    assert db.min() >= -6.0 - 1e-4 and db.max() <= 3.0 + 1e-4 and db.max() - db.min() > 4  # spread over the range


def test_noise_at_the_requested_snr():
    x = 0.3 * torch.sin(torch.arange(16000.0).repeat(8, 1) * 0.05)
    cfg = AugmentConfig(max_shift_s=0.0, gain_db_min=0.0, gain_db_max=0.0, noise_prob=1.0, snr_db_min=20.0,
                        snr_db_max=20.0)
    n = augment(x, torch.Generator().manual_seed(0), cfg) - x
    snr = 20 * torch.log10(x.pow(2).mean(1).sqrt() / n.pow(2).mean(1).sqrt())
    assert torch.allclose(snr, torch.full_like(snr, 20.0), atol=0.2)  # 16000 noise samples: rms within ~1 %


def test_config_errors():
    with pytest.raises(ValueError, match="augment: unknown key"):
        AugmentConfig.from_dict({"shift": 1})
    with pytest.raises(ValueError, match="gain_db_min"):
        AugmentConfig(gain_db_min=3, gain_db_max=0)
    with pytest.raises(ValueError, match="noise_prob"):
        AugmentConfig(noise_prob=2)


def test_augment_each_draws_every_row_from_its_own_seed():
    """Row i is what `augment` makes of it alone with a generator seeded seeds[i]: the same whatever batch it
    is in, so an example's augmentation does not depend on how the trainer split the global batch."""
    x = torch.rand(5, 1600) - 0.5
    seeds = torch.tensor([3, 1, 4, 1, 5])
    y = augment_each(x, seeds, sample_rate=1600)
    for i, s in enumerate(seeds.tolist()):
        alone = augment(x[i:i + 1], torch.Generator().manual_seed(s), sample_rate=1600)
        assert torch.equal(y[i:i + 1], alone)
    assert torch.equal(augment_each(x[2:4], seeds[2:4], sample_rate=1600), y[2:4])
    assert not torch.equal(y[1], y[3])  # same seed, other clip
    with pytest.raises(ValueError, match="3 seeds for 5 waveforms"):
        augment_each(x, [1, 2, 3])
