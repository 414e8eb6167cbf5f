"""Where each sample's members sit inside its shard, so reading one clip is one ranged read.

webdataset 1.0.2 reads a shard front to back and has no indexed reader. A global sample order (any
clip of any shard at any step: the same clips in a step whatever the number of workers) needs random
access, so each shard gets an index: its sample keys in order and, per member extension, the byte
offset and size of the member's data. The shard writer records it as it writes (a sidecar
``shard-000000.tar.idx.json``, listed in the manifest); for shards without one, ``scan_shard`` reads
the tar headers once (a shard is read through, so on object storage it costs one download).

A sample's members are adjacent in the tar (sorted by extension: ``KEY.flac`` then ``KEY.json``), so
``read_sample`` fetches all of them with a single ranged read, from a local file or an object store.
Member names pass the same safety check as the streaming reader's.
"""
from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass

from . import storage
from .tarshard import TarMemberError, check_member_name

INDEX_SUFFIX = ".idx.json"
INDEX_VERSION = 1


def index_path(shard: str) -> str:
    return f"{shard}{INDEX_SUFFIX}"


@dataclass(frozen=True)
class ShardIndex:
    """keys[i] is sample i's key; fields[ext][i] = (offset, size) of the data of member ``KEY.ext``, or
    None when sample i has no such member. `error`: why a scan stopped early (a truncated or damaged
    shard: the samples before the break are indexed, the rest are missing)."""

    keys: tuple[str, ...]
    fields: dict[str, tuple[tuple[int, int] | None, ...]]
    error: str | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def to_json(self) -> str:
        return json.dumps({"version": INDEX_VERSION, "keys": list(self.keys),
                           "fields": {ext: [None if p is None else list(p) for p in pos]
                                      for ext, pos in self.fields.items()}},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, where: str) -> "ShardIndex":
        try:
            raw = json.loads(text)
            keys = tuple(str(k) for k in raw["keys"])
            fields = {str(ext): tuple(None if p is None else (int(p[0]), int(p[1])) for p in pos)
                      for ext, pos in raw["fields"].items()}
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{where}: not a shard index ({type(e).__name__}: {e})") from None
        if raw.get("version") != INDEX_VERSION or any(len(p) != len(keys) for p in fields.values()):
            raise ValueError(f"{where}: shard index of version {raw.get('version')!r} with {len(keys)} keys and "
                             f"field lengths { {e: len(p) for e, p in fields.items()} } is not usable")
        return cls(keys, fields)


class IndexBuilder:
    """Collects (key, ext, data offset, size) as a writer adds members, in order."""

    def __init__(self):
        self.keys: list[str] = []
        self.fields: dict[str, list[tuple[int, int]]] = {}

    def add(self, key: str, ext: str, offset: int, size: int) -> None:
        """A member; members of one sample are adjacent (webdataset's grouping), any may be missing."""
        if not self.keys or self.keys[-1] != key:
            self.keys.append(key)
        pos = self.fields.setdefault(ext, [])
        pos.extend([None] * (len(self.keys) - 1 - len(pos)))
        if len(pos) == len(self.keys):
            raise ValueError(f"sample {key!r}: member .{ext} appears twice")
        pos.append((offset, size))

    def build(self, error: str | None = None) -> ShardIndex:
        n = len(self.keys)
        return ShardIndex(tuple(self.keys), {e: tuple(p) + (None,) * (n - len(p)) for e, p in self.fields.items()},
                          error)


def scan_shard(shard: str) -> ShardIndex:
    """The index of a shard without one, from its tar headers (members grouped by key as webdataset
    does: the key is the name up to the first dot of its last path component)."""
    builder = IndexBuilder()
    try:
        with storage.open_read(shard) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                check_member_name(shard, m.name)
                base = m.name.rsplit("/", 1)[-1]
                if "." not in base:
                    raise TarMemberError(f"{shard}: member {m.name!r} has no extension")
                stem, ext = base.split(".", 1)
                builder.add(m.name[: len(m.name) - len(base)] + stem, ext, m.offset_data, m.size)
    except (tarfile.TarError, EOFError, ValueError) as e:  # TarMemberError is a ValueError
        return builder.build(f"{type(e).__name__}: {e}")
    return _cut_at(builder.build(), storage.size(shard))


def _cut_at(index: ShardIndex, size: int) -> ShardIndex:
    """A seekable tar read stops quietly at a truncated shard's end: keep the samples whose members all
    lie inside the file, and say where it was cut."""
    n = len(index.keys)
    for i in range(n):
        if any(pos[i] is not None and pos[i][0] + pos[i][1] > size for pos in index.fields.values()):
            return ShardIndex(index.keys[:i], {e: p[:i] for e, p in index.fields.items()},
                              f"truncated: sample {i} ({index.keys[i]!r}) runs past the end of the file ({size} bytes)")
    ends = [o + s for pos in index.fields.values() for o, s in (p for p in pos if p is not None)]
    last = max(ends, default=0)
    if n and size < -(-last // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE:
        # no end-of-archive blocks after the last member: cut between members, so the last sample may
        # lack some of its members
        return ShardIndex(index.keys[:-1], {e: p[:-1] for e, p in index.fields.items()},
                          f"truncated: no end-of-archive marker after sample {n - 1} ({index.keys[-1]!r})")
    return index


def load_index(shard: str) -> ShardIndex:
    """The shard's sidecar index if it has one, else a scan of its headers."""
    side = index_path(shard)
    if storage.exists(side):
        return ShardIndex.from_json(storage.read_text(side), side)
    return scan_shard(shard)


def read_sample(shard: str, index: ShardIndex, i: int) -> dict:
    """Sample i of ``shard`` as the streaming reader yields it: {"__key__", "__url__", ext: bytes, ...},
    fetched with one ranged read over its adjacent members. A sample past the end of a damaged shard's
    index raises TarMemberError naming the shard."""
    if i >= len(index.keys):
        raise TarMemberError(f"{shard}: sample {i} is not in the shard ({len(index.keys)} readable"
                             + (f"; {index.error}" if index.error else "") + ")")
    spans = {ext: pos[i] for ext, pos in index.fields.items() if pos[i] is not None}
    start = min(o for o, _ in spans.values())
    end = max(o + s for o, s in spans.values())
    blob = storage.read_range(shard, start, end)
    if len(blob) != end - start:
        raise TarMemberError(f"{shard}: sample {index.keys[i]!r} is cut short ({len(blob)} of {end - start} bytes)")
    out = {"__key__": index.keys[i], "__url__": shard}
    for ext, (o, s) in spans.items():
        out[ext] = blob[o - start: o - start + s]
    return out
