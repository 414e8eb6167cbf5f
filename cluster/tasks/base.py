"""The task plug-in interface: what one kind of job (`task:` in the job YAML) decides, as hooks the
training loop, the driver and the tools call without ever naming a task.

A task is built for one job (`task_of(job)`, cluster/tasks/__init__.py) and decides:
  - the model (`build_model`) and what one example is (`examples`: decoded sample -> tensors);
  - the training loss, and validation as sums that merge across ranks by addition (`eval_sums`),
    turned into metrics (`metrics`, named in `val_keys`; `plateau_key` drives the plateau schedule);
  - what happens around the loop: `after_evaluation` (rank 0, after the val metrics of an evaluation
    step are logged: a generated clip, sample-quality metrics), `finish` (rank 0, after the last step: a
    test-split score) and, on the driver once training is over, `after_training` (a WAV, the test result;
    it returns the lines it adds to the closing summary).
Hooks get a context object with what they may use, so a new task needs no change to the loop.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator

import torch

from data_prep.schema import Sample

from ..config import JobConfig
from ..rundir import RunDir

Batch = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class EvalContext:
    """What `after_evaluation` gets: rank 0, after an evaluation step's metrics are logged; the training
    RNG streams are set aside around the call (draw freely)."""

    job: JobConfig
    model: torch.nn.Module  # the unwrapped module (no DDP, not compiled), in training mode
    step: int
    metrics: dict  # this evaluation's val metrics (every rank's share merged)
    board: Any  # cluster.train.board.Board: scalars, text, audio, image
    device: torch.device
    autocast: Callable
    sample_rate: int | None  # of the training data
    # cluster.checkpoint.load_checkpoint, for a hook that loads another model (eval.sc09_metrics: the digit
    # classifier that judges generated clips); handed in because the tasks sit below cluster.checkpoint
    load_checkpoint: Callable[..., Any] | None = None


@dataclass(frozen=True)
class FinishContext:
    """What `finish` gets: rank 0, after the last optimiser step (also when a finished run is run again);
    no collective follows."""

    job: JobConfig
    model: torch.nn.Module
    step: int
    board: Any
    device: torch.device
    autocast: Callable
    run_dir: RunDir
    test: tuple[str, ...]  # the shards the driver chose to score at the end (`Task.needs_test_split`)
    test_split: str | None
    batches: Callable[[Iterable[str]], Iterator[Batch]]  # every example of those shards, in batches


@dataclass(frozen=True)
class DriverContext:
    """What `after_training` gets, on the driver once the run is over."""

    job: JobConfig
    run_dir: RunDir
    metrics: dict  # the last report of rank 0
    checkpoint_dir: str | None  # the newest checkpoint, None when there is none
    load_checkpoint: Callable[[str], Any]  # cluster.checkpoint.load_checkpoint (LoadedCheckpoint)
    write_wav: bool  # sashimi-train --no-wav turns it off


class Task:
    """Defaults for every hook; a task overrides what it needs and sets the class attributes."""

    name: ClassVar[str]
    loss_tag: ClassVar[str]  # TensorBoard tag of the training loss
    loss_unit: ClassVar[str]  # in the progress line
    val_keys: ClassVar[tuple[str, ...]]  # metrics every rank reports (and checkpoints store)
    plateau_key: ClassVar[str]  # what the plateau schedule watches (lower is better)
    needs_test_split: ClassVar[bool] = False  # the driver hands `finish` a test split's shards

    def __init__(self, job: JobConfig):
        self.job = job

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def check_data(self, manifest: dict, where: str) -> None:
        """The driver, before Ray starts: refuse a dataset (its manifest) this task cannot train on, raising
        JobConfigError naming the file and key. By default any dataset is fine."""

    def examples(self) -> Callable[[Sample, random.Random], Batch]:
        """The sample -> example function the data streams apply (picklable: loader workers use it)."""
        raise NotImplementedError

    def loss_sums(self, model: torch.nn.Module, batch: Batch, autocast: Callable) -> tuple[torch.Tensor, torch.Tensor]:
        """(the batch's training loss summed over its units, the number of units counted): a sum, so the
        trainer can divide a global batch's total by one constant whatever the ranks' shares."""
        raise NotImplementedError

    def units(self, batch: Batch) -> int:
        """Units of loss per example (positions of a token sequence, 1 for a clip-level loss): the global
        batch's loss is divided by global batch x units."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Batch, autocast: Callable) -> torch.Tensor:
        """The batch's mean loss per counted unit."""
        total, count = self.loss_sums(model, batch, autocast)
        return total / count.clamp_min(1)

    def eval_sums(self, model: torch.nn.Module, batches: Iterable[Batch], device: torch.device,
                  autocast: Callable) -> torch.Tensor:
        """float64 sums over `batches` on `device`, which add up across ranks' shares."""
        raise NotImplementedError

    def metrics(self, sums: list[float]) -> dict:
        raise NotImplementedError

    def evaluate(self, model, batches, device, autocast) -> dict:
        return self.metrics(self.eval_sums(model, batches, device, autocast).tolist())

    def val_line(self, metrics: dict) -> str:
        return " ".join(f"{k} {metrics[k]:.4f}" for k in self.val_keys)

    def after_evaluation(self, ctx: EvalContext) -> None:
        """Rank 0, after an evaluation step's metrics are logged."""

    def finish(self, ctx: FinishContext) -> None:
        """Rank 0, after the last step."""

    def after_training(self, ctx: DriverContext) -> list[str]:
        """The driver, once the run is over; returns the lines it adds to the summary."""
        return []
