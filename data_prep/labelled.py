"""A labelled audio split (sc09 digits) read whole into memory: (clips, labels) arrays.

Classifier training on one machine and the metrics' reference features need every clip of a split at
once; an SC09-sized split is a few hundred MB of float32. Reads through the one shard reader
(``data_prep.reader``), so bad shards follow the same policy as training.
"""
from __future__ import annotations

import os

import numpy as np

from .manifest import shard_paths
from .reader import BadSamplePolicy, samples


class UnlabelledData(ValueError):
    """The split has an unlabelled or differently sized clip; the message names the sample and shard."""


def read_labelled_split(shard_dir: str | os.PathLike, split: str, on_bad_sample: str = "stop"
                        ) -> tuple[np.ndarray, np.ndarray]:
    """-> (clips (N, L) float32, labels (N,) int64), in shard order."""
    clips, labels = [], []
    for raw, s in samples(shard_paths(shard_dir, split), BadSamplePolicy(on_bad_sample)):
        where = f"sample {s.key!r} of shard {raw.get('__url__', '?')}"
        if s.kind != "audio" or s.label is None:
            raise UnlabelledData(f"{where}: not a labelled audio clip (shard with --preset sc09)")
        if clips and len(s.data) != len(clips[0]):
            raise UnlabelledData(f"{where}: {len(s.data)} samples, the split's first clip has {len(clips[0])}")
        clips.append(s.data)
        labels.append(s.label)
    if not clips:
        raise UnlabelledData(f"{shard_dir}: split {split!r} has no clips")
    return np.stack(clips).astype(np.float32, copy=False), np.asarray(labels, dtype=np.int64)
