"""Deterministic train/val/test assignment by source file (never by clip)."""
from __future__ import annotations

import numpy as np

from .manifest import SPLITS


def parse_fractions(text: str) -> tuple[float, float, float]:
    """'0.88,0.06,0.06' -> fractions that are >= 0 and sum to 1."""
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--split {text!r}: expected three numbers like 0.88,0.06,0.06") from None
    check_fractions(parts)
    return parts  # type: ignore[return-value]


def check_fractions(parts) -> None:
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise ValueError(f"split fractions {tuple(parts)} must be three non-negative numbers summing to 1")


def split_counts(n: int, fractions) -> list[int]:
    """Largest-remainder counts; every split with a non-zero fraction gets >= 1 file when n allows."""
    raw = [n * f for f in fractions]
    counts = [int(r) for r in raw]
    for i in sorted(range(3), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    wanted = [i for i in range(3) if fractions[i] > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = max(range(3), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def assign_splits(relpaths: list[str], fractions, seed: int) -> dict[str, str]:
    """Map each relative path to a split; depends only on the set of paths, fractions and seed."""
    check_fractions(tuple(fractions))
    paths = sorted(relpaths)
    order = np.random.default_rng(seed).permutation(len(paths))
    counts = split_counts(len(paths), fractions)
    out, pos = {}, 0
    for split, c in zip(SPLITS, counts):
        for i in order[pos:pos + c]:
            out[paths[i]] = split
        pos += c
    return out


def read_list_file(path) -> set[str]:
    """sc09/Speech Commands ``validation_list.txt``: one relative path per line."""
    with open(path, encoding="utf-8") as f:
        return {line.strip().replace("\\", "/") for line in f if line.strip()}
