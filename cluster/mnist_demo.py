"""The seed's two MNIST demos on ``sashimi-prep mnist`` shards (784 8-bit pixels per digit).

``complete``: an ``mnist`` SaShiMi checkpoint finishes test digits from their top rows; the grid
shows each original (grey) beside its completion (prime in blue, generated pixels in orange).

``classify`` / ``classify-eval``: an S4 sequence classifier (sashimi.classifier) trained from a job
YAML (same schema as sashimi-train: data, model, optim, schedule, training, eval, seed) in one
process, then scored on the whole test split. sashimi-train itself only trains SaShiMi
(next-token NLL); this path exists so the classifier does not need a second distributed trainer.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIDE = 28
PRIME_RGB = (0.35, 0.65, 1.0)  # blue: pixels given to the model
GEN_RGB = (1.0, 0.55, 0.15)  # orange: pixels the model drew
CLASSIFIER_FORMAT = 1


def load_digits(data: str, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (N, 784), labels int64 (N,)) of a split, in shard order."""
    from data_prep.manifest import shard_paths
    from data_prep.schema import decode_sample
    from data_prep.tarshard import iter_tar_samples

    xs, ys = [], []
    for path in shard_paths(data, split):
        for raw in iter_tar_samples(path):
            s = decode_sample(raw)
            if s.kind != "pixels":
                raise ValueError(f"{path}: sample {s.key!r} is {s.kind}, not MNIST pixels")
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
    from PIL import Image

    from sashimi.generate import generate

    from .checkpoint import load_model

    model, job = load_model(a.checkpoint)
    if job["data"]["quantization"] != "none":
        raise ValueError(f"{a.checkpoint}: job quantization {job['data']['quantization']!r}; "
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
def _batches(x: np.ndarray, y: np.ndarray, size: int):
    for i in range(0, len(x), size):
        yield torch.from_numpy(x[i:i + size].astype(np.int64)), torch.from_numpy(y[i:i + size])


@torch.no_grad()
def accuracy(model, x: np.ndarray, y: np.ndarray, batch: int = 64, progress: bool = False) -> tuple[float, float]:
    """(accuracy, mean cross-entropy in nats) over all of x."""
    from tqdm import tqdm

    was = model.training
    model.eval()
    correct, loss = 0, 0.0
    for xb, yb in tqdm(_batches(x, y, batch), total=math.ceil(len(x) / batch), desc="eval", unit="batch",
                       disable=not progress, file=sys.stderr):
        logits = model(xb)
        correct += int((logits.argmax(-1) == yb).sum())
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
    model.train(was)
    return correct / len(x), loss / len(x)


def load_classifier(path: str):
    """(model in eval mode, job dict) from a classifier checkpoint (weights_only=True)."""
    from sashimi.classifier import S4Classifier
    from sashimi.config import SaShiMiConfig

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated or foreign file: the weights-only unpickler rejects it
        raise ValueError(f"{path}: not a readable checkpoint: {e}") from None
    if not isinstance(state, dict) or state.get("kind") != "s4-classifier" or state.get("format_version") != CLASSIFIER_FORMAT:
        raise ValueError(f"{path}: not an S4 classifier checkpoint (format {CLASSIFIER_FORMAT})")
    job = json.loads(state["job_json"])
    model = S4Classifier(SaShiMiConfig.from_dict(job["model"]), int(state["n_labels"]))
    model.load_state_dict(state["model"])
    return model.eval(), job


def cmd_classify(a) -> int:
    from tqdm import tqdm

    from sashimi.classifier import S4Classifier
    from sashimi.config import SaShiMiConfig
    from sashimi.optim import make_optimizer

    from .checkpoint import atomic_torch_save
    from .data import mix_seed
    from .jobs import load_job, resolve_paths
    from .schedule import LRSchedule

    job = resolve_paths(load_job(a.job, a.overrides))
    if job.task != "classify":
        print(f"mnist_demo classify: error: {a.job}: task: expected 'classify', got {job.task!r}", file=sys.stderr)
        return 2
    if job.data.quantization != "none":
        raise ValueError(f"{a.job}: data.quantization must be none (pixels are the tokens)")
    torch.set_num_threads(a.threads or torch.get_num_threads())
    xtr, ytr = load_digits(job.data.shards, job.data.train_split)
    n_val = job.eval.val_batches * job.eval.val_batch_size
    xva, yva = load_digits(job.data.shards, job.data.val_split, n_val) if n_val else (None, None)
    torch.manual_seed(job.seed)
    model = S4Classifier(SaShiMiConfig.from_dict(job.model), n_labels=10)
    opt = make_optimizer(model, lr=job.optim.lr, weight_decay=job.optim.weight_decay, ssm_lr=job.optim.ssm_lr)
    s, T = job.schedule, job.training.max_steps
    sched = LRSchedule(opt, s.kind, T, s.warmup_steps, s.factor, s.patience, s.threshold, s.min_lr_scale)
    rng = np.random.default_rng(mix_seed(job.seed, 1))
    bs, order, pos = job.training.batch_per_worker, rng.permutation(len(xtr)), 0
    clip = job.training.clip_norm or float("inf")
    run_dir = Path(job.checkpoint.storage) / job.name
    history = []
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(1, T + 1), desc="classify", unit="step", disable=a.quiet, file=sys.stderr)
    for step in bar:
        sched.apply(step - 1)
        if pos + bs > len(order):
            order, pos = rng.permutation(len(xtr)), 0
        idx = order[pos:pos + bs]
        pos += bs
        xb, yb = torch.from_numpy(xtr[idx].astype(np.int64)), torch.from_numpy(ytr[idx])
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if xva is not None and (step % job.eval.every == 0 or step == T):
            acc, vloss = accuracy(model, xva, yva, job.eval.val_batch_size)
            sched.observe(vloss)
            history.append({"step": step, "train_loss": loss.item(), "val_accuracy": acc, "val_loss": vloss})
            tqdm.write(f"step {step}: val accuracy {acc:.4f} loss {vloss:.4f}", file=sys.stderr)
    train_s = time.perf_counter() - t0
    xte, yte = load_digits(job.data.shards, a.test_split)
    acc, tloss = accuracy(model, xte, yte, job.eval.val_batch_size, progress=not a.quiet)
    ckpt = atomic_torch_save({"format_version": CLASSIFIER_FORMAT, "kind": "s4-classifier", "n_labels": 10,
                              "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                              "job_json": json.dumps(job.to_dict(), sort_keys=True), "step": T,
                              "metrics": {"test_accuracy": acc}}, run_dir / "classifier.pt")
    result = {"job": job.name, "checkpoint": str(ckpt), "steps": T, "train_seconds": round(train_s, 2),
              "test_split": a.test_split, "test_examples": len(xte), "test_accuracy": acc, "test_loss": tloss,
              "history": history}
    (run_dir / "classify_result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"mnist classify: test accuracy {acc:.4f} on {len(xte)} digits after {T} steps "
          f"({train_s:.0f} s) -> {ckpt}")
    return 0


