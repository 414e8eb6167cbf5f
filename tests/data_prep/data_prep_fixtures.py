"""Helpers shared by the data_prep tests: synthetic audio files and a hostile input corpus."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf


def sine(seconds: float, sr: int, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def write_audio(path: Path, data: np.ndarray, sr: int, fmt: str | None = None, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, format=fmt, subtype=subtype)
    return path


def write_truncated_wav(path: Path, seconds: float, keep_seconds: float, sr: int = 16000) -> Path:
    """A valid 16-bit mono WAV of ``seconds`` whose file is then cut after ``keep_seconds`` of data."""
    write_audio(path, sine(seconds, sr), sr)
    raw = path.read_bytes()
    path.write_bytes(raw[: 44 + 2 * int(keep_seconds * sr)])  # 44-byte header, then 2 bytes per frame
    return path


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def build_bad_corpus(root: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Write good and bad files; return ({good relpath: expected clips}, {bad relpath: reason substring}).

    Expectations assume 1 s clips at 16 kHz with the last partial clip dropped.
    """
    good: dict[str, int] = {}
    bad: dict[str, str] = {}
    write_audio(root / "good/mono16k.wav", sine(3.5, 16000), 16000)
    good["good/mono16k.wav"] = 3
    write_audio(root / "good/stereo44k.flac", sine(2.2, 44100, channels=2), 44100)
    good["good/stereo44k.flac"] = 2  # 35200 samples at 16 kHz
    write_audio(root / "good/quad48k.wav", sine(4.1, 48000, channels=4), 48000)
    good["good/quad48k.wav"] = 4
    write_audio(root / "good/odd11025.wav", sine(2.0, 11025), 11025)
    good["good/odd11025.wav"] = 2
    write_audio(root / "good/odd7919.flac", sine(3.0, 7919), 7919)
    good["good/odd7919.flac"] = 3  # awkward ratio -> FFT resampler path
    write_audio(root / "good/UPPER.WAV", sine(1.0, 16000), 16000)
    good["good/UPPER.WAV"] = 1
    write_audio(root / "good/vorbis.ogg", sine(2.5, 16000), 16000, fmt="OGG", subtype="VORBIS")
    good["good/vorbis.ogg"] = 2
    # A WAV cut off mid-data: libsndfile decodes the 2.03 s present without complaint, but the header
    # promised 4 s, so it is rejected as truncated (kept, it would be a silently short recording).
    write_truncated_wav(root / "bad/truncated.wav", 4.0, keep_seconds=2.03)
    bad["bad/truncated.wav"] = "truncated"

    flac = write_audio(root / "bad/truncated.flac", sine(3.0, 16000) + np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32), 16000)
    flac.write_bytes(flac.read_bytes()[: len(flac.read_bytes()) // 2])
    bad["bad/truncated.flac"] = "not decodable"
    (root / "bad/corrupt.flac").write_bytes(b"fLaC" + bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)))
    bad["bad/corrupt.flac"] = "not decodable"
    (root / "bad/zero_bytes.wav").write_bytes(b"")
    bad["bad/zero_bytes.wav"] = "not decodable"
    (root / "bad/notes.mp3").write_text("this is not audio\n" * 50)
    bad["bad/notes.mp3"] = "not decodable"
    write_audio(root / "bad/empty.wav", np.zeros(0, np.float32), 16000)
    bad["bad/empty.wav"] = "empty"
    write_audio(root / "bad/short.wav", sine(0.5, 16000), 16000)
    bad["bad/short.wav"] = "too short"
    nan = sine(2.0, 16000)
    nan[100] = np.nan
    write_audio(root / "bad/nan.wav", nan, 16000, subtype="FLOAT")
    bad["bad/nan.wav"] = "NaN"
    # Unreadable: chmod 000 does not stop root, so use a dangling symlink there.
    if is_root():
        os.symlink(root / "does-not-exist.wav", root / "bad/unreadable.wav")
    else:
        p = write_audio(root / "bad/unreadable.wav", sine(2.0, 16000), 16000)
        p.chmod(0)
    bad["bad/unreadable.wav"] = "unreadable"
    (root / "bad/README.txt").write_text("not an audio extension: ignored, not rejected\n")
    return good, bad
