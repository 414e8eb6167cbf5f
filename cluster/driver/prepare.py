"""Everything the driver does before Ray is touched, so a bad job costs a second instead of a cluster
allocation: absolute paths, the demo corpus if asked for, the dataset's manifest (read once: shard
lists, sample rate, a test split), --fresh, and the checks that the run's checkpoints (or
checkpoint.init_from) fit the job, from their job.json. The result is the typed WorkerConfig every
rank trains from."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from data_prep import storage
from data_prep.demo import make_demo_corpus
from data_prep.manifest import ManifestError, load_manifest, manifest_path, split_shards
from data_prep.shard import shard_folder
from data_prep.storage import is_uri

from ..checkpoint.compat import config_mismatch
from ..checkpoint.format import CheckpointError, FormatVersionError
from ..checkpoint.store import list_checkpoints, name_of, read_job
from ..config import JobConfig, JobConfigError
from ..logs import log
from ..rundir import RunDir
from ..tasks import task_of
from ..train import stops
from ..train.worker_config import TrainData, WorkerConfig

RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for a submitted job's entrypoint
DEMO_SAMPLE_RATE = 16000  # the demo corpus is sharded at 16 kHz (SC09's rate)
PATH_KEYS = ("data.shards", "checkpoint.storage", "checkpoint.init_from")


def prepare(job: JobConfig, where: str, fresh: bool = False) -> WorkerConfig:
    """The worker config for `job` (its paths made absolute), after every check that can fail before Ray."""
    job = resolve_paths(job, where)
    check_storage(job, where)
    ensure_demo_data(job)
    data = train_data(job, read_manifest(job, where), where)
    run_dir = RunDir.of(job.checkpoint.storage, job.name)
    if fresh and storage.exists(run_dir.root):
        log.info(f"--fresh: deleting {run_dir.root}")
        storage.remove(run_dir.root, recursive=True)
    stops.clear(run_dir)
    check_resume_compatible(job, run_dir.root, where)
    check_sc09_classifier(job, where)
    if job.checkpoint.init_from:
        check_init_from(job, where)
    return WorkerConfig(job, data)


def _get(job: JobConfig, key: str):
    section, name = key.split(".")
    return getattr(getattr(job, section), name)


def _with(job: JobConfig, key: str, value) -> JobConfig:
    section, name = key.split(".")
    return dataclasses.replace(job, **{section: dataclasses.replace(getattr(job, section), **{name: value})})


def submitted_working_dir() -> str | None:
    """The working_dir of the Ray job this driver runs in (`ray job submit --working-dir`), else None."""
    raw = os.environ.get(RAY_JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        return (json.loads(raw).get("runtime_env") or {}).get("working_dir")
    except (ValueError, AttributeError):
        return None


def resolve_paths(job: JobConfig, where: str = "<job>") -> JobConfig:
    """The job with its local paths made absolute, so Ray workers (other cwd) and storage find the same
    places. Under `ray job submit --working-dir`, the driver runs in a copy of that directory unpacked on
    the head node: a relative checkpoint.storage would write into that copy (gone with the job, unseen by
    other nodes), and a relative data path only works if the data was uploaded with it. Say so, by key."""
    submitted = submitted_working_dir()
    for key in PATH_KEYS:
        value = _get(job, key)
        if not value or is_uri(value):
            continue
        path = Path(value).expanduser()
        if submitted and not path.is_absolute() and (key != "data.shards" or not path.exists()):
            why = ("would be written into that copy, which vanishes with the job and which other nodes do not see"
                   if key == "checkpoint.storage" else "does not exist (data/ and runs/ are not uploaded)")
            raise JobConfigError(
                f"{where}: {key}: {value!r} is a relative path, but this job was submitted with --working-dir "
                f"{submitted}: it runs in a copy of that folder on the cluster, where {value!r} {why}. Give {key} "
                f"as a URI or an absolute path every node mounts, e.g. {key}=s3://bucket/{value}")
        job = _with(job, key, str(path.resolve()))
    sc09 = job.eval.sc09_metrics
    if sc09 is not None and not is_uri(sc09.classifier):  # read by rank 0, whose cwd is not the driver's
        job = dataclasses.replace(job, eval=dataclasses.replace(job.eval, sc09_metrics=dataclasses.replace(
            sc09, classifier=str(Path(sc09.classifier).expanduser().resolve()))))
    return job


def check_storage(job: JobConfig, where: str) -> None:
    """Object-store locations are reachable with these credentials (the bucket exists) before Ray starts."""
    for key in PATH_KEYS:
        value = _get(job, key)
        if value and is_uri(value):
            try:
                storage.check_writable_root(value, key)
            except storage.StorageError as e:
                raise JobConfigError(f"{where}: {e}") from None


def ensure_demo_data(job: JobConfig) -> None:
    """If data.demo_minutes is set and the shard dir has no manifest, synthesise and shard the demo corpus."""
    if job.data.demo_minutes is None or is_uri(job.data.shards) or Path(manifest_path(job.data.shards)).is_file():
        return
    shards = Path(job.data.shards)
    src = shards.parent / (shards.name + "-src")
    log.info(f"building the demo corpus ({job.data.demo_minutes} min) in {src}")
    make_demo_corpus(src, minutes=job.data.demo_minutes, seed=job.seed)
    clip = max(1.0, (job.data.crop or DEMO_SAMPLE_RATE) / DEMO_SAMPLE_RATE)
    log.info(f"sharding it into {shards}")
    shard_folder(src, shards, "generic", sample_rate=DEMO_SAMPLE_RATE, clip_seconds=clip, seed=job.seed,
                 progress=False)


def read_manifest(job: JobConfig, where: str = "<job>") -> dict:
    """The dataset's manifest (the one read of it on the driver); JobConfigError naming data.shards."""
    root = job.data.shards
    if not is_uri(root) and not Path(root).is_dir():
        raise JobConfigError(f"{where}: data.shards: directory {root} does not exist "
                             f"(build it with `sashimi-prep`, or set data.demo_minutes for the demo corpus)")
    try:
        return load_manifest(root)
    except (ManifestError, storage.StorageError) as e:
        raise JobConfigError(f"{where}: data.shards: {e}") from None


