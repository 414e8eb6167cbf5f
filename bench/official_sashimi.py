"""The paper's own SaShiMi (state-spaces/s4, standalone `models/sashimi/sashimi.py` + `models/s4/s4.py`,
run unmodified from a checkout outside this repository) timed exactly as `python -m bench.model
--device cuda` times ours: the side-by-side figure of bench/gpu.sh.

    python bench/official_sashimi.py --s4 PATH/TO/state-spaces-s4 [--device cuda] [--lengths 16000]
        [--batches 1,8] [--precisions fp32,bf16,compiled] [--gen-batches 1,16,256] [--out FILE.jsonl]

The model is the paper's 8-layer SaShiMi as its SC09 / YouTubeMix configs build it (d_model 64, 8 S4 +
8 FF blocks per tier, pool [4, 4], expand 2, ff 2, N 64, DPLR `mode: nplr`, `init: legs`, `n_ssm: 1`,
GLU outputs), wrapped in the same 256-token embedding and linear head that ours has, so the parameter
count is printed beside ours. Training goes through `bench.model_cuda.time_training` (our timing
loop: warm-up, median of timed steps, synchronised, peak memory), with plain AdamW. Generation is the
official recurrent mode: `setup_rnn('diagonal')` (its fastest, per its docstring) and a Python loop of
`model.step` with the embedding, head and a multinomial draw per sample, at each batch size.
Its Cauchy kernel runs through PyKeOps when a probe in a child process shows KeOps working (its
`backend: cuda` default without its CUDA extension, which is not built: ours has none either), else
its naive kernel; a training measurement that fails with the default is retried once with `backend:
naive`, labelled so.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def build_official(s4_root: str, device: str, backend: str = "cuda"):
    import torch
    from torch import nn

    sys.path.insert(0, s4_root)
    from models.sashimi.sashimi import Sashimi  # noqa: E402  (the peer's code, from its checkout)

    class Official(nn.Module):
        """Tokens (B, L) -> logits (B, L, 256): embedding, the official backbone, linear head."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(256, 64)
            self.backbone = Sashimi(d_model=64, n_layers=8, pool=[4, 4], expand=2, ff=2, unet=False,
                                    dropout=0.0, mode="nplr", init="legs", n_ssm=1, backend=backend)
            self.head = nn.Linear(64, 256)

        def forward(self, tokens):
            y, _ = self.backbone(self.embed(tokens))
            return self.head(y)

    torch.manual_seed(0)
    return Official().to(device)


KEOPS_PROBE = """
import sys, torch
from pykeops.torch import Genred
f = Genred("SqNorm2(x - y)", ["x = Vi(3)", "y = Vj(3)"], reduction_op="Sum", axis=1)
x = torch.randn(10, 3, device=sys.argv[1])
print(float(f(x, x).sum()))
"""


