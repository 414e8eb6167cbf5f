"""The training loop, free of Ray: `Trainer(job, runtime, data).run()` on every rank.

`Runtime` is what the trainer needs from whatever runs it: rank, world size, device, a `report` callable
and the checkpoint it offers to resume from. cluster/worker.py builds one from Ray Train; cluster/local.py
one for a single process without Ray. What depends on the job's task (model, loss, validation metrics,
a classifier's final test) lives in cluster/tasks.py; checkpoint policy in cluster/checkpoint/manager.py.

Collective discipline (a mismatch deadlocks DDP): every rank runs the same number of steps (fixed-size
segments between checkpoints), reports at the same steps (checkpoint steps) and joins the same
collectives: the non-finite vote every step (one all-reduce of one number), the val-sum all-reduce at
evaluation steps, the RNG gather at checkpoint steps. Validation is shared: each rank scores its own
deterministic share of the val batches on the unwrapped module and the sums are added. The generated
clip and the classifier's final test run on rank 0 only, after the last collective of their step.

The host waits for the device once per step (the vote's `.item()`); loss and gradient norm stay on the
device until a logging interval reads them (cluster/meter.py).
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import yaml

from data_prep import storage
from sashimi.optim import make_optimizer

from . import stops
from .checkpoint import CheckpointManager, name_of
from .config import JobConfig
from .data import train_loader, val_batches
from .dist import max_over_ranks, sum_over_ranks
from .faults import NoFaults
from .meter import StepMeter, memory_metrics
from .precision import Precision, set_tf32
from .rundir import RunDir
from .schedule import LRSchedule
from .seeds import mix_seed, seed_all
from .stops import FatalTrainingError
from .tasks import finish_classify, task_of, tb_tag
from .tboard import Board


class NonFiniteTrainingError(FatalTrainingError):
    """Too many consecutive steps with NaN/Inf loss or gradients."""


def say(msg: str) -> None:
    """Progress line to stdout (Ray forwards a worker's to the driver and job logs). Not print():
    Ray Train V2 patches print to tee into its logger as well, which shows every line twice."""
    sys.stdout.write(f"[sashimi] {msg}\n")
    sys.stdout.flush()


@dataclass
class Runtime:
    """What runs the trainer provides. `report(metrics, checkpoint_dir)` is called by every rank at every
    checkpoint step (a barrier under Ray); rank 0 passes the directory to persist, named like the
    checkpoint, the others None."""

    rank: int
    world_size: int
    device: torch.device
    report: Callable[[dict, str | None], None]
    latest_checkpoint: str | None = None  # what the runtime offers to resume from (may be stale or torn)
    prepare_model: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m  # device placement, DDP
    log: Callable[[str], None] = say


@dataclass
class TrainData:
    """The shard lists and facts the driver read from the dataset's manifest."""

    train: list[str]
    val: list[str]
    sample_rate: int | None  # stored in every checkpoint; None for pixel datasets
    test: list[str] = field(default_factory=list)  # classify: scored after the last step
    test_split: str | None = None

    @classmethod
    def from_worker_config(cls, cfg: dict) -> "TrainData":
        shards = cfg["shards"]
        return cls(shards["train"], shards["val"], cfg.get("sample_rate"), shards.get("test", []),
                   cfg.get("test_split"))


STEP_OK, GRAD_NONFINITE, LOSS_NONFINITE = 0, 1, 2


def step_verdict(loss_sum: torch.Tensor, grad_norm: torch.Tensor, world: int) -> int:
    """Whether this step must be skipped, voted across ranks so every rank takes the same decision (a
    rank that stepped alone would diverge): LOSS_NONFINITE if any rank's loss is NaN/Inf, else
    GRAD_NONFINITE if any rank's gradient norm is, else STEP_OK. One all-reduce MAX of one number
    (2 x loss flag + gradient flag) and one host sync."""
    flag = (2.0 * (~torch.isfinite(loss_sum)).float() + (~torch.isfinite(grad_norm)).float()).reshape(1)
    return min(int(max_over_ranks(flag, world).item()), LOSS_NONFINITE)


class Trainer:
    """One rank's part of a run: model, optimiser, schedule and checkpoint policy built from the job,
    then `run()`: resume, train segment by segment, evaluate and checkpoint on schedule, finish."""

    def __init__(self, job: JobConfig, runtime: Runtime, data: TrainData, faults: NoFaults | None = None,
                 precision: Precision | None = None):
        """`precision`: what to compute in, instead of what the job asks for on this device (the tests
        force fp16 with its GradScaler on a CPU)."""
        self.job, self.rt, self.data = job, runtime, data
        self.faults = faults or NoFaults()
        self.task = task_of(job)
        self.rank, self.world, self.device = runtime.rank, runtime.world_size, runtime.device
        self.say0 = runtime.log if self.rank == 0 else (lambda msg: None)
        self.run_dir = RunDir.of(job.checkpoint.storage, job.name)
        torch.set_num_threads(job.scaling.torch_threads or max(1, int(job.scaling.resources_per_worker.get("CPU", 1))))
        t = job.training
        self.amp = precision or Precision.for_device(t.precision, self.device, self.say0)
        self.autocast = self.amp.autocast
        set_tf32(t.tf32, self.device)
        seed_all(job.seed)  # same init on every rank (DDP also broadcasts rank 0's parameters)
        # on the rank's device before any wrapper sees it (Ray's prepare_model also moves it; a plain
        # DDP(device_ids=[i]) or the identity of run_local does not)
        self.raw_model = self.task.build_model(job.model).to(self.device)
        self.model = runtime.prepare_model(self.raw_model)
        # the training forward only (DDP's wrapper included, as torch.compile wants it); validation and
        # generation run on the unwrapped, uncompiled module
        self.forward_model = torch.compile(self.model, dynamic=False) if t.compile else self.model
        self.params = [p for p in self.raw_model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.raw_model, lr=job.optim.lr, weight_decay=job.optim.weight_decay,
                                        ssm_lr=job.optim.ssm_lr)
        s = job.schedule
        self.sched = LRSchedule(self.optimizer, s.kind, job.training.max_steps, s.warmup_steps, s.factor, s.patience,
                                s.threshold, s.min_lr_scale)
        self.ckpt = CheckpointManager(job, self.run_dir.root, self.rank, self.world, data.sample_rate, self.say0)
        self.meter = StepMeter(self.device)
        self.clip = t.clip_norm if t.clip_norm is not None else float("inf")
        self.step, self.resumed_from = 0, -1
        self.nonfinite_total, self.nonfinite_run = 0, 0  # the run count is equal on every rank (voted)
        self.board: Board | None = None  # rank 0
        self.val: list | None = None  # this rank's share of the fixed validation batches, read once

    # ---------------------------------------------------------------- the loop

    def run(self) -> None:
        """Resume, train to max_steps, finish. An error retrying cannot fix is recorded in the run dir
        (cluster.stops); after the restart that follows, every rank reports it and returns."""
        reason = stops.recorded(self.run_dir, self.rank, self.world)
        if reason is not None:
            self.say0(f"not retrying: {reason}")
            self.rt.report({"fatal": reason, "step": self.step}, None)
            return
        try:
            self.resume()
            if self.rank == 0:
                self.board = self._open_board()
            self.model.train()
            while self.step < self.job.training.max_steps:
                self._run_segment()
        except stops.FATAL_ERRORS as e:
            stops.record(self.run_dir, e, self.rank)
            raise
        self.finish()

    def _run_segment(self) -> None:
        """The steps up to the next checkpoint boundary, on a data stream seeded by (seed, rank, step)."""
        every, max_steps = self.job.checkpoint.every, self.job.training.max_steps
        end = min((self.step // every + 1) * every, max_steps)
        batches = iter(self._loader(end - self.step))
        while self.step < end:
            self.train_step(batches)
            self.maybe_log()
            metrics = self._metrics()
            self.maybe_evaluate(metrics)
            self.maybe_checkpoint(metrics)

    def resume(self) -> None:
        """Weights, optimiser, schedule, step and RNG from the newest valid checkpoint, if any."""
        state = self.ckpt.resume_state(self.rt.latest_checkpoint)
        if state is not None:
            self.raw_model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.step = self.resumed_from = state["step"]
            self.nonfinite_total = int(state["nonfinite_steps"])
            self.amp.load_scaler_state(state.get("grad_scaler"))
        self.ckpt.restore_rng(state, self.step)

    def train_step(self, batches: Iterator) -> None:
        """One optimiser step over grad_accum micro-batches, skipped on every rank if any saw NaN/Inf.
        Loss and gradient norm stay on the device; the vote is the step's one host sync."""
        t0 = time.perf_counter()
        self.sched.apply(self.step)
        accum = self.job.training.grad_accum
        scaler = self.amp.scaler
        data_wait, clips, audio = 0.0, 0, 0
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        for micro in range(accum):
            td = time.perf_counter()
            batch = tuple(t.to(self.device, non_blocking=True) for t in next(batches))
            data_wait += time.perf_counter() - td
            clips += batch[0].shape[0]
            audio += batch[0].numel()  # tokens: clips x crop length
            with self._grad_sync(last=micro == accum - 1):
                loss = self.task.loss(self.forward_model, batch, self.autocast)
                loss = self.faults.poison(loss, self.step + 1, self.rank)
                scaler.scale(loss / accum).backward()
            loss_sum += loss.detach().float()
        scaler.unscale_(self.optimizer)  # fp16: true gradients before clipping (a no-op otherwise)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        verdict = step_verdict(loss_sum, grad_norm, self.world)
        skipped = verdict != STEP_OK
        if not skipped:
            self.optimizer.step()  # the gradients are unscaled already: GradScaler.step would only re-check them
            self.nonfinite_run = 0
        scale_before = scaler.get_scale() if skipped and scaler.is_enabled() else None
        scaler.update()  # fp16: halves the scale after an overflow, grows it after a run of good steps
        if skipped and not self._scaler_overflow(verdict, scale_before):
            self._count_skipped(loss_sum / accum, grad_norm)
        self.optimizer.zero_grad(set_to_none=True)
        self.faults.after_step(self.step + 1, self.rank)
        self.step += 1
        if self.meter.add(time.perf_counter() - t0, data_wait, clips * self.world, audio * self.world,
                          loss_sum / accum, grad_norm, skipped):
            self.say0(f"first step done at unix time {self.meter.first_step_unix:.3f}")

    def _scaler_overflow(self, verdict: int, scale_before: float | None) -> bool:
        """fp16: whether a skipped step was an ordinary loss-scale overflow (finite loss, the GradScaler
        found Inf/NaN in the scaled gradients and lowered the scale), which is not counted as a
        non-finite step. Below a scale of 1 an overflow is no longer the scale's fault and counts."""
        if verdict != GRAD_NONFINITE or scale_before is None:
            return False
        scale_after = self.amp.scaler.get_scale()
        if scale_after < scale_before and scale_before >= 1.0:
            self.say0(f"step {self.step + 1}: fp16 gradients overflowed at loss scale {scale_before:g}: step "
                      f"skipped, scale now {scale_after:g}")
            return True
        return False

    def _grad_sync(self, last: bool):
        """DDP all-reduces gradients only on the last micro-batch of an accumulated step."""
        return contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") else self.model.no_sync()

    def _count_skipped(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.nonfinite_total += 1
        self.nonfinite_run += 1
        self.say0(f"step {self.step + 1}: non-finite loss {float(loss)} / grad norm {float(grad_norm)}: optimiser step skipped "
                  f"({self.nonfinite_run} in a row, {self.nonfinite_total} in total)")
        limit = self.job.training.max_nonfinite_steps
        if self.nonfinite_run >= limit:
            raise NonFiniteTrainingError(
                f"job {self.job.name!r}: {self.nonfinite_run} consecutive steps (up to step {self.step + 1}) had "
                f"non-finite loss or gradients (training.max_nonfinite_steps={limit}); stopping. Lower optim.lr, "
                f"set training.clip_norm, or check the data. The last good checkpoint is kept in {self.run_dir.root}")

    def _due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.job.training.max_steps

    def maybe_log(self) -> None:
        """Rank 0: train scalars to TensorBoard and a progress line, every logging.every steps: window
        means of loss and gradient norm (finite steps), every parameter group's learning rate
        (train/lr/<group>: decay, no_decay, ssm; train/lr is optim.lr's as scheduled), clips/s and audio
        samples/s (clips x crop length) over all ranks."""
        if self.rank != 0 or not self._due(self.job.logging.every):
            return
        w = self.meter.take_window()
        groups = self.optimizer.param_groups
        lr = groups[0]["lr"]
        scalars = {self.task.loss_tag: w["loss"], "train/lr": lr, "train/grad_norm": w["grad_norm"],
                   **{f"train/lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(groups)},
                   "train/nonfinite_steps": self.nonfinite_total, "perf/clips_per_s": w["clips_per_s"],
                   "perf/audio_samples_per_s": w["audio_samples_per_s"], "perf/step_time_s": w["step_time_s"],
                   "perf/data_wait_s": w["data_wait_s"], **memory_metrics(self.device)}
        if self.amp.scaler.is_enabled():
            scalars["train/loss_scale"] = self.amp.scaler.get_scale()
        self.board.scalars(scalars, self.step)
        self.board.flush()  # on object storage: uploads the events (cluster.tboard)
        self.say0(f"step {self.step}/{self.job.training.max_steps} loss {w['loss']:.4f} {self.task.loss_unit} "
                  f"lr {lr:.2e} gnorm {w['grad_norm']:.3f} {w['audio_samples_per_s']:.0f} audio samples/s "
                  f"({w['clips_per_s']:.2f} clips/s) data wait {1000 * w['data_wait_s']:.1f} ms/step")

    def _metrics(self) -> dict:
        """What is reported (Ray keeps rank 0's): progress, resume facts, throughput of this attempt."""
        return {"step": self.step, "resumed_from": self.resumed_from, "nonfinite_steps": self.nonfinite_total,
                "resume_skipped_invalid": self.ckpt.skipped_invalid, **self.meter.attempt_metrics()}

    def maybe_evaluate(self, metrics: dict) -> None:
        """At evaluation steps: every rank scores its share of the val batches, the sums are added over
        the ranks (one all-reduce), and every rank derives the same numbers from them (the plateau
        schedule must step identically everywhere). Then rank 0 logs them and a generated clip."""
        if not self.job.eval.val_batches or not self._due(self.job.eval.every):
            return
        j = self.job
        if self.val is None:
            self.val = val_batches(self.data.val, n_batches=j.eval.val_batches, batch_size=j.eval.val_batch_size,
                                   crop=j.data.crop, quantization=j.data.quantization, seed=j.seed,
                                   on_bad_sample=j.data.on_bad_sample, n_labels=self.task.n_labels,
                                   rank=self.rank, world=self.world)
        with self._outside_training_rng():
            sums = self.task.val_sums(self.raw_model, self.val, self.device, self.autocast)
        res = self.task.val_metrics(sum_over_ranks(sums, self.world).tolist())
        metrics.update({k: float(res[k]) for k in self.task.val_keys})
        if self.rank == 0:
            self.board.scalars({tb_tag(k): res[k] for k in self.task.val_keys}, self.step)
            self.say0(f"step {self.step} {self.task.val_line(res)}")
            if j.eval.generate_samples and self.task.name == "generate":
                t0 = time.perf_counter()
                with self._outside_training_rng():
                    self.board.generated(self.raw_model, j.eval.generate_samples, self.step,
                                         seed=mix_seed(j.seed, self.step))
                self.board.scalars({"perf/generate_s": time.perf_counter() - t0}, self.step)
        if self.sched.observe(metrics[self.task.plateau_key]):
            self.say0(f"{self.task.plateau_key} plateaued: lr scale now {self.sched.plateau_scale:g}")

    def _outside_training_rng(self):
        """Evaluation draws nothing from the training RNG streams (exact resume depends on them)."""
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    def maybe_checkpoint(self, metrics: dict) -> None:
        """At checkpoint steps: every rank votes on finite weights and hands in its RNG; rank 0 writes
        the checkpoint and reports it, the others report without one."""
        if not self.ckpt.due(self.step):
            return
        self.ckpt.refuse_nonfinite(self.raw_model.state_dict(), self.step)
        rng_per_rank = self.ckpt.gather_rng()
        if self.rank != 0:
            self.rt.report(metrics, None)
            return
        val = {k: v for k, v in metrics.items() if k in self.task.val_keys}
        with tempfile.TemporaryDirectory() as tmp:
            written = self.ckpt.write(tmp, model=self.raw_model, optimizer=self.optimizer,
                                      scheduler=self.sched, step=self.step, metrics=val,
                                      nonfinite_steps=self.nonfinite_total, rng_per_rank=rng_per_rank,
                                      grad_scaler=self.amp.scaler_state())
            self.rt.report(metrics, written)
        self.board.flush()
        self.faults.after_checkpoint(self.step, self.rank, storage.join(self.run_dir.root, name_of(written)))

    def finish(self) -> None:
        """After the last step (also when a finished run is re-run): a classify run's test accuracy on
        rank 0. No collective follows, so the other ranks simply finish."""
        if self.task.name == "classify" and self.rank == 0:
            finish_classify(self.job, self.raw_model, self.data.test, self.data.test_split, self.step, self.device,
                            self.autocast, self.board, self.run_dir, self.say0)
        if self.board is not None:
            self.board.close()

    # ---------------------------------------------------------------- setup helpers

    def _loader(self, n_steps: int):
        j = self.job
        return train_loader(self.data.train, seed=j.seed, rank=self.rank, start_step=self.step,
                            n_batches=n_steps * j.training.grad_accum, batch_size=j.training.batch_per_worker,
                            crop=j.data.crop, quantization=j.data.quantization, shuffle_buffer=j.data.shuffle_buffer,
                            loader_workers=j.data.loader_workers, on_bad_sample=j.data.on_bad_sample,
                            n_labels=self.task.n_labels, pin_memory=self.device.type == "cuda")

    def _open_board(self) -> Board:
        board = Board(self.run_dir.tensorboard, purge_step=self.step, sample_rate=self.data.sample_rate,
                      quantization=self.job.data.quantization)
        if self.step == 0:
            board.text("job", "```\n" + yaml.safe_dump(self.job.to_dict(), sort_keys=False) + "\n```", 0)
        return board
