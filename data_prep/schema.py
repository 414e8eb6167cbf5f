"""The on-disk sample schema shared by the sharder and the training reader.

One WebDataset sample is a group of tar members with the same key:

* audio:  ``KEY.flac`` (mono, 16-bit PCM FLAC: lossless, so quantisation stays a
  training-time choice) and ``KEY.json``;
* pixels: ``KEY.u8`` (exactly 784 raw bytes, one 8-bit pixel per step) and ``KEY.json``.

The json always carries ``schema_version``, ``kind``, ``length`` (the valid prefix: padding
never counts as data), ``num_samples`` (len of the stored array), ``sample_rate`` (audio),
``label`` (int or null; sc09 digit / MNIST class) and ``meta`` (source file, clip index,
start sample, split, ...).  Audio is quantised here as ``int16 = clip(round(x * 32768))`` and
decoded as ``int16 / 32768``, so a round trip is exact to 1/32768.

Only numpy and soundfile are imported: the cluster's reader imports this module.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf

SCHEMA_VERSION = 1
AUDIO_EXT = "flac"
PIXELS_EXT = "u8"
PIXELS_LEN = 784
_PCM_SCALE = 32768.0


class SampleError(ValueError):
    """A sample that cannot be decoded; the message names the sample key and reason."""


@dataclass
class Sample:
    key: str
    kind: str  # "audio" or "pixels"
    data: np.ndarray  # audio: float32 (clip_samples,) in [-1, 1]; pixels: uint8 (784,)
    length: int  # valid prefix (padding excluded)
    sample_rate: int | None
    label: int | None
    meta: dict = field(default_factory=dict)


def _check_key(key: str) -> None:
    # WebDataset splits "name.ext" at the first dot of the basename; a dot or slash in the
    # key would silently break grouping on read.
    if not key or "." in key or "/" in key or "\\" in key:
        raise SampleError(f"sample {key!r}: key must be non-empty without '.', '/' or '\\'")


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> int16, rounding to nearest (the inverse of ``/ 32768``)."""
    a = np.asarray(audio, dtype=np.float64)
    return np.clip(np.rint(a * _PCM_SCALE), -32768, 32767).astype(np.int16)


def encode_audio_sample(key: str, audio: np.ndarray, length: int, sample_rate: int, meta: dict) -> dict:
    """Encode one mono clip as {"__key__", "flac", "json"} for a tar writer.

    A ``"label"`` entry in ``meta`` (sc09 digits) is lifted into the json's top-level label.
    """
    _check_key(key)
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise SampleError(f"sample {key!r}: audio must be a non-empty 1-D array, got shape {audio.shape}")
    if not 0 < int(length) <= audio.size:
        raise SampleError(f"sample {key!r}: length {length} outside 1..{audio.size}")
    if not np.all(np.isfinite(audio)):
        raise SampleError(f"sample {key!r}: audio has NaN/inf values")
    buf = io.BytesIO()
    sf.write(buf, to_pcm16(audio), int(sample_rate), format="FLAC", subtype="PCM_16")
    meta = dict(meta)
    label = meta.pop("label", None)
    header = {
        "schema_version": SCHEMA_VERSION,
        "kind": "audio",
        "length": int(length),
        "num_samples": int(audio.size),
        "sample_rate": int(sample_rate),
        "label": None if label is None else int(label),
        "meta": meta,
    }
    return {"__key__": key, AUDIO_EXT: buf.getvalue(), "json": json.dumps(header, sort_keys=True).encode()}


def encode_pixels_sample(key: str, pixels: np.ndarray, label: int, meta: dict) -> dict:
    """Encode one 784-step 8-bit pixel sequence as {"__key__", "u8", "json"}."""
    _check_key(key)
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.size != PIXELS_LEN:
        raise SampleError(f"sample {key!r}: pixels must be {PIXELS_LEN} uint8 values, got {pixels.dtype} {pixels.shape}")
    header = {
        "schema_version": SCHEMA_VERSION,
        "kind": "pixels",
        "length": PIXELS_LEN,
        "num_samples": PIXELS_LEN,
        "sample_rate": None,
        "label": int(label),
        "meta": dict(meta),
    }
    return {"__key__": key, PIXELS_EXT: pixels.reshape(-1).tobytes(), "json": json.dumps(header, sort_keys=True).encode()}


def _field(sample: dict, name: str, key: str) -> bytes:
    if name not in sample:
        raise SampleError(f"sample {key!r}: missing '{name}' member (has {sorted(k for k in sample if not k.startswith('__'))})")
    value = sample[name]
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise SampleError(f"sample {key!r}: '{name}' must be raw bytes, got {type(value).__name__}")
    return bytes(value)


def decode_sample(sample: dict) -> Sample:
    """Decode the raw dict WebDataset yields (bytes values) into a checked ``Sample``."""
    key = str(sample.get("__key__", "<no __key__>"))
    try:
        header = json.loads(_field(sample, "json", key))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SampleError(f"sample {key!r}: bad json: {e}") from None
    if not isinstance(header, dict):
        raise SampleError(f"sample {key!r}: json is not an object")
    if header.get("schema_version") != SCHEMA_VERSION:
        raise SampleError(f"sample {key!r}: schema_version {header.get('schema_version')!r} != {SCHEMA_VERSION}")
    kind = header.get("kind")
    try:
        length, n = int(header["length"]), int(header["num_samples"])
        label = header.get("label")
        label = None if label is None else int(label)
        meta = header.get("meta") or {}
    except (KeyError, TypeError, ValueError) as e:
        raise SampleError(f"sample {key!r}: bad json field: {e!r}") from None
    if kind == "audio":
        raw = _field(sample, AUDIO_EXT, key)
        try:
            pcm, sr = sf.read(io.BytesIO(raw), dtype="int16", always_2d=True)
        except Exception as e:  # libsndfile raises several types for garbage
            raise SampleError(f"sample {key!r}: undecodable {AUDIO_EXT}: {e}") from None
        if pcm.shape[1] != 1:
            raise SampleError(f"sample {key!r}: expected mono, got {pcm.shape[1]} channels")
        if sr != header.get("sample_rate"):
            raise SampleError(f"sample {key!r}: flac rate {sr} != json sample_rate {header.get('sample_rate')}")
        data = pcm[:, 0].astype(np.float32) / np.float32(_PCM_SCALE)
        rate = int(sr)
    elif kind == "pixels":
        raw = _field(sample, PIXELS_EXT, key)
        data = np.frombuffer(raw, dtype=np.uint8).copy()
        rate = None
        if label is None:
            raise SampleError(f"sample {key!r}: pixels sample without label")
    else:
        raise SampleError(f"sample {key!r}: unknown kind {kind!r}")
    if data.size != n:
        raise SampleError(f"sample {key!r}: {data.size} values decoded, json says {n}")
    if kind == "pixels" and n != PIXELS_LEN:
        raise SampleError(f"sample {key!r}: pixels must have {PIXELS_LEN} values, got {n}")
    if not 0 < length <= n:
        raise SampleError(f"sample {key!r}: length {length} outside 1..{n}")
    return Sample(key=key, kind=kind, data=data, length=length, sample_rate=rate, label=label, meta=meta)
