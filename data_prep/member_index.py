"""A shard's member index as data: its sample keys in order and, per member extension, the byte offset
and size of each member's data (None where a sample lacks that member). The shard writer builds one as
it writes (data_prep.tarshard) and leaves it beside the shard; data_prep.index reads shards through it.
Kept apart from data_prep.index so the writer needs no reader."""
from __future__ import annotations

import json
from dataclasses import dataclass

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
