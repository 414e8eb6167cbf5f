"""``sashimi-prep`` / ``python -m data_prep``: shard, mnist, inspect, verify, demo, digits.

Exit codes: 0 ok; 1 data problem (rejections under --strict, verify mismatches);
2 usage or run-level error (missing folder, nothing usable, bad manifest).
"""
from __future__ import annotations

import argparse
import sys

from .demo import make_demo_corpus
from .digits import ENGINES, make_digit_corpus
from .manifest import ManifestError
from .mnist import shard_mnist
from .presets import PRESETS, SPLIT_ORDERS
from .publish import output_dir
from .shard import REJECTED_NAME, PrepError, shard_folder
from .split import parse_fractions
from .storage import StorageError, is_uri
from .summary import split_summary, summarize
from .verify import verify_dataset


def _fractions(text: str):
    try:
        return parse_fractions(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sashimi-prep", description="Turn folders of audio (or MNIST) into WebDataset shards.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("shard", help="shard a folder of audio files")
    s.add_argument("src_dir")
    s.add_argument("out_dir")
    s.add_argument("--preset", choices=sorted(PRESETS), default="generic")
    s.add_argument("--sample-rate", type=int, default=None, help="target rate in Hz (default 16000)")
    s.add_argument("--clip-seconds", type=float, default=None, help="clip length (preset default; generic 8)")
    s.add_argument("--hop-seconds", type=float, default=None, help="clip hop (default = clip length)")
    s.add_argument("--split", type=_fractions, default=None, help="train,val,test fractions of files, e.g. 0.88,0.06,0.06")
    s.add_argument("--split-order", choices=SPLIT_ORDERS, default=None,
                   help="natural: files natural-sorted by name, split contiguously (the paper; default for "
                        "youtube-mix, beethoven); random: seeded shuffle by file (--seed; default otherwise)")
    s.add_argument("--min-seconds", type=float, default=None,
                   help="reject files shorter than this (default: a quarter of a clip; 0 keeps every file)")
    last = s.add_mutually_exclusive_group()
    last.add_argument("--pad-last", dest="pad_last", action="store_true", default=None, help="pad the last partial clip")
    last.add_argument("--drop-last", dest="pad_last", action="store_false", help="drop the last partial clip")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--shard-max-mb", type=float, default=256)
    s.add_argument("--workers", type=int, default=None, help="decode processes (default: CPU count)")
    s.add_argument("--strict", action="store_true", help="exit 1 if any file was rejected (truncated, too short, "
                   "undecodable...) or a split is empty")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    m = sub.add_parser("mnist", help="shard the MNIST IDX files as 784-step pixel sequences")
    m.add_argument("idx_dir")
    m.add_argument("out_dir")
    m.add_argument("--val-count", type=int, default=5000)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--shard-max-mb", type=float, default=256)
    m.add_argument("--quiet", action="store_true")

    i = sub.add_parser("inspect", help="summarise a sharded dataset")
    i.add_argument("out_dir")

    v = sub.add_parser("verify", help="decode every sample and check counts and checksums")
    v.add_argument("out_dir")
    v.add_argument("--quiet", action="store_true")

    d = sub.add_parser("demo", help="synthesise a small demo audio corpus (wav/flac files)")
    d.add_argument("out_dir")
    d.add_argument("--minutes", type=float, default=3.0)
    d.add_argument("--seed", type=int, default=0)

    g = sub.add_parser("digits", help="synthesise a spoken-digit corpus in the SC09 layout (espeak-ng, or tones)")
    g.add_argument("out_dir", help="a new (or empty) folder")
    g.add_argument("--per-digit", type=int, default=300, help="clips per digit (default 300)")
    g.add_argument("--engine", choices=ENGINES, default="espeak",
                   help="espeak: spoken words (needs espeak-ng); tones: per-digit chirps, nothing to install")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=None, help="parallel synthesis threads (default: CPUs, max 8)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (PrepError, ManifestError, StorageError, FileNotFoundError, ValueError) as e:
        print(f"sashimi-prep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sashimi-prep: interrupted; no manifest written, rerun to rebuild", file=sys.stderr)
        return 130


def _run(args) -> int:
    if args.cmd == "shard":
        if is_uri(args.src_dir):
            raise PrepError(f"{args.src_dir}: the source must be a local folder (OUT may be a URI)")
        with output_dir(args.out_dir, progress=not args.quiet) as out:
            m = shard_folder(
                args.src_dir, out, args.preset, sample_rate=args.sample_rate, clip_seconds=args.clip_seconds,
                hop_seconds=args.hop_seconds, split=args.split, split_order=args.split_order,
                min_seconds=args.min_seconds, pad_last=args.pad_last, seed=args.seed,
                shard_max_mb=args.shard_max_mb, workers=args.workers, progress=not args.quiet,
            )
        sp = m["splits"]
        print("wrote " + ", ".join(f"{s}: {sp[s]['clips']} clips / {len(sp[s]['shards'])} shards" for s in sp) + f" -> {args.out_dir}")
        print(split_summary(m))
        for w in m["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        if m["rejected"]:
            print(f"{len(m['rejected'])} file(s) rejected; see {args.out_dir}/{REJECTED_NAME}", file=sys.stderr)
        if args.strict and (m["rejected"] or m["warnings"]):
            return 1
        return 0
    if args.cmd == "mnist":
        with output_dir(args.out_dir, progress=not args.quiet) as out:
            m = shard_mnist(args.idx_dir, out, val_count=args.val_count, seed=args.seed,
                            shard_max_mb=args.shard_max_mb, progress=not args.quiet)
        print("wrote " + ", ".join(f"{s}: {v['clips']} samples" for s, v in m["splits"].items()) + f" -> {args.out_dir}")
        return 0
    if args.cmd == "inspect":
        print(summarize(args.out_dir))
        return 0
    if args.cmd == "verify":
        problems = verify_dataset(args.out_dir, progress=not args.quiet)
        for p in problems:
            print(f"FAIL {p}")
        if problems:
            print(f"verify: {len(problems)} problem(s) in {args.out_dir}", file=sys.stderr)
            return 1
        print(f"verify: OK ({args.out_dir})")
        return 0
    if args.cmd == "demo":
        paths = make_demo_corpus(args.out_dir, minutes=args.minutes, seed=args.seed)
        print(f"wrote {len(paths)} demo audio files ({args.minutes:g} min) under {args.out_dir}")
        return 0
    if args.cmd == "digits":
        if is_uri(args.out_dir):
            raise PrepError(f"{args.out_dir}: the digit corpus is written to a local folder; shard it to a URI")
        r = make_digit_corpus(args.out_dir, per_digit=args.per_digit, engine=args.engine, seed=args.seed,
                              workers=args.workers, progress=not args.quiet)
        sc, sp = r["split_clips"], r["speakers"]
        print(f"wrote {r['clips']} clips ({args.per_digit} per digit, {args.engine}) under {args.out_dir}; "
              + ", ".join(f"{s}: {sc[s]} clips / {sp[s]} speakers" for s in sc))
        print(f"next: sashimi-prep shard {args.out_dir} OUT --preset sc09")
        return 0
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    sys.exit(main())
