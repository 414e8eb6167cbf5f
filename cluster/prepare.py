"""Everything the driver does before Ray is touched, so a bad job costs a second instead of a cluster
allocation: absolute paths, the demo corpus if asked for, shard lists and sample rate from the
manifest, --fresh, and the checks that the run's checkpoints (or checkpoint.init_from) fit the job."""
from __future__ import annotations

import shutil
from pathlib import Path

from data_prep.demo import make_demo_corpus
from data_prep.manifest import ManifestError, load_manifest, manifest_path, shard_paths
from data_prep.shard import shard_folder

from .checkpoint import CheckpointError, FormatVersionError, config_mismatch, job_of, list_checkpoints, \
    validate_checkpoint
from .config import JobConfig, JobConfigError
from .rundir import RunDir, is_uri

DEMO_SAMPLE_RATE = 16000  # the demo corpus is sharded at 16 kHz (SC09's rate)


def prepare(job: JobConfig, where: str, fresh: bool = False, log=print) -> dict:
    """Returns the worker config: {"job", "shards", "sample_rate"[, "test_split"]} (cluster.trainer.TrainData)."""
    resolve_paths(job)
    ensure_demo_data(job, log)
    shards = shard_lists(job, where)
    run_dir = RunDir.of(job.checkpoint.storage, job.name)
    if fresh:
        if run_dir.local is None:
            raise JobConfigError(f"{where}: --fresh cannot delete remote storage {run_dir.root}; change `name`")
        if run_dir.local.exists():
            log(f"[sashimi] --fresh: deleting {run_dir.root}")
            shutil.rmtree(run_dir.local)
    if run_dir.local is not None:
        check_resume_compatible(job, run_dir.local, where, log)
    if job.checkpoint.init_from:
        check_init_from(job, where)
    cfg = {"job": job.to_dict(), "shards": shards, "sample_rate": load_manifest(job.data.shards).get("sample_rate")}
    if job.task == "classify":
        cfg["test_split"], shards["test"] = test_split_of(job, shards, where)
    return cfg


def resolve_paths(job: JobConfig) -> JobConfig:
    """Make local paths absolute so Ray workers (other cwd) and storage find the same places."""
    if not is_uri(job.data.shards):
        job.data.shards = str(Path(job.data.shards).expanduser().resolve())
    if not is_uri(job.checkpoint.storage):
        job.checkpoint.storage = str(Path(job.checkpoint.storage).expanduser().resolve())
    if job.checkpoint.init_from and not is_uri(job.checkpoint.init_from):
        job.checkpoint.init_from = str(Path(job.checkpoint.init_from).expanduser().resolve())
    return job


def ensure_demo_data(job: JobConfig, log=print) -> None:
    """If data.demo_minutes is set and the shard dir has no manifest, synthesise and shard the demo corpus."""
    if job.data.demo_minutes is None or is_uri(job.data.shards) or Path(manifest_path(job.data.shards)).is_file():
        return
    shards = Path(job.data.shards)
    src = shards.parent / (shards.name + "-src")
    log(f"[sashimi] building the demo corpus ({job.data.demo_minutes} min) in {src}")
    make_demo_corpus(src, minutes=job.data.demo_minutes, seed=job.seed)
    clip = max(1.0, (job.data.crop or DEMO_SAMPLE_RATE) / DEMO_SAMPLE_RATE)
    log(f"[sashimi] sharding it into {shards}")
    shard_folder(src, shards, "generic", sample_rate=DEMO_SAMPLE_RATE, clip_seconds=clip, seed=job.seed,
                 progress=False)


def shard_lists(job: JobConfig, where: str = "<job>") -> dict[str, list[str]]:
    """{"train": [...], "val": [...]} from the dataset's manifest; raises JobConfigError naming data.shards."""
    root = Path(job.data.shards)
    if not root.is_dir():
        raise JobConfigError(f"{where}: data.shards: directory {root} does not exist "
                             f"(build it with `sashimi-prep`, or set data.demo_minutes for the demo corpus)")
    out = {}
    for key, split in (("train", job.data.train_split), ("val", job.data.val_split)):
        try:
            out[key] = shard_paths(root, split)
        except ManifestError as e:
            raise JobConfigError(f"{where}: data.{key}_split: {e}") from None
        missing = [p for p in out[key] if not Path(p).is_file()]
        if missing:
            raise JobConfigError(f"{where}: data.shards: manifest lists missing shard(s) {missing[:3]}")
    if not out["train"]:
        raise JobConfigError(f"{where}: data.train_split: split {job.data.train_split!r} has no shards in {root}")
    if job.eval.val_batches and not out["val"]:
        raise JobConfigError(f"{where}: data.val_split: split {job.data.val_split!r} has no shards in {root} "
                             f"(set eval.val_batches=0 to train without validation)")
    return out


def test_split_of(job: JobConfig, shards: dict, where: str) -> tuple[str, list[str]]:
    """(split, shard paths) a classify run is scored on at the end: the manifest's "test" split, or the
    val split when the dataset has no (or an empty) test split."""
    if "test" in load_manifest(job.data.shards).get("splits", {}):
        test = shard_paths(job.data.shards, "test")
        if test:
            return "test", test
    if not shards["val"]:
        raise JobConfigError(f"{where}: task classify: {job.data.shards} has neither a test split nor a "
                             f"{job.data.val_split!r} split to report accuracy on")
    return job.data.val_split, shards["val"]


def check_resume_compatible(job: JobConfig, run_dir: Path, where: str, log=print) -> None:
    """If the run dir holds checkpoints, the newest valid one must have been written with the same model
    config (and quantisation) as the job now has, in this format version; else JobConfigError naming the
    differing keys or the version. (The worker checks again against the checkpoint it resumes from.)"""
    for d in reversed(list_checkpoints(run_dir)):
        try:
            stored = job_of(validate_checkpoint(d))
        except FormatVersionError as e:
            raise JobConfigError(f"{where}: run {run_dir}: {e}; or pass --fresh to delete this run") from None
        except CheckpointError as e:
            log(f"[sashimi] note: {e}")
            continue
        diff = config_mismatch(stored, job.to_dict())
        if diff:
            raise JobConfigError(f"{where}: run {run_dir} has checkpoints written with a different config; resuming "
                                 f"from {d.name} would fail: {'; '.join(diff)}. Restore those values, change `name` "
                                 f"for a new run, or pass --fresh to delete this run")
        return


def check_init_from(job: JobConfig, where: str) -> None:
    """checkpoint.init_from must be a valid checkpoint written with the job's model config."""
    src = job.checkpoint.init_from
    if is_uri(src):
        raise JobConfigError(f"{where}: checkpoint.init_from: {src}: only local checkpoint directories are supported")
    try:
        stored = job_of(validate_checkpoint(src))
    except CheckpointError as e:
        raise JobConfigError(f"{where}: checkpoint.init_from: {e}") from None
    diff = config_mismatch(stored, job.to_dict())
    if diff:
        raise JobConfigError(f"{where}: checkpoint.init_from: {src} was written with a different config: "
                             f"{'; '.join(diff)}")
