"""Eager batch-1 step mode side by side: checkouts of this project and, optionally, the seed
re-implementation (a checkout of necrashter/SaShiMi-796, run unmodified), in alternating rounds of
separate processes so a drifting VM hits all of them alike.

    python bench/eager_step.py --ours /tmp/old --ours . [--seed /tmp/seed] [--rounds 4]

Each line is one process: the paper 8-layer model at random init, 1 intra-op thread, inference
mode, `--warmup` untimed samples, then `--steps` timed ones (multiples of 16: the pooled tiers
run every 4th and 16th sample). Ours samples through generate() (Gumbel-max, temperature 1);
the seed samples as its own generate_audio_sample() does (softmax + Categorical each step).
"""
from __future__ import annotations

import argparse
import subprocess
import sys

OURS = """
import os, sys, time, torch
sys.path.insert(0, {dir!r})
import sashimi
from sashimi import SaShiMi, SaShiMiConfig
from sashimi.generate import generate
torch.manual_seed(0)
m = SaShiMi(SaShiMiConfig()).eval()
generate(m, {warmup}, batch=1, seed=0)
t = time.perf_counter(); generate(m, {steps}, batch=1, seed=0); dt = time.perf_counter() - t
where = os.path.dirname(os.path.dirname(os.path.abspath(sashimi.__file__)))  # the checkout really imported
print(f"ours {{where}}: {{{steps} / dt:.0f}} samples/s ({{m.num_parameters():,}} parameters)")
"""

# The model exactly as the seed's train.py builds it; the loop as its generate_audio_sample() runs.
SEED = """
import os, sys, time, torch
sys.path.insert(0, {dir!r})
torch.set_num_threads(1)
from torchaudio.functional import mu_law_encoding
from sashimi import SaShiMi, Embedding
torch.manual_seed(0)
m = SaShiMi(input_dim=1, hidden_dim=64, output_dim=256, state_dim=64, sequence_length=16000 * 8,
            block_count=8, encoder=Embedding(256, 64)).eval()
with torch.inference_mode():
    f = m.get_recurrent_runner()
    u = f(mu_law_encoding(torch.zeros(1, 1), 256))
    def step(u):
        return f(torch.distributions.Categorical(probs=torch.softmax(u, -1)).sample())
    for _ in range({warmup}):
        u = step(u)
    t = time.perf_counter()
    for _ in range({steps}):
        u = step(u)
    dt = time.perf_counter() - t
n = sum(p.numel() for p in m.parameters())
print(f"seed {{os.path.dirname(os.path.abspath(sys.modules['sashimi'].__file__))}}: {{{steps} / dt:.0f}} samples/s ({{n:,}} parameters)")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", action="append", default=[], help="a checkout of this project (repeatable)")
    ap.add_argument("--seed", help="a checkout of the seed re-implementation (necrashter/SaShiMi-796)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=208)
    ap.add_argument("--steps", type=int, default=3008)
    args = ap.parse_args()
    runs = [OURS.format(dir=d, warmup=args.warmup, steps=args.steps) for d in args.ours]
    if args.seed:
        runs.append(SEED.format(dir=args.seed, warmup=args.warmup, steps=args.steps))
    if not runs:
        ap.error("nothing to run: give --ours and/or --seed")
    for r in range(args.rounds):
        for code in runs:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"failed: {out.stderr[-500:]}"
            print(f"round {r + 1}: {line}", flush=True)


if __name__ == "__main__":
    main()
