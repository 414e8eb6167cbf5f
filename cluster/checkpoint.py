"""Checkpoint files: one tensor/primitive-only dict per checkpoint, so `torch.load(weights_only=True)`
can read it (no pickled code runs on load), written atomically so a crash never leaves half a file."""
from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch

STATE_FILE = "state.pt"
FORMAT_VERSION = 1
_DIR_RE = re.compile(r"^checkpoint_step(\d+)(?:-.*)?$")
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "step", "data", "rng", "job_json")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (torn, truncated, not a tensor-only file, non-finite weights);
    the message names the file and the reason."""


class NonFiniteCheckpointError(CheckpointError):
    """Refusing to save (or resume from) weights that contain NaN or Inf."""


class WrongTaskError(ValueError):
    """A checkpoint of one task (generate / classify) given to a tool for the other; names the file."""


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a run whose model config differs from the current job's."""


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


def nonfinite_entries(tensors: dict) -> list[str]:
    """Names of floating/complex tensors in `tensors` that hold NaN or Inf."""
    bad = []
    for k, v in tensors.items():
        if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex()) and not bool(
                torch.isfinite(v).all()):
            bad.append(k)
    return bad


def check_finite(state: dict, where: str = "checkpoint") -> None:
    """Raise NonFiniteCheckpointError if any model weight or optimiser moment is NaN/Inf."""
    bad = [f"model.{k}" for k in nonfinite_entries(state["model"])]
    for pid, st in (state.get("optimizer") or {}).get("state", {}).items():
        bad += [f"optimizer.state[{pid}].{k}" for k in nonfinite_entries(st)]
    if bad:
        raise NonFiniteCheckpointError(f"{where}: non-finite values in {', '.join(bad[:5])}"
                                       f"{' ...' if len(bad) > 5 else ''} ({len(bad)} tensor(s))")


def save_checkpoint_dir(directory: str | os.PathLike, state: dict) -> Path:
    """Write state.pt atomically; refuses (NonFiniteCheckpointError, nothing written) non-finite weights."""
    check_finite(state, f"refusing to save checkpoint in {directory} at step {state.get('step')}")
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


def task_name(job: dict) -> str:
    """A stored job's task; checkpoints written before jobs had `task` are generative."""
    return job.get("task") or "generate"


def require_task(job: dict, task: str, path) -> None:
    """Raise WrongTaskError (one line naming `path`) unless the checkpoint's job has this task."""
    have = task_name(job)
    if have != task:
        hint = ("score it with `python -m cluster.mnist_demo classify-eval CHECKPOINT --data SHARDS`"
                if have == "classify" else "it holds a SaShiMi generative model")
        raise WrongTaskError(f"{path}: a task {have!r} checkpoint (job {job.get('name')!r}), not a {task!r} one; {hint}")


def load_model(path: str | os.PathLike, map_location="cpu", task: str = "generate"):
    """(model in eval mode, job dict) from a checkpoint: the model is built from the stored config.
    `task` is what the caller can use (SaShiMi for "generate", S4Classifier for "classify"); a checkpoint
    of the other task raises WrongTaskError."""
    from .tasks import TASKS

    state = load_state(path, map_location)
    job = job_of(state)
    require_task(job, task, path)
    model = TASKS[task].build_model(job["model"])
    model.load_state_dict(state["model"])
    return model.eval(), job