def train_data(job: JobConfig, manifest: dict, where: str = "<job>") -> TrainData:
    """Shard lists (each shard checked to exist), the sample rate and, for a task that scores one at the
    end, the test split, from the manifest; JobConfigError naming the key."""
    task_of(job).check_data(manifest, where)
    lists = shard_lists(job, manifest, where)
    test_split, test = (test_split_of(job, manifest, lists["val"], where) if task_of(job).needs_test_split
                        else (None, []))
    counts = tuple(int(sh["samples"]) for sh in manifest["splits"][job.data.train_split]["shards"])
    if not sum(counts):
        raise JobConfigError(f"{where}: data.shards: split {job.data.train_split!r} of {job.data.shards} has no samples")
    return TrainData(tuple(lists["train"]), tuple(lists["val"]), manifest.get("sample_rate"), tuple(test), test_split,
                     counts)


def shard_lists(job: JobConfig, manifest: dict, where: str = "<job>") -> dict[str, list[str]]:
    """{"train": [...], "val": [...]} from the manifest; raises JobConfigError naming data.shards."""
    root = job.data.shards
    out = {}
    for key, split in (("train", job.data.train_split), ("val", job.data.val_split)):
        try:
            out[key] = split_shards(manifest, root, split)
            missing = [p for p in out[key] if not storage.isfile(p)]
        except (ManifestError, storage.StorageError) as e:
            raise JobConfigError(f"{where}: data.shards: {e}") from None
        if missing:
            raise JobConfigError(f"{where}: data.shards: manifest lists missing shard(s) {missing[:3]}")
    if not out["train"]:
        raise JobConfigError(f"{where}: data.train_split: split {job.data.train_split!r} has no shards in {root}")
    if job.eval.val_batches and not out["val"]:
        raise JobConfigError(f"{where}: data.val_split: split {job.data.val_split!r} has no shards in {root} "
                             f"(set eval.val_batches=0 to train without validation)")
    return out


def test_split_of(job: JobConfig, manifest: dict, val: list[str], where: str) -> tuple[str, list[str]]:
    """(split, shard paths) a run is scored on at the end: the manifest's "test" split, or the val split
    when the dataset has no (or an empty) test split."""
    if "test" in manifest.get("splits", {}):
        test = split_shards(manifest, job.data.shards, "test")
        if test:
            return "test", test
    if not val:
        raise JobConfigError(f"{where}: task {job.task}: {job.data.shards} has neither a test split nor a "
                             f"{job.data.val_split!r} split to report accuracy on")
    return job.data.val_split, val


def check_resume_compatible(job: JobConfig, run_dir: str, where: str) -> None:
    """If the run dir holds checkpoints, the newest usable one must have been written with the same
    weight-shaping model config (and quantisation, task) as the job now has, in this format version;
    else JobConfigError naming the differing keys or the version. Reads its job.json, not its weights."""
    for d in reversed(list_checkpoints(run_dir)):
        try:
            stored = read_job(d)
        except FormatVersionError as e:
            raise JobConfigError(f"{where}: run {run_dir}: {e}; or pass --fresh to delete this run") from None
        except CheckpointError as e:
            log.info(f"note: {e}")
            continue
        diff = config_mismatch(stored, job.to_dict())
        if diff:
            raise JobConfigError(f"{where}: run {run_dir} has checkpoints written with a different config; resuming "
                                 f"from {name_of(d)} would fail: {'; '.join(diff)}. Restore those values, change `name` "
                                 f"for a new run, or pass --fresh to delete this run")
        return


def check_sc09_classifier(job: JobConfig, where: str) -> None:
    """eval.sc09_metrics.classifier must be a digit classifier's checkpoint (task classify, model.arch),
    checked from its job.json before Ray starts rather than at the first evaluation."""
    sc09 = job.eval.sc09_metrics
    if sc09 is None:
        return
    try:
        stored = read_job(sc09.classifier)
    except CheckpointError as e:
        raise JobConfigError(f"{where}: eval.sc09_metrics.classifier: {e}") from None
    if stored.get("task") != "classify" or "arch" not in (stored.get("model") or {}):
        raise JobConfigError(f"{where}: eval.sc09_metrics.classifier: {sc09.classifier} is not a digit classifier's "
                             f"checkpoint (task classify with model.arch; it holds task {stored.get('task')!r}, job "
                             f"{stored.get('name')!r}); train one with jobs/sc09-classifier.yaml")


def check_init_from(job: JobConfig, where: str) -> None:
    """checkpoint.init_from must be a checkpoint written with the job's weight-shaping model config."""
    src = job.checkpoint.init_from
    try:
        stored = read_job(src)
    except CheckpointError as e:
        raise JobConfigError(f"{where}: checkpoint.init_from: {e}") from None
    diff = config_mismatch(stored, job.to_dict(), resume=False)
    if diff:
        raise JobConfigError(f"{where}: checkpoint.init_from: {src} was written with a different config: "
                             f"{'; '.join(diff)}")
