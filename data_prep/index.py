"""Where each sample's members sit inside its shard, so reading one clip is one ranged read.

webdataset 1.0.2 reads a shard front to back and has no indexed reader. A global sample order (any
clip of any shard at any step: the same clips in a step whatever the number of workers) needs random
access, so each shard gets an index: its sample keys in order and, per member extension, the byte
offset and size of the member's data (data_prep.member_index). The shard writer records it as it
writes (a sidecar ``shard-000000.tar.idx.json`` beside the shard); for shards without one, ``scan_shard`` reads
the tar headers once (a shard is read through, so on object storage it costs one download).

A sample's members are adjacent in the tar (sorted by extension: ``KEY.flac`` then ``KEY.json``), so
``read_sample`` fetches all of them with a single ranged read, from a local file or an object store.
Member names pass the same safety check as the streaming reader's.
"""
from __future__ import annotations

import tarfile

from . import storage
from .member_index import INDEX_SUFFIX, INDEX_VERSION, IndexBuilder, ShardIndex, index_path  # noqa: F401
from .tarshard import TarMemberError, check_member_name


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
