"""The training side of checkpoints, in torchtitan's shape: the manager is handed what a checkpoint
holds once (model, optimiser, LR schedule, precision state and a small `TrainState`) and owns the rest:
whether a step is due, `save()`, `load()` (which checkpoint to resume from, past torn ones, and putting
everything back in place, every rank's RNG included) and how many are kept. The trainer never names a
payload key.

Both are collectives, called by every rank at the same steps. Saving gathers every rank's RNG, and a
world size is stored with it: a run resumed with another world size cannot restore per-rank streams
and draws them afresh from (seed, rank, step), the same rule as a fresh start.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from data_prep import storage

from ..config import JobConfig
from ..dist import broadcast_object, gather_objects
from ..logs import log
from ..seeds import mix_seed, seed_all
from .compat import CheckpointMismatchError, mismatch_message
from .format import CheckpointError, NonFiniteCheckpointError, Payload, job_of, make_payload, nonfinite_entries
from .rng import capture_rng, restore_rng
from .store import checkpoint_dir_name, list_checkpoints, name_of, prune, resolve_resume, save_checkpoint_dir, \
    step_of_dir, validate_checkpoint

RNG_STREAM = 17  # mix_seed tag of the per-rank RNG stream after a fresh start


@dataclass
class TrainState:
    """The loop's own counters, saved and restored with the weights."""

    step: int = 0  # optimiser steps done
    nonfinite_steps: int = 0  # optimiser steps skipped for NaN/Inf so far
    metrics: dict = field(default_factory=dict)  # validation metrics of this step (empty without an evaluation)
    resizes: int = 0  # restarts at another world size than the checkpoint's
    reclaims: int = 0  # reclaim notices acted on (a just-in-time checkpoint)
    steps_redone: int = 0  # steps an attempt did again because the one before it died past its checkpoint

    COUNTERS = ("resizes", "reclaims", "steps_redone")

    def counters(self) -> dict:
        return {k: getattr(self, k) for k in self.COUNTERS}


