"""Driver side: validate the job, prepare data if the job asks for the demo corpus, connect to Ray
(the cluster in RAY_ADDRESS, as under `ray job submit`, or a new loopback-only local one), and run
Ray Train V2's TorchTrainer with the job's scaling, storage, checkpoint and failure settings."""
from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .config import JobConfig, JobConfigError
from .jobs import is_uri, resolve_paths, shard_lists

FORWARD_ENV_PREFIXES = ("SASHIMI_",)  # test hooks and user knobs reach workers of a local cluster
LOOPBACK = "127.0.0.1"


@dataclass
class RunInfo:
    run_dir: str
    tensorboard_dir: str
    checkpoint_dir: str | None
    metrics: dict
    seconds: float  # whole call: data prep, Ray start, training, shutdown
    submitted_unix: float  # just before TorchTrainer.fit()
    started_unix: float  # when run() was called


def ensure_demo_data(job: JobConfig, log=print) -> None:
    """If data.demo_minutes is set and the shard dir has no manifest, synthesise and shard the demo corpus."""
    from data_prep.manifest import manifest_path

    if job.data.demo_minutes is None or is_uri(job.data.shards) or manifest_path(job.data.shards).is_file():
        return
    from data_prep.demo import make_demo_corpus
    from data_prep.shard import shard_folder

    shards = Path(job.data.shards)
    src = shards.parent / (shards.name + "-src")
    log(f"[sashimi] building the demo corpus ({job.data.demo_minutes} min) in {src}")
    make_demo_corpus(src, minutes=job.data.demo_minutes, seed=job.seed)
    clip = max(1.0, (job.data.crop or 16000) / 16000)
    log(f"[sashimi] sharding it into {shards}")
    shard_folder(src, shards, "generic", sample_rate=16000, clip_seconds=clip, seed=job.seed, progress=False)


def prepare(job: JobConfig, where: str, fresh: bool = False, log=print) -> dict:
    """Everything before Ray: absolute paths, data, shard lists, --fresh. Returns the worker config."""
    from data_prep.manifest import load_manifest

    resolve_paths(job)
    ensure_demo_data(job, log)
    shards = shard_lists(job, where)
    sample_rate = load_manifest(job.data.shards).get("sample_rate")
    run_dir = run_dir_of(job)
    if fresh:
        if is_uri(run_dir):
            raise JobConfigError(f"{where}: --fresh cannot delete remote storage {run_dir}; change `name`")
        if Path(run_dir).exists():
            log(f"[sashimi] --fresh: deleting {run_dir}")
            shutil.rmtree(run_dir)
    if not is_uri(run_dir):
        check_resume_compatible(job, run_dir, where, log)
    if job.checkpoint.init_from:
        check_init_from(job, where)
    cfg = {"job": job.to_dict(), "shards": shards, "sample_rate": sample_rate}
    if job.task == "classify":
        cfg["test_split"], shards["test"] = test_split_of(job, shards, where)
    return cfg


def test_split_of(job: JobConfig, shards: dict, where: str) -> tuple[str, list[str]]:
    """(split, shard paths) a classify run is scored on at the end: the manifest's "test" split, or the
    val split when the dataset has no (or an empty) test split."""
    from data_prep.manifest import load_manifest, shard_paths

    if "test" in load_manifest(job.data.shards).get("splits", {}):
        test = shard_paths(job.data.shards, "test")
        if test:
            return "test", test
    if not shards["val"]:
        raise JobConfigError(f"{where}: task classify: {job.data.shards} has neither a test split nor a "
                             f"{job.data.val_split!r} split to report accuracy on")
    return job.data.val_split, shards["val"]


def check_resume_compatible(job: JobConfig, run_dir: str, where: str, log=print) -> None:
    """Before Ray starts: if the run dir holds checkpoints, the newest valid one must have been written
    with the same model config (and quantisation) as the job now has; else JobConfigError naming the
    differing keys. (The worker checks again against the checkpoint Ray actually hands it.)"""
    from . import checkpoint as ck

    for d in reversed(ck.list_checkpoints(run_dir)):
        try:
            stored = ck.job_of(ck.validate_checkpoint(d))
        except ck.CheckpointError as e:
            log(f"[sashimi] note: {e}")
            continue
        diff = ck.config_mismatch(stored, job.to_dict())
        if diff:
            raise JobConfigError(f"{where}: run {run_dir} has checkpoints written with a different config; resuming "
                                 f"from {d.name} would fail: {'; '.join(diff)}. Restore those values, change `name` "
                                 f"for a new run, or pass --fresh to delete this run")
        return


