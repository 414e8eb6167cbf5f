"""The roofline of the paper's SaShiMi on a GPU: the model's FLOPs and bytes per sample (counted by
hooks on a real forward) against a GPU's peak FLOP/s and memory bandwidth. Used by the CUDA bench
(bench.model_cuda) and by ``python -m bench.model --roofline-only`` (no GPU needed)."""
from __future__ import annotations

# Dense (no sparsity) peak throughput and memory bandwidth per GPU, from the vendors' data sheets.
# The FFT conv, the Cauchy/Vandermonde kernel and the elementwise ops run in float32 on CUDA cores
# whatever the precision (autocast is off inside the S4 layer), so they are held to the fp32 peak.
GPU_PEAKS = {
    "H200": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12, "bw": 4.8e12},
    "H100": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12, "bw": 3.35e12},  # SXM
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12, "bw": 2.0e12},  # 80 GB SXM
    "L4": {"bf16": 121e12, "tf32": 60e12, "fp32": 30e12, "bw": 0.3e12},
}
C_FFT = 2.5  # flops of a real FFT of size n: ~2.5·n·log2(n) (a complex one: 5·n·log2(n))
C_KERNEL = 20  # flops per (frequency, pole, numerator) of the Cauchy sum: two complex divisions + adds
C_STEP = 16  # flops per complex mode per step: state update (8) + readout (8)

ROOFLINE_FORMULA = """\
Roofline arithmetic (per audio sample, at length L and batch B; tier t runs at rate r_t = 1/P_t with
width H_t; sums run over the S4 layers and the nn.Linear layers, as counted by hooks on one forward):
  F_mm   = sum_linear 2*in*out*r                                  (~2 x params at their rate)
  F_fft  = sum_S4 H_t*r_t*[2*C_FFT*log2(2*L*r_t) + 6]              (rfft(u) + irfft(y) at n = 2 L_t, complex product)
         + sum_S4 H_t*r_t*C_FFT*log2(2*L*r_t)/B                    (rfft(k), once per batch)
  F_ker  = sum_S4 H_t*r_t*(N/2)*M*C_KERNEL/B                       (kernel generation: L_t frequencies x N/2 poles x M numerators;
                                                                    M = 4 for DPLR, 1 for S4D; once per batch)
  training FLOPs  = 3 x (F_mm + F_fft + F_ker)                     (forward + backward = 3 x forward)
  training bytes  = 2 x saved-activation bytes (written in the forward, read in the backward; measured
                    with saved_tensors_hooks, per precision) + 32 bytes/param/step / (B*L) (weights, grads, AdamW m, v)
  training time bound = max(3 F_mm / P_mm + 3 (F_fft + F_ker) / P_fp32,  bytes / BW)
                    P_mm = bf16 peak under bf16 autocast (bf16, compiled), else fp32 or tf32 (torch's matmul setting)
  generation, per step of batch B (one sample per sequence):
    FLOPs = B x (F_mm + sum_S4 H_t*r_t*(N/2)*C_STEP);  bytes = 4*F_mm/2 (fp32 weights read, slower tiers every P_t steps)
          + B x sum_S4 H_t*r_t*N*4*2 (the (B, H, 2, N/2) fp32 state read and written)
    time bound = max(FLOPs / P_fp32, bytes / BW); a kernel launch costs ~2-5 us, so eager step mode
    (hundreds of kernels per step) is launch-bound: one CUDA-graph launch per step is the practical goal.
  fraction of bound = measured samples/s / (1 / time bound)."""


