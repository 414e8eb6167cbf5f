"""``python -m cluster.tools.mnist_demo``: the seed's two MNIST demos on ``sashimi-prep mnist`` shards (784 8-bit pixels per digit).

``complete``: an ``mnist`` SaShiMi checkpoint finishes test digits from their top rows; the grid
shows each original (grey) beside its completion (prime in blue, generated pixels in orange).

``classify-eval``: the accuracy of an S4 sequence classifier checkpoint on a split. The classifier is
trained by ``sashimi-train jobs/smnist-classify.yaml`` (``task: classify``: the same Ray Train loop,
checkpoints and resume as the generative jobs), which itself reports the whole test split's accuracy
at the end; this re-scores any of its checkpoints, on any split.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from data_prep import storage
from data_prep.manifest import ManifestError, shard_paths
from data_prep.reader import BadDataError, BadSamplePolicy, samples
from sashimi.generate import generate

from ..checkpoint import CheckpointError, load_checkpoint
from ..tasks import task_of
from ..train.data import split_batches

SIDE = 28
PRIME_RGB = (0.35, 0.65, 1.0)  # blue: pixels given to the model
GEN_RGB = (1.0, 0.55, 0.15)  # orange: pixels the model drew


def load_digits(data: str, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (N, 784), labels int64 (N,)) of a split, in shard order."""
    xs, ys = [], []
    for raw, s in samples(shard_paths(data, split), BadSamplePolicy("stop")):
        if s.kind != "pixels":
            raise ValueError(f"{raw['__url__']}: sample {s.key!r} is {s.kind}, not MNIST pixels")
        xs.append(s.data)
        ys.append(s.label)
        if limit is not None and len(xs) >= limit:
            return np.stack(xs), np.asarray(ys, dtype=np.int64)
    if not xs:
        raise ValueError(f"{data}: split {split!r} holds no digits")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def completion_grid(originals: np.ndarray, completions: np.ndarray, n_prime: int, scale: int = 4,
                    cols: int | None = None) -> np.ndarray:
    """RGB uint8 grid: per digit the original (grey) and the completion (prime blue, generated orange)."""
    n = len(originals)
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    cell_w, gap = 2 * SIDE + 2, 2
    img = np.full((rows * (SIDE + gap) + gap, cols * (cell_w + gap) + gap, 3), 40, dtype=np.float32)
    is_prime = (np.arange(SIDE * SIDE) < n_prime).reshape(SIDE, SIDE, 1)
    tint = np.where(is_prime, np.array(PRIME_RGB), np.array(GEN_RGB))
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = gap + r * (SIDE + gap), gap + c * (cell_w + gap)
        img[y:y + SIDE, x:x + SIDE] = originals[i].reshape(SIDE, SIDE, 1).astype(np.float32)
        img[y:y + SIDE, x + SIDE + 2:x + cell_w] = completions[i].reshape(SIDE, SIDE, 1) * tint
    img = np.rint(img).clip(0, 255).astype(np.uint8)
    return img.repeat(scale, 0).repeat(scale, 1)


def cmd_complete(a) -> int:
    model, _, quant, _, _ = load_checkpoint(a.checkpoint)
    if quant != "none":
        raise ValueError(f"{a.checkpoint}: job quantization {quant!r}; "
                         "digit completion needs a pixel model (jobs/mnist.yaml, quantization none)")
    if not 0 < a.rows < SIDE:
        raise ValueError(f"--rows {a.rows}: must be in 1..{SIDE - 1}")
    x, y = load_digits(a.data, a.split, a.n)
    P = a.rows * SIDE
    prime = torch.from_numpy(x[:, :P].astype(np.int64))
    t0 = time.perf_counter()
    gen = generate(model, SIDE * SIDE - P, temperature=a.temperature, top_p=a.top_p, prime=prime, seed=a.seed,
                   progress=not a.quiet)
    dt = time.perf_counter() - t0
    done = torch.cat([prime, gen], 1).clamp(0, 255).to(torch.uint8).numpy()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(completion_grid(x, done, P, a.scale)).save(out)
    np.save(out.with_suffix(".npy"), done, allow_pickle=False)
    print(f"mnist complete: {len(x)} digits from {a.rows} rows ({P} pixels), {gen.shape[1]} pixels each "
          f"in {dt:.1f} s -> {out} (pixels: {out.with_suffix('.npy')})")
    return 0


# ---- classifier ------------------------------------------------------------------------------
def cmd_classify_eval(a) -> int:
    model, job, _, _, _ = load_checkpoint(a.checkpoint, task="classify")
    urls = shard_paths(a.data, a.split)
    if not urls:
        raise ValueError(f"{a.data}: split {a.split!r} has no shards")
    task = task_of(job)
    batches = split_batches(urls, examples=task.examples(), batch_size=a.batch, on_bad_sample="stop")
    batches = tqdm(batches, desc="eval", unit="batch", file=sys.stderr, disable=a.quiet)
    r = task.evaluate(model, batches, torch.device("cpu"), contextlib.nullcontext)
    if not r["examples"]:
        raise ValueError(f"{a.data}: split {a.split!r} holds no digits")
    result = {"checkpoint": storage.absolute(a.checkpoint), "split": a.split, "examples": r["examples"],
              "accuracy": r["val_accuracy"], "loss": r["val_loss"]}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"mnist classify-eval: accuracy {result['accuracy']:.4f} on {result['examples']} {a.split} digits")
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m cluster.tools.mnist_demo", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("complete", help="complete test digits from their top rows (PNG grid)")
    c.add_argument("checkpoint")
    c.add_argument("--data", required=True, help="sashimi-prep mnist output dir")
    c.add_argument("--split", default="test")
    c.add_argument("--n", type=int, default=16, help="digits to complete")
    c.add_argument("--rows", type=int, default=14, help="rows of each digit given as the prime")
    c.add_argument("--temperature", type=float, default=1.0)
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--scale", type=int, default=4, help="pixel upscaling of the PNG")
    c.add_argument("--out", default="mnist_completions.png")
    c.add_argument("--quiet", action="store_true")
    e = sub.add_parser("classify-eval", help="accuracy of a sashimi-train classifier checkpoint on a split")
    e.add_argument("checkpoint")
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--batch", type=int, default=64)
    e.add_argument("--out")
    e.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    cmds = {"complete": cmd_complete, "classify-eval": cmd_classify_eval}
    try:
        return cmds[a.cmd](a)
    except (CheckpointError, ManifestError, BadDataError, ValueError, OSError) as e:
        print(f"mnist_demo {a.cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