def step_of_dir(path: str | os.PathLike) -> int | None:
    """The step in a checkpoint directory's name (checkpoint_step<9 digits>[-suffix]), else None."""
    m = _DIR_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint directories of a run, oldest first: by step, then by modification time (a directory
    written after a fallback resume carries a suffix and may share its step with a torn one)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [d for d in run_dir.iterdir() if d.is_dir() and step_of_dir(d) is not None]
    return sorted(found, key=lambda d: (step_of_dir(d), d.stat().st_mtime_ns, d.name))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Newest checkpoint directory under a run dir that has a state file (not checked for validity:
    see latest_valid_checkpoint)."""
    found = [d for d in list_checkpoints(run_dir) if (d / STATE_FILE).is_file()]
    return found[-1] if found else None


def checkpoint_dir_name(step: int, suffix: str = "") -> str:
    return f"checkpoint_step{step:09d}" + (f"-{suffix}" if suffix else "")


def validate_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint and check it is complete and finite; raise CheckpointError naming the file.
    Catches what a crash mid-write leaves behind: missing or truncated state.pt, a zip with a
    missing record, a payload without the keys every checkpoint has, NaN/Inf weights."""
    path = Path(path)
    file = path / STATE_FILE if path.is_dir() or not path.suffix else path
    if not file.is_file():
        raise CheckpointError(f"{file}: missing (checkpoint directory has {sorted(p.name for p in path.iterdir())})"
                              if path.is_dir() else f"{file}: missing")
    try:
        state = load_state(file, map_location)
    except Exception as e:  # truncated zip, bad pickle opcode, unsupported global, wrong format, ...
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise CheckpointError(f"{file}: unreadable checkpoint ({type(e).__name__}: {first})") from None
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{file}: incomplete checkpoint, missing {missing}")
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise CheckpointError(f"{file}: bad step {state['step']!r}")
    try:
        json.loads(state["job_json"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{file}: stored job is not valid JSON: {e}") from None
    check_finite(state, str(file))
    return state


def resolve_resume(candidate: str | os.PathLike | None, run_dir: str | os.PathLike | None,
                   log: Callable[[str], None] = print) -> tuple[dict | None, Path | None, list[str]]:
    """Pick the checkpoint to resume from: the newest *valid* one among `candidate` (what Ray's
    get_checkpoint() gave, possibly None) and the checkpoint directories in `run_dir`.

    Two failure modes make Ray's answer alone unsafe: a crash while a checkpoint was written leaves
    the newest one torn (we fall back to the newest valid older one, kept per checkpoint.keep), and a
    worker SIGKILLed right after a checkpoint was persisted can die before Ray's controller registered
    it (Ray then offers an older one, or none, although a complete newer one is on storage).
    Returns (state, path, problems): problems name each invalid checkpoint passed over; (None, None,
    []) when there is nothing to resume. Raises CheckpointError if checkpoints exist but none is valid."""
    cands = list_checkpoints(run_dir) if run_dir else []
    if candidate is not None:
        candidate = Path(candidate)
        if not any(_same_path(candidate, d) for d in cands):
            cands.append(candidate)  # remote storage: a downloaded copy, the only one we know of
    if not cands:
        return None, None, []
    problems = []
    for d in sorted(cands, key=lambda d: (step_of_dir(d) if step_of_dir(d) is not None else -1,
                                          d.stat().st_mtime_ns if d.exists() else 0), reverse=True):
        try:
            state = validate_checkpoint(d)
        except CheckpointError as e:
            problems.append(str(e))
            log(f"checkpoint {d} is invalid, trying an older one: {e}")
            continue
        if problems:
            log(f"falling back to the newest valid checkpoint {d} (step {state['step']}); "
                f"skipped {len(problems)} invalid checkpoint(s)")
        if candidate is None:
            log(f"Ray offered no checkpoint; resuming from {d} (step {state['step']}) found in {run_dir}")
        elif not _same_path(candidate, d) and state["step"] > (step_of_dir(candidate) or -1):
            log(f"storage holds a complete checkpoint {d.name} newer than the one Ray registered "
                f"({candidate.name}; the worker died before Ray recorded it): resuming from step {state['step']}")
        return state, d, problems
    raise CheckpointError(f"no valid checkpoint to resume from in {run_dir or candidate.parent}: "
                          + "; ".join(problems) + " -- delete the broken checkpoint directories or start over "
                          "with --fresh")


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


COMPARED_JOB_KEYS = ("data.quantization",)  # besides every model.* key


def config_mismatch(stored_job: dict, job: dict) -> list[str]:
    """Differences that make a checkpoint unusable for `job`: task, model config (normalised through
    SaShiMiConfig, so defaults spelled out or omitted compare equal) and data.quantization.
    Returns 'key: checkpoint X, job Y' strings (empty when compatible)."""
    from sashimi.config import SaShiMiConfig

    def model_of(j):
        try:
            return SaShiMiConfig.from_dict(j.get("model") or {}).to_dict()
        except (ValueError, TypeError):
            return dict(j.get("model") or {})

    a, b = model_of(stored_job), model_of(job)
    out = []
    if task_name(stored_job) != task_name(job):  # different model class: nothing else would load either
        out.append(f"task: checkpoint {task_name(stored_job)!r}, job {task_name(job)!r}")
    out += [f"model.{k}: checkpoint {a.get(k)!r}, job {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]
    for dotted in COMPARED_JOB_KEYS:
        sec, key = dotted.split(".")
        va, vb = (stored_job.get(sec) or {}).get(key), (job.get(sec) or {}).get(key)
        if va != vb:
            out.append(f"{dotted}: checkpoint {va!r}, job {vb!r}")
    return out


def check_compatible(stored_job: dict, job: dict, checkpoint_path: str | os.PathLike) -> None:
    """Raise CheckpointMismatchError naming every differing key."""
    diff = config_mismatch(stored_job, job)
    if diff:
        raise CheckpointMismatchError(
            f"checkpoint {checkpoint_path} was written with a different model config than job "
            f"{job.get('name')!r} now has: {'; '.join(diff)}. Restore those values, or start a new run "
            f"(a new `name`, or --fresh to delete this one)")
