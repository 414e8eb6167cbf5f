"""How far a run's current attempt got: rank 0 writes the step to `<run dir>/progress.json` at every
logging step, so the next attempt after a crash, a lost node or a resize knows how many steps past its
checkpoint it does again (the run summary's "steps redone"). Losing the file only loses that count."""
from __future__ import annotations

import json

from data_prep import storage

from ..rundir import RunDir


def write(run_dir: RunDir, step: int, world_size: int) -> None:
    storage.write_text(run_dir.progress, json.dumps({"step": int(step), "world_size": int(world_size)}))


def read(run_dir: RunDir) -> int:
    """The step last written, 0 when there is none (or it is unreadable)."""
    try:
        return int(json.loads(storage.read_text(run_dir.progress))["step"])
    except (FileNotFoundError, OSError, ValueError, KeyError, TypeError):
        return 0
