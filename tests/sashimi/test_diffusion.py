"""DiffWave's diffusion: schedule, closed-form noising, ε-loss, ancestral and shorter samplers."""
import math

import pytest
import torch

from sashimi import DiffWaveConfig, DiffWaveSaShiMi, diffusion
from sashimi.diffusion import Schedule, loss_by_level, timesteps
from sashimi.optim import make_optimizer

SCHED = Schedule.linear(200, 1e-4, 0.02)


def test_closed_form_noising_matches_iterating_the_chain():
    """x_t = √α_t x_{t-1} + √β_t z_t, iterated from x_0: x_t = m_t x_0 + (Gaussian of variance v_t),
    m_t = Π√α, v_t = α_t v_{t-1} + β_t. The closed form must be m_t x_0 + √v_t ε at every t."""
    m, v = 1.0, 0.0
    x0, eps = torch.randn(3, 50, dtype=torch.float64), torch.randn(3, 50, dtype=torch.float64)
    for t, beta in enumerate(SCHED.betas.tolist()):
        m, v = m * math.sqrt(1 - beta), (1 - beta) * v + beta
        tt = torch.full((3,), t)
        assert (SCHED.noise(x0, tt, eps) - (m * x0 + math.sqrt(v) * eps)).abs().max() < 1e-12
    # and mixed steps in one batch pick each row's own ᾱ
    t = torch.tensor([0, 99, 199])
    ab = SCHED.alpha_bars
    rows = [ab[i].sqrt() * x0[j] + (1 - ab[i]).sqrt() * eps[j] for j, i in enumerate(t.tolist())]
    assert torch.equal(SCHED.noise(x0, t, eps), torch.stack(rows))


def test_alpha_bar_and_posterior_variance_hand_computed():
    """Exact rational arithmetic (fractions) for T = 200, β linear 1e-4 .. 0.02:
    ᾱ_0 = 0.9999, ᾱ_1 = 0.9999 · 0.9998, ᾱ_199 = 0.13218275425061780; β̃_1 = 2e-4 · 1e-4 / (1 - ᾱ_1),
    β̃_199 = 0.019937830061736675; β̃_0 = 0 (the last sampling step adds no noise)."""
    ab, var = SCHED.alpha_bars, SCHED.posterior_variance
    assert SCHED.T == 200
    assert abs(ab[0].item() - 0.9999) < 1e-15 and abs(ab[1].item() - 0.9999 * 0.9998) < 1e-15
    assert abs(ab[-1].item() - 0.1321827542506178) < 1e-13  # float64 product of 200 factors
    assert var[0].item() == 0.0
    assert abs(var[1].item() - 2e-4 * 1e-4 / (1 - 0.9999 * 0.9998)) < 1e-16
    assert abs(var[-1].item() - 0.019937830061736675) < 1e-15
    # DiffWave's own loop (utils.calc_diffusion_hyperparams) for the rest
    for t in range(1, 200):
        assert abs(var[t] - SCHED.betas[t] * (1 - ab[t - 1]) / (1 - ab[t])) < 1e-15


def test_timesteps():
    assert timesteps(200) == list(range(199, -1, -1))
    assert timesteps(200, 500) == list(range(199, -1, -1))
    short = timesteps(200, 20)
    assert len(short) == 20 and short[0] == 199 and short[-1] == 0 and short == sorted(short, reverse=True)
    assert timesteps(200, 1) == [199]
    with pytest.raises(ValueError):
        timesteps(200, 0)


