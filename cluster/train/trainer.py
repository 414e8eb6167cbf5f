"""The training loop, free of Ray: `train_rank(config, runtime)` on every rank.

`Runtime` (cluster/train/runtime.py) is what the trainer needs from whatever runs it: rank, world size,
device, a `report` callable and the checkpoint it offers to resume from. cluster/train/ray_worker.py
builds one from Ray Train; cluster/driver/local.py one for a single process without Ray. What depends on
the job's task (model, examples, loss, validation metrics, what happens after an evaluation and after
the last step) is the task plug-in's (cluster/tasks/); what a checkpoint holds and when, the checkpoint
manager's (cluster/checkpoint/manager.py).

A step trains on a global batch of clips fixed by (seed, step) (cluster/train/order.py); this rank
takes its share, in micro-batches of at most training.batch_per_worker. The loss of a step is the sum
over the global batch divided by a constant (global batch x units per example: positions for token
tasks, clips for classification), each rank's part scaled by the world size because DDP averages
gradients: the same gradient at any world size, up to the order of float sums, however unevenly the
clips are shared.

Collective discipline (a mismatch deadlocks DDP): every rank runs the same number of steps, reports at
the same steps (checkpoint steps, and the just-in-time checkpoint after a reclaim notice) and joins the
same collectives: the reclaim-notice check every scaling.preemption_check_every steps (a barrier under
Ray), the non-finite vote every step (one all-reduce of one number), the val-sum all-reduce at
evaluation steps, the RNG gather at checkpoint steps. Validation is shared: each rank scores its own
deterministic share of the val batches on the unwrapped module and the sums are added. The task's
after-evaluation and finish hooks run on rank 0 only, after the last collective of their step.

The host waits for the device once per step (the vote's `.item()`); loss and gradient norm stay on the
device until a logging interval reads them (cluster/train/meter.py).
"""
from __future__ import annotations

import contextlib
import gc
import time
from typing import Iterable, Iterator

import torch
import yaml

from sashimi.optim import make_optimizer

from ..checkpoint import CheckpointManager, TrainState, load_checkpoint
from ..dist import max_over_ranks, sum_over_ranks
from ..logs import log
from ..rundir import RunDir
from ..seeds import seed_all
from ..tasks import EvalContext, FinishContext, task_of
from . import progress, stops
from .board import Board
from .data import GlobalBatches, MicroBatch, split_batches, val_batches
from .order import ClipLocator, GlobalOrder
from .faults import NoFaults
from .meter import StepMeter, memory_metrics
from .precision import Precision, set_tf32
from .runtime import Runtime
from .schedule import LRSchedule
from .stops import FatalTrainingError
from .worker_config import WorkerConfig

class NonFiniteTrainingError(FatalTrainingError):
    """Too many consecutive steps with NaN/Inf loss or gradients."""


STEP_OK, GRAD_NONFINITE, LOSS_NONFINITE = 0, 1, 2


def step_verdict(loss_sum: torch.Tensor, grad_norm: torch.Tensor, world: int) -> int:
    """Whether this step must be skipped, voted across ranks so every rank takes the same decision (a
    rank that stepped alone would diverge): LOSS_NONFINITE if any rank's loss is NaN/Inf, else
    GRAD_NONFINITE if any rank's gradient norm is, else STEP_OK. One all-reduce MAX of one number
    (2 x loss flag + gradient flag) and one host sync."""
    flag = (2.0 * (~torch.isfinite(loss_sum)).float() + (~torch.isfinite(grad_norm)).float()).reshape(1)
    return min(int(max_over_ranks(flag, world).item()), LOSS_NONFINITE)


def train_rank(config: WorkerConfig, runtime: Runtime, faults: NoFaults | None = None,
               precision: Precision | None = None) -> None:
    """Build this rank's trainer from the driver's config and run it to the end: what the Ray worker, the
    one-process runtime and the tests call. `faults`: the test hook object (cluster/train/faults.py);
    `precision`: what to compute in instead of what the job asks for on this device (the tests force
    fp16 with its GradScaler on a CPU)."""
    trainer = Trainer(config, runtime, faults, precision)
    trainer.run()
    # Free the DDP reducer (and any cycle holding it) now, while its process group lives: a runtime
    # destroys the group after this returns, and a gloo group destroyed under a live reducer hangs in
    # its destructor (seen in a test, tests/cluster/test_cluster_trainer._val_rank).
    del trainer
    gc.collect()


