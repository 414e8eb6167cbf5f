"""``python -m bench.data_prep``: sharding and read-back throughput on synthetic audio.

Synthesises N files of 44.1 kHz stereo FLAC (default 12 x 5 min = 1 h) in a temp dir,
shards them at 16 kHz with the youtube-mix preset, then reads the train shards back
through webdataset + the schema decoder.  Synthesis time is not counted.

``--hostile K`` adds K unusable files (zero bytes, a truncated WAV, text named .flac) that sort
last, so the preset's natural-order split would give them the val and test places. ``--src DIR``
keeps the synthesised folder there (made on first use) so several codes can shard the same folder:
``PYTHONPATH=OLD_CHECKOUT python -m bench.data_prep --src DIR`` runs an older data_prep on it.
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


def add_hostile(root: Path, k: int, sr: int) -> None:
    """K unusable files named to sort after every track (natural order): the split's val/test places."""
    makers = [lambda p: p.with_suffix(".wav").write_bytes(b""),
              lambda p: _truncated_wav(p.with_suffix(".wav"), sr),
              lambda p: p.with_suffix(".flac").write_text("not audio\n" * 100)]
    for i in range(k):
        makers[i % len(makers)](root / f"zz_hostile_{i:02d}")


def _truncated_wav(path: Path, sr: int) -> None:
    sf.write(path, np.zeros(sr * 10, np.float32), sr, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: 44 + 2 * sr])  # the header promises 10 s, 1 s is there


def _audio_seconds(root: Path) -> float:
    total = 0.0
    for f in sorted(root.iterdir()):
        try:
            total += sf.info(str(f)).duration
        except (RuntimeError, sf.LibsndfileError):
            pass
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
    ap.add_argument("--hostile", type=int, default=0, help="unusable files added to the folder, sorting last")
    ap.add_argument("--src", default=None, help="source folder to keep and reuse (synthesised when missing)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src, out = Path(args.src or Path(tmp) / "src"), Path(tmp) / "out"
        if not src.is_dir():
            src.mkdir(parents=True)
            t0 = time.perf_counter()
            synth_corpus(src, args.files, args.minutes, args.source_rate, args.source_format)
            add_hostile(src, args.hostile, args.source_rate)
            print(f"synthesised {args.files} x {args.minutes:g} min {args.source_rate} Hz stereo {args.source_format} "
                  f"and {args.hostile} unusable file(s) in {time.perf_counter() - t0:.1f} s")
        src_bytes = sum(f.stat().st_size for f in src.iterdir())
        audio_s = _audio_seconds(src)
        print(f"source: {src} ({audio_s / 3600:.2f} h of audio, {src_bytes / 1e6:.0f} MB)")

        t0, c0 = time.perf_counter(), _cpu_seconds()
        m = shard_folder(src, out, "youtube-mix", workers=args.workers, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        out_bytes = sum(s["bytes"] for sp in SPLITS for s in m["splits"][sp]["shards"])
        clips = sum(m["splits"][sp]["clips"] for sp in SPLITS)
        print(f"shard: {wall:.2f} s wall, {args.workers} workers -> {clips} clips of 8 s at 16 kHz, {out_bytes / 1e6:.0f} MB of shards; "
              f"files per split {[m['splits'][sp]['files'] for sp in SPLITS]}, {len(m['rejected'])} rejected")
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
