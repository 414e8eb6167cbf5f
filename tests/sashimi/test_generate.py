"""Generation: sampling rules, priming, and the compiled step agreeing with the eager one."""
import pytest
import torch

from sashimi import SaShiMi, SaShiMiConfig
from sashimi.generate import generate, prime_state, sample_logits
from sashimi.metrics import shift_inputs

TINY = dict(d_model=8, n_layers=1, d_state=8, l_max=256)


def test_top_p_and_temperature():
    logits = torch.tensor([[0.0, 5.0, 4.9, -3.0]])
    assert sample_logits(logits, temperature=0).item() == 1
    gen = torch.Generator().manual_seed(0)
    draws = {sample_logits(logits, 1.0, top_p=0.5, generator=gen).item() for _ in range(200)}
    assert draws == {1}  # class 1 alone holds > 50 %: the nucleus is just it
    draws = {sample_logits(logits, 1.0, top_p=0.99, generator=gen).item() for _ in range(400)}
    assert draws == {1, 2}  # classes 0 and 3 fall outside the 99 % nucleus


def test_priming_by_stepping_equals_conv_logits():
    model = SaShiMi(SaShiMiConfig(**TINY)).eval()
    prime = torch.randint(0, 256, (2, 45))
    logits, state = prime_state(model, prime)
    with torch.no_grad():
        conv = model(shift_inputs(torch.cat([prime, prime[:, :1]], 1), 128))
    assert state.t == 46
    assert (logits - conv[:, -1]).abs().max() < 1e-4


def test_seeded_sampling_is_reproducible():
    model = SaShiMi(SaShiMiConfig(**TINY))
    a = generate(model, 50, batch=2, seed=3)
    b = generate(model, 50, batch=2, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, generate(model, 50, batch=2, seed=4))


@pytest.mark.slow
def test_compiled_step_matches_eager():
    """Compiled tiers (frozen weights, C++ GEMMs) must give the same samples, greedy and drawn."""
    model = SaShiMi(SaShiMiConfig(d_model=16, n_layers=1, d_state=16, l_max=256))
    for temperature in (0.0, 1.0):
        eager = generate(model, 80, batch=2, temperature=temperature, seed=0)
        fused = generate(model, 80, batch=2, temperature=temperature, seed=0, compile=True)
        assert torch.equal(eager, fused), temperature
    with torch.no_grad():  # a weight change must reach the compiled step (frozen weights: recompiled)
        model.head.bias[7] += 100.0
    assert (generate(model, 20, batch=2, temperature=0, seed=0, compile=True) == 7).all()


def test_sampling_inside_the_step_equals_sampling_its_logits():
    """sample_step draws argmax(logits + noise) inside the outer tier; the same noise applied to
    step()'s logits outside must give the same tokens, step by step."""
    from sashimi.generate import _Sampler

    model = SaShiMi(SaShiMiConfig(**TINY)).eval()
    fused = generate(model, 40, batch=3, temperature=0.8, seed=5)
    draw = _Sampler(0.8, 1.0, torch.Generator().manual_seed(5), (3, 256), "cpu")
    state, tok, manual = model.default_state(3), torch.full((3,), 128), []
    with torch.no_grad():
        for _ in range(40):
            logits, state = model.step(tok, state)
            tok = draw(logits)
            manual.append(tok)
    assert torch.equal(fused, torch.stack(manual, 1))


def test_gumbel_sampler_draws_from_the_softmax():
    """The fast sampler must sample softmax(logits / T): frequencies over 30000 draws."""
    from sashimi.generate import _Sampler

    logits = torch.tensor([[1.0, 0.0, -1.0, 2.0]]).expand(3000, 4)
    for temperature in (1.0, 0.5):
        draw = _Sampler(temperature, 1.0, torch.Generator().manual_seed(0), (3000, 4), "cpu")
        counts = torch.bincount(torch.cat([draw(logits) for _ in range(10)]), minlength=4).double()
        expected = torch.softmax(logits[0].double() / temperature, -1) * 30000
        # 4 standard deviations of a binomial count: fails for a wrong temperature or missing noise
        assert ((counts - expected).abs() < 4 * expected.sqrt() + 1).all(), (counts, expected)


@pytest.mark.slow
def test_compiled_steps_are_cached_on_disk(tmp_path, monkeypatch):
    """A second model with the same weights loads the compiled packages instead of compiling,
    and samples the same tokens; other weights, or a broken package, are never loaded."""
    cfg = SaShiMiConfig(d_model=8, n_layers=1, d_state=8, l_max=64, pool=(4,))
    model = SaShiMi(cfg)
    first = generate(model, 40, temperature=1.0, seed=3, compile=True, cache_dir=str(tmp_path))  # str or Path
    assert torch.equal(first, generate(model, 40, temperature=1.0, seed=3))  # equals eager
    packages = sorted(tmp_path.glob("*.pt2"))
    assert len(packages) == 2  # one per tier

    same = SaShiMi(cfg)
    same.load_state_dict(model.state_dict())
    same.compile_step(True, tmp_path)
    assert same.compiled_step_cached(1)

    def no_compiling(*a, **k):
        raise AssertionError("compiled again although the package was cached")

    def device_probe(*a, **k):  # aoti_load_package probes the CPU's vector ISAs first (~10 s): not used
        raise AssertionError("loaded through aoti_load_package")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_compiling)
    monkeypatch.setattr(torch._inductor, "aoti_load_package", device_probe)
    assert torch.equal(first, generate(same, 40, temperature=1.0, seed=3, compile=True, cache_dir=tmp_path))

    other = SaShiMi(cfg)  # other weights: other keys
    other.compile_step(True, tmp_path)
    assert not other.compiled_step_cached(1)
    assert not same.compiled_step_cached(2)  # another batch size
    monkeypatch.undo()
    packages[0].write_bytes(b"truncated")  # a broken package is rebuilt, with a log line
    logged = []
    again = SaShiMi(cfg)
    again.load_state_dict(model.state_dict())
    assert torch.equal(first, generate(again, 40, temperature=1.0, seed=3, compile=True, cache_dir=tmp_path,
                                       log=logged.append))
    assert len(logged) == 1 and "could not be loaded" in logged[0]


def test_compile_is_chosen_by_work_or_a_cached_package(tmp_path, monkeypatch):
    from sashimi.generate import AUTO_COMPILE_WORK, should_compile

    monkeypatch.setenv("SASHIMI_COMPILE_CACHE", str(tmp_path))
    model = SaShiMi(SaShiMiConfig(**TINY))
    assert not should_compile(model, 16000, 1)  # 1 s at batch 1, nothing cached: eager
    assert should_compile(model, AUTO_COMPILE_WORK // 4, 4)  # enough work to repay a compilation
    monkeypatch.setattr(SaShiMi, "compiled_step_cached", lambda self, batch, fused=True: batch == 1)
    assert should_compile(model, 16000, 1) and not should_compile(model, 16000, 2)
    monkeypatch.setenv("SASHIMI_COMPILE_CACHE", "off")
    assert not should_compile(model, 16000, 1)
