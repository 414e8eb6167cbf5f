"""``python -m bench.data_prep``: sharding and read-back throughput on synthetic audio.

Synthesises N files of 44.1 kHz stereo FLAC (default 12 x 5 min = 1 h) in a temp dir,
shards them at 16 kHz with the youtube-mix preset, then reads the train shards back
through webdataset + the schema decoder.  Synthesis time is not counted.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from data_prep.demo import synth_piece
from data_prep.manifest import SPLITS, shard_paths
from data_prep.schema import decode_sample
from data_prep.shard import shard_folder


def synth_corpus(root: Path, files: int, minutes: float, sr: int, fmt: str) -> int:
    """Write ``files`` stereo files; return total source bytes."""
    total = 0
    for i in range(files):
        # One synthesised minute tiled to length keeps setup fast; the encoder still sees real signal.
        base = synth_piece(60.0, sr, 2, seed=100 + i)
        reps = int(np.ceil(minutes))
        audio = np.tile(base, (reps, 1))[: int(minutes * 60 * sr)]
        audio = audio + np.random.default_rng(i).normal(0, 0.003, audio.shape).astype(np.float32)
        p = root / f"track_{i:02d}.{fmt.lower()}"
        sf.write(p, audio, sr, format=fmt, subtype="PCM_16")
        total += p.stat().st_size
    return total


def _cpu_seconds() -> float:
    """User+system CPU time of this process and its reaped children (the pool workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def read_back(out: Path) -> tuple[int, float, float]:
    """(clips, audio seconds, wall seconds) for decoding every train sample via webdataset."""
    import webdataset as wds

    urls = shard_paths(out, "train")
    t0 = time.perf_counter()
    n, seconds = 0, 0.0
    for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(decode_sample):
        n += 1
        seconds += s.length / s.sample_rate
    return n, seconds, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.data_prep", description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--minutes", type=float, default=5.0, help="minutes per file")
    ap.add_argument("--source-rate", type=int, default=44100)
    ap.add_argument("--source-format", choices=["FLAC", "WAV"], default="FLAC")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dir", default=None, help="work dir (default: a temp dir, deleted afterwards)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        t0 = time.perf_counter()
        src_bytes = synth_corpus(src, args.files, args.minutes, args.source_rate, args.source_format)
        audio_s = args.files * args.minutes * 60
        print(f"synthesised {args.files} x {args.minutes:g} min {args.source_rate} Hz stereo {args.source_format} "
              f"({audio_s / 3600:.2f} h, {src_bytes / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s")

        t0, c0 = time.perf_counter(), _cpu_seconds()
        m = shard_folder(src, out, "youtube-mix", workers=args.workers, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        out_bytes = sum(s["bytes"] for sp in SPLITS for s in m["splits"][sp]["shards"])
        clips = sum(m["splits"][sp]["clips"] for sp in SPLITS)
        print(f"shard: {wall:.2f} s wall, {args.workers} workers -> {clips} clips of 8 s at 16 kHz, {out_bytes / 1e6:.0f} MB of shards")
        print(f"shard: real-time factor {audio_s / wall:.0f}x, {src_bytes / 1e6 / wall:.1f} MB/s source read, "
              f"{out_bytes / 1e6 / wall:.1f} MB/s shards written")
        print(f"shard: {cpu:.1f} CPU-s (parent + workers, incl. process start-up) -> {audio_s / cpu:.0f}x real time per busy core "
              f"(load-independent; wall figures depend on what else runs)")

        n, secs, rwall = read_back(out)
        print(f"read:  {n} train clips in {rwall:.2f} s -> {n / rwall:.0f} clips/s, {secs / rwall:.0f} audio-s/s "
              f"({secs / rwall / 3600:.2f} h of audio per second), 1 process")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
