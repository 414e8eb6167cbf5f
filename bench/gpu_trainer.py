"""The Ray-free Trainer on a GPU (bench/gpu.sh, part b): what a Ray worker runs, without Ray.

    python bench/gpu_trainer.py --out DIR [--device cuda] [--steps 300] [--precisions fp32,bf16,fp16]

1. The quickstart job's model and data (jobs/quickstart.yaml: its demo corpus is built under DIR) trained
   for `--steps` steps at each precision, one process, `torch.distributed` with NCCL at world size 1 and the
   model wrapped in DDP (so NCCL's all-reduce runs every step, as in a one-GPU Ray run): wall time, steps/s,
   audio samples/s, val NLL, non-finite steps, peak memory.
2. Exact resume on the device: `2k` steps straight vs `k` steps, a new Trainer resuming from the
   checkpoint, `k` more; the final weights and AdamW moments compared (fp32 and bf16), beside the same
   comparison of two straight runs (a GPU's run-to-run noise; 0 on a CPU). On the first H200 run resume
   differed by 6e-5 (fp32) and 1e-3 (bf16) after 40 steps of the quickstart model; that run had no
   control, so the noise and resume were not told apart.
3. Two ranks sharing the one device over gloo with CUDA tensors (the DDP path Ray takes for fractional
   GPU shares): `--ddp-steps` steps; both ranks' final weights must be identical.

Exit status: the number of failed checks. `--device cpu` rehearses the script without a GPU (gloo at
world size 1 instead of NCCL; fp16 and bf16 then train in fp32, as the trainer does on a CPU).
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cluster.driver.jobs import load_job  # noqa: E402
from cluster.driver.prepare import prepare  # noqa: E402
from cluster.train.runtime import Runtime  # noqa: E402
from cluster.train.trainer import Trainer  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_for(args, name: str, **overrides) -> object:
    """The quickstart job with its data and runs under --out, one worker, eval/checkpoint at the end."""
    out = Path(args.out).resolve()
    job = load_job(REPO / "jobs" / "quickstart.yaml", [
        f"name={name}", f"data.shards={out / 'data' / 'shards'}", f"checkpoint.storage={out / 'runs'}",
        "scaling.num_workers=1", f"scaling.use_gpu={str(args.device == 'cuda').lower()}",
        "logging.every=50", *[f"{k}={v}" for k, v in overrides.items()]])
    return job


def train(job, device: str, where: str, fresh: bool, world: int = 1, rank: int = 0,
          backend: str | None = None, port: int | None = None):
    """prepare() as the driver does, then one rank's Trainer under a process group. -> (trainer, reports, s)."""
    config = prepare(job, where, fresh)  # ranks > 0 come with fresh=False: the run dir is kept
    dev = torch.device(device, 0) if device == "cuda" else torch.device("cpu")
    if device == "cuda":
        torch.cuda.set_device(dev)
    backend = backend or ("nccl" if device == "cuda" else "gloo")
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port or free_port()}", rank=rank,
                            world_size=world)
    reports: list[dict] = []

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        """Keep the metrics (no registry: the checkpoint manager writes into the run dir itself)."""
        reports.append(dict(metrics))

    ddp = (lambda m: torch.nn.parallel.DistributedDataParallel(m, device_ids=[dev.index] if backend == "nccl" else None))
    runtime = Runtime(rank=rank, world_size=world, device=dev, report=report, prepare_model=ddp)
    t0 = time.perf_counter()
    trainer = Trainer(config, runtime)
    trainer.run()
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    state = {k: v.detach().cpu().clone() for k, v in trainer.raw_model.state_dict().items()}
    opt = trainer.optimizer.state_dict()
    del trainer
    import gc

    gc.collect()  # the DDP reducer goes before its process group (a gloo group's destructor can hang otherwise)
    dist.destroy_process_group()
    return state, opt, reports, wall


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a) if a else 0.0


def opt_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for pid, st in a["state"].items():
        for m in ("exp_avg", "exp_avg_sq"):
            worst = max(worst, (st[m].float() - b["state"][pid][m].float()).abs().max().item())
    return worst


