"""Shared helpers for the cluster tests (kept out of conftest.py, which belongs to the whole project)."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def make_demo_shards(root: Path, minutes: float = 0.3) -> Path:
    """A tiny real corpus: demo audio -> data_prep sharding (1 s clips). Returns the shard dir."""
    from data_prep.demo import make_demo_corpus
    from data_prep.shard import shard_folder

    src, out = root / "src", root / "shards"
    make_demo_corpus(src, minutes=minutes, seed=0)
    shard_folder(src, out, "generic", sample_rate=16000, clip_seconds=1.0, seed=0, progress=False,
                 log=lambda msg: None)
    return out


def tiny_job(shards: Path, storage: Path, name: str = "t", **sections) -> dict:
    """A job dict small enough for a few-second Ray run on 2 CPUs."""
    job = {
        "name": name,
        "seed": 0,
        "data": {"shards": str(shards), "crop": 256, "shuffle_buffer": 4, "loader_workers": 0},
        "model": {"d_model": 16, "n_layers": 1, "pool": [4, 4], "expand": 2, "ff": 2, "d_state": 8,
                  "kernel": "s4d"},
        "optim": {"lr": 4e-3, "weight_decay": 0.0, "ssm_lr": 1e-3},
        "schedule": {"kind": "constant"},
        "training": {"max_steps": 4, "batch_per_worker": 2, "grad_accum": 1, "clip_norm": 1.0},
        "scaling": {"num_workers": 1, "use_gpu": False, "resources_per_worker": {"CPU": 1}},
        "checkpoint": {"every": 2, "keep": 10, "storage": str(storage)},
        "failure": {"max_failures": 0},
        "eval": {"every": 2, "val_batches": 1, "val_batch_size": 2, "generate_samples": 64},
        "logging": {"every": 1},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            job[section] = {**job.get(section, {}), **values}
        else:
            job[section] = values
    return job


def write_job(path: Path, job: dict) -> Path:
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path