class CheckpointManager:
    """Save and resume policy of one run, for one rank. `run_dir`: a local path or a URI.

    `report(metrics, checkpoint_dir)` is the runtime's report, called by every rank at every save (a
    barrier under Ray), with the checkpoint written on rank 0 and None on the others. `registry` names a
    runtime that keeps the run's checkpoints itself (Ray: it copies the reported directory into the run
    dir, registers it and keeps checkpoint.keep of those it registered); with None the manager writes
    straight into the run dir and prunes it. Under a registry the manager still prunes the checkpoints
    the registry never registered (an attempt that dies between writing a checkpoint and its
    registration leaves it behind, and the registry never deletes what it does not know), and carries
    their names in each checkpoint so that a later attempt finishes the job. `optimizer`, `schedule`
    and `precision` may be None for a weights-only checkpoint (a test fixture, a benchmark)."""

    def __init__(self, job: JobConfig, run_dir: str, *, model: torch.nn.Module, state: TrainState,
                 optimizer=None, schedule=None, precision=None, sample_rate: int | None = None, rank: int = 0,
                 world: int = 1, report: Callable[[dict, str | None], None] | None = None,
                 registry: str | None = None):
        self.job, self.run_dir, self.rank, self.world = job, str(run_dir), rank, world
        self.model, self.state, self.optimizer, self.schedule, self.precision = model, state, optimizer, schedule, precision
        self.sample_rate, self.registry = sample_rate, registry
        self.report = report or (lambda metrics, checkpoint_dir: None)
        self.keep = job.checkpoint.keep
        self.suffix = ""  # set after a fallback resume, so new checkpoints never reuse a torn one's name
        self.skipped_invalid = 0  # invalid checkpoints passed over when resuming
        self.resumed_from = -1  # the step loaded, -1 for a fresh start
        self.resumed_world: int | None = None  # the world size the loaded checkpoint was written at
        self.unregistered: list[str] = []  # rank 0 under a registry: run-dir checkpoints it never registered

    def due(self, step: int | None = None) -> bool:
        """Whether `step` (default: the current one) is a checkpoint step."""
        return self.job.due(self.state.step if step is None else step, self.job.checkpoint.every)

    # ---------------------------------------------------------------- resume

    def load(self, offered: str | None = None) -> bool:
        """Put the newest valid checkpoint of this run (or checkpoint.init_from when it has none) back
        into everything this manager holds, and this rank's RNG; on a fresh start the RNG is a pure
        function of (seed, rank, step). `offered`: what the runtime hands out (may be stale or torn).
        Returns whether a checkpoint was loaded.

        Rank 0 alone looks at storage, loads and validates its choice (once) and checks that it fits the
        job; it tells every rank which one it chose, or why none can be used; the other ranks then load
        it. Ranks listing a shared or eventually consistent store on their own could pick different ones
        and deadlock DDP."""
        payload, verdict = self._choose(offered) if self.rank == 0 else (None, None)
        path, self.suffix, self.skipped_invalid, refusal = broadcast_object(verdict or (None, "", 0, None), self.world)
        if refusal is not None:
            kind, message = refusal
            raise (CheckpointMismatchError if kind == "mismatch" else CheckpointError)(message)
        if path is None:
            seed_all(mix_seed(self.job.seed, self.rank, self.state.step, RNG_STREAM))
            return False
        self._restore(payload if payload is not None else validate_checkpoint(path))
        return True

    def _choose(self, offered: str | None) -> tuple[Payload | None, tuple]:
        """Rank 0: (the chosen payload, (its path, name suffix for new checkpoints, invalid ones skipped,
        None or (kind, message) when it cannot be used))."""
        try:
            payload, used, problems = resolve_resume(offered, self.run_dir, self.registry)
            if payload is None and self.job.checkpoint.init_from:  # nothing of our own yet: branch off it
                used = self.job.checkpoint.init_from
                payload = validate_checkpoint(used)
                log.info(f"starting from checkpoint.init_from {used} (step {payload['step']})")
        except CheckpointError as e:
            return None, (None, "", 0, ("invalid", str(e)))
        if payload is None:
            return None, None
        suffix = f"r{int(time.time())}" if problems else ""
        own = used != self.job.checkpoint.init_from  # resuming this run, not branching off another
        refusal = mismatch_message(job_of(payload), self.job.to_dict(), used, resume=own)
        if refusal is not None:
            return None, (None, suffix, len(problems), ("mismatch", refusal))
        log.info(f"resumed from checkpoint at step {payload['step']}" + (
            f" ({name_of(used)}, after skipping {len(problems)} invalid checkpoint(s))" if problems else ""))
        if own and self.registry is not None:
            self._adopt_unregistered(offered, payload)
        return payload, (str(used), suffix, len(problems), None)

    def _adopt_unregistered(self, offered: str | None, payload: Payload) -> None:
        """Rank 0, resuming under a registry: which of the run dir's checkpoints the registry never
        registered. It registers in step order and offers the newest it registered, so those are the
        ones past `offered` (all of them when it offers none; torn ones too), plus those an earlier
        attempt already knew of (kept in the checkpoint resumed from)."""
        since = step_of_dir(offered) if offered is not None else -1
        if since is None:  # not one of this run's checkpoint names: nothing can be told apart
            return
        inherited = set(payload.get("unregistered", []))
        offered_name = name_of(offered) if offered is not None else None
        for name in (name_of(d) for d in list_checkpoints(self.run_dir)):
            step = step_of_dir(name)
            if name in inherited or step > since or (step == since and name != offered_name):
                self.unregistered.append(name)
        if self.unregistered:
            log.info(f"{len(self.unregistered)} checkpoint(s) in {self.run_dir} that {self.registry} never "
                     f"registered ({', '.join(self.unregistered)}): pruned here once checkpoint.keep "
                     f"({self.keep}) no longer covers them")

    def _restore(self, payload: Payload) -> None:
        self.model.load_state_dict(payload["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(payload["optimizer"])
        if self.schedule is not None:
            self.schedule.load_state_dict(payload["scheduler"])
        if self.precision is not None:
            self.precision.load_scaler_state(payload.get("grad_scaler"))
        self.state.step = self.resumed_from = payload["step"]
        self.state.nonfinite_steps = int(payload["nonfinite_steps"])
        self.state.metrics = dict(payload["metrics"])
        for k, v in payload.get("counters", {}).items():
            if k in TrainState.COUNTERS:
                setattr(self.state, k, int(v))
        self.resumed_world = int(payload["data"]["world_size"])
        per_rank = payload["rng"].get("per_rank")
        if per_rank is not None and len(per_rank) == self.world:
            restore_rng(per_rank[self.rank])
        else:  # another world size: per-rank streams cannot carry over
            seed_all(mix_seed(self.job.seed, self.rank, self.state.step, RNG_STREAM))

    # ---------------------------------------------------------------- save

    def save(self, metrics: dict | None = None) -> str | None:
        """This step's checkpoint: every rank checks the weights are finite (DDP keeps them equal, so
        every rank reaches the same verdict, before any collective) and hands in its RNG; rank 0 writes
        the checkpoint and reports it with `metrics`, the other ranks report without one. Returns, on
        rank 0, where the checkpoint now is in the run dir."""
        bad = nonfinite_entries(self.model.state_dict())
        if bad:
            raise NonFiniteCheckpointError(
                f"job {self.job.name!r}: weights are non-finite at step {self.state.step} ({', '.join(bad[:5])}); "
                f"refusing to save a checkpoint. The last good one is kept in {self.run_dir}")
        rng_per_rank = gather_objects(capture_rng(), self.world)
        metrics = dict(metrics or {})
        if self.rank != 0:
            self.report(metrics, None)
            return None
        if self.registry is None:  # we keep the run dir ourselves
            written = self._write(self.run_dir, rng_per_rank)
            prune(self.run_dir, self.keep)
            self.report(metrics, written)
            return written
        with tempfile.TemporaryDirectory(prefix="sashimi-ckpt-") as tmp:
            written = self._write(tmp, rng_per_rank)
            self.report(metrics, written)  # the registry copies it into the run dir before this returns
        self._prune_unregistered()
        return storage.join(self.run_dir, name_of(written))

    def _prune_unregistered(self) -> None:
        """Delete the unregistered checkpoints that the newest checkpoint.keep of the run dir no longer
        include (the registry deletes only what it registered; this never touches those)."""
        if not self.unregistered:
            return
        deleted = {name_of(d) for d in prune(self.run_dir, self.keep, among=self.unregistered)}
        for name in sorted(deleted):
            log.info(f"deleted checkpoint {name} ({self.registry} never registered it; checkpoint.keep is {self.keep})")
        self.unregistered = [n for n in self.unregistered if n not in deleted]

    def _write(self, directory: str, rng_per_rank: list) -> str:
        rng = capture_rng()
        rng["per_rank"] = rng_per_rank
        payload = make_payload(
            model_state=self.model.state_dict(),
            optimizer_state=self.optimizer.state_dict() if self.optimizer is not None else {},
            scheduler_state=self.schedule.state_dict() if self.schedule is not None else {},
            step=self.state.step, data_seed=self.job.seed, world_size=self.world, job=self.job.to_dict(), rng=rng,
            sample_rate=self.sample_rate, metrics=self.state.metrics, nonfinite_steps=self.state.nonfinite_steps,
            grad_scaler=self.precision.scaler_state() if self.precision is not None else {},
            counters=self.state.counters(), unregistered=self.unregistered)
        return save_checkpoint_dir(storage.join(directory, checkpoint_dir_name(self.state.step, self.suffix)), payload)
