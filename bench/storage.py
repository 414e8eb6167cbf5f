"""`python -m bench.storage`: what object storage costs against local disk (docs/benchmarks.md).

Issue 12 asks for a measurement, not a claim: training throughput with the quickstart job's shards
streamed from an S3 server vs the same bytes on local disk (interleaved, without Ray, checkpoints on
local disk in both so only the data path differs), and the paper model's checkpoint (with AdamW
moments) written by the trainer's checkpoint manager to, and read back from, the bucket vs a local
directory. By default the S3 server is moto's standalone server on 127.0.0.1 (the test-suite's,
tests/s3_server.py; started here, stopped at the end: needs the `test` extra); `--bucket` uses a real
store named by the standard AWS_* variables instead."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch
import torch.nn.functional as F

from cluster.checkpoint import CheckpointManager, TrainState, validate_checkpoint
from cluster.checkpoint.store import state_file
from cluster.config import job_from_dict
from cluster.driver.jobs import load_job
from cluster.driver.local import run_local
from cluster.driver.prepare import DEMO_SAMPLE_RATE
from data_prep import storage
from data_prep.demo import make_demo_corpus
from data_prep.publish import publish
from data_prep.shard import shard_folder
from sashimi import SaShiMi, SaShiMiConfig
from sashimi.optim import make_optimizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the moto S3 server is test support, not part of the product
from s3_server import moto_server, new_bucket  # noqa: E402

QUICKSTART = ROOT / "jobs" / "quickstart.yaml"
MOTO_NOTE = ("S3 server: moto, an in-memory Python server on 127.0.0.1 sharing this machine's cores with the "
             "trainer: the figures bound the overhead per byte of the S3 code path from above; they are not a "
             "cloud store's latency or bandwidth.")


@contextlib.contextmanager
def moto_bucket():
    """Start moto on a free loopback port (AWS_* pointed at it), yield a fresh bucket URI; stop it after."""
    with moto_server():
        yield new_bucket("bench")


def train_once(where: str, shards: str, runs: str, steps: int, tag: str) -> dict:
    overrides = [f"training.max_steps={steps}", f"checkpoint.every={steps}", f"eval.every={steps}",
                 "eval.val_batches=0", "eval.generate_samples=0", f"logging.every={max(1, steps // 4)}",
                 "schedule.kind=constant", f"data.shards={shards}", f"checkpoint.storage={runs}",
                 f"name=bench-storage-{tag}"]
    job = load_job(QUICKSTART, overrides)
    out = io.StringIO()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out):
            m = run_local(job, str(QUICKSTART), fresh=True)[-1]
    except BaseException:
        sys.stderr.write(out.getvalue())
        raise
    return {"data": where, "run": tag, "steps": steps, "batch": job.training.batch_per_worker, "crop": job.data.crop,
            "clips_per_s": round(m["perf_clips_per_s"], 2), "step_time_s": round(m["perf_step_time_s"], 4),
            "data_wait_ms_per_step": round(1000 * m["perf_data_wait_s_per_step"], 2),
            "wall_s": round(time.perf_counter() - t0, 1)}


def paper_checkpoint(base: str) -> CheckpointManager:
    """The paper's 8-layer model after one AdamW step (so the moments exist), in the trainer's checkpoint
    manager writing into `base`."""
    torch.manual_seed(0)
    net = SaShiMi(SaShiMiConfig())
    opt = make_optimizer(net)
    tokens = torch.randint(0, 256, (1, 1025))
    F.cross_entropy(net(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()).backward()
    opt.step()
    job = job_from_dict({"name": "bench-ckpt", "data": {"shards": "/nonexistent-shards"},
                         "checkpoint": {"keep": 1000}}, "<bench>")
    return CheckpointManager(job, base, model=net, optimizer=opt, state=TrainState(), sample_rate=DEMO_SAMPLE_RATE)


def checkpoint_rows(bases: dict, repeats: int) -> list[dict]:
    managers = {where: paper_checkpoint(base) for where, base in bases.items()}
    rows = []
    for r in range(repeats):
        for where, manager in managers.items():
            manager.state.step = r
            t0 = time.perf_counter()
            d = manager.save()
            t1 = time.perf_counter()
            validate_checkpoint(d)
            t2 = time.perf_counter()
            rows.append({"storage": where, "repeat": r, "mb": round(storage.size(state_file(d)) / 1e6, 2),
                         "save_s": round(t1 - t0, 3), "validate_s": round(t2 - t1, 3)})
    return rows


def span(xs: list[float]) -> str:
    return f"{min(xs)}–{max(xs)}" if len(xs) > 1 else f"{xs[0]}"


def report(train: list[dict], ckpt: list[dict], upload: dict, moto: bool) -> None:
    print(f"\n{MOTO_NOTE if moto else 'S3 server: ' + os.environ.get('AWS_ENDPOINT_URL', 'the default AWS endpoint')}")
    print(f"dataset upload (publish): {upload['mb']} MB in {upload['files']} files, {upload['s']} s\n")
    print("| run | data | clips/s | step time (s) | data wait (ms/step) | wall (s) |")
    print("|---|---|---|---|---|---|")
    for r in train:
        print(f"| {r['run']} | {r['data']} | {r['clips_per_s']} | {r['step_time_s']} | {r['data_wait_ms_per_step']} "
              f"| {r['wall_s']} |")
    print(f"\n({train[0]['steps']} steps, batch {train[0]['batch']} x crop {train[0]['crop']}, one process, "
          "first step excluded)\n")
    print("| data | clips/s (range) | data wait ms/step (range) |")
    print("|---|---|---|")
    for where in ("local", "s3"):
        rs = [r for r in train if r["data"] == where]
        print(f"| {where} | {span([r['clips_per_s'] for r in rs])} | {span([r['data_wait_ms_per_step'] for r in rs])} |")
    print("\n| checkpoint to | size (MB) | save min / median (s) | validate (read back) min / median (s) |")
    print("|---|---|---|---|")
    for where in ("local", "s3"):
        rs = [r for r in ckpt if r["storage"] == where]
        save, val = [r["save_s"] for r in rs], [r["validate_s"] for r in rs]
        print(f"| {where} | {rs[0]['mb']} | {min(save)} / {statistics.median(save)} | "
              f"{min(val)} / {statistics.median(val)} |")
    print(json.dumps({"upload": upload, "train": train, "checkpoint": ckpt}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="optimiser steps per training run")
    p.add_argument("--repeats", type=int, default=2, help="training runs per storage, interleaved")
    p.add_argument("--ckpt-repeats", type=int, default=3, help="checkpoint saves/reads per storage, interleaved")
    p.add_argument("--minutes", type=float, default=1.0, help="demo corpus length (1 s clips)")
    p.add_argument("--bucket", default=None,
                   help="s3://bucket[/prefix] of a real store (AWS_* from the environment); default: local moto")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sashimi-bench-storage-") as tmp, \
            (contextlib.nullcontext(args.bucket) if args.bucket else moto_bucket()) as bucket:
        prefix = storage.join(bucket, f"bench-storage-{uuid.uuid4().hex[:8]}")
        try:
            make_demo_corpus(Path(tmp) / "src", minutes=args.minutes)
            shards = Path(tmp) / "shards"
            shard_folder(Path(tmp) / "src", shards, "generic", sample_rate=DEMO_SAMPLE_RATE, clip_seconds=1.0,
                         progress=False)
            files = [f for f in shards.rglob("*") if f.is_file()]
            t0 = time.perf_counter()
            publish(shards, storage.join(prefix, "shards"), progress=False)
            upload = {"files": len(files), "mb": round(sum(f.stat().st_size for f in files) / 1e6, 2),
                      "s": round(time.perf_counter() - t0, 2)}
            sources = {"local": str(shards), "s3": storage.join(prefix, "shards")}
            train = [train_once(where, src, str(Path(tmp) / "runs"), args.steps, f"{where}-{i}")
                     for i in range(args.repeats) for where, src in sources.items()]
            ckpt = checkpoint_rows({"local": str(Path(tmp) / "ckpt"), "s3": storage.join(prefix, "ckpt")},
                                   args.ckpt_repeats)
        finally:
            if args.bucket:
                storage.remove(prefix, recursive=True)
    report(train, ckpt, upload, moto=not args.bucket)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
