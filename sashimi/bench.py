"""Model benchmark for the paper's 8-layer SaShiMi on this machine.

    python -m sashimi.bench [--kernel dplr|s4d] [--lengths 4096,16000] [--gen-batches 1,16]
    python -m sashimi.bench --device cuda [--lengths 16000,128000] [--batches 1,8]
                            [--precisions fp32,bf16,compiled] [--gen-batches 1,16,256] [--out FILE.jsonl]
    python -m sashimi.bench --roofline-only      (the model's FLOPs and bytes per sample; no GPU needed)

Training: forward + backward + AdamW at batch 1, samples/s and the child process's peak RSS.
Generation: multi-rate step mode, samples/s per batch size (total over the batch), with
conv-vs-step agreement measured on the same model. Each measurement runs in a fresh child
process so peak memory is its own.

``--device cuda`` (one GPU, in this process; peak memory is ``torch.cuda.max_memory_allocated``
reset per measurement): training samples/s at each length x batch x precision (fp32; bf16 =
bf16 autocast; compiled = bf16 autocast + ``torch.compile`` of the model forward), peak GPU memory,
compiled generation samples/s and us per sample, each against the roofline bound printed with it
(``ROOFLINE_FORMULA``). Without a CUDA device it says so and exits 0.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time


def _train(cfg_dict, L, steps, threads, q):
    import torch

    from sashimi import SaShiMi, SaShiMiConfig
    from sashimi.metrics import nll_bits, shift_inputs
    from sashimi.optim import make_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SaShiMi(SaShiMiConfig.from_dict({**cfg_dict, "l_max": L}))
    opt = make_optimizer(model)
    tokens = torch.randint(0, 256, (1, L))
    inputs = shift_inputs(tokens, 128)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = nll_bits(model(inputs), tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    best = min(times[1:])  # first step includes allocator warm-up
    q.put({"samples_per_s": L / best, "step_s": best,
           "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20})


def _generate(cfg_dict, batch, n, threads, compile_, q):
    import torch

    from sashimi import SaShiMi, SaShiMiConfig
    from sashimi.generate import generate

    torch.manual_seed(0)
    model = SaShiMi(SaShiMiConfig.from_dict(cfg_dict)).eval()
    t0 = time.perf_counter()
    model.step_constants()  # one-off float64 setup of the recurrences, reused while weights are unchanged
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    threads = threads or None
    generate(model, 64, batch=batch, seed=0, threads=threads, compile=compile_)  # warm-up (and compile)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    generate(model, n, batch=batch, seed=0, threads=threads, compile=compile_)
    dt = time.perf_counter() - t0
    q.put({"samples_per_s": batch * n / dt, "per_sequence": n / dt, "warmup_s": warm, "setup_s": setup})


def _agreement(cfg_dict, L, q):
    import torch

    from sashimi import SaShiMi, SaShiMiConfig
    from sashimi.generate import torch_threads

    torch.manual_seed(0)
    model = SaShiMi(SaShiMiConfig.from_dict({**cfg_dict, "l_max": L})).eval()
    tokens = torch.randint(0, 256, (1, L))
    with torch.no_grad(), torch_threads(1):
        conv = model(tokens)
        state, out = model.default_state(1), []
        for t in range(L):
            logits, state = model.step(tokens[:, t], state)
            out.append(logits)
    q.put({"max_abs_diff": (torch.stack(out, 1) - conv).abs().max().item()})


def _run(target, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    p.join()
    if p.exitcode != 0 or q.empty():
        return None
    return q.get()


# ---- --device cuda: training / generation on one GPU, against the roofline -----------------

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


def _cuda_train(cfg_dict, L, B, prec, steps):
    import gc

    import torch

    from sashimi import SaShiMi, SaShiMiConfig
    from sashimi.metrics import nll_bits, shift_inputs
    from sashimi.optim import make_optimizer

    torch.manual_seed(0)
    model = SaShiMi(SaShiMiConfig.from_dict({**cfg_dict, "l_max": L})).cuda()
    opt = make_optimizer(model)
    fwd = torch.compile(model) if prec == "compiled" else model
    tokens = torch.randint(0, 256, (B, L), device="cuda")
    inputs = shift_inputs(tokens, 128)
    torch.cuda.synchronize()
    gc.collect()  # a previous measurement's tensors (an OOM's traceback held them) are gone
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    times = []
    warm = 2 if prec == "compiled" else 1  # the first step compiles (forward, then backward) / warms up
    for _ in range(warm + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", torch.bfloat16, enabled=prec != "fp32"):
            logits = fwd(inputs)
        loss = nll_bits(logits.float(), tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    finite = bool(torch.isfinite(loss).item())
    step = sorted(times[warm:])[len(times[warm:]) // 2]
    return {"samples_per_s": B * L / step, "step_s": step, "warmup_s": sum(times[:warm]),
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30, "loss_finite": finite}


def _cuda_generate(cfg_dict, B, n, compile_):
    import torch

    from sashimi import SaShiMi, SaShiMiConfig
    from sashimi.generate import generate

    torch.manual_seed(0)
    model = SaShiMi(SaShiMiConfig.from_dict(cfg_dict)).cuda().eval()
    t0 = time.perf_counter()
    generate(model, 64, batch=B, seed=0, compile=compile_, cache_dir=None)  # warm-up (and compile)
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    generate(model, n, batch=B, seed=0, compile=compile_, cache_dir=None)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"samples_per_s": B * n / dt, "us_per_step": dt / n * 1e6, "warmup_s": warm}


def _record(out_path, rec: dict) -> None:
    if out_path:
        import json

        with open(out_path, "a") as f:
            f.write(json.dumps(rec) + "\n")


def main_cuda(args, cfg: dict) -> int:
    import torch

    if not torch.cuda.is_available():
        print("--device cuda: no CUDA device is present (torch.cuda.is_available() is False); "
              "skipping the CUDA benchmark")
        _record(args.out, {"part": "skipped", "reason": "no CUDA device"})
        return 0
    t_start = time.perf_counter()
    name = torch.cuda.get_device_name(0)
    peaks, source = gpu_peaks(name, {"bf16": args.peak_bf16, "fp32": args.peak_fp32, "bw": args.peak_bw})
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    mm_fp32 = peaks["tf32"] if tf32 else peaks["fp32"]
    from sashimi import SaShiMi, SaShiMiConfig

    n = SaShiMi(SaShiMiConfig(**cfg)).num_parameters()
    print(f"SaShiMi paper config, kernel={args.kernel}, {n / 1e6:.2f}M parameters, on {name} "
          f"(torch {torch.__version__}, fp32 matmuls {'tf32' if tf32 else 'full fp32'})")
    print_peaks(peaks, source)
    print(ROOFLINE_FORMULA)
    ar = model_arithmetic(cfg, "cuda")
    print(f"measured counts: {len(ar['linears'])} linear calls, {len(ar['s4'])} S4 layers; saved activations "
          + ", ".join(f"{k} {v / 1e3:.1f} kB" for k, v in ar["saved_bytes_per_sample"].items()) + " per sample")
    _record(args.out, {"part": "setup", "gpu": name, "peaks": peaks, "peaks_source": source, "tf32": tf32,
                       "params": n, "saved_bytes_per_sample": ar["saved_bytes_per_sample"]})

    def over_budget():
        return args.time_budget and time.perf_counter() - t_start > args.time_budget

    lengths = [int(x) for x in args.lengths.split(",") if x]
    batches = [int(x) for x in args.batches.split(",") if x]
    precs = [x for x in args.precisions.split(",") if x]

    def train_all(precisions):
        for prec in precisions:
            for L in lengths:
                for B in batches:
                    rec = {"part": "train", "L": L, "batch": B, "precision": prec}
                    bound = train_bound(ar, L, B, prec, peaks, mm_fp32)
                    label = f"train  L={L:>6} batch {B} {prec:<8}"
                    if over_budget():
                        print(f"{label}: skipped (time budget {args.time_budget:.0f} s spent)")
                        _record(args.out, {**rec, "error": "skipped: time budget"})
                        continue
                    try:
                        r = _cuda_train(cfg, L, B, prec, args.train_steps)
                    except Exception as exc:  # noqa: BLE001  (OOM, compile failure: recorded, next one)
                        msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
                        print(f"{label}: failed ({msg})")
                        _record(args.out, {**rec, "error": msg})
                        torch.cuda.empty_cache()
                        continue
                    frac = r["samples_per_s"] / bound["bound_samples_per_s"]
                    print(f"{label}: {r['samples_per_s']:10.0f} samples/s ({r['step_s'] * 1e3:.1f} ms/step, peak "
                          f"{r['peak_mem_gb']:.2f} GiB, warm-up {r['warmup_s']:.1f} s{'' if r['loss_finite'] else ', LOSS NOT FINITE'}); "
                          f"bound {bound['bound_samples_per_s']:.3g} ({bound['bound_by']}: "
                          f"{bound['flops_per_sample'] / 1e6:.2f} MFLOP, {bound['bytes_per_sample'] / 1e3:.1f} kB per sample) "
                          f"-> {100 * frac:.1f}% of bound")
                    _record(args.out, {**rec, **r, **bound, "fraction_of_bound": frac})
    # eager precisions, then compiled generation, then compiled training (compilation is the slow part:
    # under --time-budget the figures that cost least come first)
    train_all([p for p in precs if p != "compiled"])
    for B in (int(x) for x in args.gen_batches.split(",") if x):
        compile_ = not args.no_compile
        rec = {"part": "generate", "batch": B, "compiled": compile_}
        label = f"generate batch {B:>3} {'compiled' if compile_ else 'eager'}"
        bound = gen_bound(ar, B, peaks)
        if over_budget():
            print(f"{label}: skipped (time budget {args.time_budget:.0f} s spent)")
            _record(args.out, {**rec, "error": "skipped: time budget"})
            continue
        try:
            r = _cuda_generate(cfg, B, args.gen_samples, compile_)
        except Exception as exc:  # noqa: BLE001
            msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
            print(f"{label}: failed ({msg})")
            _record(args.out, {**rec, "error": msg})
            continue
        frac = r["samples_per_s"] / bound["bound_samples_per_s"]
        print(f"{label}: {r['samples_per_s']:10.0f} samples/s total, {r['us_per_step']:.1f} us per sample "
              f"(step), warm-up {r['warmup_s']:.1f} s; bound {bound['bound_us_per_step']:.3g} us/step "
              f"({bound['bound_by']}) -> {100 * frac:.2f}% of bound")
        _record(args.out, {**rec, **r, **bound, "fraction_of_bound": frac})
    train_all([p for p in precs if p == "compiled"])
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


def main_roofline(args, cfg: dict) -> int:
    """The model side of the roofline on the CPU: FLOPs and bytes per sample for the CUDA bench's shapes."""
    peaks, source = gpu_peaks(args.gpu_name, {"bf16": args.peak_bf16, "fp32": args.peak_fp32, "bw": args.peak_bw})
    print_peaks(peaks, source)
    print(ROOFLINE_FORMULA)
    ar = model_arithmetic(cfg, "cpu")
    print("saved activations per sample: " + ", ".join(f"{k} {v / 1e3:.1f} kB" for k, v in
                                                         ar["saved_bytes_per_sample"].items()))
    for prec in (x for x in args.precisions.split(",") if x):
        for L in (int(x) for x in args.lengths.split(",") if x):
            for B in (int(x) for x in args.batches.split(",") if x):
                b = train_bound(ar, L, B, prec, peaks, peaks["fp32"])  # torch default: full-fp32 matmuls
                print(f"train  L={L:>6} batch {B} {prec:<8}: {b['flops_per_sample'] / 1e6:7.2f} MFLOP "
                      f"(matmul {b['f_mm'] / 1e6:.2f}), {b['bytes_per_sample'] / 1e3:7.1f} kB per sample -> bound "
                      f"{b['bound_samples_per_s']:.3g} samples/s ({b['bound_by']})")
    for B in (int(x) for x in args.gen_batches.split(",") if x):
        g = gen_bound(ar, B, peaks)
        print(f"generate batch {B:>3}: {g['flops_per_step'] / 1e6:.2f} MFLOP, {g['bytes_per_step'] / 1e6:.2f} MB per "
              f"step -> bound {g['bound_us_per_step']:.2f} us/step, {g['bound_samples_per_s']:.3g} samples/s ({g['bound_by']})")
    return 0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sashimi.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="dplr", choices=["dplr", "s4d"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cpu: the CPU bench below (unchanged); cuda: the GPU bench against the roofline")
    ap.add_argument("--lengths", default=None, help="training lengths (default: cpu 4096,16000; cuda 16000,128000)")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--gen-batches", default=None, help="generation batches (default: cpu 1,16; cuda 1,16,256)")
    ap.add_argument("--gen-samples", type=int, default=2048)
    ap.add_argument("--agreement-length", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for training")
    ap.add_argument("--gen-threads", type=int, default=0,
                    help="intra-op threads for step mode (0 = generate()'s default: all when compiled, "
                         "eager: 1 below batch 8, else all)")
    ap.add_argument("--no-compile", action="store_true", help="eager step mode (tiers not compiled)")
    cu = ap.add_argument_group("--device cuda / --roofline-only")
    cu.add_argument("--batches", default="1,8", help="training batch sizes")
    cu.add_argument("--precisions", default="fp32,bf16,compiled",
                    help="fp32; bf16 (autocast); compiled (bf16 autocast + torch.compile of the forward)")
    cu.add_argument("--out", default=None, help="append every figure to this JSON-lines file")
    cu.add_argument("--time-budget", type=float, default=0,
                    help="seconds; measurements not started by then are skipped (recorded as such); 0 = none")
    cu.add_argument("--peak-bf16", type=float, default=0, help="override the assumed dense bf16 FLOP/s")
    cu.add_argument("--peak-fp32", type=float, default=0, help="override the assumed fp32 (non-tensor) FLOP/s")
    cu.add_argument("--peak-bw", type=float, default=0, help="override the assumed memory bandwidth, bytes/s")
    cu.add_argument("--roofline-only", action="store_true",
                    help="print the roofline arithmetic for the CUDA shapes (counts on the CPU) and exit")
    cu.add_argument("--gpu-name", default="H200", help="--roofline-only: the GPU whose peaks to assume")
    args = ap.parse_args(argv)
    gpu = args.device == "cuda" or args.roofline_only
    if args.lengths is None:
        args.lengths = "16000,128000" if gpu else "4096,16000"
    if args.gen_batches is None:
        args.gen_batches = "1,16,256" if gpu else "1,16"
    cfg = {"kernel": args.kernel}  # everything else: the paper's 8-layer defaults
    if args.roofline_only:
        return main_roofline(args, cfg)
    if args.device == "cuda":
        return main_cuda(args, cfg)
    from sashimi import SaShiMi, SaShiMiConfig

    n = SaShiMi(SaShiMiConfig(**cfg)).num_parameters()
    print(f"SaShiMi paper config (d_model 64, 8 layers/tier, pool [4,4], expand 2, ff 2, N 64), "
          f"kernel={args.kernel}, {n / 1e6:.2f}M parameters, float32, CPU")
    for L in (int(x) for x in args.lengths.split(",") if x):
        r = _run(_train, cfg, L, args.train_steps, args.threads)
        if r is None:
            print(f"train L={L}: failed (out of memory?)")
            continue
        print(f"train  L={L:>6} batch 1: {r['samples_per_s']:8.0f} samples/s  ({r['step_s']:.2f} s/step, "
              f"peak RSS {r['peak_rss_gb']:.2f} GB, {args.threads} threads)")
    for B in (int(x) for x in args.gen_batches.split(",") if x):
        r = _run(_generate, cfg, B, args.gen_samples, args.gen_threads, not args.no_compile)
        if r is None:
            print(f"generate batch {B}: failed")
            continue
        print(f"generate batch {B:>3}: {r['samples_per_s']:8.0f} samples/s total, {r['per_sequence']:7.0f} per "
              f"sequence ({r['per_sequence'] / 16000:.3f}x real time at 16 kHz, threads {args.gen_threads or 'auto'}, "
              f"{'compiled' if not args.no_compile else 'eager'}; one-off: setup {r['setup_s']:.1f} s, "
              f"warm-up {r['warmup_s']:.0f} s)")
    if args.agreement_length:
        r = _run(_agreement, cfg, args.agreement_length)
        print(f"conv vs multi-rate step, {args.agreement_length} samples: max |logit diff| = {r['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
