"""Fault injection for tests: one hook object handed to the Trainer, so the training loop itself has
no test-only branches. Production runs get `NoFaults`; a `FaultPlan` exists only where a test set
SASHIMI_TEST_FAULTS (the local Ray cluster forwards SASHIMI_* variables to its workers).

The plan is JSON keyed by job name:
    {"JOB": {"dir": MARKER_DIR, "raise": [[rank, step], ...], "kill": [[rank, step], ...],
             "tear": [step, ...], "nan": [[rank, step], ...], "sleep": seconds}}
raise: RuntimeError on that rank after optimiser step `step`; kill: SIGKILL the worker process there;
tear: after checkpoint `step` is persisted, truncate its state.pt and SIGKILL rank 0 (a crash while
writing). Each raise/kill/tear fires once (a marker file in "dir" records it, so a restarted attempt
runs clean); nan poisons that rank's loss at that step on every attempt; sleep is added to every step
(keeps a tiny run alive long enough to remove a node under it).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

from data_prep import storage

from ..logs import log

FAULTS_ENV = "SASHIMI_TEST_FAULTS"
PLAN_KEYS = {"dir", "raise", "kill", "tear", "nan", "sleep"}


class NoFaults:
    """The hook interface, doing nothing (production)."""

    def poison(self, loss: torch.Tensor, step: int, rank: int) -> torch.Tensor:
        """The loss of optimiser step `step` (1-based) on `rank`."""
        return loss

    def after_step(self, step: int, rank: int) -> None:
        """Called after optimiser step `step` (1-based) on every rank."""

    def after_checkpoint(self, step: int, rank: int, persisted: Path | None) -> None:
        """Called once checkpoint `step` is persisted at `persisted` (a local path or a URI)."""


class FaultPlan(NoFaults):
    """The faults planned for one job (see the module docstring)."""

    def __init__(self, plan: dict, job_name: str = "<job>"):
        unknown = set(plan) - PLAN_KEYS
        if unknown:
            raise ValueError(f"{FAULTS_ENV}: job {job_name!r}: unknown key(s) {sorted(unknown)}; allowed {sorted(PLAN_KEYS)}")
        if ({"raise", "kill", "tear"} & set(plan)) and "dir" not in plan:
            raise ValueError(f"{FAULTS_ENV}: job {job_name!r}: raise/kill/tear need a marker \"dir\"")
        self.plan = plan

    @classmethod
    def from_env(cls, job_name: str) -> "FaultPlan | None":
        raw = os.environ.get(FAULTS_ENV)
        plan = json.loads(raw).get(job_name) if raw else None
        return cls(plan, job_name) if plan else None

    def _planned(self, kind: str, rank: int, step: int) -> bool:
        return [rank, step] in self.plan.get(kind, [])

    def _fire_once(self, tag: str) -> bool:
        """True the first time `tag` is seen for this plan (atomic marker file), False afterwards."""
        try:
            fd = os.open(Path(self.plan["dir"]) / tag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def die(self) -> None:
        """How a planned kill ends the process (a test in one process may replace it)."""
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def poison(self, loss, step, rank):
        return loss * float("nan") if self._planned("nan", rank, step) else loss

    def after_step(self, step, rank):
        if self._planned("raise", rank, step) and self._fire_once(f"raise-r{rank}-s{step}"):
            raise RuntimeError(f"injected fault at step {step} on rank {rank} ({FAULTS_ENV})")
        if self._planned("kill", rank, step) and self._fire_once(f"kill-r{rank}-s{step}"):
            log.info(f"test fault: SIGKILL rank {rank} after step {step}")
            self.die()
        if self.plan.get("sleep"):
            time.sleep(float(self.plan["sleep"]))

    def after_checkpoint(self, step, rank, persisted):
        if rank == 0 and persisted is not None and step in self.plan.get("tear", []) \
                and self._fire_once(f"tear-s{step}"):
            f = storage.join(persisted, "state.pt")  # a local path or an object in the bucket
            data = storage.read_bytes(f)
            storage.write_bytes(f, data[: len(data) // 2])
            log.info(f"test fault: truncated {f}; SIGKILL rank 0")
            self.die()
