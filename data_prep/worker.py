"""Per-file work: a header probe (in the parent, before splits are drawn) and, in pool processes,
decode, downmix, resample, cut, encode.

Top-level functions and plain-data tasks so they work under the ``spawn`` start method.
Workers return encoded bytes (smaller to ship back than float arrays); the parent only writes.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from .audio_io import WORKER_ENV, BadAudio, load_mono, probe, resampled_length
from .clips import clip_spans, cut
from .schema import encode_audio_sample


@dataclass(frozen=True)
class FileTask:
    path: str  # absolute path to read
    relpath: str  # path relative to SRC_DIR, recorded in meta/manifest
    key_prefix: str  # dot-free unique prefix, e.g. "f000012"
    split: str | None  # None until the splits are drawn (after the probe)
    sample_rate: int
    clip_samples: int
    hop_samples: int
    pad_last: bool
    one_clip_per_file: bool
    label: int | None
    min_samples: int = 0  # shorter files (after resampling) are rejected, never padded into a clip


@dataclass
class FileResult:
    relpath: str
    split: str
    samples: list  # encoded sample dicts
    seconds: float  # valid (unpadded) seconds sharded
    reason: str | None = None  # set when the file is rejected
    info: dict | None = None


def init_worker() -> None:
    """Pool initializer: one torch/OpenMP thread per worker; Ctrl-C is the parent's to handle.

    A KeyboardInterrupt inside a ProcessPoolExecutor worker can leave the pool hung at
    shutdown, so workers ignore SIGINT and the parent cancels queued files instead.
    """
    os.environ[WORKER_ENV] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def process_file(task: FileTask) -> FileResult:
    try:
        return _process(task)
    except BadAudio as e:
        return FileResult(task.relpath, task.split, [], 0.0, reason=str(e))
    except MemoryError:
        return FileResult(task.relpath, task.split, [], 0.0, reason="out of memory decoding file")
    except Exception as e:  # never let one file kill the run; report it instead
        return FileResult(task.relpath, task.split, [], 0.0, reason=f"unexpected error: {type(e).__name__}: {e}")


def probe_file(t: FileTask) -> str | None:
    """Why the file would be rejected, read from its header alone (no decoding), or None: the verdicts
    of ``process_file`` for unreadable, undecodable, truncated, empty and too short files."""
    try:
        header = probe(t.path)
        _spans(t, resampled_length(header.frames, header.sample_rate, t.sample_rate))
    except BadAudio as e:
        return str(e)
    except Exception as e:  # never let one file kill the run; report it instead
        return f"unexpected error: {type(e).__name__}: {e}"
    return None


def _spans(t: FileTask, n: int) -> list[tuple[int, int]]:
    """(start, valid length) of each clip of a file of ``n`` samples at the target rate; BadAudio when
    it is too short to keep."""
    if n < t.min_samples:
        raise BadAudio(f"too short: {n / t.sample_rate:.3f} s after resampling < the minimum "
                       f"{t.min_samples / t.sample_rate:g} s (--min-seconds)")
    if t.one_clip_per_file:
        spans = [(0, min(n, t.clip_samples))]
    else:
        spans = clip_spans(n, t.clip_samples, t.hop_samples, t.pad_last)
    if not spans:
        raise BadAudio(
            f"too short: {n / t.sample_rate:.3f} s after resampling < one {t.clip_samples / t.sample_rate:g} s clip "
            "(this preset drops partial clips)"
        )
    return spans


def _process(t: FileTask) -> FileResult:
    audio, info = load_mono(t.path, t.sample_rate)
    spans = _spans(t, len(audio))
    samples, valid = [], 0
    for i, (start, length) in enumerate(spans):
        meta = {"source": t.relpath, "clip": i, "start": start, "split": t.split}
        if t.label is not None:
            meta["label"] = t.label
        clip = cut(audio, start, length, t.clip_samples)
        samples.append(encode_audio_sample(f"{t.key_prefix}-{i:05d}", clip, length, t.sample_rate, meta))
        valid += length
    return FileResult(t.relpath, t.split, samples, valid / t.sample_rate, info=info)
