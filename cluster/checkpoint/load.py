"""`load_checkpoint(path)`: what every tool that uses a trained model starts with (sashimi-generate,
sashimi-eval, the MNIST demos, sashimi-train's closing WAV). Everything comes from the checkpoint: the
model rebuilt by its task from the stored config, the job, the quantisation and the sample rate of its
data. Every failure is one CheckpointError whose message names the file."""
from __future__ import annotations

import os
from typing import NamedTuple

import torch

from sashimi.kernels import weights_will_be_loaded

from ..config import JobConfig, JobConfigError, job_from_dict, task_name
from ..tasks import task_of
from .format import CheckpointError, WrongTaskError, job_of
from .store import read_job, state_file, validate_checkpoint

CLASSIFY_HINT = "score it with `python -m cluster.tools.mnist_demo classify-eval CHECKPOINT --data SHARDS`"
DIGIT_CLASSIFIER_HINT = "it is a digit classifier: judge samples with `sashimi-eval --metrics sc09 --classifier CHECKPOINT SOURCE`"
# What a checkpoint of each task holds and which tool takes it: the hint a refusal gives
TASK_HINTS = {
    "generate": "it holds an autoregressive SaShiMi (sample it with `sashimi-generate CHECKPOINT --seconds S`, "
                "score its NLL with `sashimi-eval`)",
    "classify": CLASSIFY_HINT,
    "diffusion": "it holds a DiffWave+SaShiMi noise predictor, which has no likelihood to score or step mode to "
                 "sample from (sample it with `sashimi-generate CHECKPOINT --samples N --out DIR`)",
}


def checkpoint_task(path: str | os.PathLike) -> str:
    """The task of the checkpoint at `path` ("generate", "classify", "diffusion"), from its job.json: no
    weights loaded. What a tool that takes several kinds reads first to choose its path."""
    return task_name(read_job(path))


class LoadedCheckpoint(NamedTuple):
    model: torch.nn.Module  # in eval mode, on the CPU (or map_location)
    job: JobConfig
    quantization: str  # "mu-law", "linear" or "none" (tokens are the values: pixels)
    sample_rate: int | None  # of the training data; None for pixel datasets
    step: int


def load_checkpoint(path: str | os.PathLike, task: str = "generate", map_location="cpu") -> LoadedCheckpoint:
    """The checkpoint at `path` (its directory or state.pt), for a tool that uses `task`'s model
    (SaShiMi for "generate"; for "classify" the S4Classifier, or the DigitClassifier of a job with
    model.arch; DiffWaveSaShiMi for "diffusion"). Raises CheckpointError naming the file: missing, torn,
    another format version, another task, weights that do not fit the stored config."""
    file = state_file(path)
    state = validate_checkpoint(path, map_location)
    stored = job_of(state)
    if task_name(stored) != task:
        hint = TASK_HINTS.get(task_name(stored), f"task {task_name(stored)!r}")
        if task_name(stored) == "classify" and "arch" in (stored.get("model") or {}):
            hint = DIGIT_CLASSIFIER_HINT
        raise WrongTaskError(f"{path}: a task {task_name(stored)!r} checkpoint (job {stored.get('name')!r}), "
                             f"not a {task!r} one; {hint}")
    try:
        job = job_from_dict(stored, str(file))
    except JobConfigError as e:
        raise CheckpointError(f"{file}: its stored job is not valid here: {e}") from None
    with weights_will_be_loaded():  # every parameter is replaced below: skip the costly init
        model = task_of(job).build_model()
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise CheckpointError(f"{file}: weights do not fit the stored model config ({first})") from None
    return LoadedCheckpoint(model.eval(), job, job.data.quantization, state["sample_rate"], state["step"])
