"""Whether a checkpoint may be resumed by a job: same task, the same weights (the model keys that the
task's model config names in `weight_keys()`: SaShiMiConfig, DiffWaveConfig, DigitClassifierConfig),
same quantisation. Keys that only draw the initial weights or pick an implementation (the Cauchy
backend, dropout, an S4D model's l_max) may change between attempts."""
from __future__ import annotations

import os

from ..config import model_config_class, task_name

COMPARED_JOB_KEYS = ("data.quantization",)  # besides the task and the model's weight keys
# Compared when a run resumes its own checkpoint (not when a new run branches off one): a step of the run
# must keep training on as many clips as the steps before it
RESUME_JOB_KEYS = ("training.global_batch",)


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a run whose model config differs from the current job's."""


def _model_of(job: dict) -> tuple[dict, tuple[str, ...]]:
    """(the model section normalised through its task's config class (SaShiMiConfig, DiffWaveConfig, ...),
    so defaults spelled out or omitted compare equal; its weight keys). A section that does not parse is
    compared key by key."""
    raw = dict(job.get("model") or {})
    try:
        config = model_config_class(task_name(job), raw).from_dict(raw)
    except (ValueError, TypeError):
        return raw, tuple(raw)
    d = config.to_dict()
    # a config class that does not say which keys decide its weights is compared on all of them
    return d, config.weight_keys() if hasattr(config, "weight_keys") else tuple(d)


def config_mismatch(stored_job: dict, job: dict, resume: bool = True) -> list[str]:
    """Differences that make a checkpoint unusable for `job`: task, the model's weight keys and
    data.quantization, and when the run resumes its own checkpoint (`resume`) training.global_batch.
    Returns 'key: checkpoint X, job Y' strings (empty when compatible)."""
    (a, keys_a), (b, keys_b) = _model_of(stored_job), _model_of(job)
    out = []
    if task_name(stored_job) != task_name(job):  # different model class: nothing else would load either
        out.append(f"task: checkpoint {task_name(stored_job)!r}, job {task_name(job)!r}")
    out += [f"model.{k}: checkpoint {a.get(k)!r}, job {b.get(k)!r}" for k in sorted(set(keys_a) | set(keys_b))
            if a.get(k) != b.get(k)]
    for dotted in COMPARED_JOB_KEYS + (RESUME_JOB_KEYS if resume else ()):
        sec, key = dotted.split(".")
        va, vb = (stored_job.get(sec) or {}).get(key), (job.get(sec) or {}).get(key)
        if va != vb:
            out.append(f"{dotted}: checkpoint {va!r}, job {vb!r}")
    return out


def mismatch_message(stored_job: dict, job: dict, checkpoint_path: str | os.PathLike,
                     resume: bool = True) -> str | None:
    """Why `job` cannot resume the checkpoint at `checkpoint_path` (every differing key), or None."""
    diff = config_mismatch(stored_job, job, resume)
    if not diff:
        return None
    return (f"checkpoint {checkpoint_path} was written with a different model config than job "
            f"{job.get('name')!r} now has: {'; '.join(diff)}. Restore those values, or start a new run "
            f"(a new `name`, or --fresh to delete this one)")


def check_compatible(stored_job: dict, job: dict, checkpoint_path: str | os.PathLike) -> None:
    """Raise CheckpointMismatchError naming every differing key."""
    message = mismatch_message(stored_job, job, checkpoint_path)
    if message:
        raise CheckpointMismatchError(message)
