"""``OUT_DIR/manifest.json``: the record of a finished dataset (written last, atomically).

Its presence means every shard it lists is complete.  Readers (the cluster, ``verify``)
find shards through ``shard_paths`` so they never glob half-written or stale files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from . import storage
from .schema import SCHEMA_VERSION

MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")
REQUIRED_KEYS = ("schema_version", "kind", "preset", "params", "sample_rate", "clip_samples", "splits", "sources")


class ManifestError(ValueError):
    """Missing or invalid manifest; the message names the path."""


def manifest_path(out_dir: str | os.PathLike) -> str:
    """``OUT_DIR/manifest.json``: a local path or, for a dataset in an object store, a URI."""
    return storage.join(out_dir, MANIFEST_NAME)


def write_manifest(out_dir: str | os.PathLike, manifest: dict) -> str:
    path = manifest_path(out_dir)
    storage.write_text(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def load_manifest(out_dir: str | os.PathLike) -> dict:
    """Read and sanity-check ``OUT_DIR/manifest.json``; raises ``ManifestError`` naming the path."""
    path = manifest_path(out_dir)
    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest (dataset missing or its build did not finish)") from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot read manifest: {e}") from None
    try:
        m = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(m, dict):
        raise ManifestError(f"{path}: manifest is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise ManifestError(f"{path}: manifest lacks keys {missing}")
    if m["schema_version"] != SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema_version {m['schema_version']!r}, this code reads {SCHEMA_VERSION}")
    if not isinstance(m["splits"], dict):
        raise ManifestError(f"{path}: 'splits' is not an object")
    for split, info in m["splits"].items():
        shards = info.get("shards") if isinstance(info, dict) else None
        if not isinstance(shards, list):
            raise ManifestError(f"{path}: split {split!r} has no shard list")
        for s in shards:
            if not isinstance(s, dict) or not {"path", "samples", "bytes", "sha256"} <= s.keys():
                raise ManifestError(f"{path}: split {split!r} has a malformed shard entry {s!r}")
            _check_relative(path, s["path"])
    return m


def _check_relative(path: str, rel: str) -> None:
    p = PurePosixPath(str(rel))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ManifestError(f"{path}: shard path {rel!r} escapes the dataset directory")


def shard_paths(out_dir: str | os.PathLike, split: str) -> list[str]:
    """Absolute paths of ``split``'s shards, in manifest order (empty list for an empty split)."""
    return split_shards(load_manifest(out_dir), out_dir, split)


def split_shards(m: dict, out_dir: str | os.PathLike, split: str) -> list[str]:
    """``shard_paths`` from a manifest already read with ``load_manifest`` (a reader that needs several
    splits and facts of one dataset reads its manifest once)."""
    if split not in m["splits"]:
        raise ManifestError(f"{manifest_path(out_dir)}: no split {split!r} (has {sorted(m['splits'])})")
    root = out_dir if storage.is_uri(out_dir) else Path(out_dir).resolve()
    return [storage.join(root, s["path"]) for s in m["splits"][split]["shards"]]
