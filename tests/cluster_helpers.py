"""Shared helpers for the cluster tests (kept out of conftest.py, which belongs to the whole project):
demo shards, tiny jobs, tiny checkpoints written through the trainer's own checkpoint manager (no Ray),
MNIST IDX sets."""
from __future__ import annotations

import gzip
import struct
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
import yaml

from cluster.checkpoint import CheckpointManager, TrainState
from cluster.config import JobConfig, job_from_dict
from cluster.driver.jobs import load_job
from data_prep.demo import make_demo_corpus
from s3_server import free_port
from data_prep.shard import shard_folder
from sashimi import SaShiMi
from sashimi.optim import make_optimizer

REPO = Path(__file__).resolve().parent.parent
TINY = dict(d_model=8, n_layers=1, d_state=8, pool=[4, 4], expand=2, ff=2, l_max=256)


def make_demo_shards(root: Path, minutes: float = 0.3) -> Path:
    """A tiny real corpus: demo audio -> data_prep sharding (1 s clips). Returns the shard dir."""
    src, out = root / "src", root / "shards"
    make_demo_corpus(src, minutes=minutes, seed=0)
    shard_folder(src, out, "generic", sample_rate=16000, clip_seconds=1.0, seed=0, progress=False)
    return out


def take_batches(urls, *, examples, steps: int = 5, global_batch: int = 2, counts=None, seed: int = 0,
                 start_step: int = 0, rank: int = 0, world: int = 1, micro: int | None = None,
                 on_bad_sample: str = "skip", threads: int = 0) -> list[tuple]:
    """Each step's share of the global order (cluster.train.data.GlobalBatches) over `urls`, its
    micro-batches joined: [(tokens, mask[, labels]) per step; () for a step that only had a zero-weight
    stand-in]. `counts`: samples per shard, as a manifest
    says (default: what a scan of each shard finds)."""
    from cluster.train.data import GlobalBatches
    from cluster.train.order import ClipLocator, GlobalOrder
    from data_prep.index import scan_shard

    counts = counts or [len(scan_shard(u)) for u in urls]
    loader = GlobalBatches(ClipLocator(tuple(urls), tuple(counts)), GlobalOrder(sum(counts), global_batch, seed),
                           examples=examples, rank=rank, world=world, micro=micro or global_batch,
                           on_bad_sample=on_bad_sample, threads=threads)
    try:
        out = []
        for step in range(start_step, start_step + steps):
            mbs = loader.batches(step)
            out.append(tuple(torch.cat(cols) for cols in zip(*(mb.tensors for mb in mbs if mb.weight))))
        return out
    finally:
        loader.close()


def tiny_job(shards: Path, storage: Path, name: str = "t", **sections) -> dict:
    """A job dict small enough for a few-second Ray run on 2 CPUs."""
    job = {
        "name": name,
        "seed": 0,
        "data": {"shards": str(shards), "crop": 256, "loader_workers": 0},
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


def assert_same_training_state(a: dict, b: dict, atol: float = 1e-6) -> None:
    """Two checkpoint payloads hold the same weights, optimiser moments and schedule: what exact resume
    promises (same ops in the same order; only thread-level float noise allowed)."""
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=atol, msg=k)
    for pid, st in a["optimizer"]["state"].items():
        for m in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(st[m], b["optimizer"]["state"][pid][m], rtol=0, atol=atol)
    assert a["scheduler"] == b["scheduler"]


# How close "the same weights" are for runs that differ only in how a global batch was split over workers
# (tests/cluster/test_elastic_units.py, tests/integration/test_elastic_ray.py). Splitting over W ranks only
# reorders float32 sums: the gradients agree to ~2e-6 relative. AdamW's first steps divide each gradient by
# its own magnitude, so an element whose gradient nearly cancels (|g| ~ eps = 1e-8) turns that noise into a
# visible weight change: measured, world 3 vs 1 moved 0.03 % of the elements by more than 1e-5 (at most
# 4e-4), and the whole difference was 4e-4 of the distance the weights travelled; world 2 and 4 stayed below
# 1e-5. A wrong clip, crop or batch size moves 99 % of them and differs by more than the distance travelled
# (measured: another seed 94x, another global batch 1.3x).
REL_NORM_TOL = 1e-3  # |w_a - w_b| / |w_a - w_start|
FRAC_TOL = 1e-3  # share of elements differing by more than 1e-5


def flat_weights(state: dict) -> torch.Tensor:
    return torch.cat([v.flatten().double() for _, v in sorted(state["model"].items())])


