"""The package's one logger, `log`: every progress line of the driver, the trainer and the tools goes
through it and comes out on stdout as `[sashimi] message`, as the lines have always looked. Written
with sys.stdout.write, not print(): Ray Train V2 patches print in its workers to tee into its own
logger as well, which would show every line twice. Ray forwards a worker's stdout to the driver and
the job logs; the trainer logs from rank 0 only."""
from __future__ import annotations

import sys

from data_prep.logs import package_logger


def _stdout_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


log = package_logger("cluster", _stdout_line)
