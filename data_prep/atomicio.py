"""The project's one atomic file writer (manifests, rejected.tsv, demo audio, checkpoints, test results).

A file is written to ``NAME.tmp`` beside it, flushed and fsynced, renamed over ``NAME`` and the directory
fsynced, so a reader sees the old file or the new one, never half of one; on any failure (a crash, Ctrl-C)
the temp file is removed and ``NAME`` is left as it was. Lives in data_prep because the cluster package
may import data_prep, not the other way round. Concurrent writers of the same path are not supported
(every caller has a single writer: the sharder, or rank 0).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable

TMP_SUFFIX = ".tmp"  # the sharder removes `*.tmp` leftovers of a killed run by this suffix


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms or filesystems without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, then rename it over ``path``. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
