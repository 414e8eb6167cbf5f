"""Every random stream of a run is a pure function of (job seed, rank, step, purpose): that is what lets a
resumed run, or one restarted with another world size, draw what an uninterrupted run draws."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def mix_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (hash() of tuples is salted per process for str; avoid it)."""
    h = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def seed_all(seed: int) -> None:
    """Seed torch, numpy and python's RNGs."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
