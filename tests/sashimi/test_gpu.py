"""CUDA-only checks (``pytest -m gpu``; bench/gpu.sh runs them): each skips cleanly without a CUDA
device. Plus the CPU side of the GPU bench: ``--device cuda`` without CUDA, the roofline arithmetic."""
import json

import pytest
import torch

from sashimi import SaShiMi, SaShiMiConfig
from sashimi.cauchy import cauchy
from sashimi.generate import generate
from sashimi.metrics import nll_bits, shift_inputs
from sashimi.optim import make_optimizer
from test_cauchy import REL_TOL, _inputs
from test_sashimi import SMALL, conv_and_step

HAS_CUDA = torch.cuda.is_available()
cuda_only = pytest.mark.skipif(not HAS_CUDA, reason="CUDA-only test: no CUDA device here "
                               "(torch.cuda.is_available() is False); run `pytest -m gpu` on a GPU")


@pytest.fixture(autouse=True)
def _full_fp32_matmuls():
    """TF32 off for these tests, the caller's setting restored after: TF32 is process-wide, and a
    Trainer run earlier in the session (tests/cluster/test_gpu_trainer.py) turns it on. On the first
    H200 run it leaked into this file: the linear layers' TF32 rounding put conv and step mode 1e-3
    apart and the chunked Cauchy kernel 4e-4 from float64 (the kernels now ignore TF32: sashimi.fp32)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(old[1])
    torch.backends.cuda.matmul.allow_tf32 = old[0]


@pytest.mark.parametrize("kernel", ["dplr", "s4d"])
@pytest.mark.gpu
@cuda_only
def test_conv_equals_multirate_step_on_cuda(kernel):
    """As tests/test_sashimi.py on the CPU: 1030 samples through pool [4, 4], conv (cuFFT) vs step."""
    model = SaShiMi(SaShiMiConfig(kernel=kernel, **SMALL)).eval()
    tokens = torch.randint(0, 256, (2, 1030))
    with torch.no_grad():
        cpu = model(tokens)
    model.cuda()
    conv, steps, _ = conv_and_step(model, tokens.cuda())
    assert conv.is_cuda and steps.is_cuda
    assert (steps - conv).abs().max().item() < 1e-4
    assert (conv.cpu() - cpu).abs().max().item() < 1e-4  # the CUDA conv is the CPU conv


@pytest.mark.parametrize("backend", ["naive", "chunked", "keops", "auto"])
@pytest.mark.parametrize("L,N", [(257, 8), (4096, 64), (16384, 32)])
@pytest.mark.gpu
@cuda_only
def test_cauchy_backends_agree_on_cuda(backend, L, N):
    """Every backend on CUDA against the float64 reference, values and gradients (PyKeOps compiles
    with nvcc here: a failure is this test failing, not a skip; ``auto`` must pick keops on CUDA)."""
    v, z, w = _inputs(L, N)
    ref = cauchy(v, z, w, "naive")
    g = torch.randn(v.shape[:-1] + (L,), dtype=torch.complex128)
    ref_v, ref_w = (t.clone().requires_grad_() for t in (v, w))
    (cauchy(ref_v, z, ref_w, "naive") * g.conj()).real.sum().backward()
    dev = lambda t: t.to(torch.complex64).cuda()  # noqa: E731
    vv, ww = dev(v).requires_grad_(), dev(w).requires_grad_()
    out = cauchy(vv, dev(z), ww, backend)
    assert out.is_cuda and out.dtype == torch.complex64
    (out * dev(g).conj()).real.sum().backward()
    rel = lambda a, b: ((a.detach().cpu().to(torch.complex128) - b).abs().max() / b.abs().max()).item()  # noqa: E731
    assert rel(out, ref) < REL_TOL
    assert rel(vv.grad, ref_v.grad) < REL_TOL
    assert rel(ww.grad, ref_w.grad) < 2 * REL_TOL  # 1/(z-w)^2 doubles the rounding
    if backend == "auto":
        from sashimi.cauchy import keops, resolve_backend

        assert resolve_backend("auto", out.device) == "keops" and keops._STATE.get("ok") is True


@pytest.mark.gpu
@cuda_only
def test_bf16_training_step_is_finite_on_cuda():
    """bf16 autocast forward + backward + AdamW (the paper's parameter groups) on a small SaShiMi."""
    torch.manual_seed(0)
    model = SaShiMi(SaShiMiConfig(**SMALL)).cuda()
    opt = make_optimizer(model)
    before = [p.detach().clone() for p in model.parameters()]
    tokens = torch.randint(0, 256, (4, 1024), device="cuda")
    losses = []
    for _ in range(3):
        with torch.autocast("cuda", torch.bfloat16):
            logits = model(shift_inputs(tokens, 128))
        assert logits.dtype == torch.bfloat16  # autocast reached the linear layers
        loss = nll_bits(logits.float(), tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert losses[-1] < losses[0] + 0.5  # it trains, not diverges (8 bits/sample at chance)


def step_logits(model, tokens: torch.Tensor, compiled: bool) -> torch.Tensor:
    """Logits of every step of `tokens` (B, T) fed in (teacher forcing), eager or compiled tiers."""
    model.compile_step(compiled, None)
    state, out = model.default_state(tokens.shape[0]), []
    with torch.inference_mode():
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            out.append(logits)
    model.compile_step(False)
    return torch.stack(out, 1)


@pytest.mark.gpu
@cuda_only
def test_compiled_steps_equal_eager_steps_on_cuda():
    """Compiled tiers give the eager tiers' logits on the same inputs (80 steps through pool [4, 4]).
    Not sampled sequences: on the first H200 run greedy compiled and eager sequences parted at step 49,
    a near-tie broken differently by Triton's and cuBLAS's rounding, after which nothing compares.
    1e-4: a few float32 roundings of logits of size ~1 (on the CPU the two agree to ~1e-6)."""
    torch.manual_seed(0)
    model = SaShiMi(SaShiMiConfig(d_model=16, n_layers=1, d_state=16, l_max=256)).cuda().eval()
    tokens = torch.randint(0, 256, (2, 80), device="cuda")
    eager, fused = step_logits(model, tokens, False), step_logits(model, tokens, True)
    assert eager.is_cuda and fused.is_cuda
    assert (fused - eager).abs().max().item() < 1e-4
    with torch.no_grad():  # a weight change must reach the compiled step
        model.head.bias[7] += 100.0
    assert (generate(model, 20, batch=2, temperature=0, seed=0, compile=True, cache_dir=None) == 7).all()


# ---- the CPU side of the GPU bench (not gpu-marked: runs everywhere) -------------------------


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-CUDA path")
def test_bench_device_cuda_skips_without_cuda(tmp_path, capsys):
    from bench import model as bench

    out = tmp_path / "bench.jsonl"
    assert bench.main(["--device", "cuda", "--out", str(out)]) == 0
    assert "no CUDA device is present" in capsys.readouterr().out
    assert json.loads(out.read_text().splitlines()[0]) == {"part": "skipped", "reason": "no CUDA device"}


def test_roofline_arithmetic_counts_the_model():
    """The hook-based counts on a one-tier model whose linear layers are known by hand."""
    from bench import roofline

    cfg = dict(d_model=8, n_layers=1, d_state=8, pool=[], ff=2)
    ar = roofline.model_arithmetic(cfg, "cpu", L0=256)
    f_mm = sum(2 * i * o * r for i, o, r in ar["linears"])
    assert f_mm == pytest.approx(2 * (8 * 16 + 8 * 16 + 16 * 8 + 8 * 256))  # S4 out (GLU), fc1, fc2, head
    assert ar["s4"] == [(8, 1.0)] and ar["M"] == 4
    assert ar["saved_bytes_per_sample"]["fp32"] > ar["saved_bytes_per_sample"]["bf16"] > 0
    peaks, source = roofline.gpu_peaks("NVIDIA H200", {})
    assert peaks["bw"] == 4.8e12 and "H200" in source
    _, source = roofline.gpu_peaks("Some Future GPU", {"bw": 1e12})
    assert "H200 figures assumed" in source
    b1, b8 = (roofline.train_bound(ar, 16000, B, "fp32", peaks, peaks["fp32"]) for B in (1, 8))
    assert b8["flops_per_sample"] < b1["flops_per_sample"]  # the kernel is made once per batch
    assert b1["f_mm"] == pytest.approx(3 * f_mm)
    bf = roofline.train_bound(ar, 16000, 8, "bf16", peaks, peaks["fp32"])
    assert bf["bound_samples_per_s"] > b8["bound_samples_per_s"]
    g1, g16 = roofline.gen_bound(ar, 1, peaks), roofline.gen_bound(ar, 16, peaks)
    assert g16["bound_samples_per_s"] > g1["bound_samples_per_s"] and g1["bound_by"] == "memory"
