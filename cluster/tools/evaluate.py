"""``sashimi-eval``: test-set NLL of a checkpoint, in bits per byte (8-bit token), at full clip length.
(``sashimi-eval --metrics sc09 ...``: sample quality judged by a digit classifier, cluster/tools/sc09_eval.py.)

Every clip of the split is scored whole (padding excluded through the sample's ``length``), with
the quantisation the checkpoint was trained with. Sums of (bits, counted samples) are kept per
source file and merged by addition, so one process, several batches or several Ray workers give
the same pooled mean: total bits / total samples.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import ray
import torch
from tqdm import tqdm

from data_prep import storage
from data_prep.manifest import ManifestError, load_manifest, shard_paths
from data_prep.reader import BadDataError, BadSamplePolicy, samples
from sashimi.metrics import nll_bits_sum, shift_inputs
from sashimi.quantize import zero_class

from ..checkpoint import CheckpointError, load_checkpoint
from ..driver.connect import local_ray_init_kwargs
from . import sc09_eval
from ..tasks.examples import tokens_from_sample


def _empty() -> dict:
    return {"bits": 0.0, "samples": 0, "clips": 0}


def _add(into: dict, part: dict) -> None:
    for k in ("bits", "samples", "clips"):
        into[k] += part[k]


def merge(results: list[dict]) -> dict:
    """Add per-file (bits, samples, clips) sums of several shard lists."""
    files: dict = {}
    for r in results:
        for name, v in r["files"].items():
            _add(files.setdefault(name, _empty()), v)
    return {"files": files}


def _score_batch(model, items, device, files) -> None:
    tokens = torch.stack([t for t, _, _ in items]).to(device)
    mask = torch.stack([m for _, m, _ in items]).to(device)
    with torch.inference_mode():
        logits = model(shift_inputs(tokens, zero_class()))
    for i, (_, _, source) in enumerate(items):  # per clip, so each file's sum is exact
        bits, n = nll_bits_sum(logits[i], tokens[i], mask[i])
        f = files.setdefault(source, _empty())
        f["bits"] += bits
        f["samples"] += n
        f["clips"] += 1


def score_shards(model, quantization: str, shards: list[str], batch: int = 1, device: str = "cpu",
                 progress: bool = False, total: int | None = None) -> dict:
    """Per-source-file NLL sums over every clip of ``shards`` (strict: a bad shard or sample raises
    BadDataError naming the shard)."""
    model.to(device)
    files: dict = {}
    pending: list = []
    bar = tqdm(total=total, desc="eval", unit="clip", file=sys.stderr, disable=not progress)
    rng = random.Random(0)  # unused: crop=None scores the whole clip from its start
    for raw, sample in samples(shards, BadSamplePolicy("stop")):
        tokens, mask = tokens_from_sample(sample, None, quantization, rng)
        source = str(sample.meta.get("source", os.path.basename(raw["__url__"])))
        if pending and (len(pending) == batch or pending[0][0].shape != tokens.shape):
            _score_batch(model, pending, device, files)
            bar.update(len(pending))
            pending = []
        pending.append((tokens, mask, source))
    if pending:
        _score_batch(model, pending, device, files)
        bar.update(len(pending))
    bar.close()
    return {"files": files}


def eval_shards(checkpoint: str, shards: list[str], batch: int = 1, threads: int | None = None) -> dict:
    """The unit one Ray task runs: load the checkpoint, score its share of the shards on the CPU."""
    if threads:
        torch.set_num_threads(threads)
    model, _, quant, _, _ = load_checkpoint(checkpoint)
    return score_shards(model, quant, shards, batch)


def split_round_robin(items: list, n: int) -> list[list]:
    """n non-empty, size-balanced slices (fewer if there are fewer items)."""
    n = max(1, min(n, len(items)))
    return [items[i::n] for i in range(n)]


def eval_with_ray(checkpoint: str, shards: list[str], workers: int, batch: int, progress: bool,
                  address: str | None = None) -> dict:
    """Shard lists on ``workers`` CPU Ray tasks; the sums come back and are added here. Joins
    ``address`` (or RAY_ADDRESS) if given, else starts a private local Ray (never attaching to a
    ``ray start`` head that happens to run here). On a multi-node cluster the checkpoint and the
    shard paths must be on shared storage."""
    started = not ray.is_initialized()  # shut down only a Ray this call started
    if started:
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(log_to_driver=False, **local_ray_init_kwargs(workers))
    try:
        return _run_tasks(checkpoint, shards, workers, batch, progress)
    finally:
        if started:
            ray.shutdown()


def _run_tasks(checkpoint, shards, workers, batch, progress) -> dict:
    task = ray.remote(num_cpus=1)(eval_shards)
    refs = [task.remote(storage.absolute(checkpoint), part, batch, 1) for part in split_round_robin(shards, workers)]
    results, left = [], list(refs)
    bar = tqdm(total=len(refs), desc=f"eval ({len(refs)} ray tasks)", unit="task", file=sys.stderr,
               disable=not progress)
    while left:
        done, left = ray.wait(left, num_returns=1)
        results.append(ray.get(done[0]))
        bar.update(1)
    bar.close()
    return merge(results)


def summarise(files: dict) -> dict:
    """Per-file and overall bits per byte; the overall mean weights files by counted samples."""
    total = _empty()
    out = {}
    for name in sorted(files):
        v = files[name]
        _add(total, v)
        out[name] = {**v, "bits_per_byte": v["bits"] / max(v["samples"], 1)}
    return {"overall": {**total, "bits_per_byte": total["bits"] / max(total["samples"], 1)}, "files": out}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="sashimi-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--metrics", choices=METRICS, default="nll",
                   help="nll (this): test NLL of a generator; sc09: sample quality by a digit classifier "
                        "(see sashimi-eval --metrics sc09 --help)")
    p.add_argument("checkpoint", help="checkpoint directory (or its state.pt)")
    p.add_argument("--data", required=True, help="shard directory (sashimi-prep output, with manifest.json)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="JSON file to write (default: print only)")
    p.add_argument("--batch", type=int, default=1, help="clips per forward pass (equal-length clips batch)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (single-process evaluation)")
    p.add_argument("--workers", type=int, default=1, help="Ray CPU tasks, shards split between them")
    p.add_argument("--ray-address", help="existing Ray cluster to run the workers on (default: a local one)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.batch < 1 or a.workers < 1:
        p.error("--batch and --workers must be >= 1")
    return a


METRICS = ("nll", "sc09")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    which = argparse.ArgumentParser(add_help=False)
    which.add_argument("--metrics", choices=METRICS, default="nll")
    if which.parse_known_args(argv)[0].metrics == "sc09":
        return sc09_eval.main([x for i, x in enumerate(argv) if not _is_metrics_flag(argv, i)])
    a = parse_args(argv)
    try:
        model, job, quant, _, step = load_checkpoint(a.checkpoint)  # a classifier checkpoint: WrongTaskError
        shards = shard_paths(a.data, a.split)
        clips = load_manifest(a.data)["splits"][a.split].get("clips")
        if not shards:
            raise ManifestError(f"{a.data}: split {a.split!r} has no shards")
        t0 = time.perf_counter()
        if a.workers > 1:
            res = eval_with_ray(a.checkpoint, shards, a.workers, a.batch, not a.quiet, a.ray_address)
        else:
            res = score_shards(model, quant, shards, a.batch, a.device, not a.quiet, clips)
    except (CheckpointError, ManifestError, BadDataError) as e:
        print(f"sashimi-eval: {e}", file=sys.stderr)
        return 2
    report = {"checkpoint": storage.absolute(a.checkpoint), "step": step, "job": job.name,
              "data": storage.absolute(a.data), "split": a.split, "shards": len(shards),
              "quantization": quant, "unit": "bits per byte (8-bit token), padding excluded",
              "workers": a.workers, "seconds": round(time.perf_counter() - t0, 3), **summarise(res["files"])}
    o = report["overall"]
    print(f"sashimi-eval: {a.split}: {o['bits_per_byte']:.4f} bits/byte over {o['clips']} clips "
          f"({o['samples']} samples, {len(report['files'])} files) in {report['seconds']:.1f} s")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _is_metrics_flag(argv: list[str], i: int) -> bool:
    """argv[i] is `--metrics`, its value, or `--metrics=VALUE`."""
    x = argv[i]
    return x == "--metrics" or x.startswith("--metrics=") or (i > 0 and argv[i - 1] == "--metrics")


if __name__ == "__main__":
    sys.exit(main())
