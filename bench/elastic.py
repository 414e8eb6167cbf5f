"""`python -m bench.elastic`: what the elastic-training machinery costs (issue 21, docs/benchmarks.md).

1. Data wait: one rank's batches from the global sample order (one ranged read per clip, read ahead by
   `data.loader_workers` threads) against the per-rank streams it replaced (webdataset reading whole shards
   front to back with a shuffle buffer), from local disk and from an S3 server (moto's on 127.0.0.1, the
   test-suite's, unless `--bucket` names a real one through the AWS_* variables). The old streams come
   from a checkout of the code before this change (`--old PATH`, e.g. `git worktree add /tmp/old 23f8b45`),
   imported in a child process; each measurement takes `--steps` batches of `--batch` clips, with the time
   spent waiting for each batch as a training loop would (no model: the wait is all there is).
2. The reclaim-notice check: the quickstart's model trained with Ray on 2 local workers with
   `scaling.preemption_check_every: 1` (a barrier per step) and `0` (never), interleaved, steps/s each.

Run from the repository root. Figures are only comparable within one run (this VM's speed drifts).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NEW = """
import json, sys, time
sys.path.insert(0, {root!r})
from cluster.tasks.examples import TokenExamples
from cluster.train.data import GlobalBatches
from cluster.train.order import ClipLocator, GlobalOrder
from data_prep.manifest import load_manifest, split_shards
m = load_manifest({data!r})
urls = split_shards(m, {data!r}, "train")
counts = [s["samples"] for s in m["splits"]["train"]["shards"]]
t0 = time.perf_counter()
g = GlobalBatches(ClipLocator(tuple(urls), tuple(counts)), GlobalOrder(sum(counts), {batch}, 0),
                  examples=TokenExamples(4096, "mu-law"), rank=0, world=1, micro={batch}, threads={threads})
waits = []
for step in range({steps}):
    t = time.perf_counter(); g.batches(step); waits.append(time.perf_counter() - t)
    time.sleep({compute})  # a training step's compute, during which the threads read ahead
g.close()
print(json.dumps({{"waits": waits, "total": time.perf_counter() - t0}}))
"""

OLD = """
import json, sys, time
sys.path.insert(0, {root!r})
from cluster.data import train_loader
from data_prep.manifest import shard_paths
urls = shard_paths({data!r}, "train")
t0 = time.perf_counter()
it = iter(train_loader(urls, seed=0, rank=0, start_step=0, n_batches={steps}, batch_size={batch}, crop=4096,
                       quantization="mu-law", shuffle_buffer=16, loader_workers={workers}, on_bad_sample="skip"))
waits = []
for step in range({steps}):
    t = time.perf_counter(); next(it); waits.append(time.perf_counter() - t)
    time.sleep({compute})
print(json.dumps({{"waits": waits, "total": time.perf_counter() - t0}}))
"""


def _child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def data_wait(args, data: str, where: str) -> None:
    runs = {"global order": NEW.format(root=str(ROOT), data=data, batch=args.batch, steps=args.steps,
                                       threads=args.threads, compute=args.compute)}
    if args.old:
        runs["streams (before)"] = OLD.format(root=args.old, data=data, batch=args.batch, steps=args.steps,
                                              workers=args.old_workers, compute=args.compute)
    for rnd in range(args.rounds):  # interleaved, so a drifting machine hits both alike
        for name, code in runs.items():
            r = _child(code)
            w = sorted(r["waits"][1:])  # the first batch includes opening shards / indexes
            print(f"{where:<6} {name:<17} round {rnd}: first batch {r['waits'][0] * 1e3:7.1f} ms, then median "
                  f"{w[len(w) // 2] * 1e3:6.2f} ms, p90 {w[int(0.9 * len(w))] * 1e3:6.2f} ms per batch of {args.batch} "
                  f"clips; {args.steps * args.batch / r['total']:.0f} clips/s overall")


def preemption_check_cost(args, data: str) -> None:
    from cluster.driver.jobs import load_job
    from cluster.driver.launch import run

    for rnd in range(args.rounds):
        for every in (1, 0):
            job = load_job(ROOT / "jobs" / "quickstart.yaml", [
                f"name=pc-{every}-{rnd}", f"data.shards={data}", f"checkpoint.storage={args.work}/runs",
                f"training.max_steps={args.train_steps}", "eval.every=1000000", "checkpoint.every=1000000",
                "eval.generate_samples=0", f"scaling.preemption_check_every={every}", "logging.every=1000000"])
            info = run(job, "bench")
            done = time.time()
            steps = info.metrics["step"]
            # from the first step to the run's return (the check runs between steps: the step time excludes it)
            wall = done - info.metrics["first_step_unix"]
            print(f"quickstart, 2 Ray workers, preemption_check_every={every}: {(steps - 1) / wall:.2f} steps/s "
                  f"({steps} steps, {wall:.1f} s from the first step to the end, final checkpoint and Ray "
                  f"shutdown included; a check took {info.metrics['preemption_check_ms']:.2f} ms on rank 0), round {rnd}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", help="a checkout of the code before the global order, for the stream baseline")
    ap.add_argument("--old-workers", type=int, default=0, help="the streams' data.loader_workers (processes)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="data.loader_workers of the global order")
    ap.add_argument("--compute", type=float, default=0.05, help="seconds of simulated training per step")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--bucket", help="an s3:// prefix on a real store (AWS_* variables) instead of moto's server")
    ap.add_argument("--parts", default="data,preemption")
    ap.add_argument("--work", default=None)
    args = ap.parse_args(argv)
    from data_prep.demo import make_demo_corpus
    from data_prep.shard import shard_folder

    args.work = args.work or tempfile.mkdtemp(prefix="bench-elastic-")
    local = Path(args.work) / "shards"
    if not (local / "manifest.json").is_file():
        make_demo_corpus(Path(args.work) / "src", minutes=3, seed=0)
        shard_folder(Path(args.work) / "src", local, "generic", sample_rate=16000, clip_seconds=1.0, seed=0,
                     progress=False)
    parts = args.parts.split(",")
    if "data" in parts:
        data_wait(args, str(local), "local")
        sys.path.insert(0, str(ROOT / "tests"))
        from s3_server import moto_server, new_bucket  # noqa: E402  (test support: the `test` extra)

        from data_prep.publish import publish

        if args.bucket:
            uri = f"{args.bucket.rstrip('/')}/bench-elastic-{int(time.time())}"
            publish(local, uri, progress=False)
            data_wait(args, uri, "bucket")
        else:
            with moto_server():
                uri = new_bucket("bench") + "/shards"
                publish(local, uri, progress=False)
                data_wait(args, uri, "s3")
    if "preemption" in parts:
        preemption_check_cost(args, str(local))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
