"""Failures that cannot heal end the run at once instead of being replayed `failure.max_failures` times.

Ray Train restarts the worker group after any worker error. A non-finite-loss stop, a bad sample under
`data.on_bad_sample: stop`, or a checkpoint the job's config does not fit would only fail again at the
same step (data order and RNG are functions of the step), so the rank that hits one records it in the
run dir (`FATAL.json`, through storage, so any node sees it) before failing. The restarted group's
rank 0 finds the record before training a step and tells every rank; each reports it and returns, and
the driver raises `RunStoppedError` with the original message. A new submission of the job clears it.
"""
from __future__ import annotations

import json

from data_prep import storage
from data_prep.reader import BadDataError

from ..checkpoint.compat import CheckpointMismatchError
from ..dist import broadcast_object
from ..logs import log
from ..rundir import RunDir


class FatalTrainingError(RuntimeError):
    """An error that retrying cannot fix (see the module docstring)."""


class RunStoppedError(RuntimeError):
    """Raised by the driver: the run stopped for good; the message is the original error."""


FATAL_ERRORS = (FatalTrainingError, BadDataError, CheckpointMismatchError)


def record(run_dir: RunDir, error: BaseException, rank: int) -> None:
    """Write why the run must stop (best effort: the error itself is re-raised by the caller anyway)."""
    try:
        storage.write_text(run_dir.fatal, json.dumps({"error": f"{type(error).__name__}: {error}", "rank": rank}))
    except OSError:
        pass


def recorded(run_dir: RunDir, rank: int, world: int) -> str | None:
    """The recorded reason, read by rank 0 and broadcast (a collective: every rank calls it once)."""
    reason = None
    if rank == 0 and storage.exists(run_dir.fatal):
        try:
            reason = json.loads(storage.read_text(run_dir.fatal))["error"]
        except (OSError, ValueError, KeyError):
            reason = f"an earlier attempt stopped for good ({run_dir.fatal} is unreadable)"
    return broadcast_object(reason, world)


def clear(run_dir: RunDir) -> None:
    """Driver, before a new submission: forget an earlier attempt's stop (the user has fixed its cause)."""
    if storage.exists(run_dir.fatal):
        try:
            log.info(f"the previous attempt stopped for good: {json.loads(storage.read_text(run_dir.fatal))['error']}")
        except (OSError, ValueError, KeyError):
            pass
        storage.remove(run_dir.fatal)
