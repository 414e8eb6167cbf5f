"""``python -m bench.model --device cuda``: training and generation on one GPU, each figure printed
beside its roofline bound (bench.roofline); ``--roofline-only``: the bound's arithmetic alone."""
from __future__ import annotations

import time

from .roofline import ROOFLINE_FORMULA, gen_bound, gpu_peaks, model_arithmetic, print_peaks, train_bound


def time_training(model, L: int, B: int, prec: str, steps: int, make_opt=None, device: str = "cuda") -> dict:
    """Training samples/s of `model` (tokens (B, L) -> logits (B, L, 256)) at precision `prec` (fp32; bf16 =
    bf16 autocast; compiled = bf16 autocast + torch.compile of the forward): warm-up step(s), then the
    median of `steps` timed steps (forward, next-sample NLL, backward, optimiser step), synchronised around
    each. One timing loop for every model measured, ours and the paper's own (bench/official_sashimi.py),
    so the side-by-side figures differ only in the model."""
    import gc

    import torch

    from sashimi.metrics import nll_bits, shift_inputs

    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    opt = make_opt(model) if make_opt else torch.optim.AdamW(model.parameters(), lr=1e-3)
    fwd = torch.compile(model) if prec == "compiled" else model
    tokens = torch.randint(0, 256, (B, L), device=device)
    inputs = shift_inputs(tokens, 128)
    sync()
    if cuda:
        gc.collect()  # a previous measurement's tensors (an OOM's traceback held them) are gone
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    warm = 2 if prec == "compiled" else 1  # the first step compiles (forward, then backward) / warms up
    for _ in range(warm + steps):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=prec != "fp32"):
            logits = fwd(inputs)
        loss = nll_bits(logits.float(), tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    finite = bool(torch.isfinite(loss).item())
    step = sorted(times[warm:])[len(times[warm:]) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"samples_per_s": B * L / step, "step_s": step, "warmup_s": sum(times[:warm]),
            "peak_mem_gb": peak, "loss_finite": finite}


def _cuda_train(cfg_dict, L, B, prec, steps):
    import torch

    from sashimi import SaShiMi, SaShiMiConfig
    from sashimi.optim import make_optimizer

    torch.manual_seed(0)
    model = SaShiMi(SaShiMiConfig.from_dict({**cfg_dict, "l_max": L})).cuda()
    return time_training(model, L, B, prec, steps, make_optimizer)


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
    modes = [m for m in args.gen_modes.split(",") if m] if args.gen_modes else \
        (["eager"] if args.no_compile else ["compiled"])
    for compile_, B in ((m == "compiled", int(x)) for m in modes for x in args.gen_batches.split(",") if x):
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