def keops_works(device: str) -> tuple[bool, str]:
    """Whether PyKeOps compiles and runs here, tried in a child process: on the first H200 run the
    official code's KeOps call crashed the whole process (segmentation fault) after KeOps' C++ binder
    failed to link ("could not run lto-wrapper"), which no try/except catches."""
    import subprocess

    try:
        r = subprocess.run([sys.executable, "-c", KEOPS_PROBE, device], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    lines = (r.stdout + r.stderr).strip().splitlines()
    return r.returncode == 0, f"exit {r.returncode}: {lines[-1] if lines else ''}"


def time_generation(model, B: int, n: int, device: str) -> dict:
    """Samples/s of the official recurrent mode at batch B over n steps (after a 16-step warm-up)."""
    import torch

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    model.eval()
    model.backbone.setup_rnn("diagonal")
    gen = torch.Generator(device=device).manual_seed(0)

    @torch.no_grad()
    def run(steps):
        state = model.backbone.default_state(B, device=device)
        tok = torch.full((B,), 128, dtype=torch.long, device=device)
        for _ in range(steps):
            y, state = model.backbone.step(model.embed(tok), state)
            probs = torch.softmax(model.head(y).float(), -1)
            tok = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
        return tok

    t0 = time.perf_counter()
    run(16)
    sync()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(n)
    sync()
    dt = time.perf_counter() - t0
    return {"samples_per_s": B * n / dt, "us_per_step": dt / n * 1e6, "warmup_s": warm}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--s4", required=True, help="a checkout of state-spaces/s4 (models/ at its root)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a rehearsal of this script")
    ap.add_argument("--lengths", default="16000")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--precisions", default="fp32,bf16,compiled")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--gen-batches", default="1,16,256")
    ap.add_argument("--gen-samples", type=int, default=256)
    ap.add_argument("--time-budget", type=float, default=0, help="seconds; later measurements skipped; 0 = none")
    ap.add_argument("--out", default=None, help="append every figure to this JSON-lines file")
    args = ap.parse_args(argv)
    import torch

    from sashimi import SaShiMi, SaShiMiConfig
    from bench.model_cuda import time_training

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is present; skipping the official SaShiMi benchmark")
        return 0
    t_start = time.perf_counter()

    def record(rec):
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({"model": "official", **rec}) + "\n")

    ok, why = keops_works(args.device)
    backends = ("cuda", "naive") if ok else ("naive",)
    print(f"PyKeOps {'works' if ok else 'unusable (' + why + ')'}: the official Cauchy kernel runs through "
          f"{'PyKeOps' if ok else 'its naive backend'}")
    record({"part": "keops_probe", "ok": ok, "detail": why})
    model = build_official(args.s4, args.device, backends[0])
    ours = SaShiMi(SaShiMiConfig()).num_parameters()
    n = sum(p.numel() for p in model.parameters())
    where = args.device if args.device == "cpu" else torch.cuda.get_device_name(0)
    print(f"official SaShiMi (state-spaces/s4 standalone, {args.s4}) with embedding + head: {n:,} parameters "
          f"(ours: {ours:,}), on {where}")
    record({"part": "setup", "params": n, "params_ours": ours, "device": where})
    del model

    def skipped(label):
        if args.time_budget and time.perf_counter() - t_start > args.time_budget:
            print(f"{label}: skipped (time budget {args.time_budget:.0f} s spent)")
            return True
        return False

    for prec in (p for p in args.precisions.split(",") if p):
        for L in (int(x) for x in args.lengths.split(",") if x):
            for B in (int(x) for x in args.batches.split(",") if x):
                label = f"official train L={L:>6} batch {B} {prec:<8}"
                rec = {"part": "train", "L": L, "batch": B, "precision": prec}
                if skipped(label):
                    record({**rec, "error": "skipped: time budget"})
                    continue
                r = None
                for backend in backends:
                    try:
                        r = time_training(build_official(args.s4, args.device, backend), L, B, prec,
                                          args.train_steps, device=args.device)
                        rec["backend"] = backend
                        label += "" if backend == "cuda" else " (naive Cauchy)"
                        break
                    except Exception as exc:  # noqa: BLE001  (OOM, KeOps or compile failure: recorded)
                        msg = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
                        print(f"{label} backend {backend}: failed ({msg})")
                        record({**rec, "backend": backend, "error": msg})
                    finally:
                        if args.device == "cuda":
                            torch.cuda.empty_cache()
                if r is None:
                    continue
                print(f"{label}: {r['samples_per_s']:10.0f} samples/s ({r['step_s'] * 1e3:.1f} ms/step, peak "
                      f"{r['peak_mem_gb']:.2f} GiB, warm-up {r['warmup_s']:.1f} s"
                      f"{'' if r['loss_finite'] else ', LOSS NOT FINITE'})")
                record({**rec, **r})
    for B in (int(x) for x in args.gen_batches.split(",") if x):
        label = f"official generate batch {B:>3} (diagonal step, eager)"
        rec = {"part": "generate", "batch": B}
        if skipped(label):
            record({**rec, "error": "skipped: time budget"})
            continue
        try:
            r = time_generation(build_official(args.s4, args.device, backends[0]), B, args.gen_samples, args.device)
        except Exception as exc:  # noqa: BLE001
            msg = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
            print(f"{label}: failed ({msg})")
            record({**rec, "error": msg})
            continue
        print(f"{label}: {r['samples_per_s']:10.0f} samples/s total, {r['us_per_step']:.1f} us per sample (step), "
              f"warm-up {r['warmup_s']:.1f} s")
        record({**rec, **r})
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