class Trainer:
    """One rank's part of a run: the task's model, optimiser, schedule and checkpoint manager built from
    the job, then `run()`: resume, train segment by segment, evaluate and checkpoint on schedule, finish."""

    def __init__(self, config: WorkerConfig, runtime: Runtime, faults: NoFaults | None = None,
                 precision: Precision | None = None):
        job = config.job
        self.job, self.data, self.rt = job, config.data, runtime
        self.faults = faults or NoFaults()
        self.task = task_of(job)
        self.rank, self.world, self.device = runtime.rank, runtime.world_size, runtime.device
        self.run_dir = RunDir.of(job.checkpoint.storage, job.name)
        torch.set_num_threads(job.scaling.torch_threads or max(1, int(job.scaling.resources_per_worker.get("CPU", 1))))
        t = job.training
        self.amp = precision or Precision.for_device(t.precision, self.device)
        if self.amp.kind != t.precision:
            self._log0(f"precision {t.precision} requested without a GPU: training in {self.amp.kind}")
        self.autocast = self.amp.autocast
        set_tf32(t.tf32, self.device)
        seed_all(job.seed)  # same init on every rank (DDP also broadcasts rank 0's parameters)
        # on the rank's device before any wrapper sees it (Ray's prepare_model also moves it; a plain
        # DDP(device_ids=[i]) or the one-process runtime does not)
        self.raw_model = self.task.build_model().to(self.device)
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
        self.state = TrainState()
        self.ckpt = CheckpointManager(job, self.run_dir.root, model=self.raw_model, state=self.state,
                                      optimizer=self.optimizer, schedule=self.sched, precision=self.amp,
                                      sample_rate=self.data.sample_rate, rank=self.rank, world=self.world,
                                      report=runtime.report, registry=runtime.registry)
        self.examples = self.task.examples()
        self.global_batch = job.global_batch(self.world)
        if self.global_batch < self.world:
            raise FatalTrainingError(f"job {job.name!r}: training.global_batch {self.global_batch} cannot be split over "
                                     f"{self.world} workers (scaling.num_workers): some would get no clip")
        self.batches = GlobalBatches(
            ClipLocator(self.data.train, self.data.train_counts),
            GlobalOrder(sum(self.data.train_counts), self.global_batch, job.seed), examples=self.examples,
            rank=self.rank, world=self.world, micro=t.batch_per_worker, on_bad_sample=job.data.on_bad_sample,
            threads=job.data.loader_workers, pin_memory=self.device.type == "cuda")
        self.meter = StepMeter(self.device)
        self.clip = t.clip_norm if t.clip_norm is not None else float("inf")
        self.nonfinite_run = 0  # non-finite steps in a row: equal on every rank (voted)
        self.board: Board | None = None  # rank 0
        self.val: list | None = None  # this rank's share of the fixed validation batches, read once
        self.noticed: set[str] = set()  # nodes whose reclaim notice this attempt has acted on
        self.check_s, self.checks = 0.0, 0  # time spent in reclaim-notice checks (a barrier), and how many

    @property
    def step(self) -> int:
        return self.state.step

    def _log0(self, msg: str) -> None:
        if self.rank == 0:
            log.info(msg)

    # ---------------------------------------------------------------- the loop

    def run(self) -> None:
        """Resume, train to max_steps, finish. An error retrying cannot fix is recorded in the run dir
        (cluster/train/stops.py); after the restart that follows, every rank reports it and returns."""
        reason = stops.recorded(self.run_dir, self.rank, self.world)
        if reason is not None:
            self._log0(f"not retrying: {reason}")
            self.rt.report({"fatal": reason, "step": self.step}, None)
            return
        try:
            self.ckpt.load(self.rt.latest_checkpoint)
            if self.rank == 0:
                self.board = Board(self.run_dir.tensorboard, purge_step=self.step)
                if self.step == 0:
                    self.board.text("job", "```\n" + yaml.safe_dump(self.job.to_dict(), sort_keys=False) + "\n```", 0)
                self._note_restart()
            self.model.train()
            while self.step < self.job.training.max_steps:
                self.train_step()
                self.maybe_log()
                metrics = self._metrics()
                self.maybe_evaluate(metrics)
                saved = self.maybe_checkpoint(metrics)
                self.maybe_checkpoint_before_reclaim(metrics, saved)
        except stops.FATAL_ERRORS as e:
            stops.record(self.run_dir, e, self.rank)
            raise
        finally:
            self.batches.close()
        self.finish()

    def _note_restart(self) -> None:
        """Rank 0 after loading: a resumed checkpoint of another world size is a resize; steps past it that
        an earlier attempt had done (its progress mark) are steps redone. Both are counted and logged."""
        st = self.state
        if self.ckpt.resumed_world is not None and self.ckpt.resumed_world != self.world:
            st.resizes += 1
            msg = (f"resize: resuming the checkpoint of step {self.step}, written at world size "
                   f"{self.ckpt.resumed_world}, at world size {self.world} (global batch {self.global_batch})")
            log.info(msg)
            self.board.text("elastic", msg, self.step)
        done = progress.read(self.run_dir)
        if done > self.step:
            st.steps_redone += done - self.step
            log.info(f"an earlier attempt reached step {done}: steps {self.step + 1}..{done} are done again")

    def train_step(self) -> None:
        """One optimiser step over this rank's share of the global batch, skipped on every rank if any saw
        NaN/Inf. Loss and gradient norm stay on the device; the vote is the step's one host sync."""
        t0 = time.perf_counter()
        self.state.metrics = {}
        self.sched.apply(self.step)
        scaler = self.amp.scaler
        td = time.perf_counter()
        micro_batches: list[MicroBatch] = self.batches.batches(self.step)
        data_wait = time.perf_counter() - td
        clips = audio = 0
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        count = torch.zeros((), dtype=torch.float32, device=self.device)
        for i, mb in enumerate(micro_batches):
            batch = tuple(t.to(self.device, non_blocking=True) for t in mb.tensors)
            # the step's loss is sum / (global batch x units per example) at any world size; DDP averages
            # the ranks' gradients, hence the factor world
            scale = mb.weight * self.world / (self.global_batch * self.task.units(batch))
            clips += batch[0].shape[0] if mb.weight else 0
            audio += batch[0].numel() if mb.weight else 0  # tokens: clips x crop length
            with self._grad_sync(last=i == len(micro_batches) - 1):
                total, n = self.task.loss_sums(self.forward_model, batch, self.autocast)
                total = self.faults.poison(total, self.step + 1, self.rank)
                scaler.scale(total * scale).backward()
            loss_sum += total.detach().float() * mb.weight
            count += n.detach().float() * mb.weight
        loss_mean = loss_sum / count.clamp_min(1)  # this rank's mean, for logging
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
            self._count_skipped(loss_mean, grad_norm)
        self.optimizer.zero_grad(set_to_none=True)
        self.faults.after_step(self.step + 1, self.rank)
        self.state.step += 1
        if self.meter.add(time.perf_counter() - t0, data_wait, clips * self.world, audio * self.world,
                          loss_mean, grad_norm, skipped):
            self._log0(f"first step done at unix time {self.meter.first_step_unix:.3f}")

    def _scaler_overflow(self, verdict: int, scale_before: float | None) -> bool:
        """fp16: whether a skipped step was an ordinary loss-scale overflow (finite loss, the GradScaler
        found Inf/NaN in the scaled gradients and lowered the scale), which is not counted as a
        non-finite step. Below a scale of 1 an overflow is no longer the scale's fault and counts."""
        if verdict != GRAD_NONFINITE or scale_before is None:
            return False
        scale_after = self.amp.scaler.get_scale()
        if scale_after < scale_before and scale_before >= 1.0:
            self._log0(f"step {self.step + 1}: fp16 gradients overflowed at loss scale {scale_before:g}: step "
                       f"skipped, scale now {scale_after:g}")
            return True
        return False

    def _grad_sync(self, last: bool):
        """DDP all-reduces gradients only on the last micro-batch of an accumulated step."""
        return contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") else self.model.no_sync()

    def _count_skipped(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.state.nonfinite_steps += 1
        self.nonfinite_run += 1
        self._log0(f"step {self.step + 1}: non-finite loss {float(loss)} / grad norm {float(grad_norm)}: optimiser "
                   f"step skipped ({self.nonfinite_run} in a row, {self.state.nonfinite_steps} in total)")
        limit = self.job.training.max_nonfinite_steps
        if self.nonfinite_run >= limit:
            raise NonFiniteTrainingError(
                f"job {self.job.name!r}: {self.nonfinite_run} consecutive steps (up to step {self.step + 1}) had "
                f"non-finite loss or gradients (training.max_nonfinite_steps={limit}); stopping. Lower optim.lr, "
                f"set training.clip_norm, or check the data. The last good checkpoint is kept in {self.run_dir.root}")

    def maybe_log(self) -> None:
        """Rank 0: train scalars to TensorBoard and a progress line, every logging.every steps: window
        means of loss and gradient norm (finite steps), every parameter group's learning rate
        (train/lr/<group>: decay, no_decay, ssm; train/lr is optim.lr's as scheduled), clips/s and audio
        samples/s (clips x crop length) over all ranks."""
        if self.rank != 0 or not self.job.due(self.step, self.job.logging.every):
            return
        w = self.meter.take_window()
        groups = self.optimizer.param_groups
        lr = groups[0]["lr"]
        scalars = {self.task.loss_tag: w["loss"], "train/lr": lr, "train/grad_norm": w["grad_norm"],
                   **{f"train/lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(groups)},
                   "train/nonfinite_steps": self.state.nonfinite_steps, "perf/clips_per_s": w["clips_per_s"],
                   "perf/audio_samples_per_s": w["audio_samples_per_s"], "perf/step_time_s": w["step_time_s"],
                   "perf/data_wait_s": w["data_wait_s"], "perf/world_size": self.world,
                   **memory_metrics(self.device)}
        if self.amp.scaler.is_enabled():
            scalars["train/loss_scale"] = self.amp.scaler.get_scale()
        self.board.scalars(scalars, self.step)
        self.board.flush()  # on object storage: uploads the events (cluster/train/board.py)
        progress.write(self.run_dir, self.step, self.world)  # how far this attempt got: a restart counts what it redoes
        log.info(f"step {self.step}/{self.job.training.max_steps} loss {w['loss']:.4f} {self.task.loss_unit} "
                 f"lr {lr:.2e} gnorm {w['grad_norm']:.3f} {w['audio_samples_per_s']:.0f} audio samples/s "
                 f"({w['clips_per_s']:.2f} clips/s) data wait {1000 * w['data_wait_s']:.1f} ms/step")

    def _metrics(self) -> dict:
        """What is reported (Ray keeps rank 0's): progress, resume facts, throughput of this attempt."""
        st = self.state
        return {"step": self.step, "resumed_from": self.ckpt.resumed_from,
                "nonfinite_steps": st.nonfinite_steps, "resume_skipped_invalid": self.ckpt.skipped_invalid,
                "world_size": self.world, "resizes": st.resizes, "reclaims": st.reclaims,
                "steps_redone": st.steps_redone, "preemption_check_ms": 1e3 * self.check_s / max(self.checks, 1),
                **self.meter.attempt_metrics()}

    def evaluate(self) -> dict:
        """The val metrics: every rank scores its share of the val batches (read once, the same at every
        evaluation) and the sums are added over the ranks (one all-reduce), so every rank derives the same
        numbers (the plateau schedule must step identically everywhere). A collective."""
        j = self.job
        if self.val is None:
            self.val = val_batches(self.data.val, examples=self.examples, n_batches=j.eval.val_batches,
                                   batch_size=j.eval.val_batch_size, seed=j.seed, on_bad_sample=j.data.on_bad_sample,
                                   rank=self.rank, world=self.world)
        with self._outside_training_rng():
            sums = self.task.eval_sums(self.raw_model, self.val, self.device, self.autocast)
        return self.task.metrics(sum_over_ranks(sums, self.world).tolist())

    def maybe_evaluate(self, metrics: dict) -> None:
        """At evaluation steps: `evaluate()`; rank 0 logs the metrics and calls the task's
        after-evaluation hook (the generated clip)."""
        if not self.job.eval.val_batches or not self.job.due(self.step, self.job.eval.every):
            return
        res = self.evaluate()
        self.state.metrics = {k: float(res[k]) for k in self.task.val_keys}
        metrics.update(self.state.metrics)
        if self.rank == 0:
            self.board.scalars({k.replace("_", "/", 1): res[k] for k in self.task.val_keys}, self.step)  # val/nll_bits
            log.info(f"step {self.step} {self.task.val_line(res)}")
            with self._outside_training_rng():
                self.task.after_evaluation(EvalContext(
                    job=self.job, model=self.raw_model, step=self.step, metrics=res, board=self.board,
                    device=self.device, autocast=self.autocast, sample_rate=self.data.sample_rate,
                    load_checkpoint=load_checkpoint))
        if self.sched.observe(metrics[self.task.plateau_key]):
            self._log0(f"{self.task.plateau_key} plateaued: lr scale now {self.sched.plateau_scale:g}")

    def _outside_training_rng(self):
        """Evaluation draws nothing from the training RNG streams (exact resume depends on them)."""
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    def maybe_checkpoint(self, metrics: dict) -> bool:
        """At checkpoint steps: the manager saves (every rank) and rank 0 flushes TensorBoard."""
        if not self.ckpt.due():
            return False
        self._save(metrics)
        return True

    def _save(self, metrics: dict) -> None:
        persisted = self.ckpt.save(metrics)
        if self.rank == 0:
            self.board.flush()
        self.faults.after_checkpoint(self.step, self.rank, persisted)

    def maybe_checkpoint_before_reclaim(self, metrics: dict, saved: bool) -> None:
        """Every scaling.preemption_check_every steps, ask the runtime whether a node of this run is being
        reclaimed (a barrier: every rank asks, and all get the same answer). On a notice, checkpoint now
        (unless this step's checkpoint was just saved; once per reclaimed node) and keep training: after the
        node goes, the run resumes from this step instead of the last periodic checkpoint."""
        every = self.job.scaling.preemption_check_every
        if not every or self.step % every or self.rt.preemption_info is None:
            return
        t0 = time.perf_counter()
        info = self.rt.preemption_info()
        self.check_s, self.checks = self.check_s + time.perf_counter() - t0, self.checks + 1
        if info is None or not set(info.preempted_node_ids) - self.noticed:
            return
        self.noticed |= set(info.preempted_node_ids)
        self.state.reclaims += 1
        deadline = info.deadline_ms / 1000 - time.time() if info.deadline_ms else float("nan")
        msg = (f"preemption: node {', '.join(info.preempted_node_ids)} (ranks {info.preempted_ranks}) deadline "
               f"{deadline:.0f} s, checkpoint step {self.step}")
        self._log0(msg)
        if self.rank == 0:
            self.board.text("elastic", msg, self.step)
        if not saved:
            self._save({**metrics, "reclaims": self.state.reclaims})

    def finish(self) -> None:
        """After the last step (also when a finished run is re-run): the task's finish hook on rank 0 (a
        classifier's test accuracy). No collective follows, so the other ranks simply finish."""
        if self.rank == 0:
            with self._outside_training_rng():
                self.task.finish(FinishContext(
                    job=self.job, model=self.raw_model, step=self.step, board=self.board, device=self.device,
                    autocast=self.autocast, run_dir=self.run_dir, test=self.data.test,
                    test_split=self.data.test_split, batches=self._split_batches))
        if self.board is not None:
            self.board.close()

    # ---------------------------------------------------------------- data

    def _split_batches(self, urls: Iterable[str]) -> Iterator[tuple[torch.Tensor, ...]]:
        """Every example of `urls` in shard order, in val-sized batches (a task's finish hook scores them)."""
        j = self.job
        return split_batches(list(urls), examples=self.examples, batch_size=j.eval.val_batch_size, seed=j.seed,
                             on_bad_sample=j.data.on_bad_sample)
