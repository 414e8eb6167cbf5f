"""Checkpoint files: one tensor/primitive-only dict per checkpoint, so `torch.load(weights_only=True)`
can read it (no pickled code runs on load), written atomically so a crash never leaves half a file."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "state.pt"
FORMAT_VERSION = 1


def capture_rng() -> dict:
    """torch / numpy / python RNG states as tensors and primitives."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python_version": int(py_state[0]),
        "python_state": torch.tensor(py_state[1], dtype=torch.int64),
        "python_gauss": py_state[2],
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_state"].tolist()),
                     state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """torch.save to a temp name in the same dir, fsync, rename over `path`, fsync the dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def make_state(*, model_state: dict, optimizer_state: dict, scheduler_state: dict, step: int,
               data_seed: int, world_size: int, job: dict, metrics: dict | None = None) -> dict:
    """The checkpoint payload. `job` is stored as JSON so later generation/evaluation rebuild the exact
    model and quantisation the run used, whatever the YAML says by then."""
    return {
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model_state.items()},
        "optimizer": optimizer_state,
        "scheduler": scheduler_state,
        "step": int(step),
        "data": {"seed": int(data_seed), "step": int(step), "world_size": int(world_size)},
        "rng": capture_rng(),
        "job_json": json.dumps(job, sort_keys=True),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }


def save_checkpoint_dir(directory: str | os.PathLike, state: dict) -> Path:
    return atomic_torch_save(state, Path(directory) / STATE_FILE)


def load_state(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint (a run's checkpoint directory or its state.pt) with weights_only=True."""
    path = Path(path)
    if path.is_dir():
        path = path / STATE_FILE
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {state.get('format_version')!r}, expected {FORMAT_VERSION}")
    return state


def job_of(state: dict) -> dict:
    return json.loads(state["job_json"])


def load_model(path: str | os.PathLike, map_location="cpu"):
    """(model in eval mode, job dict) from a checkpoint: the model is built from the stored config."""
    from sashimi import SaShiMi
    from sashimi.config import SaShiMiConfig

    state = load_state(path, map_location)
    job = job_of(state)
    model = SaShiMi(SaShiMiConfig.from_dict(job["model"]))
    model.load_state_dict(state["model"])
    return model.eval(), job


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Newest checkpoint directory under a run dir (the train loop names them checkpoint_step<9 digits>)."""
    found = sorted(d for d in Path(run_dir).glob("checkpoint_step*") if (d / STATE_FILE).is_file())
    return found[-1] if found else None


def checkpoint_dir_name(step: int) -> str:
    return f"checkpoint_step{step:09d}"
