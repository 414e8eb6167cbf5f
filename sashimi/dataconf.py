"""Building a frozen config dataclass from a YAML section: unknown keys are an error naming the section."""
from __future__ import annotations

import dataclasses


def strict_from_dict(cls, d: dict, section: str):
    """``cls(**d)``, refusing keys ``cls`` does not have (a typo must not silently fall back to a default)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**d)
