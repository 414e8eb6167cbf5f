"""Atomic WebDataset tar shards: write ``*.tar.tmp`` and rename, read with path checks.

``webdataset.ShardWriter`` writes straight to ``shard-N.tar``, so a killed run leaves a
truncated file that looks complete; this writer only renames a shard to ``.tar`` after it
is closed, records each shard's sample count, size and sha256 as it goes, and writes
deterministic headers (fixed mtime/owner) so a rebuild reproduces the same bytes.
The reader never extracts to disk and rejects member names that would escape a directory.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from . import storage
from .member_index import IndexBuilder, index_path

SHARD_PATTERN = "shard-{:06d}.tar"
TMP_SUFFIX = ".tmp"


class TarMemberError(ValueError):
    """A shard member that is unsafe or malformed; the message names shard and member."""


class _HashingFile:
    """Write-through file wrapper that hashes and counts bytes (tarfile only writes)."""

    def __init__(self, path: Path):
        self._f = open(path, "wb")
        self.sha = hashlib.sha256()
        self.nbytes = 0

    def write(self, b) -> int:
        self.sha.update(b)
        self.nbytes += len(b)
        return self._f.write(b)

    def tell(self) -> int:
        return self.nbytes

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()


class AtomicShardWriter:
    """Rotate ``OUT/shard-000000.tar``... at ``max_bytes``/``max_count``; each appears only when complete."""

    def __init__(self, directory: str | os.PathLike, root: str | os.PathLike, max_bytes: int, max_count: int = 100_000):
        self.dir = Path(directory)
        self.root = Path(root)
        self.max_bytes = max(1, int(max_bytes))
        self.max_count = max(1, int(max_count))
        self.shards: list[dict] = []  # {"path" (relative to root), "samples", "bytes", "sha256"}
        self._tar = None
        self._file = None
        self._path: Path | None = None
        self._count = 0
        self._est = 0

    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._path = self.dir / SHARD_PATTERN.format(len(self.shards))
        self._file = _HashingFile(self._path.with_name(self._path.name + TMP_SUFFIX))
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self._index = IndexBuilder()
        self._count = 0
        self._est = 1024 + tarfile.RECORDSIZE  # end-of-archive blocks + worst-case record padding

    def _finish(self) -> None:
        self._tar.close()
        self._file.close()
        # the member offsets beside the shard (random access for the global sample order), complete
        # before the shard itself appears
        side = Path(index_path(str(self._path)))
        side_tmp = side.with_name(side.name + TMP_SUFFIX)
        side_tmp.write_text(self._index.build().to_json())
        os.replace(side_tmp, side)
        tmp = self._path.with_name(self._path.name + TMP_SUFFIX)
        os.replace(tmp, self._path)
        self.shards.append({
            "path": self._path.relative_to(self.root).as_posix(),
            "samples": self._count,
            "bytes": self._file.nbytes,
            "sha256": self._file.sha.hexdigest(),
        })
        self._tar = self._file = self._path = None

    def write(self, sample: dict) -> None:
        """Add one {"__key__": str, ext: bytes, ...} sample (members sorted by extension)."""
        key = sample["__key__"]
        members = sorted((k, v) for k, v in sample.items() if not k.startswith("__"))
        size = sum(512 + (len(v) + 511) // 512 * 512 for _, v in members)
        if self._tar is not None and (self._count >= self.max_count or self._est + size > self.max_bytes):
            self._finish()
        if self._tar is None:
            self._open()
        for ext, value in members:
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(value)
            info.mtime = 0
            info.mode = 0o644
            info.uname = info.gname = ""
            header_at = self._tar.offset
            self._tar.addfile(info, io.BytesIO(value))
            # USTAR: one 512-byte header block (names over 100 bytes are refused by the format), then data
            self._index.add(key, ext, header_at + tarfile.BLOCKSIZE, len(value))
        self._count += 1
        self._est += size

    def close(self) -> list[dict]:
        if self._tar is not None:
            self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the shard in progress (its ``.tmp`` is removed; finished shards stay)."""
        if self._tar is not None:
            tmp = self._path.with_name(self._path.name + TMP_SUFFIX)
            try:
                self._file._f.close()
            finally:
                tmp.unlink(missing_ok=True)
            self._tar = self._file = self._path = None


def check_member_name(shard: str, name: str) -> None:
    """Raise if ``name`` is absolute or climbs out of the archive root."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or name.startswith("\\") or ".." in p.parts or ".." in name.split("\\") or (len(name) > 1 and name[1] == ":"):
        raise TarMemberError(f"{shard}: unsafe member path {name!r} (absolute or escapes the shard directory)")


def iter_tar_samples(path: str | os.PathLike) -> Iterator[dict]:
    """Yield WebDataset-style raw dicts {"__key__", "__url__", ext: bytes} from one shard.

    Raises ``TarMemberError`` on unsafe paths, links/devices, names without an extension,
    duplicate members, or a key whose members are not contiguous.
    """
    shard = str(path)
    seen: set[str] = set()
    current: dict | None = None
    # Stream mode ("r|"): members are read in order, so an object-store shard streams in one GET.
    with storage.open_read(shard) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for info in tar:
            check_member_name(shard, info.name)
            if not info.isreg():
                raise TarMemberError(f"{shard}: member {info.name!r} is not a regular file")
            base = PurePosixPath(info.name)
            stem, dot, ext = base.name.partition(".")
            if not dot or not stem or not ext:
                raise TarMemberError(f"{shard}: member {info.name!r} has no 'key.ext' name")
            key = str(base.parent / stem) if str(base.parent) != "." else stem
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                if key in seen:
                    raise TarMemberError(f"{shard}: key {key!r} appears twice (members not contiguous)")
                seen.add(key)
                current = {"__key__": key, "__url__": shard}
            if ext in current:
                raise TarMemberError(f"{shard}: duplicate member {info.name!r}")
            current[ext] = tar.extractfile(info).read()
        if current is not None:
            yield current


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with storage.open_read(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
