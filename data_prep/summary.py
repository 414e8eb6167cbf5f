"""``inspect``: a human-readable summary of a finished dataset, from its manifest only."""
from __future__ import annotations

import os

from .manifest import SPLITS, load_manifest


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _row(name: str, row: list, kind: str) -> str:
    hours = f"{row[2]:>8.3f}" if kind == "audio" else f"{'-':>8}"
    return f"{name:<6} {row[0]:>6} {row[1]:>8} {hours} {row[3]:>6} {_mb(row[4]):>12}"


def summarize(out_dir: str | os.PathLike) -> str:
    m = load_manifest(out_dir)
    sr = m.get("sample_rate")
    lines = [
        f"dataset   {os.path.abspath(out_dir)}",
        f"kind      {m['kind']}   preset {m['preset']}   schema v{m['schema_version']}",
        f"format    {'%d Hz, ' % sr if sr else ''}{m['clip_samples']} steps per sample"
        + (f" ({m['clip_samples'] / sr:g} s)" if sr else ""),
        f"params    " + ", ".join(f"{k}={v}" for k, v in sorted(m["params"].items())),
        "",
        f"{'split':<6} {'files':>6} {'clips':>8} {'hours':>8} {'shards':>6} {'size':>12}",
    ]
    tot = [0, 0, 0.0, 0, 0]
    order = [s for s in SPLITS if s in m["splits"]] + sorted(set(m["splits"]) - set(SPLITS))
    for split in order:
        info = m["splits"][split]
        nbytes = sum(s["bytes"] for s in info["shards"])
        row = [info.get("files", 0), info["clips"], info.get("seconds", 0.0) / 3600, len(info["shards"]), nbytes]
        tot = [a + b for a, b in zip(tot, row)]
        lines.append(_row(split, row, m["kind"]))
    lines.append(_row("total", tot, m["kind"]))
    rejected = m.get("rejected") or []
    lines.append("")
    lines.append(f"rejected  {len(rejected)} file(s)" + (" (see rejected.tsv)" if rejected else ""))
    for r in rejected[:10]:
        lines.append(f"  {r['path']}: {r['reason']}")
    if len(rejected) > 10:
        lines.append(f"  ... {len(rejected) - 10} more")
    return "\n".join(lines)
