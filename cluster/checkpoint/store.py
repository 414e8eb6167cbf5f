"""Checkpoint files on storage: the atomic writer, reading and validating, listing a run's checkpoints,
and choosing the newest valid one to resume from (falling back past torn ones).

Layout: `<run dir>/checkpoint_step<9 digits>[-<suffix>]/{job.json, state.pt}`. The run dir is a local
path or a URI (s3://..., any fsspec filesystem): every operation goes through `data_prep.storage`, and
paths are strings, so a URI is never turned into a local path. job.json is written first and state.pt
last, so a checkpoint is complete when its state.pt exists and loads (on an object store: one object,
uploaded whole).
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
from collections.abc import Collection

import torch

from data_prep import storage

from ..logs import log
from .format import JOB_FILE, STATE_FILE, CheckpointError, Payload, check_finite, check_version, job_of, job_record, \
    validate

_DIR_RE = re.compile(r"^checkpoint_step(\d+)(?:-.*)?$")


def name_of(path: str | os.PathLike) -> str:
    """The last component of a path or URI."""
    return posixpath.basename(str(path).rstrip("/").replace(os.sep, "/"))


def checkpoint_dir_name(step: int, suffix: str = "") -> str:
    return f"checkpoint_step{step:09d}" + (f"-{suffix}" if suffix else "")


def step_of_dir(path: str | os.PathLike) -> int | None:
    """The step in a checkpoint directory's name (checkpoint_step<9 digits>[-suffix]), else None."""
    m = _DIR_RE.match(name_of(path))
    return int(m.group(1)) if m else None


def state_file(path: str | os.PathLike) -> str:
    """A checkpoint's state.pt, given its directory or the file itself."""
    path = str(path)
    name = name_of(path)
    if name == STATE_FILE or (posixpath.splitext(name)[1] and storage.isfile(path)):
        return path
    return storage.join(path, STATE_FILE)


def save_checkpoint_dir(directory: str | os.PathLike, state: Payload) -> str:
    """Write job.json, then state.pt, each atomically; refuses (NonFiniteCheckpointError, nothing written)
    non-finite weights. Returns the directory."""
    check_finite(state, f"refusing to save checkpoint in {directory} at step {state.get('step')}")
    storage.write_text(storage.join(directory, JOB_FILE), json.dumps(job_record(state), indent=1, sort_keys=True))
    storage.atomic_write(storage.join(directory, STATE_FILE), lambda f: torch.save(state, f))
    return str(directory)


def copy_checkpoint_dir(src: str | os.PathLike, run_dir: str | os.PathLike) -> str:
    """Copy checkpoint directory `src` into `run_dir` under the same name (atomically, file by file;
    state.pt, the file that makes a checkpoint complete, last)."""
    dest = storage.join(run_dir, name_of(src))
    for name in sorted(storage.listdir(src), key=lambda n: n == STATE_FILE):
        with storage.open_read(storage.join(src, name)) as r:
            storage.atomic_write(storage.join(dest, name), lambda w: shutil.copyfileobj(r, w))
    return dest


def load_state(path: str | os.PathLike, map_location="cpu") -> Payload:
    """Load a checkpoint (a run's checkpoint directory or its state.pt) with weights_only=True; an
    older or newer format raises FormatVersionError naming the file."""
    file = state_file(path)
    with storage.open_read(file) as f:
        state = torch.load(f, map_location=map_location, weights_only=True)
    check_version(state, file)
    return state


def validate_checkpoint(path: str | os.PathLike, map_location="cpu") -> Payload:
    """Load a checkpoint and check it is complete and finite; raise CheckpointError naming the file.
    Catches what a crash mid-write leaves behind: missing or truncated state.pt, a zip with a
    missing record, a payload without the keys every checkpoint has, NaN/Inf weights."""
    file = state_file(path)
    if not storage.isfile(file):
        listing = f" (checkpoint directory has {storage.listdir(path)})" if storage.isdir(path) else ""
        raise CheckpointError(f"{file}: missing{listing}")
    try:
        state = load_state(file, map_location)
    except CheckpointError:
        raise
    except Exception as e:  # truncated zip, bad pickle opcode, unsupported global, ...
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise CheckpointError(f"{file}: unreadable checkpoint ({type(e).__name__}: {first})") from None
    return validate(state, file)


def read_job(path: str | os.PathLike) -> dict:
    """The job a checkpoint was written with (its job.json: kilobytes, no weights), after checking the
    checkpoint's state.pt exists and its format version is this code's. A checkpoint without job.json
    (written before it existed) is loaded and validated whole instead. CheckpointError naming the file."""
    file = state_file(path)
    if not storage.isfile(file):
        listing = f" (checkpoint directory has {storage.listdir(path)})" if storage.isdir(path) else ""
        raise CheckpointError(f"{file}: missing{listing}")
    record_file = storage.join(posixpath.dirname(file), JOB_FILE)
    if not storage.isfile(record_file):
        return job_of(validate_checkpoint(path))
    try:
        record = json.loads(storage.read_text(record_file))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{record_file}: unreadable ({type(e).__name__}: {str(e)[:200]})") from None
    check_version(record, file)
    if not isinstance(record, dict) or not isinstance(record.get("job"), dict):
        raise CheckpointError(f"{record_file}: no job in it")
    return record["job"]


