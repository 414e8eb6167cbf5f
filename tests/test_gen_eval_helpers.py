"""Helpers for the generation/evaluation tests: tiny checkpoints written with cluster.checkpoint's
own writer (no Ray), MNIST IDX sets and audio shards. No tests here."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from cluster.checkpoint import make_state, save_checkpoint_dir
from cluster.config import job_from_dict
from sashimi import SaShiMi, SaShiMiConfig

TINY = dict(d_model=8, n_layers=1, d_state=8, pool=[4, 4], expand=2, ff=2, l_max=256)


def make_checkpoint(path: Path, *, quantization: str = "mu-law", shards: str = "/nonexistent-shards",
                    seed: int = 0, model: dict | None = None, name: str = "t") -> tuple[Path, SaShiMi, dict]:
    """A checkpoint directory for a freshly initialised tiny model and a valid job dict."""
    torch.manual_seed(seed)
    job = job_from_dict({"name": name, "data": {"shards": shards, "quantization": quantization, "crop": 256},
                         "model": dict(model or TINY)}, "<test>").to_dict()
    net = SaShiMi(SaShiMiConfig.from_dict(job["model"])).eval()
    state = make_state(model_state=net.state_dict(), optimizer_state={}, scheduler_state={}, step=7,
                       data_seed=0, world_size=1, job=job)
    save_checkpoint_dir(path, state)
    return path, net, job


def _idx(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def write_mnist_idx(d: Path, n_train: int = 40, n_test: int = 12, seed: int = 0) -> dict:
    """Digit-like IDX files: class c draws a column band at column 2c+4 in grey level 100+15c
    (so a tiny classifier learns it in a few dozen steps)."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    sets = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, :, 2 * c + 4: 2 * c + 7] = 100 + 15 * c
        for what, arr in (("images", x), ("labels", y)):
            (d / f"{part}-{what}-idx{arr.ndim}-ubyte.gz").write_bytes(gzip.compress(_idx(arr)))
        sets[part] = (x, y)
    return sets
