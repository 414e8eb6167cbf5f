"""Model benchmark for the paper's 8-layer SaShiMi on this machine.

    python -m bench.model [--kernel dplr|s4d] [--lengths 4096,16000] [--gen-batches 1,16]
    python -m bench.model --device cuda [--lengths 16000,128000] [--batches 1,8]
                            [--precisions fp32,bf16,compiled] [--gen-batches 1,16,256] [--out FILE.jsonl]
    python -m bench.model --roofline-only      (the model's FLOPs and bytes per sample; no GPU needed)

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

from .model_cuda import main_cuda, main_roofline


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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.model", description=__doc__.splitlines()[0])
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
    ap.add_argument("--gen-modes", default="", help="--device cuda: step modes to time, e.g. compiled,eager "
                    "(default: compiled, or eager with --no-compile)")
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
