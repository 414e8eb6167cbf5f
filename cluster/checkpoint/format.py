"""What a checkpoint holds: one dict of tensors and primitives, so `torch.load(weights_only=True)` reads
it (no pickled code runs on load), with a format version that old files are refused by and a validator
that catches what a crash mid-write leaves behind; and beside it a small `job.json` (the job, the step,
the format version), so the driver checks that a run's checkpoints fit a job by reading kilobytes
instead of loading the weights. Checkpoints written before job.json existed have none: their state.pt
is read instead."""
from __future__ import annotations

import json
from typing import Optional, TypedDict

import torch

STATE_FILE = "state.pt"
JOB_FILE = "job.json"  # written before STATE_FILE: a checkpoint is complete when its state.pt is
FORMAT_VERSION = 2
# Why each version could not read the one before: shown when an older checkpoint is refused.
FORMAT_CHANGES = {
    2: "the SaShiMi U-Net wiring changed in 2 (the paper's residual around each up-path tier, the paper's "
       "unet: true skips) and checkpoints store the sample rate",
}
REQUIRED_KEYS = ("format_version", "model", "optimizer", "scheduler", "step", "data", "rng", "job_json",
                 "sample_rate", "metrics", "nonfinite_steps")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, torn, not tensor-only, an older format, non-finite
    weights, the other task); the message names the file and the reason."""


class NonFiniteCheckpointError(CheckpointError):
    """Refusing to save (or resume from) weights that contain NaN or Inf."""


class FormatVersionError(CheckpointError):
    """A checkpoint written in another format version (e.g. before the U-Net wiring changed)."""


class WrongTaskError(CheckpointError):
    """A checkpoint of one task (generate / classify) given to a tool for the other; names the file."""


class DataPosition(TypedDict):
    seed: int  # job seed the data stream is derived from
    step: int  # the stream position is a function of the step alone
    world_size: int


class Payload(TypedDict):
    """The checkpoint file's content (`state.pt`)."""

    format_version: int
    model: dict  # parameter name -> CPU tensor
    optimizer: dict  # torch optimizer state_dict
    scheduler: dict  # cluster.train.schedule.LRSchedule state_dict
    step: int  # optimiser steps done
    data: DataPosition
    rng: dict  # the saving rank's RNG states (see manager.capture_rng) and "per_rank": one per rank
    job_json: str  # the whole job config as JSON: generation and evaluation rebuild the model from it
    sample_rate: Optional[int]  # of the training shards (their manifest); None for pixel datasets
    metrics: dict  # validation metrics at this step, name -> float
    nonfinite_steps: int  # optimiser steps skipped for NaN/Inf so far
    grad_scaler: dict  # fp16 runs: GradScaler.state_dict() (loss scale, growth counter); {} otherwise or absent
    counters: dict  # resizes, reclaims, steps redone so far (cluster.checkpoint.manager.TrainState); may be absent
    unregistered: list  # names of this run's checkpoint dirs the runtime's registry never recorded (their
    #                     attempt died first), which the manager prunes itself; may be absent


def make_payload(*, model_state: dict, optimizer_state: dict, scheduler_state: dict, step: int, data_seed: int,
                 world_size: int, job: dict, rng: dict, sample_rate: int | None, metrics: dict | None = None,
                 nonfinite_steps: int = 0, grad_scaler: dict | None = None, counters: dict | None = None,
                 unregistered: list[str] | None = None) -> Payload:
    """The checkpoint payload. `job` is stored as JSON so later generation/evaluation rebuild the exact
    model and quantisation the run used, whatever the YAML says by then."""
    return Payload(
        format_version=FORMAT_VERSION,
        model={k: v.detach().cpu() for k, v in model_state.items()},
        optimizer=optimizer_state,
        scheduler=scheduler_state,
        step=int(step),
        data=DataPosition(seed=int(data_seed), step=int(step), world_size=int(world_size)),
        rng=rng,
        job_json=json.dumps(job, sort_keys=True),
        sample_rate=None if sample_rate is None else int(sample_rate),
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        nonfinite_steps=int(nonfinite_steps),
        grad_scaler=dict(grad_scaler or {}),
        counters={k: int(v) for k, v in (counters or {}).items()},
        unregistered=[str(n) for n in (unregistered or [])],
    )


def job_of(state: Payload) -> dict:
    return json.loads(state["job_json"])


def job_record(state: Payload) -> dict:
    """The job.json written beside a payload: what fitting a job to the checkpoint needs, no tensors."""
    return {"format_version": state["format_version"], "step": state["step"], "job": job_of(state),
            "sample_rate": state["sample_rate"], "world_size": state["data"]["world_size"]}


def nonfinite_entries(tensors: dict) -> list[str]:
    """Names of floating/complex tensors in `tensors` that hold NaN or Inf."""
    return [k for k, v in tensors.items() if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex())
            and not bool(torch.isfinite(v).all())]


def check_finite(state: Payload, where: str = "checkpoint") -> None:
    """Raise NonFiniteCheckpointError if any model weight or optimiser moment is NaN/Inf."""
    bad = [f"model.{k}" for k in nonfinite_entries(state["model"])]
    for pid, st in (state.get("optimizer") or {}).get("state", {}).items():
        bad += [f"optimizer.state[{pid}].{k}" for k in nonfinite_entries(st)]
    if bad:
        raise NonFiniteCheckpointError(f"{where}: non-finite values in {', '.join(bad[:5])}"
                                       f"{' ...' if len(bad) > 5 else ''} ({len(bad)} tensor(s))")


def check_version(state: dict, file) -> None:
    """Raise FormatVersionError unless `state` is in this code's format, saying what changed."""
    have = state.get("format_version") if isinstance(state, dict) else None
    if have == FORMAT_VERSION:
        return
    if isinstance(have, int) and have < FORMAT_VERSION:
        why = "; ".join(FORMAT_CHANGES[v] for v in range(have + 1, FORMAT_VERSION + 1) if v in FORMAT_CHANGES)
        raise FormatVersionError(f"checkpoint {file} has format version {have}; this version reads {FORMAT_VERSION} "
                                 f"({why} -- retrain, or use an older release to read it)")
    raise FormatVersionError(f"checkpoint {file} has format version {have!r}; this version reads {FORMAT_VERSION} "
                             f"(written by a newer release, or not a sashimi checkpoint)")


def validate(state: dict, file) -> Payload:
    """Check a loaded payload is in this format, complete and finite; CheckpointError naming `file`."""
    check_version(state, file)
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
