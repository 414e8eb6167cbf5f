"""`python -m cluster.driver.quickstart [options]`: `sashimi-train jobs/quickstart.yaml` (demo corpus -> shards ->
2 CPU workers -> a WAV)."""
from __future__ import annotations

import sys
from pathlib import Path

from .cli import main as cli_main

QUICKSTART_JOB = Path(__file__).resolve().parents[2] / "jobs" / "quickstart.yaml"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    job = "jobs/quickstart.yaml" if Path("jobs/quickstart.yaml").is_file() else str(QUICKSTART_JOB)
    return cli_main([job, *argv])


if __name__ == "__main__":
    sys.exit(main())