def precision_runs(args, results: dict) -> int:
    failed = 0
    for prec in (p for p in args.precisions.split(",") if p):
        job = job_for(args, f"gpu-{prec}", **{"training.max_steps": args.steps, "training.precision": prec,
                                               "checkpoint.every": args.steps, "eval.every": args.steps,
                                               # one generated clip (eager step mode on the device) is enough
                                               "eval.generate_samples": 1000 if prec == "fp32" else 0})
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            _, _, reports, wall = train(job, args.device, f"quickstart ({prec})", fresh=True)
        except Exception as exc:  # noqa: BLE001  (recorded; the other precisions still run)
            print(f"train {prec}: FAILED: {type(exc).__name__}: {exc}")
            results[f"train_{prec}"] = {"error": f"{type(exc).__name__}: {exc}"}
            failed += 1
            continue
        last = reports[-1]
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
        audio = args.steps * job.training.batch_per_worker * job.data.crop
        rec = {"steps": args.steps, "wall_s": wall, "steps_per_s": args.steps / wall, "audio_samples_per_s": audio / wall,
               "val_nll_bits": last.get("val_nll_bits"), "nonfinite_steps": last.get("nonfinite_steps"),
               "peak_mem_gib": peak}
        results[f"train_{prec}"] = rec
        ok = rec["val_nll_bits"] is not None and rec["val_nll_bits"] < args.max_val_nll and rec["nonfinite_steps"] == 0
        failed += not ok
        print(f"train {prec:<5}: {args.steps} steps in {wall:.1f} s ({rec['steps_per_s']:.1f} steps/s, "
              f"{rec['audio_samples_per_s']:.0f} audio samples/s incl. eval and checkpoint), "
              f"val NLL {rec['val_nll_bits']} bits, non-finite steps {rec['nonfinite_steps']}, peak {peak:.2f} GiB"
              f"{'' if ok else f'  <-- FAILED (val NLL not below {args.max_val_nll} bits, or non-finite steps)'}")
    return failed


def resume_check(args, results: dict) -> int:
    failed = 0
    k = args.resume_steps
    for prec in ("fp32", "bf16"):
        common = {"training.precision": prec, "checkpoint.every": k, "eval.every": k, "eval.generate_samples": 0}
        try:
            a, a_opt, _, _ = train(job_for(args, f"resume-straight-{prec}", **{"training.max_steps": 2 * k}, **common),
                                   args.device, "straight", fresh=True)
            # the control: the same straight run again. On a GPU some kernels (atomics in reductions) may
            # order float sums differently from run to run; resume is judged against that noise
            a2, a2_opt, _, _ = train(job_for(args, f"resume-straight-{prec}", **{"training.max_steps": 2 * k}, **common),
                                     args.device, "straight again", fresh=True)
            train(job_for(args, f"resume-split-{prec}", **{"training.max_steps": k}, **common), args.device,
                  "first half", fresh=True)
            b, b_opt, reports, _ = train(job_for(args, f"resume-split-{prec}", **{"training.max_steps": 2 * k}, **common),
                                         args.device, "resumed", fresh=False)
        except Exception as exc:  # noqa: BLE001
            print(f"resume {prec}: FAILED: {type(exc).__name__}: {exc}")
            results[f"resume_{prec}"] = {"error": f"{type(exc).__name__}: {exc}"}
            failed += 1
            continue
        resumed_from = reports[-1].get("resumed_from")
        dw, dm = max_diff(a, b), opt_diff(a_opt, b_opt)
        rw, rm = max_diff(a, a2), opt_diff(a_opt, a2_opt)
        allowed_w, allowed_m = max(args.resume_atol, 4 * rw), max(args.resume_atol, 4 * rm)
        ok = resumed_from == k and dw <= allowed_w and dm <= allowed_m
        failed += not ok
        results[f"resume_{prec}"] = {"steps": 2 * k, "resumed_from": resumed_from, "max_weight_diff": dw,
                                     "max_adam_moment_diff": dm, "repeat_weight_diff": rw, "repeat_adam_moment_diff": rm,
                                     "atol": args.resume_atol, "ok": ok}
        print(f"resume {prec:<5}: {2 * k} steps straight vs {k} + resume from step {resumed_from} + {k}: max |weight "
              f"diff| {dw:.3g}, max |AdamW moment diff| {dm:.3g}; two straight runs differ by {rw:.3g} / {rm:.3g} "
              f"(allowed: max({args.resume_atol:g}, 4 x that)) {'ok' if ok else '<-- FAILED'}")
    return failed


