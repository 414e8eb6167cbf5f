"""Checkpoint files on storage: the atomic writer, reading and validating, listing a run's checkpoints,
and choosing the newest valid one to resume from (falling back past torn ones).

Layout: `<run dir>/checkpoint_step<9 digits>[-<suffix>]/state.pt`. Every filesystem operation goes
through `LocalFS` (exists, list, open, atomic write, remove), the seam where a URI filesystem goes.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import BinaryIO, Callable

import torch

from data_prep.atomicio import atomic_write

from .format import STATE_FILE, CheckpointError, Payload, check_finite, check_version, validate

_DIR_RE = re.compile(r"^checkpoint_step(\d+)(?:-.*)?$")


class LocalFS:
    """The few filesystem operations the store needs, on local paths."""

    def is_file(self, path: Path) -> bool:
        return path.is_file()

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()

    def list_dir(self, path: Path) -> list[Path]:
        return sorted(path.iterdir()) if path.is_dir() else []

    def mtime_ns(self, path: Path) -> int:
        return path.stat().st_mtime_ns if path.exists() else 0

    def open_read(self, path: Path) -> BinaryIO:
        return open(path, "rb")

    def atomic_write(self, path: Path, write: Callable[[BinaryIO], object]) -> Path:
        return atomic_write(path, write)

    def remove_tree(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


FS = LocalFS()


def checkpoint_dir_name(step: int, suffix: str = "") -> str:
    return f"checkpoint_step{step:09d}" + (f"-{suffix}" if suffix else "")


def step_of_dir(path: str | os.PathLike) -> int | None:
    """The step in a checkpoint directory's name (checkpoint_step<9 digits>[-suffix]), else None."""
    m = _DIR_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def state_file(path: str | os.PathLike) -> Path:
    """A checkpoint's state.pt, given its directory or the file itself."""
    path = Path(path)
    return path / STATE_FILE if FS.is_dir(path) or not path.suffix else path


def save_checkpoint_dir(directory: str | os.PathLike, state: Payload) -> Path:
    """Write state.pt atomically; refuses (NonFiniteCheckpointError, nothing written) non-finite weights."""
    check_finite(state, f"refusing to save checkpoint in {directory} at step {state.get('step')}")
    return FS.atomic_write(Path(directory) / STATE_FILE, lambda f: torch.save(state, f))


def copy_checkpoint_dir(src: str | os.PathLike, run_dir: str | os.PathLike) -> Path:
    """Copy checkpoint directory `src` into `run_dir` under the same name (atomically, file by file)."""
    dest = Path(run_dir) / Path(src).name
    for f in FS.list_dir(Path(src)):
        with FS.open_read(f) as r:
            FS.atomic_write(dest / f.name, lambda w: shutil.copyfileobj(r, w))
    return dest


def load_state(path: str | os.PathLike, map_location="cpu") -> Payload:
    """Load a checkpoint (a run's checkpoint directory or its state.pt) with weights_only=True; an
    older or newer format raises FormatVersionError naming the file."""
    file = state_file(path)
    with FS.open_read(file) as f:
        state = torch.load(f, map_location=map_location, weights_only=True)
    check_version(state, file)
    return state


def validate_checkpoint(path: str | os.PathLike, map_location="cpu") -> Payload:
    """Load a checkpoint and check it is complete and finite; raise CheckpointError naming the file.
    Catches what a crash mid-write leaves behind: missing or truncated state.pt, a zip with a
    missing record, a payload without the keys every checkpoint has, NaN/Inf weights."""
    path = Path(path)
    file = state_file(path)
    if not FS.is_file(file):
        listing = f" (checkpoint directory has {[p.name for p in FS.list_dir(path)]})" if FS.is_dir(path) else ""
        raise CheckpointError(f"{file}: missing{listing}")
    try:
        state = load_state(file, map_location)
    except CheckpointError:
        raise
    except Exception as e:  # truncated zip, bad pickle opcode, unsupported global, ...
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise CheckpointError(f"{file}: unreadable checkpoint ({type(e).__name__}: {first})") from None
    return validate(state, file)


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint directories of a run, oldest first: by step, then by modification time (a directory
    written after a fallback resume carries a suffix and may share its step with a torn one)."""
    found = [d for d in FS.list_dir(Path(run_dir)) if FS.is_dir(d) and step_of_dir(d) is not None]
    return sorted(found, key=lambda d: (step_of_dir(d), FS.mtime_ns(d), d.name))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Newest checkpoint directory under a run dir that has a state file (not checked for validity)."""
    found = [d for d in list_checkpoints(run_dir) if FS.is_file(d / STATE_FILE)]
    return found[-1] if found else None


def prune(run_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoint directories of a run; returns the deleted ones.
    (Under Ray, Ray keeps `keep` itself: this serves runs without Ray.)"""
    old = list_checkpoints(run_dir)[:-keep]
    for d in old:
        FS.remove_tree(d)
    return old


def resolve_resume(candidate: str | os.PathLike | None, run_dir: str | os.PathLike | None,
                   log: Callable[[str], None] = print) -> tuple[Payload | None, Path | None, list[str]]:
    """Pick the checkpoint to resume from: the newest *valid* one among `candidate` (what the runtime
    offers, e.g. Ray's get_checkpoint(), possibly None) and the checkpoint directories in `run_dir`.

    Two failure modes make the runtime's answer alone unsafe: a crash while a checkpoint was written
    leaves the newest one torn (we fall back to the newest valid older one, kept per checkpoint.keep),
    and a worker SIGKILLed right after a checkpoint was persisted can die before Ray's controller
    registered it (Ray then offers an older one, or none, although a complete newer one is on storage).
    Returns (state, path, problems): problems name each invalid checkpoint passed over; (None, None,
    []) when there is nothing to resume. Raises CheckpointError if checkpoints exist but none is valid."""
    cands = list_checkpoints(run_dir) if run_dir else []
    if candidate is not None:
        candidate = Path(candidate)
        if not any(_same_path(candidate, d) for d in cands):
            cands.append(candidate)  # remote storage: a downloaded copy, the only one we know of
    if not cands:
        return None, None, []
    problems = []
    newest_first = sorted(cands, key=lambda d: (-1 if step_of_dir(d) is None else step_of_dir(d), FS.mtime_ns(d)),
                          reverse=True)
    for d in newest_first:
        try:
            state = validate_checkpoint(d)
        except CheckpointError as e:
            problems.append(str(e))
            log(f"checkpoint {d} is invalid, trying an older one: {e}")
            continue
        _explain_choice(d, state["step"], candidate, run_dir, problems, log)
        return state, d, problems
    raise CheckpointError(f"no valid checkpoint to resume from in {run_dir or candidate.parent}: "
                          + "; ".join(problems) + " -- delete the broken checkpoint directories or start over "
                          "with --fresh")


def _explain_choice(used: Path, step: int, candidate: Path | None, run_dir, problems: list[str], log) -> None:
    if problems:
        log(f"falling back to the newest valid checkpoint {used} (step {step}); "
            f"skipped {len(problems)} invalid checkpoint(s)")
    if candidate is None:
        log(f"Ray offered no checkpoint; resuming from {used} (step {step}) found in {run_dir}")
    elif not _same_path(candidate, used) and step > (step_of_dir(candidate) or -1):
        log(f"storage holds a complete checkpoint {used.name} newer than the one Ray registered "
            f"({candidate.name}; the worker died before Ray recorded it): resuming from step {step}")


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b
