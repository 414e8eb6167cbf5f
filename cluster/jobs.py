"""Loading job YAMLs, applying `key=value` overrides, and checking the data they point at.
Everything here runs on the driver before Ray is touched."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from .config import JobConfig, JobConfigError, job_from_dict


def parse_override(text: str, where: str) -> tuple[list[str], object]:
    """`training.max_steps=200` -> (["training", "max_steps"], 200); the value goes through yaml.safe_load."""
    if "=" not in text:
        raise JobConfigError(f"{where}: override {text!r} is not of the form key.path=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise JobConfigError(f"{where}: override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise JobConfigError(f"{where}: override {key}: value {raw!r} is not valid YAML: {e}") from None
    return parts, value


def apply_overrides(raw: dict, overrides: list[str], where: str) -> dict:
    """Set each dotted key in a copy of the raw mapping; unknown keys are caught later by the schema."""
    import copy

    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text, where)
        node = out
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise JobConfigError(f"{where}: override {text!r}: {'.'.join(parts[:i + 1])} is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return out


def load_job(path: str | os.PathLike, overrides: list[str] | None = None) -> JobConfig:
    """Parse and validate a job file (+ overrides). Errors name the file and the key."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise JobConfigError(f"{where}: cannot read job file: {e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise JobConfigError(f"{where}: invalid YAML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise JobConfigError(f"{where}: top level must be a mapping, got {type(raw).__name__}")
    if overrides:
        raw = apply_overrides(raw, overrides, f"{where} (command-line override)")
    return job_from_dict(raw, where)


def is_uri(path: str) -> bool:
    return "://" in path


def resolve_paths(job: JobConfig) -> JobConfig:
    """Make local paths absolute so Ray workers (other cwd) and storage find the same places."""
    if not is_uri(job.data.shards):
        job.data.shards = str(Path(job.data.shards).expanduser().resolve())
    if not is_uri(job.checkpoint.storage):
        job.checkpoint.storage = str(Path(job.checkpoint.storage).expanduser().resolve())
    if job.checkpoint.init_from and not is_uri(job.checkpoint.init_from):
        job.checkpoint.init_from = str(Path(job.checkpoint.init_from).expanduser().resolve())
    return job


def shard_lists(job: JobConfig, where: str = "<job>") -> dict[str, list[str]]:
    """{"train": [...], "val": [...]} from the dataset's manifest; raises JobConfigError naming data.shards."""
    from data_prep.manifest import ManifestError, shard_paths

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
