"""Deterministic train/val/test assignment by source file (never by clip)."""
from __future__ import annotations

import re

import numpy as np

from .manifest import SPLITS
from .presets import SPLIT_ORDERS

_DIGITS = re.compile(r"(\d+)")


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


def natural_key(name: str) -> tuple:
    """Sort key with digit runs compared as numbers ("a2" < "a10"), like natsort's default."""
    parts = _DIGITS.split(name)  # str, int, str, ...: positions always compare like with like
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def _ensure_nonempty(counts: list[int], fractions) -> list[int]:
    """Give every split with a non-zero fraction >= 1 file, taking from the largest; with fewer files
    than such splits, one file each to train, then val, then test."""
    wanted = [i for i in range(3) if fractions[i] > 0]
    n = sum(counts)
    if n < len(wanted):
        return [1 if i in wanted[:n] else 0 for i in range(3)]
    for i in wanted:
        if counts[i] == 0:  # n >= len(wanted), so the largest split holds >= 2 files here
            donor = max(range(3), key=lambda j: counts[j])
            counts[donor] -= 1
            counts[i] += 1
    return counts


def split_counts(n: int, fractions) -> list[int]:
    """Largest-remainder counts (the seeded random split), then `_ensure_nonempty`."""
    raw = [n * f for f in fractions]
    counts = [int(r) for r in raw]
    for i in sorted(range(3), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    return _ensure_nonempty(counts, fractions)


def paper_counts(n: int, fractions) -> list[int]:
    """The paper's boundaries, files[int(0.88 n):int(0.94 n)] for val, then `_ensure_nonempty`."""
    b1, b2 = int(fractions[0] * n), int((fractions[0] + fractions[1]) * n)
    return _ensure_nonempty([b1, b2 - b1, n - b2], fractions)


def assign_splits(relpaths: list[str], fractions, seed: int, order: str = "random") -> dict[str, str]:
    """Map each relative path to a split; depends only on the set of paths, fractions, order and seed.

    "natural": natural-sorted by path and cut contiguously (train, val, test), as the paper's code;
    "random": a seeded permutation with largest-remainder counts.
    """
    check_fractions(tuple(fractions))
    if order == "natural":
        ordered, counts = sorted(relpaths, key=natural_key), paper_counts(len(relpaths), fractions)
    elif order == "random":
        paths, counts = sorted(relpaths), split_counts(len(relpaths), fractions)
        ordered = [paths[i] for i in np.random.default_rng(seed).permutation(len(paths))]
    else:
        raise ValueError(f"split order {order!r}: expected one of {SPLIT_ORDERS}")
    out, pos = {}, 0
    for split, c in zip(SPLITS, counts):
        for rel in ordered[pos:pos + c]:
            out[rel] = split
        pos += c
    return out


def empty_splits(files_per_split: dict[str, int], fractions) -> list[str]:
    """Splits with a non-zero fraction that hold no file."""
    return [s for s, f in zip(SPLITS, fractions) if f > 0 and not files_per_split.get(s)]


def read_list_file(path) -> set[str]:
    """sc09/Speech Commands ``validation_list.txt``: one relative path per line."""
    with open(path, encoding="utf-8") as f:
        return {line.strip().replace("\\", "/") for line in f if line.strip()}