def cmd_classify_eval(a) -> int:
    model, _ = load_classifier(a.checkpoint)
    x, y = load_digits(a.data, a.split)
    acc, loss = accuracy(model, x, y, a.batch, progress=not a.quiet)
    result = {"checkpoint": str(Path(a.checkpoint).resolve()), "split": a.split, "examples": len(x),
              "accuracy": acc, "loss": loss}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"mnist classify-eval: accuracy {acc:.4f} on {len(x)} {a.split} digits")
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m cluster.mnist_demo", description=__doc__.split("\n\n")[0])
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
    t = sub.add_parser("classify", help="train the S4 classifier from a job YAML, report test accuracy")
    t.add_argument("job")
    t.add_argument("overrides", nargs="*", help="key.path=value")
    t.add_argument("--test-split", default="test")
    t.add_argument("--threads", type=int)
    t.add_argument("--quiet", action="store_true")
    e = sub.add_parser("classify-eval", help="accuracy of a classifier checkpoint on a split")
    e.add_argument("checkpoint")
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--batch", type=int, default=64)
    e.add_argument("--out")
    e.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from data_prep.manifest import ManifestError

    from .config import JobConfigError

    a = parse_args(argv)
    cmds = {"complete": cmd_complete, "classify": cmd_classify, "classify-eval": cmd_classify_eval}
    try:
        return cmds[a.cmd](a)
    except (ValueError, ManifestError, JobConfigError, OSError) as e:
        print(f"mnist_demo {a.cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
