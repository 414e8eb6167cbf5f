"""MNIST IDX files -> 784-step 8-bit pixel sequences in the same shard format.

train-* becomes train plus a seeded ``val_count`` slice (disjoint); t10k-* becomes test.
Accepts gzip'd or plain IDX files under the usual names.
"""
from __future__ import annotations

import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .manifest import SPLITS, write_manifest
from .schema import PIXELS_LEN, SCHEMA_VERSION, encode_pixels_sample
from .shard import PrepError, clean_output, write_rejected
from .tarshard import AtomicShardWriter

_NAMES = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("t10k", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("t10k", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an unsigned-byte IDX file (gzip detected by magic bytes); errors name the file."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise PrepError(f"{path}: corrupt gzip: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise PrepError(f"{path}: not an IDX file (bad magic)")
    if raw[2] != 0x08:
        raise PrepError(f"{path}: IDX type 0x{raw[2]:02x} unsupported (MNIST uses unsigned bytes, 0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise PrepError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(dims)) if dims else 0
    if len(raw) - header != count:
        raise PrepError(f"{path}: {len(raw) - header} data bytes, header {dims} needs {count}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(idx_dir: Path, part: str, what: str) -> Path:
    for name in _NAMES[(part, what)]:
        for cand in (idx_dir / name, idx_dir / (name + ".gz")):
            if cand.is_file():
                return cand
    raise PrepError(f"{idx_dir}: missing {_NAMES[(part, what)][0]}[.gz]")


def _load(idx_dir: Path, part: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    ip, lp = _find(idx_dir, part, "images"), _find(idx_dir, part, "labels")
    images, labels = read_idx(ip), read_idx(lp)
    if images.ndim != 3 or images.shape[1] * images.shape[2] != PIXELS_LEN:
        raise PrepError(f"{ip}: expected N x 28 x 28 images, got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise PrepError(f"{lp}: {labels.shape} labels for {len(images)} images")
    if labels.size and labels.max() > 9:
        raise PrepError(f"{lp}: label {int(labels.max())} outside 0..9")
    return images.reshape(len(images), PIXELS_LEN), labels, [ip.name, lp.name]


def shard_mnist(idx_dir, out_dir, *, val_count: int = 5000, seed: int = 0, shard_max_mb: float = 256, progress: bool = True) -> dict:
    """Write MNIST as pixel-sequence shards into ``out_dir``; return the manifest."""
    idx_dir, out = Path(idx_dir), Path(out_dir)
    tr_x, tr_y, tr_files = _load(idx_dir, "train")
    te_x, te_y, te_files = _load(idx_dir, "t10k")
    if not 0 <= val_count < len(tr_x):
        raise PrepError(f"val_count {val_count} must be in [0, {len(tr_x)})")
    is_val = np.zeros(len(tr_x), dtype=bool)
    is_val[np.random.default_rng(seed).permutation(len(tr_x))[:val_count]] = True
    plan = [("train" if is_val[i] == 0 else "val", "train", i, tr_x, tr_y) for i in range(len(tr_x))]
    plan += [("test", "t10k", i, te_x, te_y) for i in range(len(te_x))]

    out.mkdir(parents=True, exist_ok=True)
    clean_output(out)
    writers = {s: AtomicShardWriter(out / s, out, max_bytes=int(shard_max_mb * 2**20)) for s in SPLITS}
    t0 = time.perf_counter()
    try:
        for split, part, i, xs, ys in tqdm(plan, unit="img", desc="mnist", disable=not progress, file=sys.stderr):
            meta = {"source": f"{part}-images", "index": i, "split": split}
            writers[split].write(encode_pixels_sample(f"{part}-{i:05d}", xs[i], int(ys[i]), meta))
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    shards = {s: w.close() for s, w in writers.items()}
    write_rejected(out, [])
    counts = {"train": int((~is_val).sum()), "val": int(val_count), "test": len(te_x)}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "kind": "pixels",
        "preset": "mnist",
        "params": {"val_count": int(val_count), "seed": int(seed), "shard_max_mb": float(shard_max_mb)},
        "sample_rate": None,
        "clip_samples": PIXELS_LEN,
        "source_dir": str(idx_dir.resolve()),
        "labels": [str(d) for d in range(10)],
        "splits": {s: {"clips": counts[s], "seconds": 0.0, "files": 1, "shards": shards[s]} for s in SPLITS},
        "sources": {
            tr_files[0]: {"split": "train,val", "clips": len(tr_x), "per_split": {"train": counts["train"], "val": counts["val"]}},
            te_files[0]: {"split": "test", "clips": len(te_x)},
        },
        "rejected": [],
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    write_manifest(out, manifest)
    return manifest
