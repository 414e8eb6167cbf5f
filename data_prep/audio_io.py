"""Decode any libsndfile-readable file to mono float32 at the target rate.

Every failure becomes ``BadAudio(reason)`` so one bad file is reported, not fatal.
torch/torchaudio are imported only when a file actually needs resampling.
"""
from __future__ import annotations

import os

import numpy as np
import soundfile as sf

WORKER_ENV = "DATA_PREP_WORKER"


class BadAudio(Exception):
    """A source file that cannot be used; ``str()`` is the human-readable reason."""


def _torch():
    import torch

    if os.environ.get(WORKER_ENV) == "1" and torch.get_num_threads() != 1:
        torch.set_num_threads(1)  # one process per core already; avoid oversubscription
    return torch


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc) of a 1-D float32 signal."""
    if orig_sr == target_sr:
        return audio
    torch = _torch()
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), int(orig_sr), int(target_sr))
    return out.numpy()


def load_mono(path: str, target_sr: int) -> tuple[np.ndarray, dict]:
    """Return (mono float32 audio at ``target_sr``, info dict with source rate/channels/frames)."""
    try:
        with sf.SoundFile(path) as f:
            sr, channels = f.samplerate, f.channels
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise BadAudio(f"not decodable audio: {_short(e, path)}") from None
    except OSError as e:
        raise BadAudio(f"unreadable: {e.strerror or e}") from None
    if data.shape[0] == 0:
        raise BadAudio("empty: 0 audio frames")
    if sr <= 0:
        raise BadAudio(f"invalid sample rate {sr}")
    if not np.all(np.isfinite(data)):
        raise BadAudio("contains NaN/inf samples")
    mono = data.mean(axis=1, dtype=np.float32) if channels > 1 else data[:, 0]
    try:
        mono = resample(mono, sr, target_sr)
    except Exception as e:  # torchaudio rejects pathological rates
        raise BadAudio(f"resampling {sr} -> {target_sr} Hz failed: {e}") from None
    info = {"source_sample_rate": int(sr), "channels": int(channels), "source_frames": int(data.shape[0])}
    return np.ascontiguousarray(mono, dtype=np.float32), info


def _short(e: Exception, path: str) -> str:
    # libsndfile messages repeat the path ("Error opening '/x/y.wav': ..."); keep the reason.
    msg = str(e).replace(f"Error opening {path!r}: ", "").replace(f"Error opening '{path}': ", "")
    return msg.strip() or type(e).__name__
