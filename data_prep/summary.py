"""``inspect``: a human-readable summary of a finished dataset, from its manifest only."""
from __future__ import annotations

import os

from .manifest import SPLITS, load_manifest
from .storage import is_uri


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _row(name: str, row: list, kind: str) -> str:
    hours = f"{row[2]:>8.3f}" if kind == "audio" else f"{'-':>8}"
    return f"{name:<6} {row[0]:>6} {row[1]:>8} {hours} {row[3]:>6} {_mb(row[4]):>12}"


def split_summary(m: dict) -> str:
    """One line: how files were split, and whether every split that should have files has some."""
    params, sp = m.get("params", {}), m["splits"]
    how = m.get("split_source", "seed")
    if how in ("seed", "natural order"):
        frac = "/".join(f"{f:g}" for f in params.get("split", ()))
        how = (f"natural order (contiguous {frac} by file name)" if how == "natural order"
               else f"seeded random {frac} by file (seed {params.get('seed')})")
    counts = ", ".join(f"{s} {sp[s].get('files', 0)} file(s)" for s in SPLITS if s in sp)
    fractions = dict(zip(SPLITS, params.get("split", (1, 1, 1))))
    empty = [s for s in SPLITS if s in sp and fractions.get(s, 0) > 0 and not sp[s].get("files")]
    verdict = f"EMPTY: {', '.join(empty)}" if empty else "every split with a non-zero fraction has >= 1 file"
    return f"split     {how}: {counts}; {verdict}"


def summarize(out_dir: str | os.PathLike) -> str:
    m = load_manifest(out_dir)
    sr = m.get("sample_rate")
    lines = [
        f"dataset   {out_dir if is_uri(out_dir) else os.path.abspath(out_dir)}",
        f"kind      {m['kind']}   preset {m['preset']}   schema v{m['schema_version']}",
        f"format    {'%d Hz, ' % sr if sr else ''}{m['clip_samples']} steps per sample"
        + (f" ({m['clip_samples'] / sr:g} s)" if sr else ""),
        "params    " + ", ".join(f"{k}={v}" for k, v in sorted(m["params"].items())),
    ]
    if m["kind"] == "audio":
        lines.append(split_summary(m))
    lines += [
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
    for w in m.get("warnings") or []:
        lines.append(f"warning   {w}")
    rejected = m.get("rejected") or []
    lines.append("")
    lines.append(f"rejected  {len(rejected)} file(s)" + (" (see rejected.tsv)" if rejected else ""))
    for r in rejected[:10]:
        lines.append(f"  {r['path']}: {r['reason']}")
    if len(rejected) > 10:
        lines.append(f"  ... {len(rejected) - 10} more")
    return "\n".join(lines)
