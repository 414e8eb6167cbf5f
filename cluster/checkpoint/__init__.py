"""Checkpoints: `manager` (the trainer's: save, load, due-ness, pruning, handed the model, optimiser,
schedule, precision state and a TrainState), `load` (`load_checkpoint` for the tools), `store` (files
on storage: atomic writes, listing, the torn-checkpoint fallback, job.json), `format` (the payload, its
version, validation), `compat` (may this job resume that checkpoint) and `rng`. The names below are
what the rest of the project uses; tests and tools that inspect files reach into `store`/`format`."""
from .format import CheckpointError
from .load import LoadedCheckpoint, load_checkpoint
from .manager import CheckpointManager, TrainState
from .store import latest_checkpoint, list_checkpoints, validate_checkpoint

__all__ = ["CheckpointError", "CheckpointManager", "LoadedCheckpoint", "TrainState", "latest_checkpoint",
           "list_checkpoints", "load_checkpoint", "validate_checkpoint"]
