"""Checkpoints: `format` (the payload, its version, validation), `store` (atomic writes, listing,
torn-checkpoint fallback), `manager` (save and resume policy in the trainer, RNG), `compat` (may this
job resume that checkpoint) and `load` (load_checkpoint for the tools). The names below are the API."""
from .compat import CheckpointMismatchError, check_compatible, config_mismatch
from .format import (FORMAT_VERSION, STATE_FILE, CheckpointError, FormatVersionError, NonFiniteCheckpointError,
                     Payload, WrongTaskError, check_finite, job_of, make_payload, nonfinite_entries, task_name)
from .load import LoadedCheckpoint, load_checkpoint
from .manager import CheckpointManager, capture_rng, restore_rng
from .store import (checkpoint_dir_name, copy_checkpoint_dir, latest_checkpoint, list_checkpoints, load_state,
                    name_of, prune, resolve_resume, save_checkpoint_dir, state_file, step_of_dir,
                    validate_checkpoint)

__all__ = [
    "FORMAT_VERSION", "STATE_FILE", "CheckpointError", "CheckpointManager", "CheckpointMismatchError",
    "FormatVersionError", "LoadedCheckpoint", "NonFiniteCheckpointError", "Payload", "WrongTaskError",
    "capture_rng", "check_compatible", "check_finite", "checkpoint_dir_name", "config_mismatch",
    "copy_checkpoint_dir", "job_of", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "load_state",
    "make_payload", "name_of", "nonfinite_entries", "prune", "resolve_resume", "restore_rng", "save_checkpoint_dir",
    "state_file", "step_of_dir", "task_name", "validate_checkpoint",
]
