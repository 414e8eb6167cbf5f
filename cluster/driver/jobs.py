"""Loading job YAMLs and applying `key=value` overrides (values parsed as YAML). Runs on the driver
before Ray is touched; the data the job points at is checked in cluster/driver/prepare.py."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from ..config import JobConfig, JobConfigError, job_from_dict


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
