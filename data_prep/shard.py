"""``shard_folder``: a folder of audio -> per-split WebDataset shards + manifest.

Order of work: delete the old manifest (so a dataset is never "complete" while being
rebuilt), remove stale shards, probe every file's header (unreadable, undecodable, truncated,
empty and too short files are rejected here, before any decoding), draw the splits over the
files that passed, decode them in a process pool, stream encoded clips into atomic per-split
shard writers, write ``rejected.tsv``, then write the manifest last. Each file is decoded once;
only when decoding rejects files the probe passed (NaN samples, a corrupt stream behind a good
header) and that empties a split are the splits drawn again and the shards rebuilt.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .atomicio import atomic_write_text
from .discover import find_audio
from .logs import log
from .manifest import MANIFEST_NAME, SPLITS, manifest_path, write_manifest
from .presets import SPLIT_ORDERS, get_preset
from .schema import SCHEMA_VERSION
from .split import assign_splits, check_fractions, empty_splits, read_list_file
from .tarshard import TMP_SUFFIX, AtomicShardWriter
from .worker import FileResult, FileTask, init_worker, probe_file, process_file

REJECTED_NAME = "rejected.tsv"


class PrepError(RuntimeError):
    """A run-level failure (bad arguments, nothing usable); the message says what to fix."""


def clean_output(out_dir: Path) -> None:
    """Remove what a previous (possibly interrupted) run left, manifest first."""
    Path(manifest_path(out_dir)).unlink(missing_ok=True)
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


def _resolve_params(preset_name: str, sample_rate, clip_seconds, hop_seconds, split, pad_last, seed, shard_max_mb,
                    workers, split_order=None, min_seconds=None) -> dict:
    p = get_preset(preset_name)
    clip_s = float(clip_seconds if clip_seconds is not None else p.clip_seconds)
    params = {
        "sample_rate": int(sample_rate if sample_rate is not None else p.sample_rate),
        "clip_seconds": clip_s,
        "hop_seconds": None if hop_seconds is None and p.hop_seconds is None else float(hop_seconds if hop_seconds is not None else p.hop_seconds),
        "split": [float(x) for x in (split if split is not None else p.split)],
        "split_order": str(split_order if split_order is not None else p.split_order),
        "min_seconds": float(min_seconds if min_seconds is not None else p.min_fraction * clip_s),
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
    if params["split_order"] not in SPLIT_ORDERS:
        raise PrepError(f"--split-order {params['split_order']!r}: expected one of {SPLIT_ORDERS}")
    if params["min_seconds"] < 0:
        raise PrepError(f"--min-seconds must be >= 0, got {params['min_seconds']:g}")
    try:
        check_fractions(params["split"])
    except ValueError as e:
        raise PrepError(str(e)) from None
    return params


@dataclass
class _Plan:
    """The files to shard, before their splits are drawn: one task per file that passed the probe."""
    tasks: list[FileTask]  # split None
    rejected: list[tuple[str, str]]  # (relpath, reason) of files the probe refused: never decoded
    facts: dict  # ignored/skipped files, clip and hop samples, how the splits are drawn


def _plan(src: Path, out: Path, preset, params, progress: bool) -> _Plan:
    """Every audio file under ``src`` (of the preset's label folders), probed in seeded shuffled order
    (the order files are processed in, so each shard mixes recordings)."""
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

    sr = params["sample_rate"]
    clip = round(params["clip_seconds"] * sr)
    hop = clip if params["hop_seconds"] is None else round(params["hop_seconds"] * sr)
    if clip < 1 or hop < 1:
        raise PrepError(f"clip ({clip}) / hop ({hop}) rounds to zero samples at {sr} Hz")
    index = {rel: i for i, rel in enumerate(relpaths)}
    min_samples = round(params["min_seconds"] * sr)
    tasks, rejected = [], []
    for rel in tqdm(sorted(relpaths, key=lambda r: _mix(r, params["seed"])), unit="file", desc="probe",
                    disable=not progress, file=sys.stderr):
        task = FileTask(str(src / rel), rel, f"f{index[rel]:06d}", None, sr, clip, hop, params["pad_last"],
                        params["one_clip_per_file"], labels.get(rel), min_samples)
        reason = probe_file(task)
        if reason is None:
            tasks.append(task)
        else:
            rejected.append((rel, reason))
            log.info(f"rejected: {src / rel}: {reason}")
    split_source = "natural order" if params["split_order"] == "natural" else "seed"
    if preset.name == "sc09" and ((src / "validation_list.txt").is_file() or (src / "testing_list.txt").is_file()):
        split_source = "official lists"
    return _Plan(tasks, rejected, {"ignored_files": ignored, "skipped_files": skipped, "split_source": split_source,
                                   "clip_samples": clip, "hop_samples": hop})


def _assign(plan: _Plan, src: Path, params: dict, drop: frozenset = frozenset()) -> list[FileTask]:
    """The plan's tasks but ``drop`` (files decoding rejected), each with its split: the official lists
    (sc09), else drawn over exactly these files (natural order or seeded)."""
    tasks = [t for t in plan.tasks if t.relpath not in drop]
    rels = [t.relpath for t in tasks]
    if plan.facts["split_source"] == "official lists":
        val_list, test_list = src / "validation_list.txt", src / "testing_list.txt"
        val = read_list_file(val_list) if val_list.is_file() else set()
        test = read_list_file(test_list) if test_list.is_file() else set()
        splits = {r: ("test" if r in test else "val" if r in val else "train") for r in rels}
    else:
        splits = assign_splits(rels, params["split"], params["seed"], params["split_order"]) if rels else {}
    return [dataclasses.replace(t, split=splits[t.relpath]) for t in tasks]


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


@dataclass
class _Build:
    """What one pass over the tasks wrote."""
    shards: dict
    sources: dict = field(default_factory=dict)
    rejected: list = field(default_factory=list)  # (relpath, reason)
    totals: dict = field(default_factory=lambda: {s: {"clips": 0, "seconds": 0.0, "files": 0} for s in SPLITS})


def _build(tasks: list[FileTask], src: Path, out: Path, params: dict, progress: bool) -> _Build:
    """Clean ``out``, decode every task and stream its clips into per-split atomic shard writers."""
    clean_output(out)
    writers = {s: AtomicShardWriter(out / s, out, max_bytes=int(params["shard_max_mb"] * 2**20)) for s in SPLITS}
    b = _Build(shards={})
    audio_s = 0.0
    bar = tqdm(total=len(tasks), unit="file", desc="shard", disable=not progress, file=sys.stderr)
    try:
        for res in _results(tasks, params["workers"]):
            res: FileResult
            if res.reason is not None:
                b.rejected.append((res.relpath, res.reason))
                log.info(f"rejected: {src / res.relpath}: {res.reason}")
            else:
                for sample in res.samples:
                    writers[res.split].write(sample)
                b.sources[res.relpath] = {"split": res.split, "clips": len(res.samples), "seconds": round(res.seconds, 6), **(res.info or {})}
                tot = b.totals[res.split]
                tot["clips"] += len(res.samples)
                tot["seconds"] += res.seconds
                tot["files"] += 1
                audio_s += res.seconds
            bar.update(1)
            bar.set_postfix(audio_h=f"{audio_s / 3600:.2f}", rejected=len(b.rejected), refresh=False)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        bar.close()
    b.shards = {s: w.close() for s, w in writers.items()}
    return b


def _files_per_split(b: _Build) -> dict[str, int]:
    return {s: b.totals[s]["files"] for s in SPLITS}


def shard_folder(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    preset: str = "generic",
    *,
    sample_rate: int | None = None,
    clip_seconds: float | None = None,
    hop_seconds: float | None = None,
    split=None,
    split_order: str | None = None,
    min_seconds: float | None = None,
    pad_last: bool | None = None,
    seed: int = 0,
    shard_max_mb: float = 256,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Shard every audio file under ``src_dir`` into ``out_dir``; return the manifest dict.

    Bad files are logged and listed in ``rejected.tsv`` and in ``manifest["rejected"]``; they never
    stop the run.  Raises ``PrepError`` if nothing usable. Splits are drawn over the files that pass
    the header probe, so files rejected there take no split's place; if decoding rejects more and that
    leaves a split with a non-zero fraction empty, the usable files are split again and the shards
    rebuilt once (tiny corpora only). A split still empty then (fewer usable files than splits) is a
    warning in ``manifest["warnings"]``.
    """
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise PrepError(f"{src}: source folder does not exist or is not a directory")
    if src.resolve() == out.resolve():
        raise PrepError(f"{out}: output folder must differ from the source folder")
    p = get_preset(preset)
    params = _resolve_params(preset, sample_rate, clip_seconds, hop_seconds, split, pad_last, seed, shard_max_mb,
                             workers, split_order, min_seconds)
    t0 = time.perf_counter()
    plan = _plan(src, out, p, params, progress)
    out.mkdir(parents=True, exist_ok=True)
    b = _build(_assign(plan, src, params), src, out, params, progress) if plan.tasks else _Build(shards={})
    empty = empty_splits(_files_per_split(b), params["split"])
    if empty and b.rejected and b.sources and plan.facts["split_source"] != "official lists":
        log.info(f"files rejected while decoding left split(s) {', '.join(empty)} empty: splitting the "
                 f"{len(b.sources)} usable file(s) again and rebuilding")
        decoded_bad = b.rejected
        b = _build(_assign(plan, src, params, drop=frozenset(r for r, _ in decoded_bad)), src, out, params, progress)
        b.rejected = decoded_bad + b.rejected
        empty = empty_splits(_files_per_split(b), params["split"])
    b.rejected = plan.rejected + b.rejected
    if not plan.tasks:
        clean_output(out)
    write_rejected(out, b.rejected)
    if not b.sources:
        raise PrepError(f"{src}: none of the {len(plan.tasks) + len(plan.rejected)} audio files was usable; "
                        f"see {out / REJECTED_NAME}")
    warnings = [
        f"split {s!r} is empty although its fraction is {params['split'][SPLITS.index(s)]:g}: only "
        f"{len(b.sources)} usable file(s) for {sum(f > 0 for f in params['split'])} split(s); sashimi-train "
        + ("needs a non-empty val split (or eval.val_batches=0)" if s == "val" else f"will have no {s} data")
        for s in empty
    ]
    for w in warnings:
        log.warning(f"warning: {w}")

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "kind": "audio",
        "preset": preset,
        "params": params,
        "sample_rate": params["sample_rate"],
        "clip_samples": plan.facts["clip_samples"],
        "hop_samples": plan.facts["hop_samples"],
        "source_dir": str(src.resolve()),
        "split_source": plan.facts["split_source"],
        "labels": list(p.labels) if p.labels else None,
        "splits": {
            s: {"clips": b.totals[s]["clips"], "seconds": round(b.totals[s]["seconds"], 6), "files": b.totals[s]["files"], "shards": b.shards[s]}
            for s in SPLITS
        },
        "sources": dict(sorted(b.sources.items())),
        "rejected": [{"path": p_, "reason": r} for p_, r in b.rejected],
        "warnings": warnings,
        "ignored_files": plan.facts["ignored_files"],
        "skipped_files": plan.facts["skipped_files"],
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    write_manifest(out, manifest)
    return manifest