def _ddp_rank(rank, world, port, args, out):
    job = job_for(args, "ddp-gloo-2ranks", **{"training.max_steps": args.ddp_steps, "checkpoint.every": args.ddp_steps,
                                              "eval.every": args.ddp_steps, "eval.generate_samples": 0})
    state, _, reports, wall = train(job, args.device, "2 ranks", fresh=False, world=world, rank=rank,
                                    backend="gloo", port=port)
    torch.save({"state": state, "wall": wall, "report": reports[-1]}, f"{out}/ddp_rank{rank}.pt")


def ddp_check(args, results: dict) -> int:
    import torch.multiprocessing as mp

    out = Path(args.out).resolve()
    # prepared once here (the demo data exists; a fresh run dir), as the driver would before starting ranks
    prepare(job_for(args, "ddp-gloo-2ranks", **{"training.max_steps": args.ddp_steps}), "2 ranks", True)
    try:
        mp.start_processes(_ddp_rank, args=(2, free_port(), args, str(out)), nprocs=2, start_method="spawn")
        r0, r1 = (torch.load(out / f"ddp_rank{r}.pt", weights_only=True) for r in (0, 1))
    except Exception as exc:  # noqa: BLE001
        print(f"ddp gloo x2: FAILED: {type(exc).__name__}: {exc}")
        results["ddp_gloo_2ranks"] = {"error": f"{type(exc).__name__}: {exc}"}
        return 1
    diff = max_diff(r0["state"], r1["state"])
    nll = r0["report"].get("val_nll_bits")
    ok = diff == 0.0 and nll is not None and nll == nll
    results["ddp_gloo_2ranks"] = {"steps": args.ddp_steps, "wall_s": max(r0["wall"], r1["wall"]),
                                  "rank_weight_diff": diff, "val_nll_bits": nll, "ok": ok}
    print(f"ddp gloo x2 on one {args.device}: {args.ddp_steps} steps in {max(r0['wall'], r1['wall']):.1f} s, "
          f"ranks' weights differ by {diff:.3g} (must be 0), val NLL {nll:.4f} {'ok' if ok else '<-- FAILED'}")
    for r in (0, 1):
        os.remove(out / f"ddp_rank{r}.pt")
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="a scratch folder (data, runs) and results.json")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--precisions", default="fp32,bf16,fp16")
    ap.add_argument("--resume-steps", type=int, default=20, help="k: 2k straight vs k + resume + k")
    ap.add_argument("--resume-atol", type=float, default=0.0,
                    help="largest weight / moment difference accepted (0: bit-exact)")
    ap.add_argument("--ddp-steps", type=int, default=20)
    ap.add_argument("--max-val-nll", type=float, default=6.0,
                    help="a precision run passes when its val NLL (bits) ends below this (chance: 8)")
    ap.add_argument("--parts", default="precisions,resume,ddp")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is present; skipping the GPU trainer checks")
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"the Trainer without Ray on {where} (torch {torch.__version__})")
    results: dict = {"device": where}
    parts = args.parts.split(",")
    failed = 0
    if "precisions" in parts:
        failed += precision_runs(args, results)
    if "resume" in parts:
        failed += resume_check(args, results)
    if "ddp" in parts:
        failed += ddp_check(args, results)
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{failed} check(s) failed")
    return failed


if __name__ == "__main__":
    raise SystemExit(main())
