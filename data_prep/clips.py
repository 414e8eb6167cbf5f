"""Where fixed-length clips start in a signal, and the last-partial-clip policy."""
from __future__ import annotations

import numpy as np


def clip_spans(n: int, clip: int, hop: int, pad_last: bool) -> list[tuple[int, int]]:
    """(start, valid_length) of every clip of ``clip`` samples, stepping ``hop``.

    Full clips start at 0, hop, 2*hop... while they fit.  If samples at the end are covered
    by no full clip, ``pad_last`` adds one more clip at the next start with a shorter valid
    length (zero-padded on write); otherwise that tail is dropped.
    """
    if clip <= 0 or hop <= 0:
        raise ValueError(f"clip ({clip}) and hop ({hop}) must be positive")
    if n <= 0:
        return []
    spans = [(s, clip) for s in range(0, n - clip + 1, hop)]
    covered = spans[-1][0] + clip if spans else 0
    nxt = len(spans) * hop
    if pad_last and covered < n and nxt < n:
        spans.append((nxt, n - nxt))
    return spans


def cut(audio: np.ndarray, start: int, length: int, clip: int) -> np.ndarray:
    """``clip`` samples from ``start``: the valid ``length`` then zeros."""
    out = np.zeros(clip, dtype=np.float32)
    out[:length] = audio[start:start + length]
    return out
