"""`sashimi-train JOB.yaml [key=value ...] [--fresh]`: the one entry point, locally and under `ray job submit`."""
from __future__ import annotations

import argparse
import sys

from ..config import JobConfigError
from ..train.stops import RunStoppedError
from .jobs import load_job
from .summary import train_and_sample


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sashimi-train",
        description="Train SaShiMi (task: generate) or the S4 classifier (task: classify) with Ray Train from a "
                    "job YAML. Re-running the same job resumes it.",
        epilog="example: sashimi-train jobs/quickstart.yaml training.max_steps=200 scaling.num_workers=1")
    p.add_argument("job", help="job YAML (see jobs/)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value",
                   help="override job keys; values are parsed as YAML")
    p.add_argument("--fresh", action="store_true", help="delete the run's directory and start from step 0")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray cluster (default: all)")
    p.add_argument("--no-wav", action="store_true", help="skip writing a generated WAV at the end (generate jobs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # options may follow overrides
    try:
        job = load_job(args.job, args.overrides)
        train_and_sample(job, args.job, fresh=args.fresh, num_cpus=args.num_cpus, write_wav=not args.no_wav)
    except JobConfigError as e:
        print(f"sashimi-train: error: {e}", file=sys.stderr)
        return 2
    except RunStoppedError as e:
        print(f"sashimi-train: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
