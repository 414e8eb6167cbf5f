"""What a person looks at or listens to from audio: its spectrogram image (on TensorBoard, or a PNG file)
and a WAV file. Token models' sequences become a waveform through `sashimi.quantize.dequantize`, with
the method the model was trained with; the diffusion task's waveforms are written as they are. Used by
the tasks' TensorBoard clips, the driver's closing WAV and `sashimi-generate`."""
from __future__ import annotations

import os

import soundfile as sf
import torch
import torchaudio
from PIL import Image

from data_prep import storage


def spectrogram_image(wave: torch.Tensor, n_fft: int = 256) -> torch.Tensor:
    """Log-power spectrogram scaled to [0, 1], low frequencies at the bottom (HW)."""
    while n_fft > 16 and n_fft >= wave.shape[-1]:  # short clips: reflect padding needs n_fft/2 < length
        n_fft //= 2
    spec = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=n_fft // 4)(wave.float())
    db = 10 * torch.log10(spec.clamp_min(1e-10))
    db = db.clamp_min(db.max() - 80)
    img = (db - db.min()) / (db.max() - db.min()).clamp_min(1e-6)
    return img.flip(0)


def write_wav(path: str | os.PathLike, wave: torch.Tensor, sample_rate: int) -> str:
    """A 16-bit PCM WAV of `wave` (1-D, in [-1, 1]) at `path` (a local path or a URI), written atomically."""
    data = wave.detach().cpu().numpy()
    return storage.atomic_write(path, lambda f: sf.write(f, data, sample_rate, format="WAV", subtype="PCM_16"))


def write_png(image: torch.Tensor, path: str | os.PathLike) -> None:
    """(H, W) in [0, 1] -> 8-bit grey PNG at a local `path`."""
    Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), mode="L").save(path)
