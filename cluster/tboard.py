"""Rank-0 TensorBoard logging (Ray Train V2 has no logger callbacks: the train loop writes events).
Besides scalars, every evaluation logs a short generated clip and its spectrogram, so a run can be
judged by ear and eye while it trains."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torchaudio
from torch.utils.tensorboard import SummaryWriter

from data_prep import storage
from sashimi.generate import generate
from sashimi.quantize import dequantize


class Board:
    """Events go to `log_dir`; on object storage they are written to a local folder and uploaded under
    `log_dir` at every flush (each logging interval and checkpoint), so `tensorboard --logdir <URI>`
    (or a synced copy) shows the run while it trains."""

    def __init__(self, log_dir: str, purge_step: int | None, sample_rate: int | None, quantization: str):
        """`sample_rate`: of the training data (its manifest); None only for pixels (quantization none)."""
        if quantization != "none" and not sample_rate:
            raise ValueError(f"TensorBoard in {log_dir}: audio ({quantization}) needs the data's sample rate")
        self.remote = str(log_dir) if storage.is_uri(log_dir) else None
        self._stage = tempfile.TemporaryDirectory(prefix="sashimi-tb-") if self.remote else None
        local = Path(self._stage.name if self._stage else log_dir)
        local.mkdir(parents=True, exist_ok=True)
        # purge_step drops events a crashed attempt wrote after the checkpoint we resumed from
        self.writer = SummaryWriter(str(local), purge_step=purge_step or None)
        self.local = local
        self.sample_rate = sample_rate
        self.quantization = quantization

    def scalars(self, values: dict, step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, float(v), step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    @torch.no_grad()
    def generated(self, model, n_samples: int, step: int, seed: int) -> torch.Tensor:
        """Sample `n_samples` tokens; log audio + spectrogram (or a digit image for pixels).

        Step mode compiles when the amount of work repays it (`generate(compile=None)`: a long clip)
        and runs eager otherwise. Nothing goes to the on-disk compile cache: its packages are keyed by
        the weights, which differ at every evaluation, so none would ever be loaded again."""
        was_training = model.training
        model.eval()
        tokens = generate(model, n_samples, batch=1, seed=seed, compile=None, cache_dir=None)[0].cpu()
        model.train(was_training)
        if self.quantization == "none":  # pixels: show as a square-ish image
            side = int(round(n_samples ** 0.5))
            if side * side == n_samples:
                self.writer.add_image("generated/image", tokens.reshape(1, side, side).float() / 255, step)
            return tokens
        wave = decode_tokens(tokens, self.quantization)
        self.writer.add_audio("generated/audio", wave.unsqueeze(0), step, sample_rate=self.sample_rate)
        self.writer.add_image("generated/spectrogram", spectrogram_image(wave), step, dataformats="HW")
        return tokens

    def flush(self) -> None:
        self.writer.flush()
        self._upload()

    def close(self) -> None:
        self.writer.close()
        self._upload()
        if self._stage is not None:
            self._stage.cleanup()

    def _upload(self) -> None:
        """Copy every local event file to the remote log dir (each upload replaces the object whole)."""
        if self.remote is None:
            return
        for f in sorted(self.local.rglob("*")):
            if f.is_file():
                storage.put_file(f, storage.join(self.remote, *f.relative_to(self.local).parts))


def decode_tokens(tokens: torch.Tensor, quantization: str) -> torch.Tensor:
    return dequantize(tokens, quantization).clamp(-1, 1)


def spectrogram_image(wave: torch.Tensor, n_fft: int = 256) -> torch.Tensor:
    """Log-power spectrogram scaled to [0, 1], low frequencies at the bottom (HW)."""
    while n_fft > 16 and n_fft >= wave.shape[-1]:  # short clips: reflect padding needs n_fft/2 < length
        n_fft //= 2
    spec = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=n_fft // 4)(wave.float())
    db = 10 * torch.log10(spec.clamp_min(1e-10))
    db = db.clamp_min(db.max() - 80)
    img = (db - db.min()) / (db.max() - db.min()).clamp_min(1e-6)
    return img.flip(0)
