"""A small deterministic music-like corpus, synthesised offline as ordinary audio files.

It exists so the quickstart and the tests go through the same ``shard`` path as a user's
own folder: files of differing lengths, mono and stereo, at 16/22.05/44.1 kHz, as WAV and
FLAC, so downmixing and resampling are exercised.  Notes/chords with ADSR envelopes.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from .atomicio import atomic_write

# (relative path, sample rate, channels, share of the total duration)
LAYOUT = (
    ("pieces/etude_a.wav", 16000, 1, 0.20),
    ("pieces/etude_b.flac", 44100, 2, 0.17),
    ("pieces/nocturne.wav", 22050, 2, 0.15),
    ("chords/progression_1.flac", 44100, 1, 0.13),
    ("chords/progression_2.wav", 16000, 2, 0.11),
    ("chords/progression_3.flac", 22050, 1, 0.10),
    ("scales/major.wav", 44100, 2, 0.08),
    ("scales/minor.flac", 16000, 1, 0.06),
)
_CHORDS = ((0, 4, 7), (5, 9, 12), (7, 11, 14), (0, 3, 7), (-3, 0, 4), (2, 5, 9))


def _envelope(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    a, d = int(sr * rng.uniform(0.005, 0.05)), int(sr * rng.uniform(0.05, 0.2))
    r = int(sr * rng.uniform(0.05, 0.3))
    a, d, r = min(a, n // 4), min(d, n // 4), min(r, n // 4)
    env = np.full(n, rng.uniform(0.4, 0.8), dtype=np.float32)
    env[:a] = np.linspace(0, 1, a, endpoint=False)
    env[a:a + d] = np.linspace(1, env[-1], d, endpoint=False)
    if r:
        env[n - r:] *= np.linspace(1, 0, r)
    return env


def _tone(freqs, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n, dtype=np.float32) / sr
    out = np.zeros(n, dtype=np.float32)
    for f in freqs:
        for h, amp in ((1, 1.0), (2, 0.4), (3, 0.2), (4, 0.1)):
            if f * h < sr / 2:
                out += amp * np.sin(2 * np.pi * f * h * t + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return out * _envelope(n, sr, rng) / (1.7 * len(freqs))


def synth_piece(seconds: float, sr: int, channels: int, seed: int) -> np.ndarray:
    """(frames, channels) float32 in [-1, 1]: a sequence of notes and chords."""
    rng = np.random.default_rng(seed)
    total = max(1, int(round(seconds * sr)))
    out = np.zeros((total, channels), dtype=np.float32)
    pos = 0
    while pos < total:
        n = min(total - pos, int(sr * rng.choice([0.25, 0.5, 0.75, 1.0])))
        root = 48 + int(rng.integers(0, 24))
        steps = _CHORDS[rng.integers(len(_CHORDS))] if rng.random() < 0.5 else (0,)
        freqs = [440.0 * 2 ** ((root + s - 69) / 12) for s in steps]
        note = _tone(freqs, n, sr, rng)
        pan = rng.uniform(0.3, 0.7)
        gains = (1.0,) if channels == 1 else (2 * (1 - pan), 2 * pan)
        for c in range(channels):
            out[pos:pos + n, c] += 0.6 * gains[c] * note
        pos += n
    out += rng.normal(0, 0.002, out.shape).astype(np.float32)
    return np.clip(out, -1, 1)


def make_demo_corpus(out_dir: str | os.PathLike, minutes: float = 3.0, seed: int = 0) -> list[str]:
    """Write the demo files under ``out_dir``; return their absolute paths. Deterministic."""
    if minutes <= 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    root = Path(out_dir)
    paths = []
    for i, (rel, sr, ch, share) in enumerate(LAYOUT):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = synth_piece(minutes * 60 * share, sr, ch, seed * 1000 + i)
        fmt = "FLAC" if rel.endswith(".flac") else "WAV"
        atomic_write(path, lambda f: sf.write(f, audio, sr, format=fmt, subtype="PCM_16"))
        paths.append(str(path.resolve()))
    return paths