def model_arithmetic(cfg_dict: dict, device: str = "cpu", L0: int = 4096, precisions=("fp32", "bf16")) -> dict:
    """Counts from one batch-1 forward of length L0: every nn.Linear (in, out, rate) and every S4
    layer (H, rate) by forward hooks, and the bytes saved for the backward, per precision."""
    import torch

    from sashimi import SaShiMi, SaShiMiConfig
    from sashimi.metrics import nll_bits, shift_inputs
    from sashimi.s4 import S4

    torch.manual_seed(0)
    cfg = SaShiMiConfig.from_dict({**cfg_dict, "l_max": L0})
    model = SaShiMi(cfg).to(device)
    tokens = torch.randint(0, 256, (1, L0), device=device)
    linears, s4s, hooks = [], [], []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out: linears.append((mod.in_features, mod.out_features,
                                                      inp[0].numel() / mod.in_features / L0))))
        elif isinstance(m, S4):
            hooks.append(m.register_forward_hook(lambda mod, inp, out: s4s.append((inp[0].shape[-1],
                                                                                 inp[0].shape[1] / L0))))
    with torch.no_grad():
        model(tokens)
    for h in hooks:
        h.remove()
    saved = {}
    for prec in precisions:
        seen, total = set(), [0]

        def pack(t, seen=seen, total=total):
            key = (t.untyped_storage().data_ptr(), t.dtype)
            if key not in seen:
                seen.add(key)
                total[0] += t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=prec == "bf16"):
                logits = model(shift_inputs(tokens, 128))
            loss = nll_bits(logits.float(), tokens)
        del loss, logits
        saved[prec] = total[0] / L0
    return {"linears": linears, "s4": s4s, "saved_bytes_per_sample": saved, "d_state": cfg.d_state,
            "M": 4 if cfg.kernel == "dplr" else 1, "params": model.num_parameters()}


def train_bound(ar: dict, L: int, B: int, prec: str, peaks: dict, mm_peak_fp32: float) -> dict:
    import math

    N, M = ar["d_state"], ar["M"]
    f_mm = sum(2 * i * o * r for i, o, r in ar["linears"])
    f_fft = sum(H * r * (2 * C_FFT * math.log2(2 * L * r) + 6 + C_FFT * math.log2(2 * L * r) / B) for H, r in ar["s4"])
    f_ker = sum(H * r * (N / 2) * M * C_KERNEL / B for H, r in ar["s4"])
    p_mm = peaks["bf16"] if prec in ("bf16", "compiled") else mm_peak_fp32
    t_c = 3 * f_mm / p_mm + 3 * (f_fft + f_ker) / peaks["fp32"]
    saved = ar["saved_bytes_per_sample"]["bf16" if prec in ("bf16", "compiled") else "fp32"]
    nbytes = 2 * saved + 32 * ar["params"] / (B * L)
    t_m = nbytes / peaks["bw"]
    return {"flops_per_sample": 3 * (f_mm + f_fft + f_ker), "f_mm": 3 * f_mm, "f_fft_kernel": 3 * (f_fft + f_ker),
            "bytes_per_sample": nbytes, "bound_samples_per_s": 1 / max(t_c, t_m),
            "bound_by": "compute" if t_c >= t_m else "memory"}


def gen_bound(ar: dict, B: int, peaks: dict) -> dict:
    N = ar["d_state"]
    f_mm = sum(2 * i * o * r for i, o, r in ar["linears"])
    flops = B * (f_mm + sum(H * r * (N / 2) * C_STEP for H, r in ar["s4"]))
    nbytes = 4 * f_mm / 2 + B * sum(H * r * N * 4 * 2 for H, r in ar["s4"])
    t = max(flops / peaks["fp32"], nbytes / peaks["bw"])
    return {"flops_per_step": flops, "bytes_per_step": nbytes, "bound_us_per_step": t * 1e6,
            "bound_samples_per_s": B / t, "bound_by": "compute" if flops / peaks["fp32"] >= nbytes / peaks["bw"] else "memory"}


def gpu_peaks(name: str, overrides: dict) -> tuple[dict, str]:
    """The peak numbers assumed for the GPU called ``name`` (H200's when unknown), plus overrides."""
    key = next((k for k in GPU_PEAKS if k.lower() in name.lower()), None)
    peaks = dict(GPU_PEAKS[key or "H200"])
    peaks.update({k: v for k, v in overrides.items() if v})
    source = f"data-sheet figures for {key}" if key else f"unknown GPU {name!r}: H200 figures assumed"
    if any(overrides.values()):
        source += " (with command-line overrides)"
    return peaks, source


def print_peaks(peaks: dict, source: str) -> None:
    print(f"assumed peaks ({source}): bf16 dense {peaks['bf16'] / 1e12:.0f} TFLOP/s, tf32 {peaks['tf32'] / 1e12:.0f} "
          f"TFLOP/s, fp32 (non-tensor) {peaks['fp32'] / 1e12:.1f} TFLOP/s, memory {peaks['bw'] / 1e12:.2f} TB/s")
