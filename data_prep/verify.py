"""``verify``: re-read every shard and check it against the manifest.

Checks sha256 and size per shard, that every member path is safe, that every sample
decodes with the schema decoder and matches the manifest's kind/rate/length, per-shard and
per-split counts and seconds, per-source clip counts, that a shard's member index (its
``.idx.json`` sidecar, where the writer left one) matches the shard's own tar headers, and that
no stray shard sits in a split folder (a glob-based reader would pick it up).
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import PurePosixPath

from tqdm import tqdm

from . import storage
from .index import INDEX_SUFFIX, ShardIndex, index_path, scan_shard
from .manifest import ManifestError, load_manifest
from .schema import SampleError, decode_sample
from .tarshard import TarMemberError, iter_tar_samples, sha256_file


def verify_dataset(out_dir: str | os.PathLike, progress: bool = True) -> list[str]:
    """Return a list of problems (empty means the dataset is intact)."""
    root = str(out_dir)
    try:
        m = load_manifest(root)
    except ManifestError as e:
        return [str(e)]
    problems: list[str] = []
    per_source: Counter = Counter()
    all_shards = [(split, s) for split, info in m["splits"].items() for s in info["shards"]]
    bar = tqdm(all_shards, unit="shard", desc="verify", disable=not progress)
    split_counts: Counter = Counter()
    split_valid: Counter = Counter()
    for split, entry in bar:
        path = storage.join(root, entry["path"])
        if not storage.isfile(path):
            problems.append(f"{path}: shard listed in manifest is missing")
            continue
        size = storage.size(path)
        if size != entry["bytes"]:
            problems.append(f"{path}: size {size} != manifest {entry['bytes']}")
        if sha256_file(path) != entry["sha256"]:
            problems.append(f"{path}: sha256 mismatch (file changed since it was written)")
        n = 0
        try:
            for raw in iter_tar_samples(path):
                n += 1
                try:
                    s = decode_sample(raw)
                except SampleError as e:
                    problems.append(f"{path}: {e}")
                    continue
                problems.extend(f"{path}: sample {s.key!r}: {p}" for p in _check_sample(s, m, split))
                per_source[s.meta.get("source")] += 1
                split_counts[split] += 1
                split_valid[split] += s.length
        except TarMemberError as e:
            problems.append(str(e))
        except Exception as e:  # tarfile.ReadError, truncation, ...
            problems.append(f"{path}: unreadable tar: {type(e).__name__}: {e}")
        if n != entry["samples"]:
            problems.append(f"{path}: {n} samples read, manifest says {entry['samples']}")
        problems.extend(_check_index(path))
    bar.close()
    for split, info in m["splits"].items():
        if split_counts[split] != info["clips"]:
            problems.append(f"split {split}: {split_counts[split]} valid samples decoded, manifest says {info['clips']} clips")
        if m["kind"] == "audio" and abs(split_valid[split] / m["sample_rate"] - info["seconds"]) > 1e-3:
            problems.append(f"split {split}: {split_valid[split] / m['sample_rate']:.3f} s of audio, manifest says {info['seconds']}")
        listed = {PurePosixPath(s["path"]).name for s in info["shards"] if PurePosixPath(s["path"]).parent.name == split}
        d = storage.join(root, split)
        for name in storage.listdir(d):
            if name.endswith(INDEX_SUFFIX) and name[: -len(INDEX_SUFFIX)] in listed:
                continue  # a listed shard's index, checked above
            if ".tar" in name and name not in listed:
                problems.append(f"{storage.join(d, name)}: stray file not in the manifest (stale or partial shard)")
    if m["kind"] == "audio":
        for rel, info in m["sources"].items():
            if per_source[rel] != info["clips"]:
                problems.append(f"source {rel}: {per_source[rel]} clips found, manifest says {info['clips']}")
    return problems


def _check_index(shard: str) -> list[str]:
    """The shard's sidecar index (if any) against a scan of its headers."""
    side = index_path(shard)
    if not storage.exists(side):
        return []
    try:
        stored = ShardIndex.from_json(storage.read_text(side), side)
    except ValueError as e:
        return [str(e)]
    scanned = scan_shard(shard)
    if (stored.keys, stored.fields) != (scanned.keys, scanned.fields):
        return [f"{side}: member index does not match the shard's tar headers (stale or damaged index)"]
    return []


def _check_sample(s, m: dict, split: str) -> list[str]:
    out = []
    if s.kind != m["kind"]:
        out.append(f"kind {s.kind!r} != manifest {m['kind']!r}")
    if s.data.size != m["clip_samples"]:
        out.append(f"{s.data.size} steps != manifest clip_samples {m['clip_samples']}")
    if m["kind"] == "audio" and s.sample_rate != m["sample_rate"]:
        out.append(f"sample rate {s.sample_rate} != manifest {m['sample_rate']}")
    if s.meta.get("split") != split:
        out.append(f"meta split {s.meta.get('split')!r} but stored in {split!r}")
    if m["kind"] == "audio" and s.length < s.data.size and abs(s.data[s.length:]).max() != 0:
        out.append("non-zero samples in the padding")
    return out