def check_init_from(job: JobConfig, where: str) -> None:
    """checkpoint.init_from must be a valid checkpoint written with the job's model config."""
    from . import checkpoint as ck

    src = job.checkpoint.init_from
    if is_uri(src):
        raise JobConfigError(f"{where}: checkpoint.init_from: {src}: only local checkpoint directories are supported")
    try:
        stored = ck.job_of(ck.validate_checkpoint(src))
    except ck.CheckpointError as e:
        raise JobConfigError(f"{where}: checkpoint.init_from: {e}") from None
    diff = ck.config_mismatch(stored, job.to_dict())
    if diff:
        raise JobConfigError(f"{where}: checkpoint.init_from: {src} was written with a different config: "
                             f"{'; '.join(diff)}")


def run_dir_of(job: JobConfig) -> str:
    return f"{job.checkpoint.storage.rstrip('/')}/{job.name}"


def connect_ray(num_cpus: int | None = None) -> bool:
    """Join RAY_ADDRESS's cluster if set, else start a local one bound to 127.0.0.1. True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return False
    ray.init(**local_ray_init_kwargs(num_cpus))
    return True


def local_ray_init_kwargs(num_cpus: int | None = None) -> dict:
    """ray.init arguments for the local cluster we start: the dashboard on 127.0.0.1 only. (Ray Train's
    placement-group cleaner polls the state API, which lives in the dashboard; without it every run
    logs a warning a second.) Ray's own GCS/raylet gRPC servers listen on the node's address whatever
    ray.init is told (Ray resolves 127.0.0.1 to the routable IP on Linux); Ray 2.60 protects them
    with token auth."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARD_ENV_PREFIXES)}
    return {"num_cpus": num_cpus, "include_dashboard": True, "dashboard_host": LOOPBACK,
            "runtime_env": {"env_vars": env} if env else None,
            "configure_logging": False}


def build_trainer(job: JobConfig, worker_cfg: dict):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .train_loop import train_fn

    resources = dict(job.scaling.resources_per_worker)
    if job.scaling.use_gpu:
        resources.setdefault("GPU", 1)
    return TorchTrainer(
        train_fn,
        train_loop_config=worker_cfg,
        torch_config=TorchConfig(backend="nccl" if job.scaling.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=job.scaling.num_workers, use_gpu=job.scaling.use_gpu,
                                     resources_per_worker=resources,
                                     placement_strategy=job.scaling.placement_strategy),
        run_config=RunConfig(
            name=job.name,
            storage_path=job.checkpoint.storage,
            checkpoint_config=CheckpointConfig(num_to_keep=job.checkpoint.keep),
            failure_config=FailureConfig(max_failures=job.failure.max_failures),
        ),
    )


def run(job: JobConfig, where: str = "<job>", fresh: bool = False, num_cpus: int | None = None,
        log=print) -> RunInfo:
    """Train `job` to completion (resuming its run dir if one exists). Raises on failure."""
    t0 = time.time()
    worker_cfg = prepare(job, where, fresh, log)
    started = connect_ray(num_cpus)
    try:
        submitted = time.time()
        log(f"[sashimi] submitting {job.name}: {job.scaling.num_workers} worker(s), run dir {run_dir_of(job)}")
        result = build_trainer(job, worker_cfg).fit()
    finally:
        if started:
            import ray

            ray.shutdown()
    ckpt = result.checkpoint.path if result.checkpoint is not None else None
    info = RunInfo(run_dir=run_dir_of(job), tensorboard_dir=f"{run_dir_of(job)}/tensorboard",
                   checkpoint_dir=ckpt, metrics=dict(result.metrics or {}), seconds=time.time() - t0,
                   submitted_unix=submitted, started_unix=t0)
    log(f"[sashimi] done in {info.seconds:.0f} s; latest checkpoint: {ckpt}")
    sys.stdout.flush()
    return info
