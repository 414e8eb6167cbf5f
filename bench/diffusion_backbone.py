"""The diffusion backbone (DiffWave+SaShiMi) on this machine's CPU, beside the autoregressive model.

    python bench/diffusion_backbone.py [--length 16000] [--train-steps 3] [--threads 2]
                                       [--clips 16] [--sample-evals 3] [--short-steps 50] [--full-sampling]
                                       [--sample-backbones small,full]

Training: forward + backward + AdamW at batch 1 (``diffusion.loss``: one random step t per clip),
samples/s from the fastest of ``--train-steps`` timed steps after one warm-up step, and the child
process's peak RSS; the baseline is the paper's 8-layer autoregressive SaShiMi, measured the same
way in the same run. Each measurement runs in a fresh child process (its own peak memory).

Sampling (the small backbone, or those ``--sample-backbones`` names; ``--clips`` clips of ``--length`` samples in one batch): every step
of the sampler is one network evaluation over the whole batch plus a few elementwise ops, so the
wall time of a schedule is its number of steps times the time of one step. By default the script
times ``diffusion.sample`` over ``--sample-evals`` steps and extrapolates to T = 200 and to the
shorter ``--short-steps`` schedule, saying so in its output; ``--full-sampling`` runs both
schedules whole instead (tens of minutes on a 2-core CPU).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _train(kind: str, cfg: dict, L: int, steps: int, threads: int, q) -> None:
    import torch

    from sashimi import DiffWaveConfig, DiffWaveSaShiMi, SaShiMi, SaShiMiConfig, diffusion
    from sashimi.metrics import nll_bits, shift_inputs
    from sashimi.optim import make_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if kind == "diffusion":
        model = DiffWaveSaShiMi(DiffWaveConfig.from_dict({**cfg, "l_max": L}))
        x0, gen = torch.rand(1, L) * 2 - 1, torch.Generator().manual_seed(0)
        step_loss = lambda: diffusion.loss(model, x0, gen)  # noqa: E731
    else:
        model = SaShiMi(SaShiMiConfig.from_dict({**cfg, "l_max": L}))
        tokens = torch.randint(0, 256, (1, L))
        inputs = shift_inputs(tokens, 128)
        step_loss = lambda: nll_bits(model(inputs), tokens)  # noqa: E731
    init_s = time.perf_counter() - t0
    opt = make_optimizer(model)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = step_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    best = min(times[1:])  # the first step includes allocator warm-up
    q.put({"params": model.num_parameters(), "init_s": init_s, "step_s": best, "samples_per_s": L / best,
           "peak_rss_gb": _peak_rss_gb()})


def _sample(cfg: dict, L: int, clips: int, steps: int | None, evals: int | None, threads: int, q) -> None:
    import torch

    from sashimi import DiffWaveConfig, DiffWaveSaShiMi, diffusion
    from sashimi.diffusion import Schedule

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = DiffWaveSaShiMi(DiffWaveConfig.from_dict({**cfg, "l_max": L}))
    sched = Schedule.of(model.config)
    if evals is not None:  # the sampler over the first `evals` steps of the T-step chain
        sched = Schedule(sched.betas[:evals])
    gen = torch.Generator().manual_seed(0)
    diffusion.sample(model, clips, L, steps=1, schedule=sched, generator=gen)  # warm-up: one evaluation
    t0 = time.perf_counter()
    out = diffusion.sample(model, clips, L, steps=steps, schedule=sched, generator=gen)
    wall = time.perf_counter() - t0
    n = len(diffusion.timesteps(sched.T, steps))
    q.put({"wall_s": wall, "evals": n, "per_eval_s": wall / n, "finite": bool(torch.isfinite(out).all()),
           "peak_rss_gb": _peak_rss_gb()})


def _child(fn, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


SMALL = {"d_model": 64}
FULL = {"d_model": 128}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--length", type=int, default=16000)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--sample-evals", type=int, default=3, help="timed network evaluations to extrapolate from")
    ap.add_argument("--short-steps", type=int, default=50, help="the shorter (strided) schedule's steps")
    ap.add_argument("--full-sampling", action="store_true", help="run both schedules whole, no extrapolation")
    ap.add_argument("--sample-backbones", default="small", help="comma-separated: small, full")
    args = ap.parse_args(argv)
    L = args.length

    print(f"training, batch 1, L = {L}, {args.threads} threads (best of {args.train_steps} steps after a warm-up):")
    rows = [("autoregressive SaShiMi, paper 8-layer (baseline)", "ar", {}),
            ("diffusion backbone small (d_model 64)", "diffusion", SMALL),
            ("diffusion backbone full (d_model 128)", "diffusion", FULL)]
    for name, kind, cfg in rows:
        r = _child(_train, kind, cfg, L, args.train_steps, args.threads)
        print(f"  {name:50s} {r['params']:>11,} params  {r['samples_per_s']:8.0f} samples/s  "
              f"({r['step_s']:.2f} s/step)  peak RSS {r['peak_rss_gb']:.2f} GB  (build {r['init_s']:.1f} s)")

    for backbone in args.sample_backbones.split(","):
        _sampling(backbone, {"small": SMALL, "full": FULL}[backbone], L, args)


def _sampling(backbone: str, cfg: dict, L: int, args) -> None:
    T = 200
    print(f"sampling {args.clips} clips x {L} samples in one batch, {backbone} backbone, {args.threads} threads:")
    if args.full_sampling:
        for steps in (None, args.short_steps):
            r = _child(_sample, cfg, L, args.clips, steps, None, args.threads)
            label = f"T = {T} ancestral" if steps is None else f"{args.short_steps}-step strided"
            print(f"  {label:28s} measured {r['wall_s']:8.1f} s ({r['evals']} evaluations, "
                  f"{r['per_eval_s']:.2f} s each)  peak RSS {r['peak_rss_gb']:.2f} GB  finite: {r['finite']}")
        return
    r = _child(_sample, cfg, L, args.clips, None, args.sample_evals, args.threads)
    print(f"  measured: diffusion.sample over {r['evals']} steps: {r['wall_s']:.1f} s, {r['per_eval_s']:.2f} s "
          f"per step  peak RSS {r['peak_rss_gb']:.2f} GB  finite: {r['finite']}")
    for label, n in ((f"T = {T} ancestral (default)", T), (f"{args.short_steps}-step strided", args.short_steps)):
        print(f"  EXTRAPOLATED {label:30s} {n} x {r['per_eval_s']:.2f} s = {n * r['per_eval_s']:8.0f} s "
              f"({n * r['per_eval_s'] / args.clips:.1f} s per clip)")


if __name__ == "__main__":
    main()
