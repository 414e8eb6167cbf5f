"""``shard_folder``: a folder of audio -> per-split WebDataset shards + manifest.

Order of work: delete the old manifest (so a dataset is never "complete" while being
rebuilt), remove stale shards, decode files in a process pool, stream encoded clips into
atomic per-split shard writers, write ``rejected.tsv``, then write the manifest last.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .atomicio import atomic_write_text
from .discover import find_audio
from .manifest import MANIFEST_NAME, SPLITS, manifest_path, write_manifest
from .presets import get_preset
from .schema import SCHEMA_VERSION
from .split import assign_splits, check_fractions, read_list_file
from .tarshard import TMP_SUFFIX, AtomicShardWriter
from .worker import FileResult, FileTask, init_worker, process_file

REJECTED_NAME = "rejected.tsv"


class PrepError(RuntimeError):
    """A run-level failure (bad arguments, nothing usable); the message says what to fix."""


def clean_output(out_dir: Path) -> None:
    """Remove what a previous (possibly interrupted) run left, manifest first."""
    manifest_path(out_dir).unlink(missing_ok=True)
    for name in (MANIFEST_NAME + TMP_SUFFIX, REJECTED_NAME, REJECTED_NAME + TMP_SUFFIX):
        (out_dir / name).unlink(missing_ok=True)
    for split in SPLITS:
        d = out_dir / split
        if d.is_dir():
            for p in list(d.glob("shard-*.tar")) + list(d.glob("shard-*.tar" + TMP_SUFFIX)):
                p.unlink()


def write_rejected(out_dir: Path, rejected: list[tuple[str, str]]) -> None:
    def clean(s: str) -> str:
        return " ".join(str(s).split())  # no tabs/newlines inside a TSV field

    lines = ["path\treason"] + [f"{clean(p)}\t{clean(r)}" for p, r in rejected]
    atomic_write_text(out_dir / REJECTED_NAME, "\n".join(lines) + "\n")


def default_workers() -> int:
    """CPUs this process may use (respects affinity/cgroup cpusets, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def _resolve_params(preset_name: str, sample_rate, clip_seconds, hop_seconds, split, pad_last, seed, shard_max_mb, workers) -> dict:
    p = get_preset(preset_name)
    params = {
        "sample_rate": int(sample_rate if sample_rate is not None else p.sample_rate),
        "clip_seconds": float(clip_seconds if clip_seconds is not None else p.clip_seconds),
        "hop_seconds": None if hop_seconds is None and p.hop_seconds is None else float(hop_seconds if hop_seconds is not None else p.hop_seconds),
        "split": [float(x) for x in (split if split is not None else p.split)],
        "pad_last": bool(p.pad_last if pad_last is None else pad_last),
        "one_clip_per_file": p.one_clip_per_file,
        "seed": int(seed),
        "shard_max_mb": float(shard_max_mb),
        "workers": int(workers or default_workers()),
    }
    if params["sample_rate"] <= 0:
        raise PrepError(f"--sample-rate must be positive, got {params['sample_rate']}")
    if params["clip_seconds"] <= 0 or (params["hop_seconds"] is not None and params["hop_seconds"] <= 0):
        raise PrepError("--clip-seconds and --hop-seconds must be positive")
    if params["shard_max_mb"] <= 0 or params["workers"] < 1:
        raise PrepError("--shard-max-mb must be > 0 and --workers >= 1")
    try:
        check_fractions(params["split"])
    except ValueError as e:
        raise PrepError(str(e)) from None
    return params


def _plan(src: Path, out: Path, preset, params) -> tuple[list[FileTask], dict]:
    relpaths, ignored = find_audio(src, exclude=out if out.resolve().is_relative_to(src.resolve()) else None)
    skipped = 0
    labels: dict[str, int] = {}
    if preset.labels is not None:
        keep = []
        for rel in relpaths:
            parent = PurePosixPath(rel).parent.name
            if parent in preset.labels:
                labels[rel] = preset.labels.index(parent)
                keep.append(rel)
            else:
                skipped += 1
        relpaths = keep
    if not relpaths:
        raise PrepError(f"{src}: no audio files found" + (" in the digit folders zero..nine" if preset.labels else ""))

    split_source = "seed"
    val_list, test_list = src / "validation_list.txt", src / "testing_list.txt"
    if preset.name == "sc09" and (val_list.is_file() or test_list.is_file()):
        val = read_list_file(val_list) if val_list.is_file() else set()
        test = read_list_file(test_list) if test_list.is_file() else set()
        splits = {r: ("test" if r in test else "val" if r in val else "train") for r in relpaths}
        split_source = "official lists"
    else:
        splits = assign_splits(relpaths, params["split"], params["seed"])

    sr = params["sample_rate"]
    clip = round(params["clip_seconds"] * sr)
    hop = clip if params["hop_seconds"] is None else round(params["hop_seconds"] * sr)
    if clip < 1 or hop < 1:
        raise PrepError(f"clip ({clip}) / hop ({hop}) rounds to zero samples at {sr} Hz")
    index = {rel: i for i, rel in enumerate(relpaths)}
    # Process files in the seeded shuffled order so each shard mixes recordings.
    order = sorted(relpaths, key=lambda r: _mix(r, params["seed"]))
    tasks = [
        FileTask(str(src / rel), rel, f"f{index[rel]:06d}", splits[rel], sr, clip, hop,
                 params["pad_last"], params["one_clip_per_file"], labels.get(rel))
        for rel in order
    ]
    return tasks, {"ignored_files": ignored, "skipped_files": skipped, "split_source": split_source, "clip_samples": clip, "hop_samples": hop}


def _mix(rel: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\0{rel}".encode()).hexdigest()


def _results(tasks: list[FileTask], workers: int):
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield process_file(t)
        return
    chunk = max(1, min(16, len(tasks) // (workers * 8)))
    ex = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=get_context("spawn"), initializer=init_worker)
    try:
        yield from ex.map(process_file, tasks, chunksize=chunk)
    except BrokenProcessPool:
        _kill_pool(ex)
        raise PrepError("a decode worker process died (a crash inside the audio decoder, or out of memory); "
                        "rerun with --workers 1 to see which file") from None
    except BaseException:
        # Ctrl-C or a writer error: waiting on the pool here can hang (and would finish
        # every queued file first), so stop the workers outright.
        _kill_pool(ex)
        raise
    ex.shutdown(wait=True)


def _kill_pool(ex: ProcessPoolExecutor) -> None:
    procs = list(getattr(ex, "_processes", {}).values())  # no public API to stop running work
    for p in procs:
        p.terminate()
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.join(timeout=5)


def shard_folder(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    preset: str = "generic",
    *,
    sample_rate: int | None = None,
    clip_seconds: float | None = None,
    hop_seconds: float | None = None,
    split=None,
    pad_last: bool | None = None,
    seed: int = 0,
    shard_max_mb: float = 256,
    workers: int | None = None,
    progress: bool = True,
    log=None,
) -> dict:
    """Shard every audio file under ``src_dir`` into ``out_dir``; return the manifest dict.

    Bad files are reported (``log``, default stderr) and listed in ``rejected.tsv`` and in
    ``manifest["rejected"]``; they never stop the run.  Raises ``PrepError`` if nothing usable.
    """
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise PrepError(f"{src}: source folder does not exist or is not a directory")
    if src.resolve() == out.resolve():
        raise PrepError(f"{out}: output folder must differ from the source folder")
    p = get_preset(preset)
    params = _resolve_params(preset, sample_rate, clip_seconds, hop_seconds, split, pad_last, seed, shard_max_mb, workers)
    tasks, plan = _plan(src, out, p, params)

    out.mkdir(parents=True, exist_ok=True)
    clean_output(out)
    sr, clip = params["sample_rate"], plan["clip_samples"]
    writers = {s: AtomicShardWriter(out / s, out, max_bytes=int(params["shard_max_mb"] * 2**20)) for s in SPLITS}
    sources: dict[str, dict] = {}
    rejected: list[tuple[str, str]] = []
    totals = {s: {"clips": 0, "seconds": 0.0, "files": 0} for s in SPLITS}
    t0, audio_s = time.perf_counter(), 0.0
    bar = tqdm(total=len(tasks), unit="file", desc="shard", disable=not progress, file=sys.stderr)
    try:
        for res in _results(tasks, params["workers"]):
            res: FileResult
            if res.reason is not None:
                rejected.append((res.relpath, res.reason))
                log(f"rejected: {src / res.relpath}: {res.reason}")
            else:
                for sample in res.samples:
                    writers[res.split].write(sample)
                sources[res.relpath] = {"split": res.split, "clips": len(res.samples), "seconds": round(res.seconds, 6), **(res.info or {})}
                tot = totals[res.split]
                tot["clips"] += len(res.samples)
                tot["seconds"] += res.seconds
                tot["files"] += 1
                audio_s += res.seconds
            bar.update(1)
            bar.set_postfix(audio_h=f"{audio_s / 3600:.2f}", rejected=len(rejected), refresh=False)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        bar.close()
    shards = {s: w.close() for s, w in writers.items()}
    write_rejected(out, rejected)
    if not sources:
        raise PrepError(f"{src}: none of the {len(tasks)} audio files was usable; see {out / REJECTED_NAME}")

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "kind": "audio",
        "preset": preset,
        "params": params,
        "sample_rate": sr,
        "clip_samples": clip,
        "hop_samples": plan["hop_samples"],
        "source_dir": str(src.resolve()),
        "split_source": plan["split_source"],
        "labels": list(p.labels) if p.labels else None,
        "splits": {
            s: {"clips": totals[s]["clips"], "seconds": round(totals[s]["seconds"], 6), "files": totals[s]["files"], "shards": shards[s]}
            for s in SPLITS
        },
        "sources": dict(sorted(sources.items())),
        "rejected": [{"path": p_, "reason": r} for p_, r in rejected],
        "ignored_files": plan["ignored_files"],
        "skipped_files": plan["skipped_files"],
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    write_manifest(out, manifest)
    return manifest