def list_checkpoints(run_dir: str | os.PathLike) -> list[str]:
    """Checkpoint directories of a run, oldest first: by step, then by when their state.pt was written
    (a directory written after a fallback resume carries a suffix and may share its step with a torn one)."""
    found = [storage.join(run_dir, n) for n in storage.listdir(run_dir) if step_of_dir(n) is not None]
    found = [d for d in found if storage.isdir(d)]
    written = {d: storage.mtime_ns(state_file(d)) for d in found}
    return sorted(found, key=lambda d: (step_of_dir(d), written[d], name_of(d)))


def latest_checkpoint(run_dir: str | os.PathLike) -> str | None:
    """Newest checkpoint directory under a run dir that has a state file (not checked for validity)."""
    found = [d for d in list_checkpoints(run_dir) if storage.isfile(state_file(d))]
    return found[-1] if found else None


def prune(run_dir: str | os.PathLike, keep: int, among: Collection[str] | None = None) -> list[str]:
    """Delete all but the newest `keep` checkpoint directories of a run (of those, only the ones whose
    names are in `among`, when given); returns the deleted ones. (Under Ray, Ray prunes what it
    registered and the manager, with `among`, the rest: see CheckpointManager.)"""
    old = [d for d in list_checkpoints(run_dir)[:-keep] if among is None or name_of(d) in among]
    for d in old:
        storage.remove(d, recursive=True)
    return old


def resolve_resume(candidate: str | os.PathLike | None, run_dir: str | os.PathLike | None,
                   registry: str | None = "Ray") -> tuple[Payload | None, str | None, list[str]]:
    """Pick the checkpoint to resume from: the newest *valid* one among `candidate` (what the runtime
    offers, e.g. Ray's get_checkpoint(), possibly None) and the checkpoint directories in `run_dir`.
    `registry` names what offers checkpoints ("Ray"), for the log lines; None for a runtime that
    offers none (one process: the run dir is all there is).

    Two failure modes make the runtime's answer alone unsafe: a crash while a checkpoint was written
    leaves the newest one torn (we fall back to the newest valid older one, kept per checkpoint.keep),
    and a worker SIGKILLed right after a checkpoint was persisted can die before Ray's controller
    registered it (Ray then offers an older one, or none, although a complete newer one is on storage).
    Returns (state, path, problems): the chosen payload, loaded and validated once; problems name each
    invalid checkpoint passed over; (None, None, []) when there is nothing to resume. Raises
    CheckpointError if checkpoints exist but none is valid."""
    cands = list_checkpoints(run_dir) if run_dir else []
    if candidate is not None:
        candidate = str(candidate)
        if not any(_same_path(candidate, d) for d in cands):
            cands.append(candidate)  # a checkpoint outside the run dir: the only one we know of
    if not cands:
        return None, None, []
    problems = []
    written = {d: storage.mtime_ns(state_file(d)) for d in cands}
    newest_first = sorted(cands, key=lambda d: (-1 if step_of_dir(d) is None else step_of_dir(d), written[d]),
                          reverse=True)
    for d in newest_first:
        try:
            state = validate_checkpoint(d)
        except CheckpointError as e:
            problems.append(str(e))
            log.info(f"checkpoint {d} is invalid, trying an older one: {e}")
            continue
        _explain_choice(d, state["step"], candidate, run_dir, problems, registry)
        return state, d, problems
    raise CheckpointError(f"no valid checkpoint to resume from in {run_dir or storage.join(candidate, '..')}: "
                          + "; ".join(problems) + " -- delete the broken checkpoint directories or start over "
                          "with --fresh")


def _explain_choice(used: str, step: int, candidate: str | None, run_dir, problems: list[str],
                    registry: str | None) -> None:
    if problems:
        log.info(f"falling back to the newest valid checkpoint {used} (step {step}); "
                 f"skipped {len(problems)} invalid checkpoint(s)")
    if candidate is None and registry is not None:
        log.info(f"{registry} offered no checkpoint; resuming from {used} (step {step}) found in {run_dir}")
    elif candidate is not None and not _same_path(candidate, used) and step > (step_of_dir(candidate) or -1):
        log.info(f"storage holds a complete checkpoint {name_of(used)} newer than the one {registry} registered "
                 f"({name_of(candidate)}; the worker died before {registry} recorded it): resuming from step {step}")


def _same_path(a: str, b: str) -> bool:
    if storage.is_uri(a) or storage.is_uri(b):
        return a.rstrip("/") == b.rstrip("/")
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return a == b