def assert_same_weights(a: dict, b: dict, start: dict) -> None:
    """Checkpoint payloads a and b hold the same weights up to reordered float sums; `start` is an
    earlier checkpoint of a, so the tolerance is relative to how far training moved them."""
    wa, wb, w0 = flat_weights(a), flat_weights(b), flat_weights(start)
    rel = ((wa - wb).norm() / (wa - w0).norm()).item()
    frac = ((wa - wb).abs() > 1e-5).double().mean().item()
    assert rel < REL_NORM_TOL and frac < FRAC_TOL, f"weights differ: {rel:.3g} of the distance travelled, {frac:.3%} of elements"


def write_job(path: Path, job: dict) -> Path:
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def write_checkpoint(run_dir: Path, job: JobConfig, model: torch.nn.Module, step: int, optimizer=None,
                     sample_rate: int | None = 16000, suffix: str = "") -> Path:
    """`model` (and `optimizer`, when given) saved at `step` by the trainer's checkpoint manager into
    `run_dir`; returns the checkpoint directory. `suffix`: the name a checkpoint gets after a fallback."""
    manager = CheckpointManager(job, str(run_dir), model=model, optimizer=optimizer, state=TrainState(step=step),
                                sample_rate=sample_rate)
    manager.suffix = suffix
    return Path(manager.save())


def make_checkpoint(run_dir: Path, *, step: int = 7, quantization: str = "mu-law", shards: str = "/nonexistent-shards",
                    seed: int = 0, model: dict | None = None, name: str = "t",
                    sample_rate: int | None = 16000) -> tuple[Path, SaShiMi, dict]:
    """A checkpoint (in `run_dir`, at `step`) of a freshly initialised tiny model with an AdamW that has
    not stepped, and a valid job dict. Returns (checkpoint directory, model, job dict)."""
    torch.manual_seed(seed)
    job = job_from_dict({"name": name, "data": {"shards": shards, "quantization": quantization, "crop": 256},
                         "model": dict(model or TINY), "checkpoint": {"keep": 100}}, "<test>")
    net = SaShiMi(job.model).eval()
    path = write_checkpoint(run_dir, job, net, step, optimizer=make_optimizer(net), sample_rate=sample_rate)
    return path, net, job.to_dict()


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


def run_with_node_loss(cluster, victim, job_path: Path, ready, add_node, outage_s: float):
    """Train `job_path` (cluster.driver.launch.run in a thread) and, once `ready()` says the run has a checkpoint,
    kill node `victim` (raylet and workers SIGKILLed), wait `outage_s`, `add_node()` a replacement.
    Node surgery stays in the calling thread (Cluster is not thread-safe). -> (RunInfo, events)."""
    from cluster.driver.launch import run  # Ray: imported by the tests that need it only

    result, events = {}, {}

    def train():
        try:
            result["info"] = run(load_job(job_path), str(job_path))
        except BaseException as e:  # noqa: BLE001 - re-raised below
            result["error"] = e

    t = threading.Thread(target=train, daemon=True)
    t.start()
    deadline = time.time() + 240
    while time.time() < deadline and t.is_alive() and not ready():
        time.sleep(0.2)
    cluster.remove_node(victim, allow_graceful=False)
    events["removed"] = time.time()
    time.sleep(outage_s)  # no capacity for a while: the restart must wait for it
    add_node()
    events["added"] = time.time()
    t.join(timeout=300)
    assert not t.is_alive(), "the run did not finish within 5 minutes of the node coming back"
    if "error" in result:
        raise result["error"]
    return result["info"], events


def spawn_ranks(fn, world: int, *args, deadline_s: float = 300) -> None:
    """Run fn(rank, world, port, *args) in `world` forked processes, the ranks of a gloo group on a free
    loopback port. A rank still running after `deadline_s` is killed and the test fails naming it, so a
    hang (a collective nobody answers, a process group torn down under a live DDP reducer) costs
    minutes instead of CI's whole budget."""
    ctx = mp.start_processes(fn, args=(world, free_port(), *args), nprocs=world, join=False, start_method="fork")
    end = time.monotonic() + deadline_s
    while not ctx.join(timeout=2):  # raises as soon as a rank fails
        if time.monotonic() > end:
            hung = [rank for rank, p in enumerate(ctx.processes) if p.is_alive()]
            for p in ctx.processes:
                p.kill()
            raise AssertionError(f"{fn.__name__}: ranks {hung} of {world} still running after {deadline_s:g} s")
