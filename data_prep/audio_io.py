"""Decode any libsndfile-readable file to mono float32 at the target rate, or probe its header alone.

Every failure becomes ``BadAudio(reason)`` so one bad file is reported, not fatal. A WAV/AIFF cut off
mid-data (fewer frames than its header promises) is rejected as truncated, not kept as a short clip.
``probe`` gives the same verdicts from the header (and the frames libsndfile finds) without decoding,
so the sharder can draw its splits over the usable files before it decodes any of them; what only
decoding shows (NaN samples, a corrupt stream behind a good header) is still caught by ``load_mono``.
torch/torchaudio are imported only when a file actually needs resampling.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from .wavheader import declared_frames

WORKER_ENV = "DATA_PREP_WORKER"
_INT16_SUBTYPES = frozenset({"PCM_16", "PCM_S8", "PCM_U8"})


class BadAudio(Exception):
    """A source file that cannot be used; ``str()`` is the human-readable reason."""


def _torch():
    import torch

    if os.environ.get(WORKER_ENV) == "1" and torch.get_num_threads() != 1:
        torch.set_num_threads(1)  # one process per core already; avoid oversubscription
    return torch


# torchaudio builds a (target/g) x (orig/g) sinc kernel (g = gcd): fine for 44100->16000
# (160 x 441) but gigabytes for a rate like 44101 Hz.  Above this many kernel elements we
# resample by FFT instead (exact band-limiting, treats the file as periodic at its ends).
MAX_SINC_KERNEL = 4_000_000


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling of a 1-D float32 signal (torchaudio windowed sinc, same as functional.resample)."""
    if orig_sr == target_sr:
        return audio
    g = math.gcd(int(orig_sr), int(target_sr))
    if (orig_sr // g) * (target_sr // g) > MAX_SINC_KERNEL:
        return fft_resample(audio, orig_sr, target_sr)
    torch = _torch()
    with torch.no_grad():
        out = _resampler(int(orig_sr), int(target_sr))(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
    return out.numpy()


def downmix(data: np.ndarray) -> np.ndarray:
    """(frames, channels) float32 or int16 -> mono float32 channel mean in [-1, 1].

    Sums columns (~10x faster than ``.mean(axis=1)``); int16 is scaled by 1/32768 like libsndfile.
    """
    scale = 1.0 / data.shape[1] / (32768.0 if data.dtype == np.int16 else 1.0)
    acc = data[:, 0].astype(np.float32)
    for c in range(1, data.shape[1]):
        acc += data[:, c]
    if scale != 1.0:
        acc *= np.float32(scale)
    return acc


@functools.lru_cache(maxsize=8)
def _resampler(orig_sr: int, target_sr: int):
    # transforms.Resample builds the sinc kernel once; functional.resample rebuilds it per call.
    import torchaudio.transforms as AT

    return AT.Resample(orig_sr, target_sr)


def resampled_length(frames: int, orig_sr: int, target_sr: int) -> int:
    """How many samples ``resample`` returns for ``frames`` input samples (without running it): the
    sinc path's ceil(new·n/orig) over the gcd-reduced rates in float32, as torchaudio computes it, or
    the FFT path's rounding."""
    if orig_sr == target_sr:
        return int(frames)
    g = math.gcd(int(orig_sr), int(target_sr))
    orig, new = int(orig_sr) // g, int(target_sr) // g
    if orig * new > MAX_SINC_KERNEL:
        return max(1, int(round(frames * target_sr / orig_sr)))
    return int(np.ceil(np.float32(new * frames / orig)))


def fft_resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample by truncating/zero-padding the spectrum (for awkward rate ratios)."""
    n = len(audio)
    m = max(1, int(round(n * target_sr / orig_sr)))
    spec = np.fft.rfft(audio.astype(np.float64))
    keep = min(len(spec), m // 2 + 1)
    out_spec = np.zeros(m // 2 + 1, dtype=np.complex128)
    out_spec[:keep] = spec[:keep]
    if m % 2 == 0 and keep == m // 2 + 1 and m < n:
        out_spec[-1] = out_spec[-1].real  # Nyquist bin of a real signal is real
    return (np.fft.irfft(out_spec, m) * (m / n)).astype(np.float32)


@dataclass(frozen=True)
class AudioHeader:
    sample_rate: int
    channels: int
    frames: int  # what libsndfile finds in the file (fewer than the header promises: truncated)


def probe(path: str) -> AudioHeader:
    """The file's rate, channels and frames from its header, without decoding the audio; BadAudio with
    ``load_mono``'s reason for an unreadable, undecodable, truncated or empty file."""
    _check_readable(path)
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise BadAudio(f"not decodable audio: {_short(e, path)}") from None
    except OSError as e:
        raise BadAudio(f"unreadable: {e.strerror or e}") from None
    _check_frames(path, info.samplerate, info.frames)
    return AudioHeader(int(info.samplerate), int(info.channels), int(info.frames))


def _check_readable(path: str) -> None:
    try:
        open(path, "rb").close()  # libsndfile reports a missing/unreadable file as "System error"
    except OSError as e:
        raise BadAudio(f"unreadable: {e.strerror or e}") from None


def _check_frames(path: str, sr: int, frames: int) -> None:
    """A positive rate, every frame the header promises present, at least one frame."""
    if sr <= 0:
        raise BadAudio(f"invalid sample rate {sr}")
    declared = declared_frames(path)
    if declared is not None and frames < declared:
        raise BadAudio(f"truncated: the header promises {declared} frames ({declared / sr:.3f} s) but the file "
                       f"holds {frames} ({frames / sr:.3f} s); re-export or repair it to use it")
    if frames == 0:
        raise BadAudio("empty: 0 audio frames")


def load_mono(path: str, target_sr: int) -> tuple[np.ndarray, dict]:
    """Return (mono float32 audio at ``target_sr``, info dict with source rate/channels/frames)."""
    _check_readable(path)
    try:
        with sf.SoundFile(path) as f:
            sr, channels = f.samplerate, f.channels
            # 16-bit-or-less sources decode ~30% faster as int16 (exact; scaled by 1/32768 in downmix).
            data = f.read(dtype="int16" if f.subtype in _INT16_SUBTYPES else "float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise BadAudio(f"not decodable audio: {_short(e, path)}") from None
    except OSError as e:
        raise BadAudio(f"unreadable: {e.strerror or e}") from None
    _check_frames(path, sr, data.shape[0])
    if data.dtype == np.float32 and not np.all(np.isfinite(data)):
        raise BadAudio("contains NaN/inf samples")
    mono = downmix(data)
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
