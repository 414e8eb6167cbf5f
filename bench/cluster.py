"""`python -m bench.cluster`: the numbers in docs/benchmarks.md ("Cluster training").

Runs the same small compute-bound job (quickstart model) with 1 and then 2 Ray workers on this machine
and reports: seconds from `run()` / from `TorchTrainer.fit()` to the first finished optimiser step,
global clips/s and audio samples/s (first step excluded), speed-up, and time per step spent waiting for data."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from data_prep.demo import make_demo_corpus
from data_prep.shard import shard_folder

from cluster.driver.jobs import load_job
from cluster.driver.launch import run
from cluster.driver.prepare import DEMO_SAMPLE_RATE

QUICKSTART = Path(__file__).resolve().parent.parent / "jobs" / "quickstart.yaml"


def bench_one(job_path: str, workers: int, steps: int, shards: str, storage: str, extra: list[str]) -> dict:
    overrides = [f"scaling.num_workers={workers}", f"training.max_steps={steps}", f"checkpoint.every={steps}",
                 f"eval.every={steps}", "eval.val_batches=0", "eval.generate_samples=0",
                 f"logging.every={max(1, steps // 4)}", f"data.shards={shards}", f"checkpoint.storage={storage}",
                 f"name=bench-{workers}w", "schedule.kind=constant", *extra]
    job = load_job(job_path, overrides)
    info = run(job, job_path, fresh=True, num_cpus=max(2, workers))
    m = info.metrics
    return {
        "workers": workers,
        "steps": steps,
        "global_batch": workers * job.training.batch_per_worker * job.training.grad_accum,
        "crop": job.data.crop,
        "run_to_first_step_s": round(m["first_step_unix"] - info.started_unix, 2),
        "fit_to_first_step_s": round(m["first_step_unix"] - info.submitted_unix, 2),
        "clips_per_s": round(m["perf_clips_per_s"], 2),
        "audio_samples_per_s": round(m["perf_audio_samples_per_s"]),
        "step_time_s": round(m["perf_step_time_s"], 4),
        "data_wait_ms_per_step": round(1000 * m["perf_data_wait_s_per_step"], 2),
        "total_s": round(info.seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    p.add_argument("--job", default=str(QUICKSTART))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--shards", default=None, help="shard dir (default: build a 1-minute demo corpus in a temp dir)")
    p.add_argument("overrides", nargs="*", help="extra job overrides, e.g. training.batch_per_worker=8")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sashimi-bench-") as tmp:
        shards = args.shards
        if shards is None:
            make_demo_corpus(Path(tmp) / "src", minutes=1.0)
            shards = str(Path(tmp) / "shards")
            shard_folder(Path(tmp) / "src", shards, "generic", sample_rate=DEMO_SAMPLE_RATE, clip_seconds=1.0,
                         progress=False)
        rows = [bench_one(args.job, w, args.steps, shards, str(Path(tmp) / "runs"), args.overrides)
                for w in args.workers]
    print("\n| workers | global batch | crop | run()→first step (s) | fit()→first step (s) | clips/s | "
          "audio samples/s | step time (s) | data wait (ms/step) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['global_batch']} | {r['crop']} | {r['run_to_first_step_s']} | "
              f"{r['fit_to_first_step_s']} | {r['clips_per_s']} | {r['audio_samples_per_s']} | {r['step_time_s']} | {r['data_wait_ms_per_step']} |")
    if len(rows) >= 2:
        print(f"\nspeed-up {rows[-1]['workers']} vs {rows[0]['workers']} worker(s): "
              f"{rows[-1]['clips_per_s'] / rows[0]['clips_per_s']:.2f}x")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
