"""The package's one logger, `log`: lines go to stderr as `[sashimi] message`, written through tqdm so a
progress bar on the terminal is redrawn below them instead of torn. Training workers read shards
through data_prep.reader, so their bad-data lines carry the same tag as the trainer's own.

`PrefixedLines` and `package_logger` serve the cluster package's logger too (its lines go to stdout)."""
from __future__ import annotations

import logging
import sys
from typing import Callable

from tqdm import tqdm

PREFIX = "[sashimi] "


class PrefixedLines(logging.Handler):
    """Each record as one `[sashimi] message` line handed to `write` (which looks its stream up when
    called, so a redirected or captured stdout/stderr is honoured)."""

    def __init__(self, write: Callable[[str], None]):
        super().__init__(logging.INFO)
        self.write = write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(PREFIX + record.getMessage())
        except Exception:  # noqa: BLE001  (logging must never raise into the caller)
            self.handleError(record)


def package_logger(name: str, write: Callable[[str], None]) -> logging.Logger:
    """The logger `name` with one PrefixedLines handler, at INFO, not propagating to the root logger
    (a host that configures the root, as Ray does in its workers, would print every line twice)."""
    logger = logging.getLogger(name)
    if not any(isinstance(h, PrefixedLines) for h in logger.handlers):
        logger.addHandler(PrefixedLines(write))
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _stderr_line(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


log = package_logger("data_prep", _stderr_line)
