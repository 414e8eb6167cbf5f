"""The training side of checkpoints: when to save, what goes in (weights, optimiser, schedule, every
rank's RNG), refusing non-finite weights, where the run resumes from, and how many are kept."""
from __future__ import annotations

import random
import time
from typing import Callable

import numpy as np
import torch

from data_prep import storage

from ..config import JobConfig
from ..dist import broadcast_object, gather_objects
from ..seeds import mix_seed, seed_all
from .compat import check_compatible
from .format import NonFiniteCheckpointError, Payload, job_of, make_payload, nonfinite_entries
from .store import checkpoint_dir_name, name_of, resolve_resume, save_checkpoint_dir, validate_checkpoint

RNG_STREAM = 17  # mix_seed tag of the per-rank RNG stream after a fresh start


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


class CheckpointManager:
    """Save policy and resume policy of one run, for one rank. `run_dir`: a local path or a URI;
    `log` prints progress (the trainer passes a rank-0-only one)."""

    def __init__(self, job: JobConfig, run_dir: str | None, rank: int, world: int, sample_rate: int | None,
                 log: Callable[[str], None]):
        self.job, self.run_dir, self.rank, self.world = job, run_dir, rank, world
        self.sample_rate, self.log = sample_rate, log
        self.keep = job.checkpoint.keep  # applied by Ray's CheckpointConfig, or by store.prune without Ray
        self.suffix = ""  # set after a fallback resume, so new checkpoints never reuse a torn one's name
        self.skipped_invalid = 0  # invalid checkpoints passed over when resuming

    def due(self, step: int) -> bool:
        return step % self.job.checkpoint.every == 0 or step == self.job.training.max_steps

    def resume_state(self, offered: str | None) -> Payload | None:
        """The newest valid checkpoint of this run (or `checkpoint.init_from` when it has none), checked
        against the job's config; None for a fresh start. `offered`: what the runtime handed out.

        Rank 0 alone looks at storage and decides; every rank then loads the checkpoint it named. Ranks
        listing a shared or eventually consistent store on their own could pick different ones and
        deadlock DDP (a collective: every rank calls this once, at the start)."""
        choice = self._choose(offered) if self.rank == 0 else None
        used, self.suffix, self.skipped_invalid = broadcast_object(choice or (None, "", 0), self.world)
        if used is None:
            return None
        state = validate_checkpoint(used)  # rank 0 validated it already; the others read it now
        check_compatible(job_of(state), self.job.to_dict(), used)
        return state

    def _choose(self, offered: str | None) -> tuple[str | None, str, int]:
        """Rank 0: (checkpoint to resume from or None, name suffix for new checkpoints, invalid ones skipped)."""
        state, used, problems = resolve_resume(offered, self.run_dir, log=self.log)
        if state is None and self.job.checkpoint.init_from:  # nothing of our own yet: branch off it
            used = self.job.checkpoint.init_from
            state = validate_checkpoint(used)
            self.log(f"starting from checkpoint.init_from {used} (step {state['step']})")
        if state is None:
            return None, "", 0
        self.log(f"resumed from checkpoint at step {state['step']}" + (
            f" ({name_of(used)}, after skipping {len(problems)} invalid checkpoint(s))" if problems else ""))
        return str(used), (f"r{int(time.time())}" if problems else ""), len(problems)

    def restore_rng(self, state: Payload | None, step: int) -> None:
        """This rank's RNG as saved, or (fresh start, other world size) a pure function of (seed, rank, step)."""
        per_rank = (state or {}).get("rng", {}).get("per_rank")
        if per_rank is not None and len(per_rank) == self.world:
            restore_rng(per_rank[self.rank])
        else:
            seed_all(mix_seed(self.job.seed, self.rank, step, RNG_STREAM))

    def refuse_nonfinite(self, model_state: dict, step: int) -> None:
        """Raise before any collective if the weights hold NaN/Inf (DDP keeps them equal on every rank, so
        every rank reaches the same verdict)."""
        bad = nonfinite_entries(model_state)
        if bad:
            raise NonFiniteCheckpointError(
                f"job {self.job.name!r}: weights are non-finite at step {step} ({', '.join(bad[:5])}); refusing "
                f"to save a checkpoint. The last good one is kept in {self.run_dir or self.job.checkpoint.storage}")

    def write(self, directory: str, *, model, optimizer, scheduler, step: int, metrics: dict,
              nonfinite_steps: int, rng_per_rank: list, grad_scaler: dict | None = None) -> str:
        """Write this step's checkpoint as `directory/<checkpoint name>/state.pt` (rank 0); returns that dir.
        `grad_scaler`: the fp16 GradScaler's state (loss scale, growth counter), needed for exact resume."""
        rng = capture_rng()
        rng["per_rank"] = rng_per_rank
        payload = make_payload(model_state=model.state_dict(), optimizer_state=optimizer.state_dict(),
                               scheduler_state=scheduler.state_dict(), step=step, data_seed=self.job.seed,
                               world_size=self.world, job=self.job.to_dict(), rng=rng, sample_rate=self.sample_rate,
                               metrics=metrics, nonfinite_steps=nonfinite_steps, grad_scaler=grad_scaler)
        out = storage.join(directory, checkpoint_dir_name(step, self.suffix))
        save_checkpoint_dir(out, payload)
        return out

    def gather_rng(self) -> list:
        """Every rank's RNG state (a collective: all ranks call it at checkpoint steps)."""
        return gather_objects(capture_rng(), self.world)
