"""How many frames a WAV (RIFF/RIFX/RF64) or AIFF header promises, to catch files cut off mid-data.

libsndfile decodes such a file without complaint, returning only the frames present, so a recording
cut at 0.09 s would otherwise become a short clip. Parsed by hand: libsndfile only logs the mismatch.
"""
from __future__ import annotations

import struct

# WAVE format tags whose data chunk holds whole frames of block_align bytes (PCM, float, A-law, mu-law).
_FRAME_TAGS = frozenset({1, 3, 6, 7})
_EXTENSIBLE = 0xFFFE
_UNKNOWN = (0, 0xFFFFFFFF)  # data sizes written by streaming encoders that never patch the header
_MAX_CHUNKS = 256


def declared_frames(path: str) -> int | None:
    """Frames the header promises, or None when the format has no such promise (or we can't tell)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) == 12 and head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
                return _riff(f, ">" if head[:4] == b"RIFX" else "<", head[:4] == b"RF64")
            if len(head) == 12 and head[:4] == b"FORM" and head[8:12] == b"AIFF":
                return _aiff(f)
    except (OSError, struct.error):
        return None
    return None


def _chunks(f, endian: str):
    """(id, size) of each chunk header; the caller reads the body and seeks to the next header."""
    for _ in range(_MAX_CHUNKS):
        hdr = f.read(8)
        if len(hdr) < 8:
            return
        cid, size = hdr[:4], struct.unpack(endian + "I", hdr[4:])[0]
        yield cid, size


def _riff(f, endian: str, rf64: bool) -> int | None:
    block_align, tag, ds64_data = 0, None, None
    pos = f.tell()
    for cid, size in _chunks(f, endian):
        body = pos + 8
        if cid == b"fmt ":
            fmt = f.read(min(size, 40))
            tag, block_align = struct.unpack(endian + "H", fmt[:2])[0], struct.unpack(endian + "H", fmt[12:14])[0]
            if tag == _EXTENSIBLE and len(fmt) >= 26:
                tag = struct.unpack(endian + "H", fmt[24:26])[0]  # the sub-format GUID starts with the tag
        elif cid == b"ds64":
            ds64_data = struct.unpack("<Q", f.read(16)[8:16])[0]  # riffSize, dataSize, sampleCount, ...
        elif cid == b"data":
            if rf64 and size == 0xFFFFFFFF:
                size = ds64_data
            if size is None or (not rf64 and size in _UNKNOWN) or tag not in _FRAME_TAGS or not block_align:
                return None
            return size // block_align
        pos = body + size + (size & 1)
        f.seek(pos)
    return None


def _aiff(f) -> int | None:
    pos = f.tell()
    for cid, size in _chunks(f, ">"):
        if cid == b"COMM":
            return struct.unpack(">I", f.read(6)[2:6])[0]  # numChannels (2), numSampleFrames (4)
        pos += 8 + size + (size & 1)
        f.seek(pos)
    return None