def _oracle(x0: torch.Tensor):
    """The exact ε of x_t for the single training example x0: ε = (x_t - √ᾱ_t x0)/√(1-ᾱ_t)."""
    ab = SCHED.alpha_bars

    def eps(x, t):
        a = ab[t].unsqueeze(-1)
        return ((x.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()).float()
    return eps


@pytest.mark.parametrize("steps,eta", [(None, 1.0), (20, 1.0), (10, 0.0)])
def test_sampler_with_a_perfect_oracle_returns_the_training_example(steps, eta):
    x0 = torch.rand(1, 256) * 2 - 1
    out = diffusion.sample(_oracle(x0), 3, 256, steps=steps, eta=eta, schedule=SCHED,
                           generator=torch.Generator().manual_seed(0))
    # float32 chain of up to 200 steps; the last divides by √ᾱ_0 ≈ 1: 1e-5 absolute on [-1, 1]
    assert (out - x0).abs().max() < 1e-5


def test_full_schedule_is_diffwaves_ancestral_sampler():
    """Over all T steps (the default) our update is DiffWave's (generate.py, transcribed):
    x ← (x - β_t/√(1-ᾱ_t) ε̂)/√α_t, then + √β̃_t z for t > 0, with the same draws in the same order."""
    w = torch.randn(64, 64) / 8

    def net(x, t):  # any fixed, t-dependent, nonlinear ε̂
        return torch.tanh(x @ w + t[:, None].float() / 100)

    ours = diffusion.sample(net, 2, 64, schedule=SCHED, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    beta, ab, var = SCHED.betas, SCHED.alpha_bars, SCHED.posterior_variance
    x = torch.randn(2, 64, generator=g)
    for t in range(199, -1, -1):
        e = net(x, torch.full((2,), t))
        x = (x - (beta[t] / (1 - ab[t]).sqrt()).float() * e) / (1 - beta[t]).sqrt().float()
        if t > 0:
            x = x + var[t].sqrt().float() * torch.randn(2, 64, generator=g)
    # two float32 evaluations of the same affine update, 200 steps: 1e-4 on O(1) samples
    assert (ours - x).abs().max() < 1e-4 * x.abs().max()


def test_loss_by_level_buckets():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    t = torch.tensor([0, 199, 100, 19, 20])
    sums = loss_by_level(losses, t, 200, buckets=10)  # bucket = t // 20
    expected = torch.zeros(2, 10, dtype=torch.float64)
    expected[0, [0, 9, 5, 1]] = torch.tensor([1.0 + 4.0, 2.0, 3.0, 5.0], dtype=torch.float64)
    expected[1, [0, 9, 5, 1]] = torch.tensor([2.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.equal(sums, expected)


TINY = dict(d_model=8, n_layers=1, d_state=8, l_max=64, pool=(2, 4), t_hidden_dim=16, t_embed_dim=8)


def test_loss_is_the_eps_mse_with_its_draws_and_mask():
    """per_example_loss draws t, then ε, from the generator; its loss is the masked mean of (ε̂ - ε)²."""
    torch.manual_seed(0)
    net = DiffWaveSaShiMi(DiffWaveConfig(**TINY))
    with torch.no_grad():
        net.head[-1].weight.normal_()
    x0 = torch.rand(2, 64) * 2 - 1
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[1, 40:] = False
    losses, t = diffusion.per_example_loss(net, x0, torch.Generator().manual_seed(5), mask=mask)
    g = torch.Generator().manual_seed(5)
    t_ref = torch.randint(200, (2,), generator=g)
    eps = torch.randn(2, 64, generator=g)
    sq = (net(Schedule.of(net.config).noise(x0, t_ref, eps), t_ref) - eps).pow(2)
    assert torch.equal(t, t_ref)
    assert torch.allclose(losses, torch.stack([sq[0].mean(), sq[1, :40].mean()]), rtol=1e-6)
    whole = diffusion.loss(net, x0, torch.Generator().manual_seed(5))
    assert torch.allclose(whole, sq.mean(), rtol=1e-6)


def test_one_optimiser_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = DiffWaveSaShiMi(DiffWaveConfig(**TINY))
    opt = make_optimizer(net, lr=2e-4, ssm_lr=2e-4)  # the reference's Adam lr
    x0 = torch.sin(torch.arange(64) / 3.0).repeat(4, 1) * torch.linspace(0.2, 0.9, 4)[:, None]
    before = diffusion.loss(net, x0, torch.Generator().manual_seed(1))
    opt.zero_grad()
    before.backward()
    opt.step()
    after = diffusion.loss(net, x0, torch.Generator().manual_seed(1))  # same t and ε
    assert after < before, (before.item(), after.item())


def test_sample_shape_batches_and_restores_training_mode():
    net = DiffWaveSaShiMi(DiffWaveConfig(**{**TINY, "diffusion_steps": 8}))
    net.train()
    one = diffusion.sample(net, 5, 64, batch_size=2, generator=torch.Generator().manual_seed(0))
    assert one.shape == (5, 64) and torch.isfinite(one).all() and net.training
    # the zero-initialised net predicts ε̂ = 0: the chain is then a fixed linear map of its draws
    again = diffusion.sample(net, 5, 64, batch_size=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(one, again)
