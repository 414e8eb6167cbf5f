"""Datasets written to an object store: built in a local staging folder, then uploaded, manifest last.

The sharder writes local files (temp names, renames); an object store has no rename, so a dataset
for ``s3://…`` (any fsspec URI) is built in a temp folder (``TMPDIR``; it needs the dataset's size)
and uploaded object by object. The old manifest is deleted first and the new one uploaded last,
so at every moment the URI holds either no manifest or a complete dataset: a reader that finds a
manifest finds every shard it lists.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from . import storage
from .manifest import MANIFEST_NAME, SPLITS
from .shard import REJECTED_NAME


@contextlib.contextmanager
def output_dir(out: str | os.PathLike, progress: bool = True) -> Iterator[Path]:
    """A local folder to build the dataset ``out`` in: ``out`` itself when local; for a URI, a temp
    folder uploaded to it (``publish``) when the block succeeds and discarded when it fails."""
    if not storage.is_uri(out):
        yield storage.local_path(out)
        return
    storage.check_writable_root(out, "OUT")  # before hours of decoding, not after
    with tempfile.TemporaryDirectory(prefix="sashimi-prep-") as stage:
        yield Path(stage)
        publish(Path(stage), str(out), progress)


def publish(stage: Path, uri: str, progress: bool = True) -> None:
    """Upload the finished dataset in ``stage`` to ``uri``, replacing what was there."""
    if not (stage / MANIFEST_NAME).is_file():
        raise FileNotFoundError(f"{stage}: no {MANIFEST_NAME}: the dataset was not finished, nothing uploaded")
    storage.remove(storage.join(uri, MANIFEST_NAME))  # from now on the old dataset is no longer complete
    for old in (*SPLITS, REJECTED_NAME):
        storage.remove(storage.join(uri, old), recursive=True)
    files = sorted(p for p in stage.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    total = sum(p.stat().st_size for p in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"upload {uri}", disable=not progress) as bar:
        for p in files:
            storage.put_file(p, storage.join(uri, *p.relative_to(stage).parts))
            bar.update(p.stat().st_size)
    storage.put_file(stage / MANIFEST_NAME, storage.join(uri, MANIFEST_NAME))
