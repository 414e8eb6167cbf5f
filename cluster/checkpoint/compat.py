"""Whether a checkpoint may be resumed by a job: same task, same model config, same quantisation."""
from __future__ import annotations

import os

from sashimi.config import SaShiMiConfig

from .format import task_name

COMPARED_JOB_KEYS = ("data.quantization",)  # besides the task and every model.* key


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a run whose model config differs from the current job's."""


def _model_of(job: dict) -> dict:
    """The model section normalised through SaShiMiConfig, so defaults spelled out or omitted compare equal."""
    try:
        return SaShiMiConfig.from_dict(job.get("model") or {}).to_dict()
    except (ValueError, TypeError):
        return dict(job.get("model") or {})


def config_mismatch(stored_job: dict, job: dict) -> list[str]:
    """Differences that make a checkpoint unusable for `job`: task, model config and data.quantization.
    Returns 'key: checkpoint X, job Y' strings (empty when compatible)."""
    a, b = _model_of(stored_job), _model_of(job)
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
