"""Dataset presets: the defaults that make a run match the SaShiMi paper's data setup.

``split_order``: "natural" is the paper's split for YouTubeMix and Beethoven (files natural-sorted by
name, cut contiguously into train/val/test); "random" is a seeded shuffle by file.
``min_fraction``: files shorter than this fraction of a clip are rejected rather than padded into a
mostly-silent clip. A quarter clip for every preset: 2 s for the 8 s music clips, 0.25 s for SC09,
whose shortest real utterances are ~0.37 s, so no file of the paper's data set is lost.
"""
from __future__ import annotations

from dataclasses import dataclass

SPLIT_ORDERS = ("natural", "random")
SC09_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Preset:
    name: str
    sample_rate: int = 16000
    clip_seconds: float = 8.0
    hop_seconds: float | None = None  # None: hop == clip (no overlap)
    split: tuple[float, float, float] = (0.88, 0.06, 0.06)
    pad_last: bool = True  # pad the last partial clip (True) or drop it (False)
    one_clip_per_file: bool = False  # sc09: each file is one utterance, truncated/padded to a clip
    labels: tuple[str, ...] | None = None  # sc09: parent folder must be one of these; label = index
    split_order: str = "random"  # "natural" (paper: natural sort, contiguous) or "random" (seeded)
    min_fraction: float = 0.25  # reject files shorter than this fraction of one clip


PRESETS = {
    "youtube-mix": Preset("youtube-mix", pad_last=False, split_order="natural"),
    "beethoven": Preset("beethoven", pad_last=False, split_order="natural"),
    "sc09": Preset("sc09", clip_seconds=1.0, pad_last=True, one_clip_per_file=True, labels=SC09_WORDS),
    "generic": Preset("generic", pad_last=True),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
